"""TensorRT engine records and GPU probing: which engine in a bundle fits the GPU this process sees.

A TensorRT engine only runs on the GPU model, compute capability and TensorRT version that built it,
so ``embedrt build-engine`` (:mod:`embedrt.tools.build_engine`) lists each engine in the manifest
with those three facts, and the runtime (``device="tensorrt"``) picks the record that fits the GPU
it finds and refuses the others with the reason. Shapes, profiles and matching are plain Python
(tested on any machine); ``tensorrt`` and ``cuda-python`` are imported only when called for.
"""

from __future__ import annotations

import ctypes
import re
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from embedrt.errors import BackendError, BundleError, InputError
from embedrt.extras import missing_extra, needs
from embedrt.variants import deploy_variant

#: The variant engines are built from: plain ONNX (TensorRT cannot parse ``com.microsoft`` ops), fp16.
TRT_VARIANT = deploy_variant("tensorrt")
DEFAULT_MIN, DEFAULT_OPT, DEFAULT_MAX = "1x1", "32x64", "128x512"
_SHAPE = re.compile(r"^\s*(\d+)\s*[xX]\s*(\d+)\s*$")


@dataclass(frozen=True)
class Shape:
    """A (batch, sequence) input shape."""

    batch: int
    seq: int

    @classmethod
    def parse(cls, text: str, what: str = "shape") -> Shape:
        match = _SHAPE.match(text or "")
        if not match:
            raise InputError(f"{what} {text!r} is not BATCHxSEQ (e.g. 32x64)")
        shape = cls(int(match.group(1)), int(match.group(2)))
        if shape.batch < 1 or shape.seq < 1:
            raise InputError(f"{what} {text!r}: batch and sequence must be >= 1")
        return shape

    def __str__(self) -> str:
        return f"{self.batch}x{self.seq}"


@dataclass(frozen=True)
class Profile:
    """A TensorRT optimization profile over batch and sequence, the same for every input."""

    min: Shape
    opt: Shape
    max: Shape

    @classmethod
    def parse(cls, min_shape: str | None, opt_shape: str | None, max_shape: str | None, max_seq_length: int) -> Profile:
        """Parse and check ``min <= opt <= max`` per axis and ``max.seq <= max_seq_length``.

        A shape left as ``None`` takes its default with the sequence capped at ``max_seq_length``;
        a shape given explicitly is checked as given.
        """

        def pick(text: str | None, default: str, what: str) -> Shape:
            if text is not None:
                return Shape.parse(text, what)
            shape = Shape.parse(default, what)
            return Shape(shape.batch, min(shape.seq, max_seq_length))

        profile = cls(
            pick(min_shape, DEFAULT_MIN, "--min-shape"),
            pick(opt_shape, DEFAULT_OPT, "--opt-shape"),
            pick(max_shape, DEFAULT_MAX, "--max-shape"),
        )
        for axis in ("batch", "seq"):
            low, mid, high = (getattr(s, axis) for s in (profile.min, profile.opt, profile.max))
            if not low <= mid <= high:
                raise InputError(
                    f"profile {axis} must satisfy min <= opt <= max, got {low} / {mid} / {high} "
                    f"(--min-shape {profile.min} --opt-shape {profile.opt} --max-shape {profile.max})"
                )
        if profile.max.seq > max_seq_length:
            raise InputError(
                f"--max-shape {profile.max}: sequence {profile.max.seq} exceeds the bundle's max_seq_length "
                f"{max_seq_length}; texts are truncated to {max_seq_length} tokens, use at most "
                f"{profile.max.batch}x{max_seq_length}"
            )
        return profile

    def __str__(self) -> str:
        return f"{self.min}..{self.max} (opt {self.opt})"

    def to_dict(self) -> dict[str, list[int]]:
        return {name: [s.batch, s.seq] for name, s in (("min", self.min), ("opt", self.opt), ("max", self.max))}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Profile:
        return cls(*(Shape(int(data[k][0]), int(data[k][1])) for k in ("min", "opt", "max")))

    def ort_option(self, which: str, input_names: tuple[str, ...]) -> str:
        """ONNX Runtime's ``trt_profile_*_shapes`` value: ``input_ids:1x1,attention_mask:1x1,...``."""
        shape = getattr(self, which)
        return ",".join(f"{name}:{shape}" for name in input_names)


