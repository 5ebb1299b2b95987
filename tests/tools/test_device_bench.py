"""``embedrt bench --device``: the GPU report's code path, run here with ``--device cpu`` (no GPU needed)."""

from __future__ import annotations

import json

import pytest

from embedrt.tools.device_bench import distinct_texts
from tests.helpers import assert_one_line_error
from tests.helpers import run_cli as run


def test_bench_device_cpu_reports_engine_against_encode_and_first_pass_latency(tiny_bundle):
    result = run("bench", tiny_bundle, "--device", "cpu", "--batch-sizes", "4,16", "--rounds", "1", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["device"] == "cpu" and report["settings"]["batch_sizes"] == [4, 16]
    machine = report["machine"]
    assert {"cpu", "onnxruntime", "gpu"} <= set(machine)  # the machine the figures came from
    (precision,) = report["results"]
    assert precision == "fp32"
    figures = report["results"]["fp32"]
    assert figures["latency_texts"] == 300 and not figures["pools_on_device"]
    for key in ("first_pass", "warm"):
        assert 0 < figures[key]["p50_ms"] <= figures[key]["p99_ms"] <= figures[key]["max_ms"]
    assert [row["batch_size"] for row in figures["batches"]] == [4, 16]
    for row in figures["batches"]:
        assert row["engine_sent_per_s"] > 0 and row["encode_sent_per_s"] > 0
        assert row["engine_inputs"] == "host NumPy batches, padded beforehand"


def test_bench_device_table(tiny_bundle):
    result = run("bench", tiny_bundle, "--device", "cpu", "--batch-sizes", "8", "--rounds", "1")
    assert result.returncode == 0, result.stderr
    assert "batch-1 over 300 distinct texts: first pass p50" in result.stdout
    assert "x the engine)" in result.stdout and "machine" in result.stdout


@pytest.mark.parametrize(
    "args, pattern",
    [
        (("--batch-sizes", "8"), "--batch-sizes goes with --device"),
        (("--device", "cpu", "--batch-sizes", "0"), "--batch-sizes: expected a number >= 1"),
        (("--device", "gpu"), "device"),
    ],
)
def test_bench_device_bad_arguments_are_one_line(tiny_bundle, args, pattern):
    assert_one_line_error(run("bench", tiny_bundle, *args), pattern)


def test_bench_device_cuda_without_a_gpu_says_why(tiny_bundle):
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this machine has onnxruntime-gpu")
    assert_one_line_error(run("bench", tiny_bundle, "--device", "cuda", "--rounds", "1"), "CUDAExecutionProvider")


def test_distinct_texts_makes_new_ones_when_the_workload_repeats():
    texts = distinct_texts(["a", "b", "a", "c"], 8)
    assert len(texts) == len(set(texts)) == 8 and texts[:3] == ["a", "b", "c"]
    assert distinct_texts(["a", "b"], 1) == ["a"]


def test_the_cuda_graph_line_says_their_latency_or_why_they_are_off():
    from embedrt.tools.device_bench import format_rows

    latency = {"p50_ms": 0.5, "p99_ms": 0.9, "max_ms": 2.0}
    result = {
        "backend": "onnxruntime-cuda",
        "pools_on_device": True,
        "load_s": 1.0,
        "warm_up": {"shapes": 40, "seconds": 0.5},
        "latency_texts": 300,
        "first_pass": latency,
        "warm": latency,
        "first_over_warm_p99": 1.0,
        "batches": [],
    }
    on = {"on": True, "graphs": 20, "capture_s": 0.4, "first_pass": latency, "warm": latency, "load_s": 2.0}
    assert "with CUDA graphs (20 captured in 0.40 s): batch-1 first pass p50 0.50" in "\n".join(
        format_rows("fp16", {**result, "cuda_graphs": on})
    )
    off = {"on": False, "why_off": "the graph has a Memcpy node", "load_s": 2.0}
    assert "  CUDA graphs off: the graph has a Memcpy node" in format_rows("fp16", {**result, "cuda_graphs": off})
    assert not any("graphs" in line for line in format_rows("fp32", {**result, "cuda_graphs": None}))
