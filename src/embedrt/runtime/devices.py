"""What the runtime can run, by name only: devices, engines, precisions, and what ``auto`` picks.

No engine is imported here. The CLI, the server settings and :mod:`embedrt.runtime.backends.select`
all read these tables, so ``--device``, ``--engine`` and ``--precision`` accept, explain and start the
same things.
"""

from __future__ import annotations

from embedrt.bundle import ENGINES, PRECISIONS

AUTO = "auto"
#: Devices ``Encoder.load`` accepts: the CPU, ONNX Runtime's CUDA provider, a TensorRT engine.
DEVICES = ("cpu", "cuda", "tensorrt")
#: Precisions a caller may ask for: those variants are stored in, and bf16 (OpenVINO runs its fp32 IR
#: in bfloat16 on CPUs with native bf16 instructions).
RUN_PRECISIONS = (*PRECISIONS, "bf16")
#: The stored precision each run precision reads.
STORED_PRECISION = {"bf16": "fp32"}
#: What ``precision="auto"`` picks per device, best first. Never bf16: it is opted into, like int8 on GPUs.
AUTO_PRECISION = {"cpu": ("int8", "fp32"), "cuda": ("fp16", "fp32"), "tensorrt": ("fp16",)}
#: Precisions each device can run. ONNX Runtime's int8 runs QAttention and MatMulIntegerToFloat (static
#: scales; older bundles: DynamicQuantizeLinear + MatMulInteger): the CUDA provider has no kernels for them.
DEVICE_PRECISIONS = {"cpu": RUN_PRECISIONS, "cuda": ("fp16", "fp32"), "tensorrt": ("fp16",)}
#: Engines that run each precision on the CPU, in the order ``engine="auto"`` tries them (an engine is
#: skipped when the bundle has no variant for it or its package is not installed). See the README,
#: "Which engine": static int8 on OpenVINO is batch-invariant and the fastest int8 measured; fp32 is
#: as fast on both, and ONNX Runtime's fused graph needs no second runtime.
CPU_ENGINES = {
    "int8": ("openvino", "onnxruntime"),
    "fp32": ("onnxruntime", "openvino"),
    "bf16": ("openvino",),
    "fp16": ("onnxruntime",),
}
#: ``engine=`` values: auto, or one engine. GPUs run ONNX Runtime (CUDA) or TensorRT, never OpenVINO.
ENGINE_CHOICES = (AUTO, *ENGINES)
