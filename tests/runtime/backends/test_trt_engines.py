"""TensorRT engine bookkeeping that needs no GPU: shapes, profiles, file keys, matching, the manifest."""

from __future__ import annotations

import sys
import threading

import pytest

from embedrt.bundle import Bundle
from embedrt.errors import BackendError, BundleError, InputError, MissingExtraError
from embedrt.runtime.backends.trt_engines import EngineRecord, GpuTarget, Profile, Shape, choose_engine
from embedrt.tools import build_engine as builder
from embedrt.tools.build_engine import engine_file_name, timing_cache_name

A10 = GpuTarget("NVIDIA A10", "8.6", "10.4.0")
V100 = GpuTarget("Tesla V100-SXM2-16GB", "7.0", "10.4.0")
SHA = "ab" * 32


@pytest.mark.parametrize(
    "text, shape", [("1x1", Shape(1, 1)), ("32x64", Shape(32, 64)), (" 128X512 ", Shape(128, 512))]
)
def test_shape_parse(text, shape):
    assert Shape.parse(text) == shape and str(shape) == f"{shape.batch}x{shape.seq}"


@pytest.mark.parametrize("text", ["", "32", "32x", "x64", "0x64", "32x0", "-1x4", "3.5x4", "32*64", "axb"])
def test_shape_parse_rejects(text):
    with pytest.raises(InputError, match="BATCHxSEQ|>= 1"):
        Shape.parse(text, "--opt-shape")


def test_profile_defaults_are_capped_by_the_bundle():
    assert Profile.parse(None, None, None, max_seq_length=512).to_dict() == {
        "min": [1, 1],
        "opt": [32, 64],
        "max": [128, 512],
    }
    assert Profile.parse(None, None, None, max_seq_length=32).to_dict() == {
        "min": [1, 1],
        "opt": [32, 32],
        "max": [128, 32],
    }


@pytest.mark.parametrize(
    "shapes, message",
    [
        (("64x1", "32x64", "128x512"), "batch must satisfy min <= opt <= max"),
        (("1x1", "32x600", "128x512"), "seq must satisfy"),
        (("1x80", "32x64", "128x512"), "seq must satisfy"),
        (("1x1", "32x64", "16x512"), "batch must satisfy"),
        (("1x1", "32x64", "128x513"), "exceeds the bundle's max_seq_length 512"),
    ],
)
def test_profile_rejects(shapes, message):
    with pytest.raises(InputError, match=message):
        Profile.parse(*shapes, max_seq_length=512)


def test_profile_round_trip_and_ort_option():
    profile = Profile.parse("1x1", "32x64", "128x256", max_seq_length=512)
    assert Profile.from_dict(profile.to_dict()) == profile
    assert profile.ort_option("max", ("input_ids", "attention_mask")) == "input_ids:128x256,attention_mask:128x256"


def test_engine_file_names_are_keyed_by_gpu_capability_version_and_graph():
    assert engine_file_name(A10, SHA) == f"engine-nvidia-a10-sm86-trt10.4.0-{SHA[:12]}.plan"
    assert engine_file_name(V100, SHA) == f"engine-tesla-v100-sxm2-16gb-sm70-trt10.4.0-{SHA[:12]}.plan"
    assert engine_file_name(A10, SHA, "onnxruntime") == f"ort-trt-cache-nvidia-a10-sm86-trt10.4.0-{SHA[:12]}"
    assert engine_file_name(A10, "cd" * 32) != engine_file_name(A10, SHA)
    assert timing_cache_name(A10) == "timing-nvidia-a10-sm86-trt10.4.0.cache"


def _record(target: GpuTarget = A10, sha: str = SHA, runner: str = "tensorrt") -> dict:
    profile = Profile.parse("1x1", "32x64", "128x512", 512).to_dict()
    return EngineRecord(
        file=f"engines/{engine_file_name(target, sha, runner)}",
        runner=runner,
        gpu=target.gpu,
        compute_capability=target.compute_capability,
        tensorrt=target.tensorrt,
        model_sha256=sha,
        profile=profile,
    ).to_dict()


