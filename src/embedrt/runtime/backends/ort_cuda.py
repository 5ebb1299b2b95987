"""ONNX Runtime on an NVIDIA GPU: the CUDA provider, with IO binding.

ONNX Runtime quietly falls back to the CPU when a GPU provider cannot start (missing CUDA
libraries, no device): it logs a warning and carries on. Serving at CPU speed while the caller
asked for a GPU is a bug, so every session here checks the providers it actually got.

With CUDA and cuDNN installed from pip (``onnxruntime-gpu[cuda,cudnn]``, what ``embedrt[gpu]``
installs) the libraries sit in ``site-packages/nvidia/`` where the dynamic loader does not look;
``import torch`` happens to load them, a torch-free process must call ``onnxruntime.preload_dlls()``
(onnxruntime >= 1.21) before its first CUDA or TensorRT session. :func:`gpu_session` does.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Mapping, Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np

from embedrt.errors import BackendError
from embedrt.extras import install_command
from embedrt.runtime.backends.cuda_arch import check_cuda_kernels, explain_kernel_error
from embedrt.runtime.backends.ort import import_onnxruntime

GPU_INSTALL = f"pip uninstall -y onnxruntime && {install_command('gpu')}  (onnxruntime-gpu)"


#: What ``preload_dlls()`` said, by the id of the onnxruntime module it was called on: once per process.
_PRELOADED: dict[int, str] = {}


def preload_cuda_libraries(ort: Any) -> str:
    """Call ``ort.preload_dlls()`` once per process where this onnxruntime has it; return what it printed.

    It prints (to stdout) the libraries it could not load; that text is kept for the error raised
    if the provider then fails to start, and kept off stdout, which may carry embeddings.
    """
    preload = getattr(ort, "preload_dlls", None)
    if preload is None:
        return ""
    if id(ort) not in _PRELOADED:
        said = io.StringIO()
        try:
            with contextlib.redirect_stdout(said):
                preload()
            _PRELOADED[id(ort)] = " ".join(said.getvalue().split())
        except (OSError, RuntimeError) as err:
            _PRELOADED[id(ort)] = f"onnxruntime.preload_dlls() failed: {err}"
    return _PRELOADED[id(ort)]


def _install_advice() -> str:
    """How to get the GPU build; both builds installed write one module, and the one installed last wins."""
    found = {}
    for distribution in ("onnxruntime", "onnxruntime-gpu"):
        try:
            found[distribution] = version(distribution)
        except PackageNotFoundError:
            continue
    if len(found) < 2:
        return f"install the GPU build: {GPU_INSTALL}"
    return (
        f"onnxruntime {found['onnxruntime']} and onnxruntime-gpu {found['onnxruntime-gpu']} are both installed and "
        f"share one module: pip uninstall -y onnxruntime onnxruntime-gpu && {install_command('gpu')}"
    )


def _preload_note(said: str) -> str:
    return f" (onnxruntime.preload_dlls() said: {said})" if said else ""


def gpu_session(model_path: Path, providers: Sequence[tuple[str, dict[str, Any]]], threads: int = 1) -> Any:
    """An ``InferenceSession`` whose first provider really is ``providers[0]``, else :class:`BackendError`.

    The CPU provider is appended for the few shape ops GPU providers hand back; ``threads`` sizes its pool.
    """
    ort = import_onnxruntime()
    wanted = providers[0][0]
    available = ort.get_available_providers()
    if wanted not in available:
        raise BackendError(
            f"ONNX Runtime here has no {wanted} (available: {', '.join(available)}); {_install_advice()}"
        )
    said = preload_cuda_libraries(ort)
    if wanted == "CUDAExecutionProvider":
        check_cuda_kernels(ort, int(providers[0][1].get("device_id", 0)))
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(
            str(model_path), sess_options=options, providers=[*providers, "CPUExecutionProvider"]
        )
    except Exception as err:  # ORT raises its own exception types, not exported stably
        raise BackendError(
            f"ONNX Runtime could not start {wanted} on {model_path.name}: {err}"
            f"{explain_kernel_error(err)}{_preload_note(said)}"
        ) from err
    active = session.get_providers()
    if not active or active[0] != wanted:
        raise BackendError(
            f"ONNX Runtime could not start {wanted} (it fell back to {', '.join(active) or 'nothing'}): no usable "
            "GPU, or the CUDA/cuDNN/TensorRT libraries it needs are missing; check `nvidia-smi` and the "
            f"install matrix in docs/gpu.md{_preload_note(said)}. embedrt does not run a GPU request on the CPU"
        )
    return session


class BoundRunner:
    """Runs one session through IO binding: inputs copied to the device once, outputs left there until read."""

    def __init__(self, session: Any, device: str = "cuda", device_id: int = 0) -> None:
        self._session = session
        self._device = device
        self._device_id = device_id
        self.input_names = tuple(node.name for node in session.get_inputs())
        self._output_name = session.get_outputs()[0].name

    def run(self, batch: Mapping[str, np.ndarray]) -> np.ndarray:
        ort = import_onnxruntime()
        binding = self._session.io_binding()
        try:
            for name in self.input_names:
                value = ort.OrtValue.ortvalue_from_numpy(
                    np.ascontiguousarray(batch[name]), self._device, self._device_id
                )
                binding.bind_ortvalue_input(name, value)
            # Allocated by ORT on the device at the shape it computes; copied to the host once, for pooling.
            binding.bind_output(self._output_name, self._device, self._device_id)
            self._session.run_with_iobinding(binding)
            (hidden,) = binding.copy_outputs_to_cpu()
        except Exception as err:
            raise BackendError(
                f"ONNX Runtime failed on a batch of shape {batch['input_ids'].shape}: {err}{explain_kernel_error(err)}"
            ) from err
        return np.asarray(hidden, dtype=np.float32)


class OrtCudaBackend:
    """A bundle graph (fp16 fused, or fp32) on ONNX Runtime's CUDA provider."""

    def __init__(self, model_path: Path, device_id: int = 0, threads: int = 1) -> None:
        options = {"device_id": device_id, "arena_extend_strategy": "kSameAsRequested"}
        self._runner = BoundRunner(
            gpu_session(model_path, [("CUDAExecutionProvider", options)], threads), "cuda", device_id
        )
        self.name = "onnxruntime-cuda"
        self.input_names = self._runner.input_names

    def run(self, batch: Mapping[str, np.ndarray]) -> np.ndarray:
        return self._runner.run(batch)
