"""The batcher with a GPU encoder, on the CPU provider (tests/fixtures/gpu_style.py): the next run of a cycle is
padded on a helper thread while the engine thread runs the current one; CUDA graphs move to the engine thread;
every request gets what ``encode`` gives it alone. CPU encoders keep the plain path (tests/server/test_batcher.py)."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from embedrt import Encoder
from embedrt.export.sentences import PARITY_SENTENCES
from embedrt.server.batcher import DynamicBatcher
from tests.fixtures.gpu_style import RecordingSession, cpu_session, gpu_style

TEXTS = [text for text in PARITY_SENTENCES[:24] if text.strip()]


class Watched:
    """A GPU-style encoder recording the thread each run is padded on and each batch runs on."""

    def __init__(self, encoder: Encoder) -> None:
        self._encoder = encoder
        self.padded_on: list[str] = []
        self.run_on: list[str] = []
        pack_one = encoder._pack_one

        def pack_here(encodings, positions):
            self.padded_on.append(threading.current_thread().name)
            return pack_one(encodings, positions)

        encoder._pack_one = pack_here  # type: ignore[method-assign]

    def __getattr__(self, name):
        return getattr(self._encoder, name)

    def run_batch(self, batch, normalize=None):
        self.run_on.append(threading.current_thread().name)
        return self._encoder.run_batch(batch, normalize)


async def _serve(batcher: DynamicBatcher, requests: list[list[str]]) -> list[np.ndarray]:
    await batcher.start()
    try:
        encoded = [await batcher.tokenize(texts) for texts in requests]
        return list(await asyncio.gather(*(batcher.embed(encodings, False) for encodings in encoded)))
    finally:
        await batcher.stop()


def test_a_cycle_of_several_runs_is_padded_on_the_helper_thread(tiny_bundle):
    watched = Watched(gpu_style(tiny_bundle))
    batcher = DynamicBatcher(watched, max_batch_tokens=32, max_wait_s=0.2)  # small runs: several a cycle
    requests = [TEXTS[i : i + 1 + i % 3] for i in range(10)]
    results = asyncio.run(asyncio.wait_for(_serve(batcher, requests), 120))
    reference = Encoder.load(tiny_bundle, precision="fp32", threads=1)
    for texts, got in zip(requests, results, strict=True):
        np.testing.assert_allclose(got, reference.encode(texts, normalize=False), atol=1e-5)
    assert "embedrt-host-batches" in watched.padded_on  # cycles of several runs: padded ahead
    assert set(watched.run_on) == {"embedrt-engine_0"}  # the device work stays on the engine thread
    assert threading.active_count() < 50  # every cycle's helper thread ended


def test_a_lone_request_is_padded_on_the_engine_thread(tiny_bundle):
    watched = Watched(gpu_style(tiny_bundle))
    batcher = DynamicBatcher(watched, max_batch_tokens=4096)
    asyncio.run(asyncio.wait_for(_serve(batcher, [[TEXTS[0]]]), 120))
    assert watched.padded_on == ["embedrt-engine_0"]  # one run: no helper thread to start


def test_an_error_in_a_cycle_stops_its_helper_thread(tiny_bundle, monkeypatch):
    from embedrt.server import batcher as batcher_module

    encoder = gpu_style(tiny_bundle)
    batcher = DynamicBatcher(encoder, max_batch_tokens=32, max_wait_s=0.2)
    before = threading.active_count()

    def broken(*args):
        raise RuntimeError("a bug while recording")

    monkeypatch.setattr(batcher_module, "_record", broken)

    async def scenario():
        await batcher.start()
        try:
            encoded = [await batcher.tokenize(TEXTS[i : i + 3]) for i in range(4)]
            return await asyncio.gather(*(batcher.embed(e, False) for e in encoded), return_exceptions=True)
        finally:
            await batcher.stop()

    results = asyncio.run(asyncio.wait_for(scenario(), 120))
    assert all(isinstance(result, Exception) for result in results)
    assert threading.active_count() <= before


def test_cuda_graphs_move_to_the_engine_thread(tiny_bundle):
    plain = Encoder.load(tiny_bundle, precision="fp32", threads=1)
    graphs = RecordingSession(cpu_session(plain))
    encoder = gpu_style(tiny_bundle, graphs=graphs)
    encoder.capture_graphs()  # at load, on this thread
    graphs.runs.clear()
    batcher = DynamicBatcher(encoder, max_batch_tokens=4096)
    results = asyncio.run(asyncio.wait_for(_serve(batcher, [[TEXTS[0]]]), 120))
    np.testing.assert_array_equal(results[0][0], gpu_style(tiny_bundle).encode(TEXTS[0], normalize=False))
    threads = {name for _, _, name in graphs.runs}
    assert threads == {"embedrt-engine_0"}  # captured again there by start(), then replayed for the request
    graph, shape, _ = graphs.runs[-1]  # the request's run: one text, replaying its width's graph
    assert graph is not None and shape[0] == 1 and shape[1] in encoder.bucket_widths


def test_serve_has_a_cuda_graphs_switch_that_needs_cuda(tiny_bundle):
    from embedrt.errors import InputError
    from embedrt.server.serve import load_models
    from embedrt.server.settings import resolve_settings

    assert resolve_settings({"bundle": str(tiny_bundle)}, environ={}).cuda_graphs is False
    settings = resolve_settings({"bundle": str(tiny_bundle)}, environ={"EMBEDRT_CUDA_GRAPHS": "true"})
    assert settings.cuda_graphs is True
    with pytest.raises(InputError, match="cuda_graphs=True needs device='cuda'"):
        load_models(settings)


def test_a_gpu_cycle_is_planned_as_fewer_larger_runs(tiny_bundle):
    from embedrt.runtime.batching import RUN_COST_TOKENS
    from embedrt.runtime.overlap import GPU_RUN_COST_TOKENS

    assert Encoder.load(tiny_bundle, precision="fp32", threads=1).run_cost_tokens == RUN_COST_TOKENS  # CPU as before
    runs = {}
    for cost in (RUN_COST_TOKENS, GPU_RUN_COST_TOKENS):
        watched = Watched(gpu_style(tiny_bundle))
        watched._encoder.run_cost_tokens = cost
        batcher = DynamicBatcher(watched, max_batch_tokens=4096, max_wait_s=0.2)
        asyncio.run(asyncio.wait_for(_serve(batcher, [TEXTS[i : i + 4] for i in range(0, len(TEXTS), 4)]), 120))
        runs[cost] = len(watched.run_on)
    assert runs[GPU_RUN_COST_TOKENS] < runs[RUN_COST_TOKENS]  # a GPU run costs a kernel-launch floor, not 16 tokens
