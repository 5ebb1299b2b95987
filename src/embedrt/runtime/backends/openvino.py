"""OpenVINO on the CPU: an IR (fp32, or static int8 from NNCF) compiled with settings chosen on purpose.

- Precision is always explicit. On a CPU with native bf16 the plugin's default is to run an fp32
  model in bf16, silently; ``fp32`` passes ``INFERENCE_PRECISION_HINT=f32`` and ``bf16`` passes
  ``bf16``, and the compiled model's own reading of the hint is checked, since a hint the CPU
  cannot honour is otherwise ignored without a word. bf16 needs native bf16 instructions
  (AVX512_BF16 or AMX): elsewhere it would be emulated, many times slower, so it is refused.
- Nothing phones home: ``import openvino`` (through ``openvino.tools.ovc``) and NNCF send usage
  events through the ``openvino-telemetry`` package unless it cannot be imported, so the first import
  happens with it blocked (:func:`import_openvino`).
- Threads follow the ONNX Runtime path: one stream, ``threads`` inference threads, latency mode.
- Batch invariance (static int8): OpenVINO fuses attention into one JIT kernel (a "snippets" subgraph)
  whose order of additions, and so the last bit, depends on the padded width of the batch. Static int8
  requantizes right after attention and turns that bit, for a few texts in a thousand, into a whole int8
  step: all-MiniLM-L6-v2 alone vs in batches of 32, 10 of 1,024 Chinese and 10 of 1,024 English STS texts
  below cosine 0.99999 (worst 0.99968). At one width the kernel's rows do not depend on the batch size, so
  the encoder's default pads each text to a width set by its own length (length buckets, in
  :mod:`embedrt.runtime.batching`) and keeps the kernel. With ``buckets=False`` the fusion is off instead
  (``SNIPPETS_MODE=DISABLE``, :attr:`OpenVinoSettings.batch_invariant`): attention runs as separate
  MatMul/Softmax nodes whose rows do not depend on padding, bit-identical too, slower for one text. This
  model has no other snippets (its shapes are dynamic), so the setting changes attention only
  (docs/openvino.md, Batch invariance).
"""

from __future__ import annotations

import contextlib
import sys
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from embedrt.errors import BackendError
from embedrt.extras import missing_extra

_ABSENT = object()
#: What ``INFERENCE_PRECISION_HINT`` reads back as, per embedrt precision hint.
_HINT_NAMES = {"f32": ("f32", "float32"), "bf16": ("bf16", "bfloat16")}


@contextlib.contextmanager
def no_telemetry() -> Iterator[None]:
    """While active, importing ``openvino_telemetry`` fails, so OpenVINO and NNCF bind their no-op stubs.

    Only the first import of ``openvino`` (and ``nncf``) in a process decides; if the application
    imported them before, its choice stands. ``openvino_telemetry`` stays importable afterwards.
    """
    saved = sys.modules.get("openvino_telemetry", _ABSENT)
    if saved is _ABSENT:
        sys.modules["openvino_telemetry"] = None  # type: ignore[assignment]
    try:
        yield
    finally:
        if saved is _ABSENT and sys.modules.get("openvino_telemetry", _ABSENT) is None:
            del sys.modules["openvino_telemetry"]


def import_openvino(purpose: str = "running an OpenVINO variant") -> Any:
    """The ``openvino`` module, imported without telemetry, or one line naming the extra."""
    try:
        with no_telemetry():
            import openvino
    except ImportError as err:
        raise missing_extra("openvino", purpose) from err
    return openvino


def native_bf16(core: Any) -> bool:
    """Whether this CPU computes bf16 natively (AVX512_BF16 or AMX), as OpenVINO's CPU plugin reports it."""
    return "BF16" in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")


@dataclass(frozen=True)
class OpenVinoSettings:
    """How a compiled model uses the machine: ``threads``, and the precision matrices are computed in."""

    threads: int
    precision: str = "f32"  # "f32" or "bf16"
    #: Attention unfused, so a row's vector does not depend on how wide its batch is padded (see above).
    batch_invariant: bool = False
    #: OpenVINO streams sharing the ``threads``, each running one infer request (:mod:`embedrt.runtime.streams`).
    streams: int = 1

    def compile_config(self) -> dict[str, Any]:
        """The CPU plugin's configuration for these settings (``benchmarks/ov_overhead.py`` uses it too)."""
        config: dict[str, Any] = {
            "INFERENCE_NUM_THREADS": self.threads,
            "NUM_STREAMS": self.streams,
            "PERFORMANCE_HINT": "LATENCY" if self.streams == 1 else "THROUGHPUT",
            "INFERENCE_PRECISION_HINT": self.precision,
        }
        if self.batch_invariant:
            config["SNIPPETS_MODE"] = "DISABLE"
        return config


class OpenVinoBackend:
    """One compiled IR; each calling thread gets its own infer request (they are not thread-safe)."""

    def __init__(self, model_path: Path, settings: OpenVinoSettings) -> None:
        ov = import_openvino()
        if settings.precision not in _HINT_NAMES:
            raise BackendError(f"unknown OpenVINO precision {settings.precision!r}; use f32 or bf16")
        core = ov.Core()
        if settings.precision == "bf16" and not native_bf16(core):
            raise BackendError(
                "precision 'bf16' needs a CPU with native bf16 instructions (AVX512_BF16 or AMX) and this one has "
                "none: emulated bf16 is many times slower than fp32. Use precision 'fp32', or 'int8' for speed"
            )
        try:
            self._compiled = core.compile_model(str(model_path), "CPU", settings.compile_config())
        except RuntimeError as err:
            raise BackendError(
                f"OpenVINO could not compile {model_path.name} ({str(err).splitlines()[0]}); re-export the "
                "bundle with `embedrt export --force`"
            ) from err
        effective = str(self._compiled.get_property("INFERENCE_PRECISION_HINT")).lower()
        if not any(name in effective for name in _HINT_NAMES[settings.precision]):
            raise BackendError(f"OpenVINO compiled {model_path.name} in {effective}, not {settings.precision}")
        self.settings = settings
        self.name = "openvino-cpu"
        self.input_names = tuple(port.get_any_name() for port in self._compiled.inputs)
        self._local = threading.local()

    def run(self, batch: Mapping[str, np.ndarray]) -> np.ndarray:
        request = getattr(self._local, "request", None)
        if request is None:
            request = self._local.request = self._compiled.create_infer_request()
        try:
            request.infer({name: batch[name] for name in self.input_names}, share_inputs=True)
        except RuntimeError as err:
            raise BackendError(f"OpenVINO failed on a batch of shape {batch['input_ids'].shape}: {err}") from err
        # A view of the request's output buffer: this thread pools it before its next run overwrites it.
        return request.get_output_tensor(0).data
