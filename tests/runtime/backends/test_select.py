"""Device -> engine selection and its errors on a machine without a GPU; IO binding exercised on the CPU."""

from __future__ import annotations

import importlib.util
import types

import numpy as np
import pytest

from embedrt import Encoder
from embedrt.bundle import Bundle
from embedrt.errors import BackendError, BundleError, EmbedrtWarning
from embedrt.runtime.backends import ort_cuda, select
from tests.helpers import assert_one_line_error
from tests.helpers import run_cli as run


def _has_cuda_provider() -> bool:
    import onnxruntime

    return "CUDAExecutionProvider" in onnxruntime.get_available_providers()


def test_devices_and_auto_precision(tiny_fp16_bundle, tiny_bundle):
    assert select.DEVICES == ("cpu", "cuda", "tensorrt")
    fp16 = Bundle.open(tiny_fp16_bundle)
    assert select.choose(fp16, "auto", "auto", "cuda").precision == "fp16"
    assert select.choose(fp16, "auto", "auto", "tensorrt").precision == "fp16"
    assert select.choose(fp16, "auto", "auto", "cpu").precision == "fp32"  # no int8 here; never fp16 by default
    assert select.choose(Bundle.open(tiny_bundle), "auto", "auto", "cuda").precision == "fp32"


@pytest.mark.skipif(_has_cuda_provider(), reason="this machine has onnxruntime-gpu")
def test_cuda_without_onnxruntime_gpu_says_what_to_install(tiny_fp16_bundle):
    with pytest.raises(BackendError, match=r"no CUDAExecutionProvider.*onnxruntime-gpu"):
        Encoder.load(tiny_fp16_bundle, device="cuda")


def test_int8_is_refused_on_cuda_not_run_on_the_cpu(tiny_bundle):
    with pytest.raises(BackendError, match="'int8' does not run on device='cuda'"):
        Encoder.load(tiny_bundle, precision="int8", device="cuda")


def test_tensorrt_needs_the_fp16_graph_and_an_engine(tiny_bundle, tiny_fp16_bundle):
    with pytest.raises(BundleError, match=r"has none: add it with `embedrt .*--precision fp32,int8,fp16.*build-engine"):
        Encoder.load(tiny_bundle, device="tensorrt")
    with pytest.raises(BundleError, match="precision 'fp32' has none"):
        Encoder.load(tiny_fp16_bundle, precision="fp32", device="tensorrt")
    with pytest.raises(BackendError, match="no TensorRT engine.*embedrt build-engine"):
        Encoder.load(tiny_fp16_bundle, device="tensorrt")


def test_unknown_device(tiny_bundle):
    with pytest.raises(BundleError, match="unknown device 'gpu'"):
        Encoder.load(tiny_bundle, device="gpu")


class _FakeSession:
    def __init__(self, path, sess_options=None, providers=None):
        self.providers = providers

    def get_providers(self):
        return ["CPUExecutionProvider"]  # what ONNX Runtime does when CUDA cannot start


def _fake_ort(real):
    fake = types.SimpleNamespace(
        **{name: getattr(real, name) for name in ("SessionOptions", "GraphOptimizationLevel", "ExecutionMode")}
    )
    fake.get_available_providers = lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"]
    fake.InferenceSession = _FakeSession
    return fake


def test_a_silent_fall_back_to_cpu_is_an_error(tiny_fp16_bundle, monkeypatch):
    import onnxruntime

    monkeypatch.setattr(ort_cuda, "import_onnxruntime", lambda: _fake_ort(onnxruntime))
    with pytest.raises(BackendError, match="could not start CUDAExecutionProvider.*fell back to CPUExecutionProvider"):
        Encoder.load(tiny_fp16_bundle, precision="fp16", device="cuda")


def test_io_binding_runner_gives_what_session_run_gives(tiny_fp16_bundle):
    """The IO-binding path, bound to the CPU device here, on the GPU it is the same calls with "cuda"."""
    import onnxruntime

    bundle = Bundle.open(tiny_fp16_bundle)
    session = onnxruntime.InferenceSession(str(bundle.variant_path("fp16")), providers=["CPUExecutionProvider"])
    with pytest.warns(EmbedrtWarning, match="emulated"):  # fp16 on a CPU: run only when named, and said
        encoder = Encoder.load(tiny_fp16_bundle, precision="fp16")
    (batch,) = encoder.batches(encoder.tokenize(["花呗怎么还款", "今天天气不错"]), 8)
    runner = ort_cuda.BoundRunner(session, device="cpu")
    hidden = runner.run(batch.inputs)
    (expected,) = session.run([runner.output_name], {name: batch.inputs[name] for name in runner.input_names})
    assert hidden.dtype == np.float32 and hidden.shape == expected.shape
    np.testing.assert_array_equal(hidden, expected)


# ------------------------------------------------------------------------------- CLI without a GPU
@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="TensorRT is installed here")
def test_cli_build_engine_without_tensorrt_is_one_line(tiny_fp16_bundle):
    assert_one_line_error(run("build-engine", tiny_fp16_bundle), r'needs tensorrt: pip install "embedrt\[tensorrt\]"')


@pytest.mark.parametrize(
    "flags, pattern",
    [
        (("--min-shape", "64x1"), "batch must satisfy min <= opt <= max"),
        (("--max-shape", "128x512"), "exceeds the bundle's max_seq_length 64"),
        (("--opt-shape", "32by64"), "is not BATCHxSEQ"),
        (("--workspace-gb", "0"), "--workspace-gb must be in"),
    ],
)
def test_cli_build_engine_rejects_bad_profiles_in_one_line(tiny_fp16_bundle, flags, pattern):
    assert_one_line_error(run("build-engine", tiny_fp16_bundle, *flags), pattern)


def test_cli_build_engine_on_a_bundle_without_the_tensorrt_graph(tiny_bundle, tmp_path):
    assert_one_line_error(run("build-engine", tiny_bundle), "no fp16-trt graph")
    assert_one_line_error(run("build-engine", tmp_path / "nope"), "does not exist")
