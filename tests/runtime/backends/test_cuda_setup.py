"""The GPU install checks without a GPU: kernel architectures read from the provider, preload_dlls, TensorRT keys.

The CUDA provider library is stood in for by a small ELF file holding a ``.nv_fatbin`` section built
here in the layout the reader parses (checked against onnxruntime-gpu 1.31.1's and 1.26.0's
``libonnxruntime_providers_cuda.so``: sm_75..sm_120, and sm_60..sm_90 + PTX 90).
"""

from __future__ import annotations

import struct
import types
from pathlib import Path

import pytest

from embedrt.errors import BackendError
from embedrt.runtime.backends import cuda_arch, ort_cuda, trt_engines
from embedrt.runtime.backends import tensorrt as trt_backend
from embedrt.runtime.backends.cuda_arch import CUBIN, PTX, KernelArchs, fatbin_archs, library_archs
from embedrt.runtime.backends.trt_engines import EngineRecord, GpuTarget, Profile, choose_engine, version_from_int
from embedrt.tools import build_engine as builder

NO_KERNEL = "CUDA failure 209: no kernel image is available for execution on the device"


def _entry(kind: int, arch: int, payload: bytes = b"\x00" * 24) -> bytes:
    header = bytearray(64)
    struct.pack_into("<HHIQ", header, 0, kind, 0x0101, 64, len(payload))
    struct.pack_into("<I", header, 28, arch)
    return bytes(header) + payload


def _fatbin(*entries: bytes) -> bytes:
    body = b"".join(entries)
    return struct.pack("<IHHQ", cuda_arch.FATBIN_MAGIC, 1, 16, len(body)) + body


def _elf(sections: dict[bytes, bytes]) -> bytes:
    """A minimal 64-bit little-endian ELF file with the given sections and a section name table."""
    names = b"\x00.shstrtab\x00" + b"".join(name + b"\x00" for name in sections)
    blobs = [names, *sections.values()]
    data, offsets = bytearray(64), []
    for blob in blobs:
        offsets.append(len(data))
        data += blob + b"\x00" * (-len(blob) % 8)
    table = len(data)
    header = struct.Struct("<IIQQQQIIQQ")
    data += bytes(header.size)  # the null section
    name_at = [1] + [names.index(name + b"\x00") for name in sections]
    for name, offset, blob in zip(name_at, offsets, blobs, strict=True):
        data += header.pack(name, 1, 0, 0, offset, len(blob), 0, 0, 8, 0)
    data[:7] = b"\x7fELF\x02\x01\x01"
    struct.pack_into("<Q", data, 0x28, table)
    struct.pack_into("<HHH", data, 0x3A, header.size, len(blobs) + 1, 1)
    return bytes(data)


# Two fat binaries with alignment padding between them, as nvcc lays them out.
CUDA13_LIKE = _fatbin(_entry(CUBIN, 75), _entry(CUBIN, 90)) + b"\x00" * 8 + _fatbin(_entry(CUBIN, 120))
CUDA12_LIKE = _fatbin(_entry(CUBIN, 70), _entry(CUBIN, 86), _entry(PTX, 90))


def test_fat_binaries_are_read_cubins_and_ptx_apart():
    assert fatbin_archs(CUDA13_LIKE) == KernelArchs(frozenset({75, 90, 120}), frozenset())
    assert fatbin_archs(CUDA12_LIKE) == KernelArchs(frozenset({70, 86}), frozenset({90}))
    assert str(fatbin_archs(CUDA12_LIKE)) == "sm_70, sm_86, PTX 90"


def test_the_section_is_found_in_an_elf_file_and_anything_else_reads_as_unknown(tmp_path):
    library = tmp_path / "lib.so"
    library.write_bytes(_elf({b".text": b"\x90" * 40, b".nv_fatbin": CUDA13_LIKE}))
    assert library_archs(library) == KernelArchs(frozenset({75, 90, 120}), frozenset())
    library.write_bytes(_elf({b".text": b"\x90" * 40}))
    assert library_archs(library) is None
    library.write_bytes(b"MZ not an ELF file")
    assert library_archs(library) is None
    assert library_archs(tmp_path / "missing.so") is None


@pytest.mark.parametrize(
    "archs, cc, runs",
    [
        (CUDA13_LIKE, (9, 0), True),  # H100/H200: sm_90
        (CUDA13_LIKE, (8, 9), False),  # no sm_80..sm_89 cubin in this stand-in, no PTX
        (CUDA13_LIKE, (7, 7), True),  # sm_75 runs on 7.x with x >= 5
        (CUDA13_LIKE, (7, 0), False),  # V100 on a CUDA 13 wheel
        (CUDA13_LIKE, (10, 0), False),  # cubins run within their major only
        (CUDA12_LIKE, (7, 0), True),
        (CUDA12_LIKE, (10, 0), True),  # PTX 90 is compiled for newer GPUs
        (CUDA12_LIKE, (6, 1), False),
    ],
)
def test_cuda_compatibility_rule(archs, cc, runs):
    assert fatbin_archs(archs).runs_on(*cc) is runs


