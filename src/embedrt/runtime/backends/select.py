"""Choose and start the engine for a (bundle, precision, device): the one place devices map to engines."""

from __future__ import annotations

from embedrt.bundle import Bundle
from embedrt.errors import BackendError, BundleError
from embedrt.runtime.backends.base import Backend
from embedrt.runtime.backends.ort import OrtBackend, OrtSettings
from embedrt.runtime.devices import DEVICE_PRECISIONS, DEVICES
from embedrt.runtime.threads import default_threads


def open_backend(bundle: Bundle, precision: str, device: str, threads: int | None, verify: bool = True) -> Backend:
    """Start the engine that runs ``precision`` of ``bundle`` on ``device``; never a different device."""
    if device not in DEVICES:
        raise BundleError(f"unknown device {device!r}; use one of: {', '.join(DEVICES)}")
    if device == "tensorrt":
        from embedrt.runtime.backends.tensorrt import open_tensorrt_backend

        return open_tensorrt_backend(bundle, precision, verify=verify)
    if precision not in DEVICE_PRECISIONS[device]:
        raise BackendError(
            f"precision {precision!r} does not run on device={device!r} (it runs: "
            f"{', '.join(DEVICE_PRECISIONS[device])}); pick one of those, or device='cpu' for int8"
        )
    model_path = bundle.variant_path(precision, verify=verify)
    if device == "cuda":
        from embedrt.runtime.backends.ort_cuda import OrtCudaBackend

        return OrtCudaBackend(model_path, threads=threads or 1)
    return OrtBackend(model_path, device, OrtSettings(threads=threads or default_threads()))
