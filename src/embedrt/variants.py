"""What a variant is: the one table that export, the bundle, engine choice, bench, info and messages read.

A *variant* is one runnable graph in a bundle: an engine, the precision it is stored in, the precisions a
caller may run it in, its file, the devices that run it, the extra its engine needs, and whether a text
embeds the same alone and in any batch. ``ENGINE_TABLE`` has a row per engine and ``VARIANT_TABLE`` a row
per variant; every other list of engines, precisions, devices, files or variant names is derived from them.

Adding an engine or a precision is a row here plus its backend (``runtime/backends/``, opened in
``select.open_backend``) and, for a variant the export builds, its build step in ``export/pipeline.py``.
This module sits on the ground floor: it imports only :mod:`embedrt.extras`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from embedrt.extras import extra_for

ONNXRUNTIME = "onnxruntime"
OPENVINO = "openvino"
#: The engine a manifest entry belongs to when it names none (bundles from before engines existed).
DEFAULT_ENGINE = ONNXRUNTIME


@dataclass(frozen=True)
class Engine:
    """One engine a variant can be made for."""

    name: str
    #: The Python package the runtime imports to run it (its extra comes from :data:`embedrt.extras.EXTRAS`).
    package: str
    #: What its files are called in ``embedrt info``: ``ONNX`` graphs (fused or not), OpenVINO ``IR``.
    graph: str
    #: Packages the export needs to build its variants; a no-flag export adds the engine where they are found.
    export_packages: tuple[str, ...]

    @property
    def extra(self) -> str:
        """The pip extra that installs :attr:`package`."""
        return extra_for(self.package)


ENGINE_TABLE: dict[str, Engine] = {
    engine.name: engine
    for engine in (
        Engine(ONNXRUNTIME, package="onnxruntime", graph="ONNX", export_packages=("onnxruntime",)),
        Engine(OPENVINO, package="openvino", graph="IR", export_packages=("openvino", "nncf")),
    )
}


@dataclass(frozen=True)
class VariantKind:
    """One row of the variant table: what a manifest key means, whatever bundle it is in."""

    #: The manifest key: the precision for the default engine (as before engines existed), else ``engine-precision``.
    name: str
    engine: str
    #: The precision the file stores.
    precision: str
    #: The graph, relative to the bundle root.
    file: str
    #: Devices that run it (``cpu``, ``cuda``: ONNX Runtime's CUDA provider, ``tensorrt``: a built engine).
    devices: tuple[str, ...]
    #: Precisions it runs in besides the stored one (OpenVINO computes its fp32 IR in bf16 on request).
    also_runs: tuple[str, ...] = ()
    #: Files beside :attr:`file` with the same stem (an IR's ``.bin`` weights).
    data_suffixes: tuple[str, ...] = ()
    #: The ``--precision`` the export builds it for, when not its own (``fp16-trt`` comes with ``fp16``).
    exported_with: str | None = None
    #: Derived from the fused fp32 graph (so it carries fused attention when that fused).
    from_fused_graph: bool = False
    #: Its runnable form is built on the target GPU at deploy time (``embedrt build-engine``), not at export.
    built_at_deploy: bool = False
    #: A new export's vectors are batch-invariant (the manifest records each bundle's own value).
    batch_invariant: bool = True
    #: Bundles whose recipe predates ``activations: static`` hold a batch-dependent (dynamic) version of it.
    dynamic_before_static: bool = False

    @property
    def runs(self) -> tuple[str, ...]:
        """Every precision a caller may ask this variant to compute in, the stored one first."""
        return (self.precision, *self.also_runs)

    @property
    def export_precision(self) -> str:
        """The ``embedrt export --precision`` value that builds it."""
        return self.exported_with or self.precision

    @property
    def extra(self) -> str:
        """The pip extra its engine needs."""
        return ENGINE_TABLE[self.engine].extra

    def data_files(self) -> tuple[str, ...]:
        """The files beside :attr:`file` it needs, relative to the bundle root."""
        stem = self.file.rsplit(".", 1)[0]
        return tuple(stem + suffix for suffix in self.data_suffixes)


VARIANT_TABLE: dict[str, VariantKind] = {
    kind.name: kind
    for kind in (
        VariantKind("fp32", ONNXRUNTIME, "fp32", "model.onnx", ("cpu", "cuda"), from_fused_graph=True),
        VariantKind(
            "int8", ONNXRUNTIME, "int8", "model_int8.onnx", ("cpu",), from_fused_graph=True, dynamic_before_static=True
        ),
        VariantKind("fp16", ONNXRUNTIME, "fp16", "model_fp16.onnx", ("cpu", "cuda"), from_fused_graph=True),
        VariantKind(
            "fp16-trt",
            ONNXRUNTIME,
            "fp16",
            "model_fp16_trt.onnx",
            ("tensorrt",),
            exported_with="fp16",
            built_at_deploy=True,
        ),
        VariantKind(
            "openvino-fp32",
            OPENVINO,
            "fp32",
            "openvino/model.xml",
            ("cpu",),
            also_runs=("bf16",),
            data_suffixes=(".bin",),
        ),
        VariantKind("openvino-int8", OPENVINO, "int8", "openvino/model_int8.xml", ("cpu",), data_suffixes=(".bin",)),
    )
}


def _unique(values: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(values))


#: Engines a variant can be made for, in the table's order.
ENGINES = tuple(ENGINE_TABLE)
#: Precisions a variant can be stored in (bf16 is not one: OpenVINO runs its fp32 IR in bf16).
PRECISIONS = _unique(kind.precision for kind in VARIANT_TABLE.values())
#: Precisions a caller may ask for: the stored ones and those a variant also runs in.
RUN_PRECISIONS = _unique(p for kind in VARIANT_TABLE.values() for p in kind.runs)
#: The stored precision each other run precision reads (``bf16`` -> ``fp32``).
STORED_PRECISION = {p: kind.precision for kind in VARIANT_TABLE.values() for p in kind.also_runs}
#: ``embedrt export --precision`` values.
EXPORTABLE = _unique(kind.export_precision for kind in VARIANT_TABLE.values())
#: Devices some variant runs on.
DEVICES = _unique(device for kind in VARIANT_TABLE.values() for device in kind.devices)


def variant_name(engine: str, precision: str) -> str:
    """A variant's key in the manifest (``int8`` for ONNX Runtime, ``openvino-int8``), or a report's label."""
    return precision if engine == DEFAULT_ENGINE else f"{engine}-{precision}"


def split_variant_name(name: str) -> tuple[str, str]:
    """``openvino-int8`` -> ``("openvino", "int8")``; a name not in the table by the naming rule."""
    kind = VARIANT_TABLE.get(name)
    if kind is not None:
        return kind.engine, kind.precision
    engine, _, precision = name.partition("-")
    return (engine, precision) if engine in ENGINES and engine != DEFAULT_ENGINE else (DEFAULT_ENGINE, name)


def recipe_batch_invariant(name: str, recipe: dict[str, Any]) -> bool:
    """Whether variant ``name`` made by ``recipe`` gives a text the same vector alone and in any batch.

    Only ONNX Runtime's dynamic int8 does not (its activation scales come from the whole padded batch);
    bundles written before the manifest recorded ``batch_invariant`` have that recipe, with no
    ``activations`` key. Everything else is measured invariant to cosine >= 0.999999 (docs/openvino.md).
    """
    kind = VARIANT_TABLE.get(name)
    if kind is None:
        return True
    return kind.batch_invariant and not (
        kind.dynamic_before_static and recipe.get("activations", "dynamic") != "static"
    )


def device_precisions(device: str) -> tuple[str, ...]:
    """Precisions some variant computes in on ``device``, in the table's order."""
    return _unique(p for kind in VARIANT_TABLE.values() if device in kind.devices for p in kind.runs)