def _fake_onnxruntime(tmp_path: Path, fatbin: bytes) -> types.SimpleNamespace:
    capi = tmp_path / "onnxruntime" / "capi"
    capi.mkdir(parents=True)
    (capi / cuda_arch.CUDA_PROVIDER_LIBRARY).write_bytes(_elf({b".nv_fatbin": fatbin}))
    return types.SimpleNamespace(__file__=str(capi.parent / "__init__.py"), __version__="1.31.1")


def test_a_gpu_outside_the_wheels_kernels_is_refused_with_the_route_to_take(tmp_path, monkeypatch):
    ort = _fake_onnxruntime(tmp_path, CUDA13_LIKE)
    monkeypatch.setattr(cuda_arch, "compute_capability", lambda device_id=0: ("Tesla V100-SXM2-16GB", 7, 0))
    with pytest.raises(BackendError) as info:
        cuda_arch.check_cuda_kernels(ort)
    message = str(info.value)
    assert "Tesla V100-SXM2-16GB, compute capability 7.0" in message
    assert "onnxruntime-gpu 1.31.1 has CUDA kernels for (sm_75, sm_90, sm_120" in message
    assert 'pip install "embedrt[gpu-cuda12]"' in message
    monkeypatch.setattr(cuda_arch, "compute_capability", lambda device_id=0: ("NVIDIA B200", 10, 0))
    with pytest.raises(BackendError, match="install matrix in docs/gpu.md"):
        cuda_arch.check_cuda_kernels(ort)


def test_the_check_passes_a_supported_gpu_and_stays_quiet_when_it_cannot_read(tmp_path, monkeypatch):
    ort = _fake_onnxruntime(tmp_path, CUDA13_LIKE)
    monkeypatch.setattr(cuda_arch, "compute_capability", lambda device_id=0: ("NVIDIA H200", 9, 0))
    cuda_arch.check_cuda_kernels(ort)
    monkeypatch.setattr(cuda_arch, "compute_capability", lambda device_id=0: None)  # no driver
    cuda_arch.check_cuda_kernels(ort)
    monkeypatch.setattr(cuda_arch, "compute_capability", lambda device_id=0: pytest.fail("asked the GPU"))
    cuda_arch.check_cuda_kernels(types.SimpleNamespace(__file__=str(tmp_path / "elsewhere" / "__init__.py")))


def test_compute_capability_without_a_driver_is_none():
    if Path("/dev/nvidiactl").exists():
        pytest.skip("this machine has an NVIDIA driver")
    assert cuda_arch.compute_capability() is None


class _Session:
    def __init__(self, path, sess_options=None, providers=None):
        self.providers = providers

    def get_providers(self):
        return ["CPUExecutionProvider"]


def _fake_ort(events: list[str], says: str = "") -> types.SimpleNamespace:
    import onnxruntime

    fake = types.SimpleNamespace(
        **{name: getattr(onnxruntime, name) for name in ("SessionOptions", "GraphOptimizationLevel", "ExecutionMode")}
    )
    fake.get_available_providers = lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"]

    def preload_dlls():
        events.append("preload")
        print(says)

    def session(*args, **kwargs):
        events.append("session")
        return _Session(*args, **kwargs)

    fake.preload_dlls, fake.InferenceSession = preload_dlls, session
    return fake


def test_preload_dlls_runs_once_before_the_first_session_and_its_words_reach_the_error(tmp_path, monkeypatch, capsys):
    events: list[str] = []
    fake = _fake_ort(events, says="Failed to load libcudnn.so.9: cannot open shared object file")
    monkeypatch.setattr(ort_cuda, "import_onnxruntime", lambda: fake)
    monkeypatch.setattr(ort_cuda, "check_cuda_kernels", lambda ort, device_id=0: events.append("kernels"))
    monkeypatch.setattr(ort_cuda, "_PRELOADED", {})
    for _ in range(2):
        with pytest.raises(BackendError, match=r"fell back to CPUExecutionProvider.*Failed to load libcudnn\.so\.9"):
            ort_cuda.gpu_session(tmp_path / "model.onnx", [("CUDAExecutionProvider", {"device_id": 0})])
    assert events == ["preload", "kernels", "session", "kernels", "session"]
    assert capsys.readouterr().out == ""  # stdout may carry embeddings: preload_dlls' prints are kept off it