@pytest.mark.parametrize(
    "here, sha, reason",
    [
        (GpuTarget("NVIDIA L4", "8.9", "10.4.0"), SHA, "built for NVIDIA A10, this GPU is NVIDIA L4"),
        (GpuTarget("NVIDIA A10", "8.0", "10.4.0"), SHA, "compute capability 8.6, this GPU has 8.0"),
        (GpuTarget("NVIDIA A10", "8.6", "11.0.0"), SHA, "TensorRT 10.4.0, this machine has 11.0.0"),
        (A10, "ef" * 32, "built from another graph"),
    ],
)
def test_a_mismatched_engine_is_refused_with_the_reason(here, sha, reason, tmp_path):
    with pytest.raises(BackendError, match=reason) as info:
        choose_engine([_record()], here, sha, tmp_path)
    assert "embedrt build-engine" in str(info.value)


def test_the_matching_engine_is_chosen_among_several(tmp_path):
    records = [_record(V100), _record(A10), _record(A10, runner="onnxruntime")]
    chosen = choose_engine(records, A10, SHA, tmp_path)
    assert chosen.gpu == "NVIDIA A10" and chosen.runner == "tensorrt"


def test_no_engine_says_to_build_one(tmp_path):
    with pytest.raises(BackendError, match="has no TensorRT engine.*embedrt build-engine"):
        choose_engine([], A10, SHA, tmp_path)


