"""Running ``embedrt eval``: each precision of a bundle, and optionally the PyTorch reference, on pair files.

Every file is read before the first model runs, and the reference model is located before the long
runs, so a bad file or a missing reference fails at once. The reference row is the only path that
loads torch, through the export stage.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from embedrt.errors import InputError, MissingExtraError
from embedrt.extras import missing_extra
from embedrt.tools.evaluate.metrics import SupportsEncode, evaluate
from embedrt.tools.evaluate.readers import PairSet, dataset_name, load_pairs

REFERENCE_ROW = "pytorch"
#: precision (or ``pytorch``) -> dataset name -> {"spearman": .., "pearson": ..}
Results = dict[str, dict[str, dict[str, float]]]


@dataclass(frozen=True)
class EvalJob:
    """What to score: a bundle's precisions on its engines (``None``: every variant the CPU runs) on pair files."""

    bundle: str | os.PathLike[str]
    data: tuple[str, ...]
    precisions: tuple[str, ...] | None = None
    engines: tuple[str, ...] | None = None
    format: str = "auto"
    split: str = "test"
    #: Add the PyTorch model's row: the bundle's source, or ``reference_model`` when given.
    reference: bool = False
    reference_model: str | None = None
    batch_size: int = 64
    threads: int | None = None


def _local_source(source: str) -> str:
    """A local directory for the reference model: the source itself or a hub id already in the cache."""
    hint = "pass the model's directory with --reference-model DIR"
    if Path(source).expanduser().is_dir():
        return str(Path(source).expanduser())
    if source.count("/") != 1 or source.startswith((".", "/", "~")):
        raise InputError(f"the reference model {source!r} (the bundle's source) is not a directory here; {hint}")
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import HFValidationError
    except ImportError as err:
        raise missing_extra("huggingface_hub", "embedrt eval --reference") from err
    try:
        return snapshot_download(source, local_files_only=True)
    except (OSError, HFValidationError) as err:
        raise InputError(
            f"the reference model {source!r} (the bundle's source) is not in the local Hugging Face cache; "
            f"download it first or {hint}"
        ) from err


def _require_reference_extra() -> None:
    """Fail early, without importing them, when torch or sentence-transformers is not installed."""
    import importlib.util

    for module in ("torch", "sentence_transformers"):
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            raise missing_extra(("sentence-transformers", "torch"), "embedrt eval --reference")


def load_reference(source: str, pooling: str | None = None) -> SupportsEncode:
    """The source model in sentence-transformers (PyTorch), loaded the way the export loaded it.

    ``pooling`` is the bundle's: a plain Hugging Face model (no modules.json) pools the way its export said.
    """
    directory = _local_source(source)
    try:
        from embedrt.export.load import load_source
    except ImportError as err:
        raise missing_extra(("sentence-transformers", "torch"), "embedrt eval --reference") from err
    try:
        return load_source(directory, pooling=pooling).model
    except MissingExtraError as err:
        raise missing_extra(("sentence-transformers", "torch"), "embedrt eval --reference") from err


def _unique_names(paths: Sequence[Path]) -> list[str]:
    """Dataset names from file stems; stems that collide take their folder's name as a prefix."""
    stems = [dataset_name(path) for path in paths]
    names = [
        f"{path.resolve().parent.name}_{stem}" if stems.count(stem) > 1 else stem
        for path, stem in zip(paths, stems, strict=True)
    ]
    return [f"{name}_{index + 1}" if names.count(name) > 1 else name for index, name in enumerate(names)]


def _cell(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.2f}"


def _json_number(value: float) -> float | None:
    return None if math.isnan(value) else round(value, 2)


def format_table(results: Results, datasets: Sequence[PairSet]) -> str:
    """A markdown table like the model cards': one row per precision, one column per dataset."""
    names = [pairs.name for pairs in datasets]
    lines = [
        "| precision | " + " | ".join(names) + " |",
        "|---|" + "---|" * len(names),
    ]
    for row, by_dataset in results.items():
        cells = [f"{_cell(by_dataset[n]['spearman'])} / {_cell(by_dataset[n]['pearson'])}" for n in names]
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def to_json(results: Results, datasets: Sequence[PairSet]) -> dict[str, Any]:
    """One file: ``{"n_pairs": N, "results": {precision: {...}}}``; several: ``{"datasets": {name: that}}``."""

    def one(pairs: PairSet) -> dict[str, Any]:
        return {
            "n_pairs": len(pairs),
            "results": {
                row: {metric: _json_number(value) for metric, value in by_dataset[pairs.name].items()}
                for row, by_dataset in results.items()
            },
        }

    if len(datasets) == 1:
        return one(datasets[0])
    return {"datasets": {pairs.name: one(pairs) for pairs in datasets}}


def _run_row(
    encoder: SupportsEncode, label: str, datasets: Sequence[PairSet], batch_size: int, say: Callable[[str], None]
) -> dict[str, dict[str, float]]:
    scores = {}
    for pairs in datasets:
        started = time.perf_counter()
        scores[pairs.name] = evaluate(encoder, pairs, batch_size)
        say(
            f"  {label:7s} {pairs.name}: {len(pairs)} pairs, Spearman {_cell(scores[pairs.name]['spearman'])} "
            f"({time.perf_counter() - started:.1f} s)"
        )
    return scores


def run_eval(job: EvalJob, say: Callable[[str], None] = lambda message: None) -> tuple[list[PairSet], Results]:
    """Read every file, then score each precision (and the reference); ``say`` reports progress."""
    from embedrt.bundle import Bundle
    from embedrt.runtime.backends.select import cpu_choices
    from embedrt.runtime.encoder import Encoder

    bundle = Bundle.open(job.bundle)
    # By default every variant this CPU runs (not fp16-trt, which only TensorRT runs), on each engine.
    chosen = cpu_choices(bundle, job.precisions, job.engines)
    reference_source = job.reference_model or (bundle.manifest.source if job.reference else None)

    paths = [Path(path) for path in job.data]
    datasets = [
        load_pairs(path, job.format, job.split, name=name)
        for path, name in zip(paths, _unique_names(paths), strict=True)
    ]
    if reference_source is not None:  # fail before the long runs, not after them
        _require_reference_extra()
        _local_source(reference_source)

    results: Results = {}
    for choice in chosen:
        invariant = bundle.variant(choice.variant).batch_invariant  # an old dynamic int8 is scored too
        precision, engine = choice.precision, choice.engine
        encoder = Encoder.load(bundle.root, precision, engine=engine, threads=job.threads, batch_invariant=invariant)
        results[choice.label] = _run_row(encoder, choice.label, datasets, job.batch_size, say)
        del encoder
    if reference_source is not None:
        say(f"loading the PyTorch reference {reference_source}")
        model = load_reference(reference_source, bundle.manifest.pooling.value)
        results[REFERENCE_ROW] = _run_row(model, REFERENCE_ROW, datasets, job.batch_size, say)
    return datasets, results
