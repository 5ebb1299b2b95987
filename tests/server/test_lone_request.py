"""The served path of one request, in-process (the ASGI app, no sockets): a lone request starts the engine
from its own handler, gets what ``Encoder.encode`` gives for it alone, and everything around it still holds:
batching under concurrency, the result cache, admission and 4xx errors."""

from __future__ import annotations

import asyncio
import base64
import threading
import time

import httpx
import numpy as np
import pytest

from embedrt import Encoder
from embedrt.export.sentences import PARITY_SENTENCES
from embedrt.server.app import EmbeddingServer
from embedrt.server.settings import ServerSettings

TEXTS = list(PARITY_SENTENCES[:16])


class HeldEncoder:
    """The real encoder; while ``hold`` is set, each engine run waits on the engine thread until it is cleared."""

    def __init__(self, encoder: Encoder) -> None:
        self._encoder = encoder
        self.hold = threading.Event()
        self.entered = threading.Event()

    def __getattr__(self, name):
        return getattr(self._encoder, name)

    def run_batch(self, batch, normalize=None):
        self.entered.set()
        while self.hold.is_set():
            time.sleep(0.005)
        return self._encoder.run_batch(batch, normalize)


def serve(encoder, scenario, **settings):
    """Run ``scenario(app, client)`` against a started app on one event loop, then stop the app."""
    app = EmbeddingServer(encoder, ServerSettings(bundle="tiny", **settings))

    async def main():
        await app.start()
        try:
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                return await scenario(app, client)
        finally:
            await app.stop()

    return asyncio.run(asyncio.wait_for(main(), 120))


@pytest.fixture(scope="module")
def cached(tiny_bundle):
    return Encoder.load(tiny_bundle, precision="fp32", threads=1, cache_size=100)


def test_a_lone_request_runs_in_one_cycle_without_waiting_and_equals_encode(offline, cached):
    async def scenario(app, client):
        before = (app.batcher.cycles, app.batcher.waited_cycles)
        embed = await client.post("/embed", json={"inputs": "只有一个请求"})
        openai = await client.post("/v1/embeddings", json={"input": "一个人", "encoding_format": "base64"})
        return before, (app.batcher.cycles, app.batcher.waited_cycles), embed, openai

    before, after, embed, openai = serve(cached, scenario)
    assert embed.status_code == 200 and openai.status_code == 200
    assert after == (before[0] + 2, before[1])  # one cycle each, neither waited for batch-mates
    np.testing.assert_allclose(embed.json()[0], offline.encode("只有一个请求", normalize=True), atol=1e-5)
    vector = np.frombuffer(base64.b64decode(openai.json()["data"][0]["embedding"]), dtype="<f4")
    np.testing.assert_allclose(vector, offline.encode("一个人", normalize=True), atol=1e-5)


def test_the_cache_holds_a_vector_once_its_response_is_sent(cached):
    async def scenario(app, client):
        first = await client.post("/embed", json={"inputs": "缓存里的句子"})
        cycles = app.batcher.cycles
        second = await client.post("/embed", json={"inputs": "缓存里的句子"})
        return first, second, app.batcher.cycles - cycles, app.metrics.cache_hits._value.get()

    first, second, cycles, hits = serve(cached, scenario)
    assert first.content == second.content  # the very same vector, bit for bit
    assert cycles == 0 and hits >= 1  # the second never reached the engine


def test_requests_arriving_while_the_engine_runs_share_the_next_cycle(offline, tiny_bundle):
    held = HeldEncoder(Encoder.load(tiny_bundle, precision="fp32", threads=1, cache_size=0))

    async def scenario(app, client):
        cycles = app.batcher.cycles
        held.entered.clear()  # the warm-up ran the engine too
        held.hold.set()
        try:
            first = asyncio.create_task(client.post("/embed", json={"inputs": TEXTS[0]}))
            while not held.entered.is_set():  # the first request is in the engine, held there
                await asyncio.sleep(0.01)
            later = [asyncio.create_task(client.post("/embed", json={"inputs": text})) for text in TEXTS[1:]]
            while len(app.batcher._pending) < len(later):  # each handler has queued its text
                await asyncio.sleep(0.01)
        finally:
            held.hold.clear()
        return await first, await asyncio.gather(*later), app.batcher.cycles - cycles

    first, later, cycles = serve(held, scenario)
    assert cycles == 2  # the first request's cycle, then one for the 15 that queued meanwhile
    for text, response in zip(TEXTS, [first, *later], strict=True):
        assert response.status_code == 200
        np.testing.assert_allclose(response.json()[0], offline.encode(text, normalize=True), atol=1e-5)


def test_errors_are_4xx_and_every_request_leaves_admission(tiny_bundle):
    held = HeldEncoder(Encoder.load(tiny_bundle, precision="fp32", threads=1, cache_size=0))

    async def scenario(app, client):
        bad = await client.post("/embed", content=b"{not json")
        empty = await client.post("/v1/embeddings", json={"input": []})
        held.entered.clear()  # the warm-up ran the engine too
        held.hold.set()
        try:
            busy = asyncio.create_task(client.post("/embed", json={"inputs": "占着"}))
            while not held.entered.is_set():
                await asyncio.sleep(0.01)
            refused = await client.post("/embed", json={"inputs": "第二个"})
        finally:
            held.hold.clear()  # never leave the engine thread held, or the test cannot end
        return bad, empty, refused, await busy, app.in_flight

    bad, empty, refused, busy, in_flight = serve(held, scenario, max_concurrent_requests=1)
    assert (bad.status_code, empty.status_code, refused.status_code, busy.status_code) == (422, 400, 429, 200)
    assert in_flight == 0
