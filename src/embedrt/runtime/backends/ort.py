"""ONNX Runtime engine, with session options chosen on purpose rather than left to defaults."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from embedrt.errors import BackendError
from embedrt.extras import install_command, missing_extra

#: Execution providers each embedrt device needs, in ONNX Runtime's names.
DEVICE_PROVIDERS = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
}


@dataclass(frozen=True)
class OrtSettings:
    """How a session uses the machine.

    ``threads`` intra-op threads with one inter-op thread and sequential execution: a BERT graph is
    a chain, so inter-op parallelism only adds threads that fight the intra-op pool. ``spin`` keeps
    workers busy-waiting between ops (faster for back-to-back batches, burns CPU when idle).
    """

    threads: int
    spin: bool = True
    #: Fold ``DequantizeLinear`` of constant tables at load (an int8-stored word table; see the manifest's
    #: ``word_table``). ONNX Runtime keeps such nodes for QDQ fusions otherwise and would run them every call.
    fold_dequantize: bool = False


def import_onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError as err:
        raise missing_extra("onnxruntime", "running a bundle on the CPU") from err
    return onnxruntime


class OrtBackend:
    """One ``InferenceSession`` for one graph on one device."""

    def __init__(self, model_path: Path, device: str = "cpu", settings: OrtSettings | None = None) -> None:
        ort = import_onnxruntime()
        if settings is None:
            from embedrt.runtime.threads import default_threads

            settings = OrtSettings(threads=default_threads())
        provider = DEVICE_PROVIDERS.get(device)
        if provider is None:
            raise BackendError(
                f"device {device!r} is not an ONNX Runtime device here; use one of: {', '.join(DEVICE_PROVIDERS)}"
            )
        available = ort.get_available_providers()
        if provider not in available:
            raise BackendError(
                f"ONNX Runtime has no {provider} (available: {', '.join(available)}); for device={device!r} "
                "install the GPU build instead of the CPU one: "
                f"pip uninstall -y onnxruntime && {install_command('gpu')}"
            )
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.intra_op_num_threads = settings.threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if settings.spin else "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")
        if settings.fold_dequantize:
            options.add_session_config_entry("session.disable_quant_qdq", "1")
        try:
            self._session = ort.InferenceSession(str(model_path), sess_options=options, providers=[provider])
        except Exception as err:  # ORT raises its own exception types, not exported stably
            raise BackendError(
                f"ONNX Runtime could not load {model_path} ({str(err).splitlines()[0]}); the file may be "
                "corrupt or from a newer exporter: re-export the bundle with `embedrt export --force`"
            ) from err
        self.name = f"onnxruntime-{device}"
        self.input_names = tuple(node.name for node in self._session.get_inputs())
        self._output_name = self._session.get_outputs()[0].name
        self.settings = settings

    def run(self, batch: Mapping[str, np.ndarray]) -> np.ndarray:
        feed = {name: batch[name] for name in self.input_names}
        try:
            (hidden,) = self._session.run([self._output_name], feed)
        except Exception as err:
            raise BackendError(f"ONNX Runtime failed on a batch of shape {feed['input_ids'].shape}: {err}") from err
        return hidden
