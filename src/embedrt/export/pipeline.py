"""``embedrt export``: source model -> fused ONNX -> variants -> parity-checked bundle, atomically."""

from __future__ import annotations

import logging
import os
import secrets
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from embedrt.bundle import (
    MANIFEST_NAME,
    TOKENIZER_NAME,
    Manifest,
    Parity,
    Pooling,
    Variant,
    sha256_file,
    write_manifest,
)
from embedrt.errors import ExportError
from embedrt.export.device_pooling import POOLED_VARIANTS, add_mean_pooling
from embedrt.export.fp16 import CUDA_FLAVOUR, TRT_FLAVOUR, convert_fp16, measure_reference_parity
from embedrt.export.load import DEFAULT_SOURCE, SourceModel, load_source
from embedrt.export.onnx_export import export_transformer
from embedrt.export.openvino import (
    DEFAULT_STATIC_INT8,
    StaticInt8Recipe,
    builtin_calibration,
    convert_fp32,
    quantize_static_int8,
    read_calibration,
)
from embedrt.export.optimize import FusionReport, optimize_graph
from embedrt.export.quantize import DEFAULT_INT8, Int8Recipe, calibration_feeds, quantize_int8
from embedrt.export.sentences import PARITY_SENTENCES
from embedrt.export.validate import check_parity, measure_parity, reference_embeddings
from embedrt.variants import (
    DEFAULT_ENGINE,
    ENGINE_TABLE,
    ENGINES,
    EXPORTABLE,
    OPENVINO,
    VARIANT_TABLE,
    deploy_variant,
    export_precisions,
    recipe_batch_invariant,
    split_variant_name,
    variant_name,
    variants_to_export,
)

log = logging.getLogger(__name__)

# What each variant is, its file and the --precision that builds it are rows of embedrt.variants.VARIANT_TABLE;
# "fp16" builds two flavours: fused for ONNX Runtime CUDA, plain for TensorRT (see export/fp16.py).
FILES = {name: kind.file for name, kind in VARIANT_TABLE.items()}
#: Precisions each engine exports (fp16 is for GPUs, which OpenVINO variants do not serve).
ENGINE_PRECISIONS = {engine: export_precisions(engine) for engine in ENGINES}
#: The variants this module builds by name (each step below writes one or two of them).
OV_FP32, OV_INT8, FP16_TRT = variant_name(OPENVINO, "fp32"), variant_name(OPENVINO, "int8"), deploy_variant("tensorrt")
OV_BF16 = variant_name(OPENVINO, "bf16")  # a label: the fp32 IR run in bf16


def default_engines() -> tuple[str, ...]:
    """ONNX Runtime, and OpenVINO too where ``openvino`` and ``nncf`` are installed: its static int8 IR is the
    fastest batch-invariant variant measured on CPUs with VNNI, so an export with no flags lets ``auto`` find it."""
    import importlib.util

    def found(packages: tuple[str, ...]) -> bool:
        try:
            return all(importlib.util.find_spec(name) is not None for name in packages)
        except (ImportError, ValueError):
            return False

    return tuple(e for e, engine in ENGINE_TABLE.items() if e == DEFAULT_ENGINE or found(engine.export_packages))