def test_build_engine_without_tensorrt_names_the_extra(tiny_fp16_bundle, copy_bundle, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # as if not installed, on any machine
    with pytest.raises(MissingExtraError, match=r'pip install "embedrt\[tensorrt\]"'):
        builder.build_engine(copy_bundle(tiny_fp16_bundle))


def test_build_engine_needs_the_tensorrt_graph(tiny_bundle):
    with pytest.raises(BundleError, match=r"no fp16-trt graph.*`embedrt .*--precision fp32,int8,fp16 .*--force`$"):
        builder.build_engine(tiny_bundle)


def test_build_engine_checks_the_profile_before_looking_for_a_gpu(tiny_fp16_bundle, monkeypatch):
    monkeypatch.setattr(builder, "probe_gpu", lambda purpose: pytest.fail("probed the GPU first"))
    with pytest.raises(InputError, match="max_seq_length 64"):
        builder.build_engine(tiny_fp16_bundle, ("1x1", "8x16", "32x128"))


def test_built_engine_is_listed_and_matched_at_load(tiny_fp16_bundle, copy_bundle, monkeypatch):
    """The whole bookkeeping path with the GPU parts replaced: build, list, rebuild, refuse, pick."""
    from embedrt import Encoder
    from embedrt.runtime.backends import tensorrt as trt_backend

    bundle = copy_bundle(tiny_fp16_bundle)
    built = []

    def fake_build(onnx_path, plan, timing_cache, profile, workspace_gb):
        built.append((onnx_path.name, plan.name, profile.to_dict(), workspace_gb))
        plan.write_bytes(b"not a real engine")
        timing_cache.write_bytes(b"cache")

    monkeypatch.setattr(builder, "probe_gpu", lambda purpose: A10)
    monkeypatch.setattr(builder, "build_native_engine", fake_build)
    record = builder.build_engine(bundle, (None, "8x16", "16x64"), workspace_gb=2)
    builder.build_engine(bundle, (None, "8x16", "16x64"), workspace_gb=2)  # rebuilding replaces the entry
    sha = Bundle.open(bundle).manifest.variants["fp16-trt"].sha256
    assert built[0] == ("model_fp16_trt.onnx", f"engine-nvidia-a10-sm86-trt10.4.0-{sha[:12]}.plan",
                        {"min": [1, 1], "opt": [8, 16], "max": [16, 64]}, 2)  # fmt: skip
    engines = Bundle.open(bundle).manifest.engines
    assert engines == [record.to_dict()] and (bundle / record.file).is_file()
    assert (bundle / "engines" / timing_cache_name(A10)).is_file()

    monkeypatch.setattr(trt_backend, "probe_gpu", lambda purpose: GpuTarget("NVIDIA L4", "8.9", "10.4.0"))
    with pytest.raises(BackendError, match="built for NVIDIA A10, this GPU is NVIDIA L4"):
        Encoder.load(bundle, precision="fp16", device="tensorrt")

    opened = []
    monkeypatch.setattr(trt_backend, "probe_gpu", lambda purpose: A10)
    monkeypatch.setattr(
        trt_backend, "TensorrtBackend", lambda path, rec, dim: opened.append((path, rec, dim)) or "engine"
    )
    backend = trt_backend.open_tensorrt_backend(Bundle.open(bundle), "fp16")
    assert backend == "engine" and opened[0] == (bundle / record.file, record, 32)

    (bundle / record.file).write_bytes(b"tampered")
    with pytest.raises(BundleError, match="sha256"):
        trt_backend.open_tensorrt_backend(Bundle.open(bundle), "fp16")


def test_concurrent_builds_keep_both_engine_records(tiny_fp16_bundle, copy_bundle, monkeypatch):
    """Two build-engine runs for two GPUs at once: the manifest ends with both records, not the last one."""
    bundle = copy_bundle(tiny_fp16_bundle)
    gpus = {"build-a10": A10, "build-v100": V100}
    both_building = threading.Barrier(2, timeout=30)

    def fake_build(onnx_path, plan, timing_cache, profile, workspace_gb):
        both_building.wait()  # each run has read the bundle before either writes its record
        plan.write_bytes(threading.current_thread().name.encode())
        timing_cache.write_bytes(b"cache")

    monkeypatch.setattr(builder, "probe_gpu", lambda purpose: gpus[threading.current_thread().name])
    monkeypatch.setattr(builder, "build_native_engine", fake_build)
    errors = []

    def build():
        try:
            builder.build_engine(bundle, (None, "8x16", "16x64"), workspace_gb=1)
        except BaseException as err:  # surfaced below: a thread's exception would otherwise vanish
            errors.append(err)

    threads = [threading.Thread(target=build, name=name) for name in gpus]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors
    engines = Bundle.open(bundle).manifest.engines
    assert sorted(engine["gpu"] for engine in engines) == sorted(gpu.gpu for gpu in gpus.values())
    assert not list(bundle.rglob("*.partial")) and not list(bundle.rglob("*.tmp"))


def test_the_provider_engine_warm_up_feeds_the_graphs_own_inputs(tmp_path, monkeypatch):
    """A graph without token_type_ids gets no token_type_ids (the names were once hard-coded)."""
    from embedrt.runtime.backends import tensorrt as trt_backend

    fed = []

    class FakeBackend:
        input_names = ("input_ids", "attention_mask")

        def __init__(self, onnx_path, cache_dir, profile, workspace_gb):
            self.cache_dir = cache_dir

        def run(self, batch):
            fed.append({name: value.shape for name, value in batch.items()})
            (self.cache_dir / "x.engine").write_bytes(b"engine")

    monkeypatch.setattr(trt_backend, "OrtTensorrtBackend", FakeBackend)
    profile = Profile.parse(None, "4x8", "8x16", max_seq_length=64)
    builder.build_ort_engine_cache(tmp_path / "g.onnx", tmp_path / "cache", profile, 1.0)
    assert fed == [{"input_ids": (4, 8), "attention_mask": (4, 8)}]


def test_the_tensorrt_provider_profiles_name_the_graphs_own_inputs(tmp_path, monkeypatch):
    from embedrt.runtime.backends import tensorrt as trt_backend

    captured = {}

    class FakeSession:
        def get_inputs(self):
            return [type("Input", (), {"name": name})() for name in ("input_ids", "attention_mask")]

        def get_outputs(self):
            return [type("Output", (), {"name": "last_hidden_state"})()]

    def fake_gpu_session(model_path, providers, threads=1):
        captured.update(providers[0][1])
        return FakeSession()

    monkeypatch.setattr(trt_backend, "graph_input_names", lambda path: ("input_ids", "attention_mask"))
    monkeypatch.setattr(trt_backend, "gpu_session", fake_gpu_session)
    profile = Profile.parse(None, "4x8", "8x16", max_seq_length=64)
    backend = trt_backend.OrtTensorrtBackend(tmp_path / "g.onnx", tmp_path / "cache", profile)
    assert captured["trt_profile_opt_shapes"] == "input_ids:4x8,attention_mask:4x8"
    assert backend.input_names == ("input_ids", "attention_mask")


def test_graph_input_names_reads_the_graph(tiny_fp16_bundle):
    from embedrt.runtime.backends.tensorrt import graph_input_names

    graph = Bundle.open(tiny_fp16_bundle).variant_path("fp16-trt")
    assert graph_input_names(graph) == ("input_ids", "attention_mask", "token_type_ids")
