"""What the runtime can run, by name only: devices, and the precisions each runs. No engine is imported here.

The CLI, the server settings and :mod:`embedrt.runtime.backends.select` all read these tables, so
``--device``'s choices, its help and the engine that starts cannot disagree.
"""

from __future__ import annotations

#: Devices ``Encoder.load`` accepts: ONNX Runtime on the CPU, ONNX Runtime's CUDA provider, a TensorRT engine.
DEVICES = ("cpu", "cuda", "tensorrt")
#: What ``precision="auto"`` picks per device, best first.
AUTO_PRECISION = {"cpu": ("int8", "fp32"), "cuda": ("fp16", "fp32"), "tensorrt": ("fp16",)}
#: Precisions each device can run. int8 is dynamic quantization (MatMulInteger, DynamicQuantizeLinear):
#: the CUDA provider has no kernels for it and would hand those nodes to the CPU.
DEVICE_PRECISIONS = {"cpu": ("fp32", "int8", "fp16"), "cuda": ("fp16", "fp32"), "tensorrt": ("fp16",)}