@dataclass(frozen=True)
class ExportSettings:
    """What to build and how strictly to check it."""

    precisions: tuple[str, ...] = ("fp32", "int8")
    #: Engines to build variants for: ONNX Runtime (fused ONNX), OpenVINO (IR), or both (the default where
    #: OpenVINO is installed, :func:`default_engines`).
    engines: tuple[str, ...] = field(default_factory=default_engines)
    max_seq_length: int | None = None
    #: How a plain Hugging Face model (no modules.json) pools: mean, cls or max; required for one.
    pooling: str | None = None
    allow_unfused: bool = False
    fp32_min_cos: float = 0.99999
    int8_mean_cos: float = 0.99
    fp16_min_cos: float = 0.999
    #: OpenVINO's fp32 IR run in bf16, measured where the exporting CPU has native bf16.
    bf16_min_cos: float = 0.999
    int8_recipe: Int8Recipe = DEFAULT_INT8
    static_int8_recipe: StaticInt8Recipe = DEFAULT_STATIC_INT8
    #: Texts static int8 is calibrated on, ONNX Runtime's and OpenVINO's (a file, one text a line or JSONL);
    #: None: built-in.
    calibration: str | None = None
    force: bool = False
    sentences: tuple[str, ...] = field(default=PARITY_SENTENCES)

    def __post_init__(self) -> None:
        unknown = [p for p in self.precisions if p not in EXPORTABLE]
        if unknown or not self.precisions:
            raise ExportError(
                f"cannot export precision {', '.join(unknown) or '(none)'}; choose from: {', '.join(EXPORTABLE)}"
            )
        strange = [e for e in self.engines if e not in ENGINES]
        if strange or not self.engines:
            raise ExportError(
                f"cannot export for engine {', '.join(strange) or '(none)'}; choose from: {', '.join(ENGINES)}"
            )
        for precision in self.precisions:  # fp16 is for GPUs, which only ONNX Runtime's variants serve
            makers = [engine for engine in ENGINES if precision in ENGINE_PRECISIONS[engine]]
            if not set(makers) & set(self.engines):
                raise ExportError(
                    f"{precision} variants are exported for {', '.join(makers)} only, not {', '.join(self.engines)}; "
                    f"add it: --engine {','.join((*self.engines, makers[0]))}"
                )
        if "fp32" not in self.precisions:
            # Every other variant is derived from the fp32 graph, and it is the parity anchor.
            object.__setattr__(self, "precisions", ("fp32", *self.precisions))

    @property
    def variants(self) -> list[str]:
        """The variant names this export builds, in build order."""
        return variants_to_export(self.engines, self.precisions)


def _prepare_destination(output: Path, force: bool) -> None:
    """Refuse an ``output`` the export must not replace: a bundle without ``force``, or anything else that exists.

    A missing or empty directory is free; an existing bundle is replaced only with ``--force``; a file or a
    directory with other contents is never replaced, so that advice is not given.
    """
    if not output.exists() or (output.is_dir() and not any(output.iterdir())):
        return
    if output.is_dir() and (output / MANIFEST_NAME).exists():
        if not force:
            raise ExportError(f"{output} already exists; pass --force to replace it")
        return
    raise ExportError(
        f"{output} exists and is not an embedrt bundle; export to a new directory (embedrt only ever "
        "replaces a bundle, never other files)"
    )


def _new_directory(parent: Path, prefix: str) -> Path:
    """A new uniquely named directory, with the mode any directory the user makes gets (umask applied).

    Not ``tempfile.mkdtemp``: its 0700 would travel with the rename, and a bundle exported by one user
    could then not be read by the service user that runs it.
    """
    while True:
        path = parent / f"{prefix}{secrets.token_hex(4)}"
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue


def _swap_into_place(staging: Path, output: Path) -> None:
    """Rename the finished staging directory to ``output``, replacing an old bundle only at the end."""
    if output.exists():
        old = _new_directory(output.parent, f".{output.name}.old-")
        os.replace(output, old / output.name)
        os.replace(staging, output)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(staging, output)


def export_bundle(
    source: str | os.PathLike[str] | None,
    output: str | os.PathLike[str],
    settings: ExportSettings | None = None,
    progress: Callable[[str], None] | None = None,
) -> Manifest:
    """Export ``source`` (a sentence-transformers directory or hub id) to a bundle at ``output``.

    The bundle is built in a temporary directory next to ``output`` and renamed into place only
    after every variant has passed its parity check, so a failure leaves nothing behind.
    """
    settings = settings or ExportSettings()
    say = progress or log.info
    output = Path(output).expanduser().resolve()
    _prepare_destination(output, settings.force)
    output.parent.mkdir(parents=True, exist_ok=True)

    name = os.fspath(source) if source is not None else DEFAULT_SOURCE  # a Path is fine; the manifest keeps text
    say(f"loading {name}")
    model = load_source(name, settings.max_seq_length, settings.pooling)
    for note in model.notes:
        say(note)
    staging = _new_directory(output.parent, f".{output.name}.partial-")
    try:
        manifest = _build(model, staging, settings, say)
        _swap_into_place(staging, output)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    say(f"wrote {output}")
    return manifest