@dataclass(frozen=True)
class GpuTarget:
    """What a TensorRT engine is bound to.

    ``tensorrt`` is the version of whatever builds and runs the engine: the Python ``tensorrt``
    package for ``.plan`` files; for ONNX Runtime's TensorRT provider, the ``libnvinfer`` loaded in
    this process (``nvinfer``), which is what the provider links, together with the ``onnxruntime``
    version (ONNX Runtime's documentation: rebuild the engine cache when either changes).
    """

    gpu: str
    compute_capability: str  # "8.6"
    tensorrt: str  # "10.4.0"
    nvinfer: str = ""  # the loaded libnvinfer's getInferLibVersion(), "10.4.0"; empty when unread
    onnxruntime: str = ""  # set for the onnxruntime runner only

    @property
    def sm(self) -> str:
        return "sm" + self.compute_capability.replace(".", "")

    @property
    def slug(self) -> str:
        return re.sub(r"[^a-z0-9]+", "-", self.gpu.lower()).strip("-") or "gpu"

    def key(self, model_sha256: str) -> str:
        runtime = f"-ort{self.onnxruntime}" if self.onnxruntime else ""
        return f"{self.slug}-{self.sm}-trt{self.tensorrt}{runtime}-{model_sha256[:12]}"

    def for_runner(self, runner: str) -> GpuTarget:
        """The facts an engine of ``runner`` is keyed on: the ONNX Runtime runner's are libnvinfer and ONNX Runtime."""
        if runner != "onnxruntime":
            return replace(self, onnxruntime="")
        return replace(self, tensorrt=self.nvinfer)


@dataclass(frozen=True)
class EngineRecord:
    """One entry of the manifest's ``engines`` list."""

    file: str  # relative to the bundle root
    runner: str  # "tensorrt" (engine file, execute_async_v3) or "onnxruntime" (TensorRT EP cache directory)
    gpu: str
    compute_capability: str
    tensorrt: str
    model_sha256: str
    profile: dict[str, list[int]]
    variant: str = TRT_VARIANT
    sha256: str = ""  # of the plan file; empty for a cache directory
    onnxruntime: str = ""  # the ONNX Runtime that built a cache directory; empty for a plan file

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EngineRecord:
        try:
            return cls(**{name: data[name] for name in cls.__dataclass_fields__ if name in data})
        except TypeError as err:
            raise BundleError(
                f"an engines entry in the manifest is malformed ({err}); rebuild with `embedrt build-engine`"
            ) from err

    def refusal(self, here: GpuTarget, model_sha256: str) -> str | None:
        """Why this engine cannot run on ``here`` for the graph with ``model_sha256``; ``None`` if it can.

        ``here`` is this machine as :meth:`GpuTarget.for_runner` describes it for this record's runner.
        """
        if self.model_sha256 != model_sha256:
            return f"built from another graph (sha256 {self.model_sha256[:12]}, the bundle's is {model_sha256[:12]})"
        if self.gpu != here.gpu:
            return f"built for {self.gpu}, this GPU is {here.gpu}"
        if self.compute_capability != here.compute_capability:
            return f"built for compute capability {self.compute_capability}, this GPU has {here.compute_capability}"
        if self.tensorrt != here.tensorrt:
            return f"built with TensorRT {self.tensorrt}, this machine has {here.tensorrt or 'none readable'}"
        if self.runner == "onnxruntime" and self.onnxruntime != here.onnxruntime:
            return f"built with ONNX Runtime {self.onnxruntime or 'unrecorded'}, this machine has {here.onnxruntime}"
        return None


def no_engine_error(root: Path) -> BackendError:
    return BackendError(
        f"bundle {root} has no TensorRT engine; build one on the GPU machine that will serve it with "
        f"`embedrt build-engine {root}` ({needs('tensorrt')})"
    )