def test_an_onnxruntime_without_preload_dlls_is_not_asked(tmp_path, monkeypatch):
    events: list[str] = []
    fake = _fake_ort(events)
    del fake.preload_dlls
    monkeypatch.setattr(ort_cuda, "import_onnxruntime", lambda: fake)
    monkeypatch.setattr(ort_cuda, "check_cuda_kernels", lambda ort, device_id=0: None)
    with pytest.raises(BackendError, match="fell back"):
        ort_cuda.gpu_session(tmp_path / "model.onnx", [("CUDAExecutionProvider", {})])
    assert events == ["session"]


def test_both_onnxruntime_builds_installed_is_named(tmp_path, monkeypatch):
    fake = _fake_ort([])
    fake.get_available_providers = lambda: ["CPUExecutionProvider"]  # the CPU build's module won
    monkeypatch.setattr(ort_cuda, "import_onnxruntime", lambda: fake)
    monkeypatch.setattr(ort_cuda, "version", lambda name: {"onnxruntime": "1.32.0", "onnxruntime-gpu": "1.31.1"}[name])
    with pytest.raises(BackendError, match=r"onnxruntime 1\.32\.0 and onnxruntime-gpu 1\.31\.1 are both installed"):
        ort_cuda.gpu_session(tmp_path / "model.onnx", [("CUDAExecutionProvider", {})])


def test_no_kernel_image_at_run_time_is_explained():
    import numpy as np

    class Binding:
        def bind_ortvalue_input(self, name, value):
            pass

        def bind_output(self, name, device, device_id):
            pass

        def synchronize_inputs(self):
            pass

    class Failing:  # what a GPU outside the wheel's kernels does on its first batch
        def get_inputs(self):
            return [types.SimpleNamespace(name="input_ids")]

        def get_outputs(self):
            return [types.SimpleNamespace(name="out")]

        def io_binding(self):
            return Binding()

        def run_with_iobinding(self, binding):
            raise RuntimeError(NO_KERNEL)

    runner = ort_cuda.BoundRunner(Failing(), device="cpu")
    with pytest.raises(BackendError, match=r"no kernel image.*install matrix in docs/gpu\.md.*gpu-cuda12"):
        runner.run({"input_ids": np.ones((1, 3), np.int64)})


def test_the_onnxruntime_tensorrt_provider_gets_no_precision_flags(tmp_path, monkeypatch):
    """Either flag makes the provider build a weakly typed network; the fp16 graph carries its own types."""
    seen = []
    monkeypatch.setattr(trt_backend, "graph_input_names", lambda path: ("input_ids", "attention_mask"))
    monkeypatch.setattr(trt_backend, "gpu_session", lambda path, providers, threads=1: seen.append(providers))
    monkeypatch.setattr(trt_backend, "BoundRunner", lambda session: types.SimpleNamespace(input_names=()))
    trt_backend.OrtTensorrtBackend(tmp_path / "g.onnx", tmp_path, Profile.parse("1x1", "8x16", "16x32", 64))
    (((name, options), *_),) = seen
    assert name == "TensorrtExecutionProvider"
    assert not any(key in options for key in ("trt_fp16_enable", "trt_int8_enable", "trt_layer_norm_fp32_fallback"))
    assert options["trt_profile_max_shapes"] == "input_ids:16x32,attention_mask:16x32"


def test_libnvinfer_versions_are_read_as_tensorrt_writes_them(monkeypatch):
    assert version_from_int(100400) == "10.4.0"
    assert version_from_int(101303) == "10.13.3"
    assert version_from_int(8601) == "8.6.1"
    assert trt_engines.nvinfer_version("libnvinfer-that-is-not-here.so.10") == ""
    # The library already mapped into the process is the one asked, not the Python package.
    opened = []
    loaded = "/site/tensorrt_libs/libnvinfer.so.10"
    monkeypatch.setattr(trt_engines, "_loaded_library", lambda prefix: loaded if prefix == "libnvinfer.so" else None)

    def cdll(path):
        opened.append(path)
        return types.SimpleNamespace(getInferLibVersion=lambda: 101303)

    monkeypatch.setattr(trt_engines.ctypes, "CDLL", cdll)
    assert trt_engines.nvinfer_version() == "10.13.3" and opened == [loaded]


H200 = GpuTarget("NVIDIA H200", "9.0", "10.13.3.9", nvinfer="10.13.3", onnxruntime="1.31.1")
SHA = "ab" * 32


def _fake_cache(onnx_path: Path, cache: Path, profile: Profile, workspace_gb: float) -> None:
    cache.mkdir(parents=True)
    (cache / "x.engine").touch()


