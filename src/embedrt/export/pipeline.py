"""``embedrt export``: source model -> fused ONNX -> variants -> parity-checked bundle, atomically."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from embedrt.bundle import MANIFEST_NAME, TOKENIZER_NAME, Manifest, Variant, sha256_file, write_manifest
from embedrt.errors import ExportError
from embedrt.export.fp16 import CUDA_FLAVOUR, TRT_FLAVOUR, convert_fp16, measure_reference_parity
from embedrt.export.load import DEFAULT_SOURCE, SourceModel, load_source
from embedrt.export.onnx_export import export_transformer
from embedrt.export.optimize import optimize_graph
from embedrt.export.quantize import DEFAULT_INT8, Int8Recipe, calibration_feeds, quantize_int8
from embedrt.export.sentences import PARITY_SENTENCES
from embedrt.export.validate import check_parity, measure_parity, reference_embeddings

log = logging.getLogger(__name__)

EXPORTABLE = ("fp32", "int8", "fp16")
# "fp16" builds two flavours: fused for ONNX Runtime CUDA, plain for TensorRT (see export/fp16.py).
FILES = {"fp32": "model.onnx", "int8": "model_int8.onnx", "fp16": "model_fp16.onnx", "fp16-trt": "model_fp16_trt.onnx"}


@dataclass(frozen=True)
class ExportSettings:
    """What to build and how strictly to check it."""

    precisions: tuple[str, ...] = ("fp32", "int8")
    max_seq_length: int | None = None
    allow_unfused: bool = False
    fp32_min_cos: float = 0.99999
    int8_mean_cos: float = 0.99
    fp16_min_cos: float = 0.999
    int8_recipe: Int8Recipe = DEFAULT_INT8
    force: bool = False
    sentences: tuple[str, ...] = field(default=PARITY_SENTENCES)

    def __post_init__(self) -> None:
        unknown = [p for p in self.precisions if p not in EXPORTABLE]
        if unknown or not self.precisions:
            raise ExportError(
                f"cannot export precision {', '.join(unknown) or '(none)'}; choose from: {', '.join(EXPORTABLE)}"
            )
        if "fp32" not in self.precisions:
            # Every other variant is derived from the fused fp32 graph, and it is the parity anchor.
            object.__setattr__(self, "precisions", ("fp32", *self.precisions))


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


def _swap_into_place(staging: Path, output: Path) -> None:
    """Rename the finished staging directory to ``output``, replacing an old bundle only at the end."""
    if output.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{output.name}.old-", dir=output.parent))
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
    model = load_source(name, settings.max_seq_length)
    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.partial-", dir=output.parent))
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
    say("fusing attention, LayerNorm and GELU")
    report = optimize_graph(
        raw,
        staging / FILES["fp32"],
        num_heads=model.num_heads,
        hidden_size=model.hidden_size,
        num_layers=model.num_layers,
        allow_unfused=settings.allow_unfused,
    )
    say("fused: " + ", ".join(f"{op} x{n}" for op, n in report.counts.items()))
    recipes = {"fp32": {"fusion": report.counts}}
    if "int8" in settings.precisions:
        say(f"quantizing to int8 ({settings.int8_recipe.name})")
        calibration = calibration_feeds(model, settings.sentences)
        recipe = settings.int8_recipe
        recipes["int8"] = quantize_int8(staging / FILES["fp32"], staging / FILES["int8"], recipe, calibration)
    if "fp16" in settings.precisions:
        say("converting to fp16 (fused graph for CUDA, plain graph for TensorRT)")
        recipes["fp16"] = convert_fp16(staging / FILES["fp32"], staging / FILES["fp16"], CUDA_FLAVOUR)
        recipes["fp16-trt"] = convert_fp16(raw, staging / FILES["fp16-trt"], TRT_FLAVOUR)
    shutil.rmtree(work)
    model.bundle_tokenizer().save(str(staging / TOKENIZER_NAME))

    variants = {
        precision: Variant(
            file=FILES[precision],
            sha256=sha256_file(staging / FILES[precision]),
            fused_attention=report.attention_fused and precision != "fp16-trt",
            recipe=recipes[precision],
        )
        for precision in recipes
    }
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
    )
    write_manifest(staging, manifest)  # provisional: the runtime reads it to measure parity

    say(f"checking parity against PyTorch on {len(settings.sentences)} sentences")
    reference = reference_embeddings(model.model, settings.sentences)
    fp16_gate = (settings.fp16_min_cos, None)
    thresholds = {"fp32": (settings.fp32_min_cos, None), "int8": (None, settings.int8_mean_cos)}
    thresholds.update({"fp16": fp16_gate, "fp16-trt": fp16_gate})
    measured = {}
    for precision in variants:
        if precision == "fp16-trt":  # no CPU provider runs it in fp16: the ONNX reference evaluator does
            parity = measure_reference_parity(staging, staging / FILES[precision], settings.sentences, reference)
        else:
            parity = measure_parity(staging, precision, settings.sentences, reference)
        say(f"{precision}: min cos {parity.min_cos:.6f}, mean cos {parity.mean_cos:.6f}")
        check_parity(precision, parity, *thresholds[precision])
        measured[precision] = replace(variants[precision], parity=parity)
    manifest = replace(manifest, variants=measured)
    write_manifest(staging, manifest)
    return manifest
