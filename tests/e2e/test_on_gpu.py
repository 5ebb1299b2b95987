"""On an NVIDIA GPU: parity (cosine >= 0.999 to fp32 on the CPU) and batch invariance, CUDA and TensorRT.

Skipped where there is no GPU or the GPU stack is not installed. The CUDA tests passed once, on an
H200 with onnxruntime-gpu 1.31.1 (docs/gpu.md); the TensorRT ones have never run.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from embedrt import Encoder
from embedrt.bundle import Bundle
from embedrt.export.sentences import PARITY_SENTENCES
from embedrt.export.validate import cosine_rows
from tests.helpers import TEST_TEXTS

TEXTS = [t for t in TEST_TEXTS if t.strip()] + list(PARITY_SENTENCES[:30])


def _gpu_present() -> bool:
    if shutil.which("nvidia-smi") is None:
        return False
    result = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30)
    return result.returncode == 0 and "GPU" in result.stdout


def _ort_providers() -> list[str]:
    import onnxruntime

    return onnxruntime.get_available_providers()


HAS_GPU = _gpu_present()
HAS_CUDA = HAS_GPU and "CUDAExecutionProvider" in _ort_providers()
HAS_TRT = HAS_GPU and all(importlib.util.find_spec(m) is not None for m in ("tensorrt", "cuda"))
HAS_ORT_TRT = HAS_TRT and "TensorrtExecutionProvider" in _ort_providers()

pytestmark = pytest.mark.gpu


@pytest.fixture(params=["tiny_fp16_bundle", "minilm_fp16_bundle"])
def fp16_bundle(request):
    return request.getfixturevalue(request.param)


def _check(encoder: Encoder, reference: np.ndarray) -> None:
    together = encoder.encode(TEXTS, batch_size=16)
    assert cosine_rows(together, reference).min() >= 0.999
    alone = np.stack([encoder.encode(text) for text in TEXTS[:8]])
    assert cosine_rows(alone, together[:8]).min() >= 0.9999


@pytest.mark.skipif(not HAS_CUDA, reason="needs an NVIDIA GPU and onnxruntime-gpu")
@pytest.mark.parametrize("precision", ["fp16", "fp32"])
def test_cuda_parity_and_batch_invariance(fp16_bundle, precision):
    reference = Encoder.load(fp16_bundle, precision="fp32", device="cpu").encode(TEXTS)
    encoder = Encoder.load(fp16_bundle, precision=precision, device="cuda")
    assert encoder.backend.name == "onnxruntime-cuda"
    _check(encoder, reference)


# A torch-free process, as a deployment runs: pytest has imported torch (the fixtures export with
# it), and torch loads CUDA and cuDNN, which would hide a provider that only starts after preload_dlls().
WITHOUT_TORCH = textwrap.dedent(
    """
    import sys
    sys.modules["torch"] = None  # importing torch now fails
    from embedrt import Encoder
    from embedrt.runtime.backends import ort_cuda
    encoder = Encoder.load(sys.argv[1], precision="fp16", device="cuda")
    vector = encoder.encode(["花呗怎么还款"])
    import onnxruntime
    preloaded = ort_cuda._PRELOADED.get(id(onnxruntime), "(no preload_dlls in this onnxruntime)")
    print("backend", encoder.backend.name, "shape", vector.shape, "preload_dlls said:", preloaded or "nothing")
    """
)


@pytest.mark.skipif(not HAS_CUDA, reason="needs an NVIDIA GPU and onnxruntime-gpu")
def test_a_fresh_process_without_torch_starts_the_cuda_provider(tiny_fp16_bundle):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    command = [sys.executable, "-c", WITHOUT_TORCH, str(tiny_fp16_bundle)]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "backend onnxruntime-cuda shape (1," in result.stdout


@pytest.mark.skipif(not HAS_TRT, reason="needs an NVIDIA GPU, tensorrt and cuda-python")
def test_tensorrt_engine_parity_batch_invariance_and_chunking(fp16_bundle, copy_bundle):
    from embedrt.tools.build_engine import build_engine

    bundle = copy_bundle(fp16_bundle)
    reference = Encoder.load(bundle, precision="fp32", device="cpu").encode(TEXTS)
    max_seq = Bundle.open(bundle).manifest.max_seq_length
    record = build_engine(bundle, (None, "8x32", f"16x{max_seq}"), workspace_gb=2)
    assert (bundle / record.file).is_file() and record.runner == "tensorrt"
    encoder = Encoder.load(bundle, device="tensorrt")
    assert encoder.backend.name == "tensorrt" and encoder.precision == "fp16"
    _check(encoder, reference)
    # A batch larger than the profile's 16 rows is run in pieces, with the same numbers.
    short = [t for t in TEXTS if len(t) < 40][:24]
    np.testing.assert_allclose(
        encoder.encode(short, batch_size=24), encoder.encode(short, batch_size=8), rtol=0, atol=2e-3
    )


@pytest.mark.skipif(not HAS_ORT_TRT, reason="needs an NVIDIA GPU and onnxruntime-gpu with TensorRT")
def test_onnxruntime_tensorrt_provider_parity(fp16_bundle, copy_bundle):
    from embedrt.tools.build_engine import build_engine

    bundle = copy_bundle(fp16_bundle)
    reference = Encoder.load(bundle, precision="fp32", device="cpu").encode(TEXTS)
    max_seq = Bundle.open(bundle).manifest.max_seq_length
    record = build_engine(bundle, (None, "8x32", f"16x{max_seq}"), workspace_gb=2, runner="onnxruntime")
    assert record.runner == "onnxruntime"
    encoder = Encoder.load(bundle, device="tensorrt")
    assert encoder.backend.name == "onnxruntime-tensorrt"
    _check(encoder, reference)


@pytest.mark.skipif(not HAS_CUDA, reason="needs an NVIDIA GPU and onnxruntime-gpu")
@pytest.mark.parametrize("precision", ["fp16", "fp32"])
def test_cuda_pools_on_the_device_as_numpy_pools(fp16_bundle, precision):
    """The graph's mean (sentence_embedding) against NumPy pooling of the same GPU run's token embeddings."""
    from embedrt.runtime.pooling import pool

    encoder = Encoder.load(fp16_bundle, precision=precision, device="cuda")
    assert encoder.backend.pools_on_device and encoder.overlap and encoder.bucket_widths and encoder.warmed
    for batch in encoder.batches(encoder.tokenize(TEXTS), 16):
        on_device = encoder.backend.run_pooled(batch.inputs)
        on_host = pool(encoder.backend.run(batch.inputs), batch.inputs["attention_mask"], encoder.manifest.pooling)
        assert cosine_rows(on_device, on_host).min() >= 1 - 1e-6


@pytest.mark.skipif(not HAS_CUDA, reason="needs an NVIDIA GPU and onnxruntime-gpu")
def test_bench_device_cuda_reports_both_precisions(tiny_fp16_bundle):
    import json

    from tests.helpers import run_cli

    result = run_cli("bench", tiny_fp16_bundle, "--device", "cuda", "--batch-sizes", "8,64", "--rounds", "1", "--json")
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout)
    assert set(report["results"]) == {"fp16", "fp32"} and report["machine"]["gpu"]
    assert all(figures["pools_on_device"] for figures in report["results"].values())


@pytest.mark.skipif(not HAS_CUDA, reason="needs an NVIDIA GPU and onnxruntime-gpu")
@pytest.mark.parametrize("precision", ["fp16", "fp32"])
def test_cuda_graphs_give_the_vectors_of_the_normal_session(fp16_bundle, precision):
    """One text at each bucket width replays a captured CUDA graph; its vector is the normal session's."""
    plain = Encoder.load(fp16_bundle, precision=precision, device="cuda")
    graphed = Encoder.load(fp16_bundle, precision=precision, device="cuda", cuda_graphs=True)
    assert graphed.cuda_graphs, graphed.backend.graphs_off  # ONNX Runtime accepted the graph session
    assert len(graphed.graphed) == len(graphed.bucket_widths)
    texts = [*TEXTS, "长" * (graphed.max_seq_length + 10)]  # up to the widest bucket
    alone = np.stack([graphed.encode(text) for text in texts])  # each replays its width's graph
    np.testing.assert_allclose(alone, np.stack([plain.encode(text) for text in texts]), atol=1e-5)
    assert cosine_rows(alone, plain.encode(texts, batch_size=16)).min() >= 0.9999  # a batch: no graph
    again = np.stack([graphed.encode(text) for text in texts[:4]])  # replays read the new inputs
    np.testing.assert_array_equal(again, alone[:4])