def test_the_onnxruntime_runner_is_keyed_on_the_loaded_libnvinfer_and_onnxruntime(
    tiny_fp16_bundle, copy_bundle, monkeypatch
):
    bundle = copy_bundle(tiny_fp16_bundle)
    monkeypatch.setattr(builder, "probe_gpu", lambda purpose: H200)
    monkeypatch.setattr(builder, "build_ort_engine_cache", _fake_cache)
    record = builder.build_engine(bundle, (None, "8x16", "16x64"), workspace_gb=1, runner="onnxruntime")
    assert record.tensorrt == "10.13.3" and record.onnxruntime == "1.31.1"
    assert record.file.startswith("engines/ort-trt-cache-nvidia-h200-sm90-trt10.13.3-ort1.31.1-")
    native = builder.engine_file_name(H200.for_runner("tensorrt"), SHA)  # the Python package's TensorRT
    assert native == f"engine-nvidia-h200-sm90-trt10.13.3.9-{SHA[:12]}.plan"

    engines = [record.to_dict()]
    assert choose_engine(engines, H200, record.model_sha256, bundle) == record
    newer_ort = GpuTarget("NVIDIA H200", "9.0", "10.13.3.9", nvinfer="10.13.3", onnxruntime="1.32.0")
    with pytest.raises(BackendError, match="built with ONNX Runtime 1.31.1, this machine has 1.32.0"):
        choose_engine(engines, newer_ort, record.model_sha256, bundle)
    other_lib = GpuTarget("NVIDIA H200", "9.0", "10.13.3.9", nvinfer="10.16.1", onnxruntime="1.31.1")
    with pytest.raises(BackendError, match="built with TensorRT 10.13.3, this machine has 10.16.1"):
        choose_engine(engines, other_lib, record.model_sha256, bundle)
    old = EngineRecord.from_dict({**record.to_dict(), "onnxruntime": ""})  # recorded before the key had it
    assert old.refusal(H200.for_runner("onnxruntime"), record.model_sha256).startswith("built with ONNX Runtime")


@pytest.mark.parametrize(
    "here, says",
    [
        (GpuTarget("NVIDIA H200", "9.0", "10.13.3.9", onnxruntime="1.31.1"), "libnvinfer none loadable"),
        (GpuTarget("NVIDIA H200", "9.0", "11.4.0.106", nvinfer="11.4.0", onnxruntime="1.31.1"), "libnvinfer 11.4.0"),
    ],
)
def test_the_onnxruntime_runner_needs_libnvinfer_10(here, says, tiny_fp16_bundle, copy_bundle, monkeypatch):
    monkeypatch.setattr(builder, "probe_gpu", lambda purpose: here)
    monkeypatch.setattr(builder, "build_ort_engine_cache", lambda *args: pytest.fail("tried to build"))
    with pytest.raises(BackendError, match=rf"links libnvinfer\.so\.10.*{says}.*embedrt\[gpu,tensorrt\]"):
        builder.build_engine(copy_bundle(tiny_fp16_bundle), (None, "8x16", "16x64"), runner="onnxruntime")


def _requirements(extra: str) -> list[str]:
    import tomllib

    pyproject = Path(__file__).resolve().parents[3] / "pyproject.toml"
    return tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]["optional-dependencies"][extra]


def test_the_gpu_extras_install_a_stack_that_loads():
    from packaging.requirements import Requirement

    def spec(extra: str, name: str) -> Requirement:
        return next(r for r in map(Requirement, _requirements(extra)) if r.name == name)

    cuda13 = spec("gpu", "onnxruntime-gpu")
    assert cuda13.extras == {"cuda", "cudnn"}  # CUDA and cuDNN from pip: preload_dlls() finds them
    assert "1.26.0" not in cuda13.specifier and "1.31.1" in cuda13.specifier  # 1.27+: CUDA 13
    cuda12 = spec("gpu-cuda12", "onnxruntime-gpu")
    assert cuda12.extras == {"cuda", "cudnn"} and "1.26.0" in cuda12.specifier and "1.27.0" not in cuda12.specifier
    # ONNX Runtime's TensorRT provider links libnvinfer.so.10: TensorRT 11 cannot load in it.
    for extra, package in (("tensorrt", "tensorrt-cu13"), ("tensorrt-cuda12", "tensorrt-cu12")):
        trt = spec(extra, package)
        assert "10.13.3.9" in trt.specifier or extra == "tensorrt-cuda12"
        assert "11.0.0.114" not in trt.specifier
    assert "10.5.0" not in spec("tensorrt-cuda12", "tensorrt-cu12").specifier  # TensorRT 10.5 dropped Volta
