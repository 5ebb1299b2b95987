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

    first, later, cycles = serve(held, scenario, inline_lone_requests=False)  # held on the engine thread
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

    bad, empty, refused, busy, in_flight = serve(held, scenario, max_concurrent_requests=1, inline_lone_requests=False)
    assert (bad.status_code, empty.status_code, refused.status_code, busy.status_code) == (422, 400, 429, 200)
    assert in_flight == 0


class ThreadRecordingEncoder:
    """The real encoder; records the thread of each engine run, and fails runs while ``fail`` is set."""

    def __init__(self, encoder: Encoder) -> None:
        self._encoder = encoder
        self.threads: list[int] = []
        self.fail = False

    def __getattr__(self, name):
        return getattr(self._encoder, name)

    def run_batch(self, batch, normalize=None):
        self.threads.append(threading.get_ident())
        if self.fail:
            raise RuntimeError("the engine broke")
        return self._encoder.run_batch(batch, normalize)


def test_a_lone_request_runs_on_the_event_loop_thread_and_gives_encodes_vector(offline, tiny_bundle):
    recording = ThreadRecordingEncoder(Encoder.load(tiny_bundle, precision="fp32", threads=1, cache_size=0))

    async def scenario(app, client):
        loop_thread = threading.get_ident()
        recording.threads.clear()
        before = app.batcher.inline_cycles
        embed = await client.post("/embed", json={"inputs": "只有一个请求"})
        openai = await client.post("/v1/embeddings", json={"input": "一个人", "encoding_format": "base64"})
        return loop_thread, app.batcher.inline_cycles - before, embed, openai

    loop_thread, inline, embed, openai = serve(recording, scenario)
    assert inline == 2 and recording.threads == [loop_thread, loop_thread]
    assert embed.status_code == 200 and openai.status_code == 200
    expected = offline.encode(["只有一个请求"], normalize=True)[0]
    np.testing.assert_array_equal(np.array(embed.json()[0], dtype=np.float32), expected)  # shortest float32 repr
    vector = np.frombuffer(base64.b64decode(openai.json()["data"][0]["embedding"]), dtype="<f4")
    np.testing.assert_array_equal(vector, offline.encode(["一个人"], normalize=True)[0])


def test_a_large_request_and_a_server_told_not_to_use_the_engine_thread(offline, tiny_bundle):
    recording = ThreadRecordingEncoder(Encoder.load(tiny_bundle, precision="fp32", threads=1, cache_size=0))
    many = [text * 4 for text in TEXTS]  # well over INLINE_TOKENS

    async def scenario(app, client):
        recording.threads.clear()
        before = app.batcher.inline_cycles
        response = await client.post("/embed", json={"inputs": many})
        return app.batcher.inline_cycles - before, set(recording.threads), threading.get_ident(), response

    inline, threads, loop_thread, response = serve(recording, scenario)
    assert response.status_code == 200 and inline == 0 and loop_thread not in threads
    np.testing.assert_allclose(np.array(response.json()), offline.encode(many, normalize=True), atol=1e-5)

    async def lone(app, client):
        recording.threads.clear()
        response = await client.post("/embed", json={"inputs": "一个"})
        return app.batcher.inline_cycles, set(recording.threads), threading.get_ident(), response

    inline, threads, loop_thread, response = serve(recording, lone, inline_lone_requests=False)
    assert response.status_code == 200 and inline == 0 and loop_thread not in threads


def test_an_engine_failure_on_the_event_loop_thread_is_a_500_and_the_server_keeps_serving(offline, tiny_bundle):
    recording = ThreadRecordingEncoder(Encoder.load(tiny_bundle, precision="fp32", threads=1, cache_size=0))

    async def scenario(app, client):
        recording.fail = True
        try:
            failed = await client.post("/embed", json={"inputs": "坏了"})
        finally:
            recording.fail = False
        again = await client.post("/embed", json={"inputs": "好了"})
        return failed, again, app.batcher.inline_cycles, app.in_flight

    failed, again, inline, in_flight = serve(recording, scenario)
    assert failed.status_code == 500 and "the engine broke" in failed.json()["error"]
    assert again.status_code == 200 and inline >= 2 and in_flight == 0
    np.testing.assert_allclose(again.json()[0], offline.encode("好了", normalize=True), atol=1e-5)