def choose_engine(engines: list[dict[str, Any]], here: GpuTarget, model_sha256: str, root: Path) -> EngineRecord:
    """The manifest's engine that fits ``here``; otherwise :class:`BackendError` listing every refusal."""
    if not engines:
        raise no_engine_error(root)
    reasons = []
    for data in engines:
        record = EngineRecord.from_dict(data)
        reason = record.refusal(here.for_runner(record.runner), model_sha256)
        if reason is None:
            return record
        reasons.append(f"{record.file}: {reason}")
    raise BackendError(
        f"no engine in {root} fits this machine ({here.gpu}, compute capability {here.compute_capability}, "
        f"TensorRT {here.tensorrt}): {'; '.join(reasons)}; run `embedrt build-engine {root}` here"
    )


def import_tensorrt(purpose: str) -> Any:
    """The ``tensorrt`` module, or :class:`MissingExtraError` naming the extra."""
    try:
        import tensorrt
    except ImportError as err:
        raise missing_extra("tensorrt", purpose) from err
    return tensorrt


def import_cudart(purpose: str) -> Any:
    """cuda-python's runtime API (``cuda.bindings.runtime`` since 12.6, ``cuda.cudart`` before)."""
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        try:
            from cuda import cudart
        except ImportError as err:
            raise missing_extra("cuda-python", purpose) from err
    return cudart


def cuda_check(cudart: Any, result: Any, what: str) -> Any:
    """Unpack a cuda-python ``(error, *values)`` tuple, raising :class:`BackendError` on failure."""
    err, *values = result if isinstance(result, tuple) else (result,)
    if err != cudart.cudaError_t.cudaSuccess:
        name = cudart.cudaGetErrorString(err)[1]
        raise BackendError(f"CUDA {what} failed: {name.decode() if isinstance(name, bytes) else name}")
    if not values:
        return None
    return values[0] if len(values) == 1 else tuple(values)


def probe_gpu(purpose: str, device_id: int = 0) -> GpuTarget:
    """GPU name, compute capability and TensorRT version of this machine, without torch."""
    trt = import_tensorrt(purpose)
    cudart = import_cudart(purpose)
    err, count = cudart.cudaGetDeviceCount()
    if err != cudart.cudaError_t.cudaSuccess or count < 1:
        raise BackendError(
            f"{purpose} needs a CUDA GPU and none is visible (cudaGetDeviceCount: {err}, {count} devices); "
            "run it on the GPU machine that will serve the bundle"
        )
    props = cuda_check(cudart, cudart.cudaGetDeviceProperties(device_id), "cudaGetDeviceProperties")
    name = props.name.decode(errors="replace") if isinstance(props.name, bytes) else str(props.name)
    return GpuTarget(
        gpu=name.strip("\x00 ").strip(),
        compute_capability=f"{props.major}.{props.minor}",
        tensorrt=trt.__version__,
        nvinfer=nvinfer_version(),
        onnxruntime=_onnxruntime_version(),
    )


def _loaded_library(prefix: str) -> str | None:
    """The path of a shared library ``prefix*`` mapped into this process (Linux), or None."""
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
            for line in maps:
                path = line.split(maxsplit=5)[-1].strip()
                if path.rsplit("/", 1)[-1].startswith(prefix):
                    return path
    except OSError:
        return None
    return None


def version_from_int(value: int) -> str:
    """``getInferLibVersion()`` as text: 10.x counts major * 10000 + minor * 100 + patch, 8.x major * 1000 + ..."""
    major, rest = (value // 10000, value % 10000) if value >= 100000 else (value // 1000, value % 1000)
    return f"{major}.{rest // 100}.{rest % 100}"


def nvinfer_version(soname: str = "libnvinfer.so.10") -> str:
    """The version of the ``libnvinfer`` loaded here (``import tensorrt`` loads it), read with ``getInferLibVersion``.

    This, not the Python package's version, is the TensorRT that ONNX Runtime's TensorRT provider
    runs: it links ``libnvinfer.so.10`` and takes whichever one the process already holds, else the
    one the loader finds. Empty when none can be loaded.
    """
    try:
        library = ctypes.CDLL(_loaded_library("libnvinfer.so") or soname)
        library.getInferLibVersion.restype = ctypes.c_int32
        return version_from_int(int(library.getInferLibVersion()))
    except (OSError, AttributeError):
        return ""


def _onnxruntime_version() -> str:
    try:
        import onnxruntime
    except ImportError:
        return ""
    return str(onnxruntime.__version__)
