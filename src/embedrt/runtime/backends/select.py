"""Choose and start the engine for a (bundle, precision, engine, device): the one place they map to engines."""

from __future__ import annotations

import importlib.util
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

from embedrt.bundle import Bundle
from embedrt.errors import (
    BackendError,
    BundleError,
    EmbedrtWarning,
    InputError,
    MissingExtraError,
)
from embedrt.extras import missing_extra
from embedrt.runtime.backends.base import Backend
from embedrt.runtime.backends.trt_engines import TRT_VARIANT
from embedrt.runtime.devices import (
    AUTO,
    AUTO_PRECISION,
    CPU_ENGINES,
    DEVICE_PRECISIONS,
    DEVICES,
    ENGINE_CHOICES,
    RUN_PRECISIONS,
    STORED_PRECISION,
)
from embedrt.variants import (
    DEFAULT_ENGINE,
    ENGINE_TABLE,
    OPENVINO,
    engines_running,
    split_variant_name,
    variant_name,
    variants_to_export,
)

#: The Python package each engine needs (from :data:`embedrt.variants.ENGINE_TABLE`; its extra is in
#: :data:`embedrt.extras.EXTRAS`).
ENGINE_PACKAGES = {name: engine.package for name, engine in ENGINE_TABLE.items()}
#: Said whenever fp16 runs on a CPU: it is asked for by name only, never picked by ``auto`` or a default list.
FP16_ON_CPU = (
    "fp16 on the CPU is emulated (ONNX Runtime computes it through fp32 casts) and slower than fp32; "
    "fp16 variants are for GPUs (device='cuda' or 'tensorrt'); on a CPU use int8 or fp32"
)


@dataclass(frozen=True)
class Choice:
    """What runs: an engine, the precision it computes in, and the bundle variant it reads."""

    engine: str
    precision: str
    variant: str

    @classmethod
    def of(cls, engine: str, precision: str) -> Choice:
        """``engine`` computing in ``precision``, reading the variant that precision is stored as."""
        return cls(engine, precision, variant_name(engine, STORED_PRECISION.get(precision, precision)))

    @property
    def label(self) -> str:
        """``int8`` (ONNX Runtime), ``openvino-int8``, ``openvino-bf16``: how reports name this row."""
        return variant_name(self.engine, self.precision)


def _installed(engine: str) -> bool:
    """Whether the engine's package can be imported (a broken or blocked one counts as absent)."""
    try:
        return importlib.util.find_spec(ENGINE_PACKAGES[engine]) is not None
    except (ImportError, ValueError):
        return False


def _missing_engine(engine: str) -> MissingExtraError:
    """One line naming the extra that installs ``engine``'s package."""
    return missing_extra(ENGINE_PACKAGES[engine], f"running the {engine} variants of a bundle")


def _engines(precision: str, device: str) -> tuple[str, ...]:
    """Engines that run ``precision`` on ``device``, in the order ``engine="auto"`` tries them."""
    return CPU_ENGINES.get(precision, (DEFAULT_ENGINE,)) if device == "cpu" else engines_running(precision, device)