def engines_running(precision: str, device: str) -> tuple[str, ...]:
    """Engines with a variant that computes in ``precision`` on ``device``, in the table's order."""
    kinds = VARIANT_TABLE.values()
    return _unique(kind.engine for kind in kinds if device in kind.devices and precision in kind.runs)


def export_precisions(engine: str) -> tuple[str, ...]:
    """The ``--precision`` values that build a variant for ``engine``."""
    return _unique(kind.export_precision for kind in VARIANT_TABLE.values() if kind.engine == engine)


def variants_to_export(engines: Iterable[str], precisions: Iterable[str]) -> list[str]:
    """The variants an export for ``engines`` and ``precisions`` builds, in the table's order."""
    engine_set, precision_set = set(engines), set(precisions)
    kinds = VARIANT_TABLE.values()
    return [kind.name for kind in kinds if kind.engine in engine_set and kind.export_precision in precision_set]


def deploy_variant(device: str) -> str:
    """The variant whose runnable form is built at deploy time for ``device`` (``fp16-trt`` for ``tensorrt``)."""
    for kind in VARIANT_TABLE.values():
        if kind.built_at_deploy and device in kind.devices:
            return kind.name
    raise KeyError(f"no variant in embedrt.variants.VARIANT_TABLE is built at deploy time for {device!r}")


def export_flags(names: Iterable[str]) -> str:
    """The ``--precision P --engine E`` an export needs to build every variant in ``names`` (table names)."""
    kinds = [VARIANT_TABLE[name] for name in names]
    precisions = [p for p in EXPORTABLE if any(kind.export_precision == p for kind in kinds)]
    engines = [e for e in ENGINES if any(kind.engine == e for kind in kinds)]
    return f"--precision {','.join(precisions)} --engine {','.join(engines)}"
