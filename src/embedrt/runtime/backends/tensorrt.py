"""TensorRT engines: a built ``.plan`` run with ``execute_async_v3``, or ONNX Runtime's TensorRT provider.

Which one runs is written in the manifest's engine record (``embedrt build-engine --runner``, see
:mod:`embedrt.runtime.backends.trt_engines`); both
need an engine built on this machine first, and a missing or mismatched one is an error, never a
slower path. ``tensorrt`` and ``cuda-python`` are imported only when an engine is opened.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from embedrt.bundle import Bundle, sha256_file
from embedrt.errors import BackendError, BundleError
from embedrt.runtime.backends.base import Backend
from embedrt.runtime.backends.ort import import_onnxruntime
from embedrt.runtime.backends.ort_cuda import BoundRunner, gpu_session
from embedrt.runtime.backends.trt_engines import (
    TRT_VARIANT,
    EngineRecord,
    Profile,
    choose_engine,
    cuda_check,
    import_cudart,
    import_tensorrt,
    no_engine_error,
    probe_gpu,
)


def _check_width(width: int, profile: Profile, where: str) -> None:
    if width > profile.max.seq:
        raise BackendError(
            f"a batch of {width} tokens exceeds the engine's profile (max {profile.max}); rebuild with "
            f"`embedrt build-engine {where} --max-shape {profile.max.batch}x{width}`"
        )


def _in_chunks(batch: Mapping[str, np.ndarray], rows: int) -> Iterator[dict[str, np.ndarray]]:
    """Split a batch along its rows so no piece exceeds the profile's maximum batch."""
    total = len(batch["input_ids"])
    for start in range(0, total, rows):
        yield {name: value[start : start + rows] for name, value in batch.items()}


def graph_input_names(model_path: Path) -> tuple[str, ...]:
    """The inputs ``model_path`` declares, read by a CPU session that loads the graph without optimizing it.

    The TensorRT provider needs a profile shape per input before its own session exists.
    """
    ort = import_onnxruntime()
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
    except Exception as err:  # ORT raises its own exception types, not exported stably
        raise BackendError(f"ONNX Runtime could not read the inputs of {model_path.name}: {err}") from err
    return tuple(node.name for node in session.get_inputs())


class TensorrtBackend:
    """A serialized engine on one GPU, run with ``execute_async_v3`` on device buffers sized for the profile."""

    def __init__(self, plan: Path, record: EngineRecord, dim: int, device_id: int = 0) -> None:
        purpose = "running a TensorRT engine"
        trt = import_tensorrt(purpose)
        self._cudart = cudart = import_cudart(purpose)
        self._profile = Profile.from_dict(record.profile)
        cuda_check(cudart, cudart.cudaSetDevice(device_id), "cudaSetDevice")
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        self._engine = self._runtime.deserialize_cuda_engine(plan.read_bytes())
        if self._engine is None:
            raise BackendError(
                f"TensorRT {trt.__version__} could not load {plan.name} (built with TensorRT {record.tensorrt} "
                f"for {record.gpu}); rebuild it here with `embedrt build-engine`"
            )
        self._context = self._engine.create_execution_context()
        names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
        inputs = [n for n in names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if n not in inputs]
        self.input_names = tuple(inputs)
        self._output = outputs[0]
        self._dtypes = {n: np.dtype(trt.nptype(self._engine.get_tensor_dtype(n))) for n in names}
        # One device buffer per tensor, sized for the profile's largest batch, allocated once.
        most = self._profile.max.batch * self._profile.max.seq
        self._buffers = {}
        for name in names:
            count = most * (dim if name == self._output else 1)
            self._buffers[name] = cuda_check(
                cudart, cudart.cudaMalloc(count * self._dtypes[name].itemsize), "cudaMalloc"
            )
            self._context.set_tensor_address(name, int(self._buffers[name]))
        self._stream = cuda_check(cudart, cudart.cudaStreamCreate(), "cudaStreamCreate")
        self.name = "tensorrt"
        self._where = str(plan.parent.parent)

    def run(self, batch: Mapping[str, np.ndarray]) -> np.ndarray:
        _check_width(batch["input_ids"].shape[1], self._profile, self._where)
        parts = [self._run_chunk(part) for part in _in_chunks(batch, self._profile.max.batch)]
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def _run_chunk(self, batch: Mapping[str, np.ndarray]) -> np.ndarray:
        cudart = self._cudart
        h2d = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        stream = self._stream  # a cudaStream_t, passed as is to cudart and to TensorRT, as NVIDIA's samples do
        keep = []  # host arrays must outlive the asynchronous copies
        for name in self.input_names:
            host = np.ascontiguousarray(batch[name], dtype=self._dtypes[name])
            keep.append(host)
            cuda_check(
                cudart,
                cudart.cudaMemcpyAsync(self._buffers[name], host.ctypes.data, host.nbytes, h2d, stream),
                "copy to GPU",
            )
            if not self._context.set_input_shape(name, host.shape):
                raise BackendError(f"{name} of shape {host.shape} is outside the engine's profile {self._profile}")
        if not self._context.execute_async_v3(stream_handle=stream):
            raise BackendError(f"TensorRT failed on a batch of shape {keep[0].shape}")
        out = np.empty(tuple(self._context.get_tensor_shape(self._output)), dtype=self._dtypes[self._output])
        d2h = cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        cuda_check(
            cudart,
            cudart.cudaMemcpyAsync(out.ctypes.data, self._buffers[self._output], out.nbytes, d2h, stream),
            "copy to host",
        )
        cuda_check(cudart, cudart.cudaStreamSynchronize(stream), "cudaStreamSynchronize")
        return out.astype(np.float32, copy=False)

    def close(self) -> None:
        """Free the device buffers and the stream (also done at garbage collection)."""
        for pointer in getattr(self, "_buffers", {}).values():
            self._cudart.cudaFree(pointer)
        self._buffers = {}
        if getattr(self, "_stream", None) is not None:
            self._cudart.cudaStreamDestroy(self._stream)
            self._stream = None

    def __del__(self) -> None:
        if getattr(self, "_cudart", None) is not None:
            self.close()


