"""``embedrt build-engine``: a TensorRT engine for this GPU, from the bundle's ``fp16-trt`` graph.

A TensorRT engine only runs on the GPU model, compute capability and TensorRT version that built
it, so it is built on the serving machine, named after all three plus the graph's hash, and listed
in the manifest's ``engines``. The runtime (``device="tensorrt"``) picks the record that fits the
GPU it finds and refuses the others with the reason.

Shape parsing, profile checks, engine names and matching are plain Python (tested on any machine);
everything that needs ``tensorrt``, ``cuda-python`` or a GPU is imported lazily.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from embedrt.bundle import Bundle, sha256_file, write_manifest
from embedrt.errors import BackendError, BundleError, InputError, missing_extra

#: The variant engines are built from: plain ONNX (TensorRT cannot parse ``com.microsoft`` ops), fp16.
TRT_VARIANT = "fp16-trt"
ENGINE_DIR = "engines"
RUNNERS = ("tensorrt", "onnxruntime")
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
    """What a TensorRT engine is bound to."""

    gpu: str
    compute_capability: str  # "8.6"
    tensorrt: str  # "10.4.0"

    @property
    def sm(self) -> str:
        return "sm" + self.compute_capability.replace(".", "")

    @property
    def slug(self) -> str:
        return re.sub(r"[^a-z0-9]+", "-", self.gpu.lower()).strip("-") or "gpu"

    def key(self, model_sha256: str) -> str:
        return f"{self.slug}-{self.sm}-trt{self.tensorrt}-{model_sha256[:12]}"


def engine_file_name(target: GpuTarget, model_sha256: str, runner: str = "tensorrt") -> str:
    """``engine-<gpu>-sm86-trt10.4.0-<hash12>.plan``; the ONNX Runtime runner gets a cache directory."""
    if runner == "onnxruntime":
        return f"ort-trt-cache-{target.key(model_sha256)}"
    return f"engine-{target.key(model_sha256)}.plan"


def timing_cache_name(target: GpuTarget) -> str:
    """Timing caches are per GPU and TensorRT version, shared by every model built there."""
    return f"timing-{target.slug}-{target.sm}-trt{target.tensorrt}.cache"


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

    @property
    def target(self) -> GpuTarget:
        return GpuTarget(self.gpu, self.compute_capability, self.tensorrt)

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
        """Why this engine cannot run on ``here`` for the graph with ``model_sha256``; ``None`` if it can."""
        if self.model_sha256 != model_sha256:
            return f"built from another graph (sha256 {self.model_sha256[:12]}, the bundle's is {model_sha256[:12]})"
        if self.gpu != here.gpu:
            return f"built for {self.gpu}, this GPU is {here.gpu}"
        if self.compute_capability != here.compute_capability:
            return f"built for compute capability {self.compute_capability}, this GPU has {here.compute_capability}"
        if self.tensorrt != here.tensorrt:
            return f"built with TensorRT {self.tensorrt}, this machine has {here.tensorrt}"
        return None


def no_engine_error(root: Path) -> BackendError:
    return BackendError(
        f"bundle {root} has no TensorRT engine; build one on the GPU machine that will serve it with "
        f"`embedrt build-engine {root}` (needs embedrt[tensorrt])"
    )


def choose_engine(engines: list[dict[str, Any]], here: GpuTarget, model_sha256: str, root: Path) -> EngineRecord:
    """The manifest's engine that fits ``here``; otherwise :class:`BackendError` listing every refusal."""
    if not engines:
        raise no_engine_error(root)
    reasons = []
    for data in engines:
        record = EngineRecord.from_dict(data)
        reason = record.refusal(here, model_sha256)
        if reason is None:
            return record
        reasons.append(f"{record.file}: {reason}")
    raise BackendError(
        f"no engine in {root} fits this machine ({here.gpu}, compute capability {here.compute_capability}, "
        f"TensorRT {here.tensorrt}): {'; '.join(reasons)}; run `embedrt build-engine {root}` here"
    )


# ------------------------------------------------------------------------------- lazy GPU-side imports
def import_tensorrt(purpose: str):
    """The ``tensorrt`` module, or :class:`MissingExtraError` naming the extra."""
    try:
        import tensorrt
    except ImportError as err:
        raise missing_extra("tensorrt", "tensorrt", purpose) from err
    return tensorrt


def import_cudart(purpose: str):
    """cuda-python's runtime API (``cuda.bindings.runtime`` since 12.6, ``cuda.cudart`` before)."""
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        try:
            from cuda import cudart
        except ImportError as err:
            raise missing_extra("cuda-python", "tensorrt", purpose) from err
    return cudart


def cuda_check(cudart, result, what: str):
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
        gpu=name.strip("\x00 ").strip(), compute_capability=f"{props.major}.{props.minor}", tensorrt=trt.__version__
    )


# ------------------------------------------------------------------------------- building
def _atomic_write(path: Path, data: bytes | memoryview) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as handle:
        handle.write(data)
    os.replace(tmp, path)


