"""Building TensorRT engines for this GPU from a bundle's ``fp16-trt`` graph (``embedrt build-engine``).

The engine is built on the serving machine, named after the GPU, its compute capability, the TensorRT
version and the graph's hash, and listed in the manifest (:mod:`embedrt.runtime.backends.trt_engines`
describes the records; the runtime only reads them). Everything that needs ``tensorrt``,
``cuda-python`` or a GPU is imported when called.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

from embedrt.bundle import Bundle, Manifest, sha256_file, update_manifest
from embedrt.errors import BackendError, BundleError, InputError
from embedrt.extras import install_command
from embedrt.files import atomic_write
from embedrt.runtime.backends.trt_engines import (
    TRT_VARIANT,
    EngineRecord,
    GpuTarget,
    Profile,
    import_tensorrt,
    probe_gpu,
)

ENGINE_DIR = "engines"
RUNNERS = ("tensorrt", "onnxruntime")


def engine_file_name(target: GpuTarget, model_sha256: str, runner: str = "tensorrt") -> str:
    """``engine-<gpu>-sm86-trt10.4.0-<hash12>.plan``; the ONNX Runtime runner gets a cache directory.

    For the ONNX Runtime runner pass ``target.for_runner("onnxruntime")``: its key carries the loaded
    libnvinfer and the ONNX Runtime versions (``ort-trt-cache-<gpu>-sm86-trt10.4.0-ort1.31.1-<hash12>``).
    """
    if runner == "onnxruntime":
        return f"ort-trt-cache-{target.key(model_sha256)}"
    return f"engine-{target.key(model_sha256)}.plan"


def timing_cache_name(target: GpuTarget) -> str:
    """Timing caches are per GPU and TensorRT version, shared by every model built there."""
    return f"timing-{target.slug}-{target.sm}-trt{target.tensorrt}.cache"


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
    with atomic_write(plan) as handle:
        handle.write(memoryview(serialized))
    with atomic_write(timing_cache) as handle:
        handle.write(memoryview(config.get_timing_cache().serialize()))


def build_ort_engine_cache(onnx_path: Path, cache_dir: Path, profile: Profile, workspace_gb: float) -> None:
    """Let ONNX Runtime's TensorRT provider build and cache its engine for ``profile`` now, not at first request."""
    import numpy as np

    from embedrt.runtime.backends.tensorrt import OrtTensorrtBackend

    cache_dir.mkdir(parents=True, exist_ok=True)
    backend = OrtTensorrtBackend(onnx_path, cache_dir, profile, workspace_gb)
    shape = (profile.opt.batch, profile.opt.seq)
    # Whichever inputs the graph declares: token type 0, and 1 (a valid id, a full mask) for the others.
    warm = {
        name: np.zeros(shape, np.int64) if name == "token_type_ids" else np.ones(shape, np.int64)
        for name in backend.input_names
    }
    backend.run(warm)
    if not any(cache_dir.glob("*.engine")):
        raise BackendError(f"ONNX Runtime's TensorRT provider wrote no engine into {cache_dir}")


def _check_provider_libraries(target: GpuTarget) -> None:
    """ONNX Runtime's TensorRT provider links ``libnvinfer.so.10``: say so before it fails to load."""
    if target.tensorrt.split(".")[0] == "10" and target.onnxruntime:
        return
    raise BackendError(
        "ONNX Runtime's TensorRT provider needs onnxruntime-gpu and TensorRT 10 (it links libnvinfer.so.10); "
        f"this process has libnvinfer {target.tensorrt or 'none loadable'} and onnxruntime "
        f"{target.onnxruntime or 'none'}: {install_command('gpu', 'tensorrt', options='--extra-index-url https://pypi.nvidia.com')}"
    )


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
            f"bundle {bundle.root} has no {TRT_VARIANT} graph to build a TensorRT engine from; add it with "
            f"`{bundle.export_command([TRT_VARIANT])}`"
        )
    if runner not in RUNNERS:
        raise InputError(f"unknown runner {runner!r}; use one of: {', '.join(RUNNERS)}")
    if not 0 < workspace_gb <= 1024:
        raise InputError(f"--workspace-gb must be in (0, 1024], got {workspace_gb}")
    profile = Profile.parse(*profile_text, max_seq_length=bundle.manifest.max_seq_length)
    onnx_path = bundle.variant_path(TRT_VARIANT)
    model_sha256 = bundle.variant(TRT_VARIANT).sha256
    here = probe_gpu("building a TensorRT engine")
    target = here.for_runner(runner)
    if runner == "onnxruntime":
        _check_provider_libraries(target)
    engines_dir = bundle.root / ENGINE_DIR
    engines_dir.mkdir(exist_ok=True)
    name = engine_file_name(target, model_sha256, runner)
    if runner == "tensorrt":
        build_native_engine(onnx_path, engines_dir / name, engines_dir / timing_cache_name(here), profile, workspace_gb)
        digest = sha256_file(engines_dir / name)
    else:
        build_ort_engine_cache(onnx_path, engines_dir / name, profile, workspace_gb)
        digest = ""
    record = EngineRecord(
        file=f"{ENGINE_DIR}/{name}",
        runner=runner,
        gpu=target.gpu,
        compute_capability=target.compute_capability,
        tensorrt=target.tensorrt,
        model_sha256=model_sha256,
        profile=profile.to_dict(),
        sha256=digest,
        onnxruntime=target.onnxruntime,
    )

    def add_record(manifest: Manifest) -> Manifest:  # the manifest as it is now, not as when the build began
        kept = [engine for engine in manifest.engines if engine.get("file") != record.file]
        return replace(manifest, engines=[*kept, record.to_dict()])

    update_manifest(bundle.root, add_record)
    return record