def _build(model: SourceModel, staging: Path, settings: ExportSettings, say: Callable[[str], None]) -> Manifest:
    from embedrt import __version__

    work = staging / ".work"
    work.mkdir()
    say("exporting the transformer to ONNX")
    raw = export_transformer(model.transformer, work / "raw.onnx")
    recipes, fused = _build_variants(model, raw, staging, settings, say)
    _add_device_pooling(model, staging, recipes, say)
    shutil.rmtree(work)
    model.bundle_tokenizer().save(str(staging / TOKENIZER_NAME))

    variants = {name: _variant(staging, name, recipes[name], fused) for name in recipes}
    manifest = Manifest(
        source=model.source,
        dim=model.dim,
        max_seq_length=model.max_seq_length,
        pooling=model.pooling,
        normalize=model.normalize,
        do_lower_case=model.do_lower_case,
        variants=variants,
        architecture=model.architecture,
        embedrt_version=__version__,
        prompts=model.prompts,
        default_prompt_name=model.default_prompt_name,
        similarity_fn_name=model.similarity_fn_name,
    )
    write_manifest(staging, manifest)  # provisional: the runtime reads it to measure parity
    manifest = replace(manifest, variants=_measure_variants(model, staging, variants, settings, say))
    write_manifest(staging, manifest)
    return manifest


def _build_variants(
    model: SourceModel, raw: Path, staging: Path, settings: ExportSettings, say: Callable[[str], None]
) -> tuple[dict[str, dict], FusionReport | None]:
    """Write every wanted variant's file into ``staging``; return each one's recipe, and what fused."""
    wanted = settings.variants
    recipes: dict[str, dict] = {}
    fused: FusionReport | None = None
    if "fp32" in wanted:
        say("fusing attention, LayerNorm and GELU")
        fused = optimize_graph(
            raw,
            staging / FILES["fp32"],
            num_heads=model.num_heads,
            hidden_size=model.hidden_size,
            num_layers=model.num_layers,
            allow_unfused=settings.allow_unfused,
        )
        say("fused: " + ", ".join(f"{op} x{n}" for op, n in fused.counts.items()))
        recipes["fp32"] = {"fusion": fused.counts}
    source = settings.calibration or "built-in"
    texts = read_calibration(settings.calibration) if settings.calibration else builtin_calibration()
    if "int8" in wanted:
        recipe = settings.int8_recipe
        # Static scales need the calibration set's breadth; the old dynamic recipe measured SQNR on the parity set.
        calibrate_on = texts if recipe.batch_invariant else list(settings.sentences)
        say(f"quantizing to int8 ({recipe.name}, {len(calibrate_on)} calibration texts)")
        feeds = calibration_feeds(model, calibrate_on)
        entry = quantize_int8(staging / FILES["fp32"], staging / FILES["int8"], recipe, feeds)
        calibrated = {"source": source, "texts": len(texts)} if recipe.batch_invariant else None
        recipes["int8"] = {**entry, "calibration": calibrated} if calibrated else entry
    if "fp16" in wanted:
        say("converting to fp16 (fused graph for CUDA, plain graph for TensorRT)")
        recipes["fp16"] = convert_fp16(staging / FILES["fp32"], staging / FILES["fp16"], CUDA_FLAVOUR)
        recipes[FP16_TRT] = convert_fp16(raw, staging / FILES[FP16_TRT], TRT_FLAVOUR)
    if OV_FP32 in wanted:
        say("converting to an OpenVINO IR (fp32)")
        ov_model = convert_fp32(raw, staging / FILES[OV_FP32])
        recipes[OV_FP32] = {"converted_from": "plain ONNX (unfused)", "compress_to_fp16": False}
        if OV_INT8 in wanted:
            recipe_ov = settings.static_int8_recipe
            say(f"quantizing the IR to static int8 with NNCF ({recipe_ov.name}, {len(texts)} calibration texts)")
            feeds = calibration_feeds(model, texts)
            entry = quantize_static_int8(ov_model, raw, staging / FILES[OV_INT8], feeds, recipe_ov)
            recipes[OV_INT8] = {**entry, "calibration": {"source": source, "texts": len(texts)}}
    return recipes, fused