def choose(
    bundle: Bundle, precision: str = AUTO, engine: str = AUTO, device: str = "cpu", batch_invariant: bool = True
) -> Choice:
    """The variant and engine ``Encoder.load`` starts; a request that cannot be met is an error saying why.

    ``engine="auto"`` skips a candidate whose variant the bundle lacks or whose package is not
    installed; an engine asked for by name is never swapped for another. With ``batch_invariant`` (the
    default) a variant whose vectors move with their batch-mates (an older bundle's dynamic int8) is never
    chosen: ``auto`` takes the next one and warns, a precision asked for by name is an error.
    """
    if device not in DEVICES:
        raise BundleError(f"unknown device {device!r}; use one of: {', '.join(DEVICES)}")
    if engine not in ENGINE_CHOICES:
        raise InputError(f"unknown engine {engine!r}; use one of: {', '.join(ENGINE_CHOICES)}")
    if device != "cpu" and engine not in (AUTO, DEFAULT_ENGINE):
        raise BackendError(f"engine {engine!r} runs on the CPU only; for device={device!r} leave engine='auto'")
    if device == "tensorrt":  # the engine built from fp16-trt: its backend checks the precision and says what to build
        return Choice("tensorrt", AUTO_PRECISION[device][0] if precision == AUTO else precision, TRT_VARIANT)
    if precision != AUTO and precision not in RUN_PRECISIONS:
        raise BundleError(f"unknown precision {precision!r}; use auto or one of: {', '.join(RUN_PRECISIONS)}")
    if precision != AUTO and precision not in DEVICE_PRECISIONS[device]:
        raise BackendError(
            f"precision {precision!r} does not run on device={device!r} (it runs: "
            f"{', '.join(DEVICE_PRECISIONS[device])}); pick one of those, or device='cpu' for int8"
        )
    wanted = AUTO_PRECISION[device] if precision == AUTO else (precision,)
    options = [Choice.of(e, p) for p in wanted for e in _engines(p, device)]
    if engine != AUTO:
        options = [option for option in options if option.engine == engine]
        if not options:
            runs = ", ".join(CPU_ENGINES.get(precision, (DEFAULT_ENGINE,)))
            raise BackendError(f"engine {engine!r} does not run precision {precision!r}; it runs on: {runs}")
    present = [option for option in options if option.variant in bundle.manifest.variants]
    usable = [option for option in present if engine != AUTO or _installed(option.engine)]
    if batch_invariant:
        usable = _invariant_only(bundle, usable, explicit=precision != AUTO)
    if usable:
        if device == "cpu" and usable[0].precision == "fp16":  # asked for by name: auto never picks it on a CPU
            warnings.warn(FP16_ON_CPU, EmbedrtWarning, stacklevel=3)  # points at the caller of Encoder.load
        return usable[0]
    if present:  # the bundle has it, the engine's package is missing
        raise _missing_engine(present[0].engine)
    if precision == AUTO and engine == AUTO:
        # Nothing the device prefers: the first variant of the bundle (fp32 on the CPU for every export).
        variants = bundle.manifest.variants
        name = next((n for n in variants if variants[n].batch_invariant or not batch_invariant), next(iter(variants)))
        found, stored = split_variant_name(name)
        return Choice(found, stored, name)
    raise bundle.missing_variant(options[0].variant)


def _invariant_only(bundle: Bundle, options: list[Choice], explicit: bool) -> list[Choice]:
    """``options`` without batch-dependent variants; skipping the best one warns (auto) or raises (asked by name)."""
    variants = bundle.manifest.variants
    kept = [option for option in options if variants[option.variant].batch_invariant]
    if not options or options[0] in kept:
        return kept
    skipped = options[0].variant
    why = (
        f"the {skipped!r} variant of {bundle.root} is ONNX Runtime's dynamic int8, whose vectors move with "
        "their batch-mates (an older export)"
    )
    fix = (
        "re-export the bundle with this embedrt (`embedrt export SOURCE -o BUNDLE --force`: its int8 is "
        "batch-invariant), or pass batch_invariant=False (embedrt serve --batch-invariant false) to run it knowingly"
    )
    if explicit and not kept:
        raise BackendError(f"{why}; {fix}")
    if kept:
        message = f"{why}; running {kept[0].variant!r} instead. To get int8 back, {fix}"
        warnings.warn(message, EmbedrtWarning, stacklevel=4)  # points at the caller of Encoder.load
    return kept


def cpu_has_native_bf16() -> bool:
    """Whether OpenVINO's CPU plugin computes bf16 natively here (False when OpenVINO is not installed)."""
    if not _installed(OPENVINO):
        return False
    from embedrt.runtime.backends.openvino import import_openvino, native_bf16

    return native_bf16(import_openvino().Core())


def cpu_choices(
    bundle: Bundle, precisions: Sequence[str] | None = None, engines: Sequence[str] | None = None
) -> list[Choice]:
    """Every (engine, precision) of ``bundle`` to run on this CPU, for reports such as bench and eval.

    By default: each CPU variant whose engine is installed, and bf16 where OpenVINO's fp32 IR is there
    and the CPU computes bf16 natively; never fp16, which a CPU only emulates. Precisions or engines
    asked for by name must be runnable, and each must give at least one row: a selection that matches
    nothing is an error naming what the bundle has, never an empty report.
    """
    named_engines = engines is not None
    engine_list = list(engines) if engines is not None else [e for e in ENGINE_PACKAGES if _installed(e)]
    for engine in engine_list:
        if engine not in ENGINE_PACKAGES:
            raise InputError(f"unknown engine {engine!r}; use one of: {', '.join(ENGINE_PACKAGES)}")
        if named_engines and not _installed(engine):
            raise _missing_engine(engine)
    if not engine_list:
        raise missing_extra(ENGINE_PACKAGES[DEFAULT_ENGINE], "running a bundle on the CPU")
    for precision in precisions or ():
        if precision not in RUN_PRECISIONS:
            raise InputError(f"unknown precision {precision!r}; use one of: {', '.join(RUN_PRECISIONS)}")
    wanted = list(precisions) if precisions is not None else [p for p in DEVICE_PRECISIONS["cpu"] if p != "fp16"]
    found = []
    for engine in engine_list:
        for precision in wanted:
            if engine not in CPU_ENGINES.get(precision, ()):
                continue
            choice = Choice.of(engine, precision)
            if choice.variant not in bundle.manifest.variants:
                continue
            if precision == "bf16" and precisions is None and not cpu_has_native_bf16():
                continue
            found.append(choice)
    _check_selection(bundle, found, precisions, engine_list if named_engines else None)
    if any(choice.precision == "fp16" for choice in found):
        warnings.warn(FP16_ON_CPU, EmbedrtWarning, stacklevel=2)
    return found


