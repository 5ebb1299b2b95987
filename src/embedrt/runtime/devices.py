"""What the runtime can run, by name only: devices, engines, precisions, and what ``auto`` picks.

No engine is imported here. The CLI, the server settings and :mod:`embedrt.runtime.backends.select`
all read these tables, so ``--device``, ``--engine`` and ``--precision`` accept, explain and start the
same things.
"""

from __future__ import annotations

from embedrt.variants import (
    DEVICES,
    ENGINES,
    OPENVINO,
    RUN_PRECISIONS,
    STORED_PRECISION,
    device_precisions,
    engines_running,
)

AUTO = "auto"
# DEVICES (the CPU, ONNX Runtime's CUDA provider, a TensorRT engine), RUN_PRECISIONS (stored ones, and bf16:
# OpenVINO runs its fp32 IR in bfloat16 on CPUs with native bf16 instructions) and STORED_PRECISION (the
# stored precision each run precision reads) come from the variant table, embedrt.variants.
__all__ = [
    "AUTO",
    "AUTO_PRECISION",
    "CPU_ENGINES",
    "CPU_PREFERENCE",
    "DEVICES",
    "DEVICE_PRECISIONS",
    "ENGINE_CHOICES",
    "RUN_PRECISIONS",
    "STORED_PRECISION",
]
#: What ``precision="auto"`` picks per device, best first (policy). Never bf16: it is opted into, like int8 on GPUs.
AUTO_PRECISION = {"cpu": ("int8", "fp32"), "cuda": ("fp16", "fp32"), "tensorrt": ("fp16",)}
#: Precisions each device can run: those of the table's variants for it. ONNX Runtime's int8 runs QAttention and
#: MatMulIntegerToFloat (static scales; older bundles: DynamicQuantizeLinear + MatMulInteger): the CUDA
#: provider has no kernels for them, so its row lists the CPU only.
DEVICE_PRECISIONS = {device: device_precisions(device) for device in DEVICES}
#: Policy: engines ``engine="auto"`` tries first for a precision on the CPU, before the others in the table's
#: order. See the README, "Which engine": static int8 on OpenVINO is batch-invariant and the fastest int8
#: measured; fp32 is as fast on both, and ONNX Runtime's fused graph needs no second runtime.
CPU_PREFERENCE = {"int8": (OPENVINO,)}
#: Engines that run each precision on the CPU, in the order ``engine="auto"`` tries them (an engine is
#: skipped when the bundle has no variant for it or its package is not installed).
CPU_ENGINES = {
    precision: tuple(dict.fromkeys((*CPU_PREFERENCE.get(precision, ()), *engines_running(precision, "cpu"))))
    for precision in DEVICE_PRECISIONS["cpu"]
}
#: ``engine=`` values: auto, or one engine. GPUs run ONNX Runtime (CUDA) or TensorRT, never OpenVINO.
ENGINE_CHOICES = (AUTO, *ENGINES)