class OrtTensorrtBackend:
    """The ``fp16-trt`` graph on ONNX Runtime's TensorRT provider, its engine cached on disk.

    Explicit profile shapes make the provider build one engine for the whole range up front instead
    of rebuilding whenever a batch is larger than any seen so far.
    """

    def __init__(self, model_path: Path, cache_dir: Path, profile: Profile, workspace_gb: float = 4.0) -> None:
        self._profile = profile
        names = graph_input_names(model_path)
        options: dict[str, Any] = {
            "device_id": 0,
            "trt_engine_cache_enable": True,
            "trt_engine_cache_path": str(cache_dir),
            "trt_timing_cache_enable": True,
            "trt_timing_cache_path": str(cache_dir),
            "trt_max_workspace_size": int(workspace_gb * (1 << 30)),
            # No precision flags: the graph already says its precision (fp16, LayerNorm and Softmax fp32
            # between casts). With trt_fp16_enable or trt_int8_enable on, the provider builds a weakly
            # typed network and TensorRT may run those fp32 casts in fp16; with both off it builds a
            # strongly typed one that keeps the graph's types (onnxruntime PR #24298).
            "trt_profile_min_shapes": profile.ort_option("min", names),
            "trt_profile_opt_shapes": profile.ort_option("opt", names),
            "trt_profile_max_shapes": profile.ort_option("max", names),
        }
        providers: list[tuple[str, dict[str, Any]]] = [
            ("TensorrtExecutionProvider", options),
            ("CUDAExecutionProvider", {"device_id": 0}),
        ]
        self._runner = BoundRunner(gpu_session(model_path, providers))
        self.input_names = self._runner.input_names
        self.name = "onnxruntime-tensorrt"
        self._where = str(cache_dir.parent.parent)

    def run(self, batch: Mapping[str, np.ndarray]) -> np.ndarray:
        _check_width(batch["input_ids"].shape[1], self._profile, self._where)
        parts = [self._runner.run(part) for part in _in_chunks(batch, self._profile.max.batch)]
        return parts[0] if len(parts) == 1 else np.concatenate(parts)


def open_tensorrt_backend(bundle: Bundle, precision: str, verify: bool = True) -> Backend:
    """The engine listed in ``bundle`` that fits this GPU, for ``device="tensorrt"``."""
    if precision != "fp16" or TRT_VARIANT not in bundle.manifest.variants:
        raise BundleError(
            f"device='tensorrt' runs an engine built from the bundle's {TRT_VARIANT} graph (precision fp16); "
            + (
                f"precision {precision!r} has none. Use precision='fp16'"
                if TRT_VARIANT in bundle.manifest.variants
                else f"{bundle.root} has none: add it with `{bundle.export_command([TRT_VARIANT])}`, then "
                f"`embedrt build-engine {shlex.quote(str(bundle.root))}`"
            )
        )
    graph = bundle.variant_path(TRT_VARIANT, verify=verify)
    model_sha256 = bundle.variant(TRT_VARIANT).sha256
    if not bundle.manifest.engines:  # say this before asking for a GPU: it is the first thing to fix
        raise no_engine_error(bundle.root)
    here = probe_gpu("device='tensorrt'")
    record = choose_engine(bundle.manifest.engines, here, model_sha256, bundle.root)
    path = bundle.root / record.file
    if not path.exists():
        raise BundleError(
            f"{path} is listed in the manifest but missing; rebuild it with `embedrt build-engine {bundle.root}`"
        )
    if record.runner == "onnxruntime":
        if not any(path.glob("*.engine")):
            raise BundleError(
                f"{path} holds no engine; rebuild it with `embedrt build-engine {bundle.root} --runner onnxruntime`"
            )
        return OrtTensorrtBackend(graph, path, Profile.from_dict(record.profile))
    if verify and record.sha256 and sha256_file(path) != record.sha256:
        raise BundleError(f"{path} does not match its sha256 in the manifest; rebuild it with `embedrt build-engine`")
    return TensorrtBackend(path, record, bundle.manifest.dim)
