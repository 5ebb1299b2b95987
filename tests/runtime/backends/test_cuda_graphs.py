"""CUDA graphs' bookkeeping on the CPU: which batches replay a graph, on which thread, refusals, same vectors.

The CUDA backend runs here on the CPU device (tests/fixtures/gpu_style.py), with a second CPU session standing
in for the ``enable_cuda_graph`` one: the CPU provider ignores ``gpu_graph_id``, so what is checked is what
embedrt decides, never a capture. The real thing: ``pytest -m gpu`` (tests/e2e/test_on_gpu.py) and
tests/e2e/gpu/check_on_gpu.sh (step ``graphs``).
"""

from __future__ import annotations

import threading

import numpy as np
import pytest

from embedrt import Encoder
from embedrt.errors import BackendError, EmbedrtWarning, InputError
from embedrt.runtime.backends.ort_cuda import CAPTURE_RUNS
from embedrt.runtime.overlap import graph_shapes
from tests.fixtures.gpu_style import RecordingSession, cpu_session, gpu_style
from tests.helpers import TEST_TEXTS

TEXTS = [t for t in TEST_TEXTS if t.strip()]


def _with_graphs(bundle) -> tuple[Encoder, RecordingSession]:
    plain = Encoder.load(bundle, precision="fp32", threads=1)
    graphs = RecordingSession(cpu_session(plain))
    encoder = gpu_style(bundle, graphs=graphs)
    encoder.capture_graphs()
    return encoder, graphs


def test_one_text_at_each_width_is_captured_with_its_own_graph_id(tiny_bundle):
    encoder, graphs = _with_graphs(tiny_bundle)
    shapes = graph_shapes(encoder.bucket_widths)
    assert encoder.cuda_graphs and [(rows, width) for rows, width, _ in encoder.graphed] == shapes
    assert all(rows == 1 for rows, _ in shapes) and [w for _, w in shapes] == list(encoder.bucket_widths)
    ids = [graph for graph, _, _ in graphs.runs]
    assert len(ids) == CAPTURE_RUNS * len(shapes)
    by_shape = {shape: {g for g, s, _ in graphs.runs if s == shape} for shape in shapes}
    assert all(len(found) == 1 for found in by_shape.values())  # one id a shape, the same on every run
    numbers = sorted(int(next(iter(found))) for found in by_shape.values())
    assert numbers == list(range(1, len(shapes) + 1))  # from 1: 0 is ONNX Runtime's default id


def test_a_lone_text_replays_its_graph_and_gets_the_same_vector(tiny_bundle):
    encoder, graphs = _with_graphs(tiny_bundle)
    reference = gpu_style(tiny_bundle)  # no graphs: the normal session
    graphs.runs.clear()
    for text in TEXTS:
        np.testing.assert_array_equal(encoder.encode(text), reference.encode(text))
    assert len(graphs.runs) == len(TEXTS) and all(graph for graph, _, _ in graphs.runs)
    assert {shape[0] for _, shape, _ in graphs.runs} == {1}


def test_other_shapes_run_the_normal_session(tiny_bundle):
    encoder, graphs = _with_graphs(tiny_bundle)
    graphs.runs.clear()
    together = encoder.encode(TEXTS[:4], batch_size=4)
    assert graphs.runs == []  # a batch of 4 has no graph
    alone = np.stack([encoder.encode(text) for text in TEXTS[:4]])
    np.testing.assert_allclose(alone, together, atol=1e-6)


def test_graphs_replay_only_for_the_thread_that_captured_them(tiny_bundle):
    encoder, graphs = _with_graphs(tiny_bundle)
    graphs.runs.clear()
    other = threading.Thread(target=encoder.encode, args=(TEXTS[0],), name="another-thread")
    other.start()
    other.join()
    assert graphs.runs == []  # ONNX Runtime keeps graphs per thread: the other thread ran the normal session

    def adopt_then_encode() -> None:
        encoder.adopt_thread()
        encoder.encode(TEXTS[0])

    mover = threading.Thread(target=adopt_then_encode, name="engine-thread")
    mover.start()
    mover.join()
    assert graphs.runs and {name for _, _, name in graphs.runs} == {"engine-thread"}
    graphs.runs.clear()
    encoder.encode(TEXTS[0])  # the loading thread no longer replays
    assert graphs.runs == []


def test_a_graph_keeps_its_buffers_whatever_else_runs(tiny_bundle):
    encoder, _ = _with_graphs(tiny_bundle)
    runner = encoder.backend.graphs._runner
    kept = {shape: (bound.inputs["input_ids"], bound.output) for shape, bound in runner._bound.items()}
    encoder.encode(TEXTS * 3, batch_size=2)
    for text in TEXTS:
        encoder.encode(text)
    now = {shape: (bound.inputs["input_ids"], bound.output) for shape, bound in runner._bound.items()}
    assert all(now[shape][0] is ids and now[shape][1] is out for shape, (ids, out) in kept.items())


def test_a_bundle_without_the_pooled_output_keeps_graphs_off_and_says_why(tiny_bundle):
    plain = Encoder.load(tiny_bundle, precision="fp32", threads=1)
    encoder = gpu_style(tiny_bundle, pooled=False, graphs=RecordingSession(cpu_session(plain)))
    with pytest.warns(EmbedrtWarning, match="CUDA graphs off.*pooled output"):
        assert encoder.capture_graphs() == []
    assert not encoder.cuda_graphs and "re-export" in encoder.backend.graphs_off
    assert encoder.encode(TEXTS[:2]).shape == (2, encoder.dim)


def test_a_refused_graph_session_keeps_graphs_off_and_says_why(tiny_bundle):
    encoder = gpu_style(tiny_bundle)

    def refuse():
        raise BackendError("This session cannot use the CUDA Graph feature as requested by the user")

    encoder.backend._graph_session = refuse
    with pytest.warns(EmbedrtWarning, match="cannot use the CUDA Graph feature"):
        encoder.capture_graphs()
    assert not encoder.cuda_graphs
    np.testing.assert_array_equal(encoder.encode(TEXTS[0]), gpu_style(tiny_bundle).encode(TEXTS[0]))


def test_a_failed_capture_turns_graphs_off(tiny_bundle, monkeypatch):
    encoder, graphs = _with_graphs(tiny_bundle)

    def broken(binding, run_options=None):
        raise RuntimeError("CUDA error 900: operation not permitted when stream is capturing")

    monkeypatch.setattr(graphs, "run_with_iobinding", broken)
    with pytest.warns(EmbedrtWarning, match="capturing failed"):
        encoder.adopt_thread()
    assert not encoder.cuda_graphs and encoder.encode(TEXTS[0]).shape == (encoder.dim,)


def test_graphs_need_cuda(tiny_bundle):
    with pytest.raises(InputError, match="cuda_graphs=True needs device='cuda'"):
        Encoder.load(tiny_bundle, cuda_graphs=True)
    assert not Encoder.load(tiny_bundle, precision="fp32", threads=1).cuda_graphs