def _check_selection(
    bundle: Bundle, found: Sequence[Choice], precisions: Sequence[str] | None, engines: Sequence[str] | None
) -> None:
    """Raise naming what the bundle has when a named precision or engine (or the whole selection) gives no row."""
    have = ", ".join(sorted(bundle.manifest.variants))
    for precision in precisions or ():
        if any(choice.precision == precision for choice in found):
            continue
        runners = CPU_ENGINES.get(precision, ())
        usable = [e for e in runners if engines is None or e in engines]
        if not usable:
            raise InputError(
                f"precision {precision!r} runs on {', '.join(runners)} only, not on {', '.join(engines or ())}; "
                f"add --engine {','.join(runners)} (bundle {bundle.root} has: {have})"
            )
        choice = Choice.of(usable[0], precision)
        if choice.variant in bundle.manifest.variants:  # there, but its engine is not installed
            raise _missing_engine(choice.engine)
        raise bundle.missing_variant(choice.variant)
    for engine in engines or ():
        if not any(choice.engine == engine for choice in found):
            asked = f" in {', '.join(precisions)}" if precisions else ""
            stored = [STORED_PRECISION.get(p, p) for p in precisions or ()]
            stored = stored or [split_variant_name(name)[1] for name in bundle.manifest.variants]
            add = bundle.export_command(variants_to_export([engine], stored))
            raise BundleError(
                f"bundle {bundle.root} has no {engine} variant{asked} (it has: {have}); pick another --engine, "
                f"or add it: `{add}`"
            )
    if not found:
        raise BundleError(
            f"nothing in bundle {bundle.root} runs on this CPU with the engines installed (it has: {have}); "
            "install the engine its variants need, or re-export it with `embedrt export`"
        )


def open_backend(
    bundle: Bundle,
    choice: Choice,
    device: str,
    threads: int | None,
    verify: bool = True,
    spin: bool = True,
    batch_invariant: bool = True,
    streams: int = 1,
) -> Backend:
    """Start the engine ``choice`` names for ``bundle`` on ``device``; never a different device.

    ``streams`` > 1: an OpenVINO model compiled with that many streams sharing ``threads`` (one infer request
    per calling thread); ONNX Runtime ignores it (:mod:`embedrt.runtime.streams` opens a session a stream).
    """
    if device == "tensorrt":
        from embedrt.runtime.backends.tensorrt import open_tensorrt_backend

        return open_tensorrt_backend(bundle, choice.precision, verify=verify)
    model_path = bundle.variant_path(choice.variant, verify=verify)
    if device == "cuda":
        from embedrt.runtime.backends.ort_cuda import OrtCudaBackend

        pooled = bundle.variant(choice.variant).pooled_output  # mean pooling in the graph (export/device_pooling.py)
        return OrtCudaBackend(model_path, threads=threads or 1, pooled_output=pooled)
    from embedrt.runtime.threads import default_threads

    if choice.engine == OPENVINO:
        from embedrt.runtime.backends.openvino import OpenVinoBackend, OpenVinoSettings

        hint = "bf16" if choice.precision == "bf16" else "f32"
        unfused = batch_invariant and choice.precision == "int8"  # fp32 and bf16 do not need it
        ov_settings = OpenVinoSettings(
            threads=threads or default_threads(), precision=hint, batch_invariant=unfused, streams=streams
        )
        return OpenVinoBackend(model_path, ov_settings)
    from embedrt.runtime.backends.ort import OrtBackend, OrtSettings

    fold = bundle.variant(choice.variant).recipe.get("word_table") == "int8"  # see export/quantize.py
    settings = OrtSettings(threads=threads or default_threads(), spin=spin, fold_dequantize=fold)
    return OrtBackend(model_path, device, settings)