def _add_device_pooling(
    model: SourceModel, staging: Path, recipes: dict[str, dict], say: Callable[[str], None]
) -> None:
    """Mean pooling as graph nodes in the graphs the CUDA provider runs (after int8 was derived from fp32).

    The pooled output is a second output: the CPU paths read the first and pool in NumPy, as before.
    """
    if model.pooling is not Pooling.MEAN:
        say(f"device pooling: none ({model.pooling.value} pooling stays on the host)")
        return
    for name in POOLED_VARIANTS:
        if name in recipes:
            recipes[name]["device_pooling"] = add_mean_pooling(staging / FILES[name])
            say(f"{name}: mean pooling added as graph output {recipes[name]['device_pooling']['output']!r}")


def _measure_variants(
    model: SourceModel,
    staging: Path,
    variants: dict[str, Variant],
    settings: ExportSettings,
    say: Callable[[str], None],
) -> dict[str, Variant]:
    """Each variant with its parity against PyTorch measured (and checked against its gate)."""
    say(f"checking parity against PyTorch on {len(settings.sentences)} sentences")
    reference = reference_embeddings(model.model, settings.sentences)
    fp16_gate = (settings.fp16_min_cos, None)
    fp32_gate, int8_gate = (settings.fp32_min_cos, None), (None, settings.int8_mean_cos)
    gates = {"fp32": fp32_gate, "int8": int8_gate, "fp16": fp16_gate}  # by stored precision
    measured = {}
    for name in variants:
        engine, precision = split_variant_name(name)
        if "cpu" not in VARIANT_TABLE[name].devices:  # fp16-trt: the ONNX reference evaluator runs it in fp16
            parity = measure_reference_parity(staging, staging / FILES[name], settings.sentences, reference)
        else:
            invariant = variants[name].batch_invariant
            parity = measure_parity(staging, precision, settings.sentences, reference, engine, invariant)
        say(f"{name}: min cos {parity.min_cos:.6f}, mean cos {parity.mean_cos:.6f}")
        check_parity(name, parity, *gates[precision])
        measured[name] = replace(variants[name], parity=parity)
    if OV_FP32 in measured:
        measured[OV_FP32] = _with_bf16_parity(measured[OV_FP32], staging, settings, reference, say)
    return measured


def _variant(staging: Path, name: str, recipe: dict, fused: FusionReport | None) -> Variant:
    """The manifest entry of a built variant: its files' checksums and how it was made."""
    path = staging / FILES[name]
    kind = VARIANT_TABLE[name]
    data_files = {relative: sha256_file(staging / relative) for relative in kind.data_files()}  # an IR's .bin
    return Variant(
        file=FILES[name],
        sha256=sha256_file(path),
        fused_attention=kind.from_fused_graph and fused is not None and fused.attention_fused,
        recipe=recipe,
        engine=kind.engine,
        data_files=data_files,
        batch_invariant=recipe_batch_invariant(name, recipe),
    )


def _with_bf16_parity(
    variant: Variant, staging: Path, settings: ExportSettings, reference: np.ndarray, say: Callable[[str], None]
) -> Variant:
    """The fp32 IR's record, with what bf16 measured here (or why it was not measured)."""
    from embedrt.runtime.backends.select import cpu_has_native_bf16

    if not cpu_has_native_bf16():
        note = "not measured: the exporting CPU has no native bf16 (AVX512_BF16 or AMX)"
        say(f"{OV_BF16}: {note}")
        return replace(variant, recipe={**variant.recipe, "bf16": {"parity": None, "note": note}})
    parity: Parity = measure_parity(staging, "bf16", settings.sentences, reference, OPENVINO)
    say(f"{OV_BF16}: min cos {parity.min_cos:.6f}, mean cos {parity.mean_cos:.6f}")
    check_parity(OV_BF16, parity, settings.bf16_min_cos, None)
    return replace(variant, recipe={**variant.recipe, "bf16": {"parity": asdict(parity)}})