@pytest.mark.parametrize(("received", "on_loop"), [(1, True), (3, False)])
def test_the_http_servers_count_of_received_requests_decides_where_a_lone_request_runs(tiny_bundle, received, on_loop):
    recording = ThreadRecordingEncoder(Encoder.load(tiny_bundle, precision="fp32", threads=1, cache_size=0))

    async def scenario(app, client):
        app.received_requests(lambda: received)  # what serve() wires to uvicorn's tasks in flight
        recording.threads.clear()
        response = await client.post("/embed", json={"inputs": "一个"})
        return response, recording.threads, threading.get_ident()

    response, threads, loop_thread = serve(recording, scenario)
    assert response.status_code == 200 and (threads == [loop_thread]) is on_loop


LONE_BODIES = [
    ("/embed", {"inputs": "只有一个请求"}),
    ("/embed", {"inputs": ["只有一个请求"], "normalize": False}),
    ("/v1/embeddings", {"input": "一个人", "encoding_format": "base64"}),
    ("/v1/embeddings", {"input": "一个人"}),
    ("/v1/embeddings", {"input": ["一个", "两个人"], "encoding_format": "base64"}),
]


@pytest.mark.parametrize("fail", [False, True])
def test_a_lone_text_runs_at_once_without_queueing_and_answers_the_queued_paths_bytes(tiny_bundle, fail):
    """As `embedrt serve` wires it (uvicorn says how many requests it holds), a lone text runs from its handler
    without entering the queue; every response, 200 or the engine's 500, is byte for byte the queued path's."""
    recording = ThreadRecordingEncoder(Encoder.load(tiny_bundle, precision="fp32", threads=1, cache_size=0))
    masked = {"x-compute-time", "x-total-time", "x-tokenization-time", "x-queue-time", "x-inference-time"}

    def scenario(told: bool):
        async def run(app, client):
            taken = []
            if told:
                app.received_requests(lambda: 1)
            take = app.batcher._take
            app.batcher._take = lambda: taken.append(1) or take()  # counts cycles that went through the queue
            recording.threads.clear()
            recording.fail = fail
            answers = []
            for path, body in LONE_BODIES:
                response = await client.post(path, json=body)
                headers = {name: value for name, value in response.headers.items() if name not in masked}
                answers.append((response.status_code, headers, response.content))
            recording.fail = False
            queued = app.metrics.batch_requests._sum.get()  # one request per cycle either way
            facts = (app.batcher.inline_cycles, queued, len(taken), app.in_flight)
            return answers, recording.threads, threading.get_ident(), facts

        return run

    at_once, threads, loop_thread, (inline, requests, taken, in_flight) = serve(recording, scenario(True))
    queued, _, _, (_, _, taken_queued, _) = serve(recording, scenario(False))
    assert at_once == queued
    assert taken == 1 and taken_queued == len(LONE_BODIES)  # told alone, only the two-text request queued
    assert all(status == (500 if fail else 200) for status, _, _ in at_once)
    assert threads == [loop_thread] * len(LONE_BODIES) and in_flight == 0
    assert inline >= len(LONE_BODIES) and requests >= len(LONE_BODIES)


def test_texts_and_tokens_are_counted_once_the_response_has_left(cached):
    """The counters move after the response is sent (off its path), before the handler returns: an in-process
    caller sees them at once; a refused request counts nothing."""

    async def scenario(app, client):
        texts = app.metrics.texts._value.get
        before = texts()
        ok = await client.post("/v1/embeddings", json={"input": ["计数一", "计数二", "计数三"]})
        after_ok = texts()
        bad = await client.post("/v1/embeddings", json={"input": ["计数", 5]})
        return ok, bad, after_ok - before, texts() - after_ok, app.models[0].tokens_total._value.get()

    ok, bad, counted, counted_bad, tokens = serve(cached, scenario)
    assert (ok.status_code, bad.status_code, counted, counted_bad) == (200, 422, 3, 0)
    assert tokens >= ok.json()["usage"]["total_tokens"]