def build_native_engine(onnx_path: Path, plan: Path, timing_cache: Path, profile: Profile, workspace_gb: float) -> None:
    """Parse the fp16 graph as a strongly typed network and serialize an engine for this GPU.

    ``STRONGLY_TYPED`` takes each tensor's type from the ONNX (fp16, with LayerNorm/Softmax fp32):
    TensorRT 11 removed ``BuilderFlag.FP16``, and TensorRT 10 refuses precision flags on strongly
    typed networks, so no flag is set and the same code serves 10.x and 11.x.
    """
    trt = import_tensorrt("building a TensorRT engine")
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    # TensorRT 11 types every network strongly and accepts (ignores) the flag; 10.x needs it.
    strongly_typed = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    network = builder.create_network(0 if strongly_typed is None else 1 << int(strongly_typed))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise BackendError(f"TensorRT could not parse {onnx_path.name}: {errors or 'no detail'}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * (1 << 30)))
    optimization = builder.create_optimization_profile()
    for index in range(network.num_inputs):
        name = network.get_input(index).name
        low, mid, high = ((s.batch, s.seq) for s in (profile.min, profile.opt, profile.max))
        optimization.set_shape(name, low, mid, high)
    config.add_optimization_profile(optimization)
    cache = config.create_timing_cache(timing_cache.read_bytes() if timing_cache.is_file() else b"")
    config.set_timing_cache(cache, ignore_mismatch=False)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise BackendError(
            f"TensorRT failed to build an engine from {onnx_path.name} (see its log above); try a smaller "
            "--max-shape or a larger --workspace-gb"
        )
    _atomic_write(plan, memoryview(serialized))
    _atomic_write(timing_cache, memoryview(config.get_timing_cache().serialize()))


def build_ort_engine_cache(onnx_path: Path, cache_dir: Path, profile: Profile, workspace_gb: float) -> None:
    """Let ONNX Runtime's TensorRT provider build and cache its engine for ``profile`` now, not at first request."""
    import numpy as np

    from embedrt.runtime.backends.tensorrt import OrtTensorrtBackend

    cache_dir.mkdir(parents=True, exist_ok=True)
    backend = OrtTensorrtBackend(onnx_path, cache_dir, profile, workspace_gb)
    warm = np.ones((profile.opt.batch, profile.opt.seq), dtype=np.int64)
    backend.run({"input_ids": warm, "attention_mask": warm, "token_type_ids": np.zeros_like(warm)})
    if not any(cache_dir.glob("*.engine")):
        raise BackendError(f"ONNX Runtime's TensorRT provider wrote no engine into {cache_dir}")


def build_engine(
    bundle_path: str | os.PathLike[str],
    profile_text: tuple[str | None, str | None, str | None] = (None, None, None),
    workspace_gb: float = 4.0,
    runner: str = "tensorrt",
) -> EngineRecord:
    """Build an engine for this GPU from the bundle's ``fp16-trt`` graph and list it in the manifest."""
    bundle = Bundle.open(bundle_path)
    if TRT_VARIANT not in bundle.manifest.variants:
        raise BundleError(
            f"bundle {bundle.root} has no {TRT_VARIANT} graph to build a TensorRT engine from; re-export it with "
            "`embedrt export SOURCE -o BUNDLE --precision fp32,fp16 --force`"
        )
    if runner not in RUNNERS:
        raise InputError(f"unknown runner {runner!r}; use one of: {', '.join(RUNNERS)}")
    if not 0 < workspace_gb <= 1024:
        raise InputError(f"--workspace-gb must be in (0, 1024], got {workspace_gb}")
    profile = Profile.parse(*profile_text, max_seq_length=bundle.manifest.max_seq_length)
    onnx_path = bundle.variant_path(TRT_VARIANT)
    model_sha256 = bundle.variant(TRT_VARIANT).sha256
    here = probe_gpu("building a TensorRT engine")
    engines_dir = bundle.root / ENGINE_DIR
    engines_dir.mkdir(exist_ok=True)
    name = engine_file_name(here, model_sha256, runner)
    if runner == "tensorrt":
        build_native_engine(onnx_path, engines_dir / name, engines_dir / timing_cache_name(here), profile, workspace_gb)
        digest = sha256_file(engines_dir / name)
    else:
        build_ort_engine_cache(onnx_path, engines_dir / name, profile, workspace_gb)
        digest = ""
    record = EngineRecord(
        file=f"{ENGINE_DIR}/{name}",
        runner=runner,
        gpu=here.gpu,
        compute_capability=here.compute_capability,
        tensorrt=here.tensorrt,
        model_sha256=model_sha256,
        profile=profile.to_dict(),
        sha256=digest,
    )
    kept = [e for e in bundle.manifest.engines if e.get("file") != record.file]
    write_manifest(bundle.root, replace(bundle.manifest, engines=[*kept, record.to_dict()]))
    return record


def run_build_engine_command(args: argparse.Namespace) -> int:
    """``embedrt build-engine``: build, list in the manifest, print one line."""
    record = build_engine(
        args.bundle,
        (args.min_shape, args.opt_shape, args.max_shape),
        workspace_gb=args.workspace_gb,
        runner=args.runner,
    )
    if not getattr(args, "quiet", False):
        print(
            f"built {record.file} ({record.gpu}, sm{record.compute_capability.replace('.', '')}, TensorRT "
            f"{record.tensorrt}, profile {record.profile['min']}..{record.profile['max']})",
            file=sys.stderr,
        )
    return 0
