"""Choose and start the engine for a (bundle, precision, device): the one place devices map to engines."""

from __future__ import annotations

from embedrt.bundle import Bundle
from embedrt.runtime.backends.base import Backend
from embedrt.runtime.backends.ort import OrtBackend, OrtSettings, default_threads

#: Devices ``Encoder.load`` accepts.
DEVICES = ("cpu", "cuda")
#: What ``precision="auto"`` picks per device, best first.
AUTO_PRECISION = {"cpu": ("int8", "fp32"), "cuda": ("fp16", "fp32")}


def open_backend(bundle: Bundle, precision: str, device: str, threads: int | None, verify: bool = True) -> Backend:
    """Start the engine that runs ``precision`` of ``bundle`` on ``device``."""
    model_path = bundle.variant_path(precision, verify=verify)
    return OrtBackend(model_path, device, OrtSettings(threads=threads or default_threads()))
