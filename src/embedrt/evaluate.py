"""``embedrt eval``: how well cosine similarity of a bundle's embeddings ranks sentence pairs.

Spearman and Pearson correlation (x100) between the cosine similarity of each pair and its gold score or
label, per precision, like the tables of the DMetaSoul model cards (csts_dev, lcqmc, afqmc, ...). The
statistics are NumPy only (average ranks for ties, as ``scipy.stats.spearmanr``): the runtime does not
depend on SciPy. The PyTorch reference row (``--reference``) is the only path that loads torch, through
the export stage.
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from embedrt.errors import EmbedrtError, InputError, InputTypeError, MissingExtraError, missing_extra

FORMATS = ("auto", "pairs", "jsonl", "stsb", "sts")
#: Columns of the STS benchmark as released (``sts-test.csv``); some rows add source columns after them.
STS_COLUMNS = ("genre", "file", "year", "id", "score", "sentence1", "sentence2")
#: ``--split`` value that keeps every row of a file with a split column.
ALL_SPLITS = "all"
REFERENCE_ROW = "pytorch"


class SupportsEncode(Protocol):
    """Anything that embeds a list of texts: an :class:`~embedrt.Encoder` or a ``SentenceTransformer``."""

    def encode(self, texts: list[str], batch_size: int = ...) -> Any: ...


@dataclass(frozen=True)
class PairSet:
    """Sentence pairs with gold scores (a similarity score or a 0/1 label), read from one file."""

    name: str
    sentences1: tuple[str, ...]
    sentences2: tuple[str, ...]
    scores: np.ndarray  # float64, one per pair

    def __len__(self) -> int:
        return len(self.scores)


# ---------------------------------------------------------------------------------------------- statistics
def average_ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 1..n of ``values``; tied values share the mean of the ranks they span."""
    values = np.asarray(values, dtype=np.float64)
    n = values.shape[0]
    order = np.argsort(values, kind="mergesort")
    ordered = values[order]
    starts_group = np.empty(n, dtype=bool)
    starts_group[:1] = True
    starts_group[1:] = ordered[1:] != ordered[:-1]
    starts = np.flatnonzero(starts_group)
    ends = np.append(starts[1:], n)
    mean_rank = (starts + ends + 1) / 2.0  # mean of the 1-based ranks starts+1 .. ends
    ranks = np.empty(n, dtype=np.float64)
    ranks[order] = np.repeat(mean_rank, ends - starts)
    return ranks


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson correlation of two equal-length vectors; NaN when either one is constant."""
    x = np.asarray(x, dtype=np.float64) - np.mean(x)
    y = np.asarray(y, dtype=np.float64) - np.mean(y)
    denominator = math.sqrt(float(np.dot(x, x)) * float(np.dot(y, y)))
    if denominator == 0.0:
        return math.nan
    return max(-1.0, min(1.0, float(np.dot(x, y)) / denominator))


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman rank correlation (Pearson of average ranks, as SciPy computes it)."""
    return pearson(average_ranks(x), average_ranks(y))


# ---------------------------------------------------------------------------------------------- reading pair files
def _decode(raw: bytes, where: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise InputError(f"{where}: not valid UTF-8 ({err.reason}); convert the file to UTF-8") from err


def _score(text: Any, where: str, column: str) -> float:
    """A gold score from a cell or a JSON value; numbers and numeric strings only, finite."""
    if isinstance(text, bool) or not isinstance(text, (int, float, str)):
        raise InputError(f"{where}: {column} must be a number, got {json.dumps(text, ensure_ascii=False)}")
    try:
        value = float(text)
    except ValueError:
        raise InputError(f"{where}: {column} {str(text)!r} is not a number") from None
    if not math.isfinite(value):
        raise InputError(f"{where}: {column} {str(text)!r} is not a finite number")
    return value


def _read_lines(path: Path) -> list[bytes]:
    """The file's lines as bytes (``.gz`` is decompressed); trailing blank lines are dropped."""
    try:
        data = path.read_bytes()
        if path.suffix == ".gz":
            data = gzip.decompress(data)
    except OSError as err:
        reason = err.strerror or str(err)
        raise InputError(f"cannot read {path}: {reason}") from err
    except EOFError as err:
        raise InputError(f"cannot read {path}: the gzip stream is truncated") from err
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    lines = data.splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    return lines


def _no_blank(raw: bytes, where: str) -> None:
    if not raw.strip():
        raise InputError(f"{where}: empty line; every line must hold one pair (remove the line)")


def _parse_pairs(path: Path, lines: list[bytes]) -> list[tuple[str, str, float]]:
    rows = []
    for number, raw in enumerate(lines, start=1):
        where = f"{path}:{number}"
        _no_blank(raw, where)
        cells = _decode(raw, where).split("\t")
        if len(cells) != 3:
            raise InputError(
                f"{where}: expected 3 tab-separated columns (sentence1, sentence2, score or label), found "
                f"{len(cells)}; a file with a header row needs --format stsb"
            )
        rows.append((cells[0], cells[1], _score(cells[2].strip(), where, "score")))
    return rows


def _parse_jsonl(path: Path, lines: list[bytes]) -> list[tuple[str, str, float]]:
    rows = []
    for number, raw in enumerate(lines, start=1):
        where = f"{path}:{number}"
        _no_blank(raw, where)
        try:
            record = json.loads(_decode(raw, where))
        except json.JSONDecodeError as err:
            raise InputError(f"{where}: not valid JSON ({err.msg} at column {err.colno})") from err
        if not isinstance(record, dict):
            raise InputError(f"{where}: expected a JSON object with sentence1, sentence2 and label or score")
        texts = []
        for key in ("sentence1", "sentence2"):
            if key not in record:
                raise InputError(f"{where}: missing key {key!r} (have: {', '.join(sorted(record)) or 'none'})")
            if not isinstance(record[key], str):
                raise InputError(f"{where}: {key} must be a string, got {type(record[key]).__name__}")
            texts.append(record[key])
        key = "score" if "score" in record else "label"
        if key not in record:
            raise InputError(f"{where}: missing key 'score' or 'label' (have: {', '.join(sorted(record))})")
        rows.append((texts[0], texts[1], _score(record[key], where, key)))
    return rows


def _header(cells: list[str]) -> dict[str, int]:
    return {cell.strip().lower(): index for index, cell in enumerate(cells)}


def _looks_like_header(cells: list[str]) -> bool:
    names = _header(cells)
    return "sentence1" in names and "sentence2" in names


def _parse_stsb(path: Path, lines: list[bytes], split: str) -> list[tuple[str, str, float]]:
    if not lines:
        return []
    cells = _decode(lines[0], f"{path}:1").split("\t")
    columns = _header(cells)
    missing = [name for name in ("sentence1", "sentence2") if name not in columns]
    score_name = "score" if "score" in columns else "label"
    if score_name not in columns:
        missing.append("score or label")
    if missing:
        raise InputError(
            f"{path}:1: the header must name sentence1, sentence2 and score (or label) columns; missing "
            f"{', '.join(missing)} (header: {' | '.join(cells)})"
        )
    split_column = columns.get("split")
    rows = []
    splits_seen: dict[str, int] = {}
    for number, raw in enumerate(lines[1:], start=2):
        where = f"{path}:{number}"
        _no_blank(raw, where)
        row = _decode(raw, where).split("\t")
        if len(row) != len(cells):
            raise InputError(f"{where}: expected {len(cells)} tab-separated columns like the header, found {len(row)}")
        if split_column is not None:
            row_split = row[split_column].strip()
            splits_seen[row_split] = splits_seen.get(row_split, 0) + 1
            if split != ALL_SPLITS and row_split != split:
                continue
        score = _score(row[columns[score_name]].strip(), where, score_name)
        rows.append((row[columns["sentence1"]], row[columns["sentence2"]], score))
    if split_column is not None and not rows and splits_seen:
        have = ", ".join(f"{name} ({count})" for name, count in splits_seen.items())
        raise InputError(f"{path}: no rows of split {split!r}; the file has: {have}; pass --split NAME or --split all")
    return rows


def _parse_sts(path: Path, lines: list[bytes]) -> list[tuple[str, str, float]]:
    rows = []
    score, first, second = (STS_COLUMNS.index(name) for name in ("score", "sentence1", "sentence2"))
    for number, raw in enumerate(lines, start=1):
        where = f"{path}:{number}"
        _no_blank(raw, where)
        cells = _decode(raw, where).split("\t")
        if len(cells) < len(STS_COLUMNS):
            raise InputError(
                f"{where}: expected at least {len(STS_COLUMNS)} tab-separated columns ({', '.join(STS_COLUMNS)}), "
                f"found {len(cells)}"
            )
        rows.append((cells[first], cells[second], _score(cells[score].strip(), where, "score")))
    return rows


def _looks_like_sts_release(cells: list[str]) -> bool:
    if len(cells) < len(STS_COLUMNS):
        return False
    try:
        float(cells[STS_COLUMNS.index("score")])
    except ValueError:
        return False
    return True


def detect_format(path: Path, lines: list[bytes]) -> str:
    """``jsonl`` for ``.jsonl``/``.json`` files or lines starting with ``{``; ``stsb`` for a TSV whose first
    line names sentence1 and sentence2; ``sts`` for the STS benchmark as released (7 or more columns with
    the score fifth); else ``pairs``."""
    suffixes = [suffix.lower() for suffix in path.suffixes if suffix.lower() != ".gz"]
    if suffixes and suffixes[-1] in (".jsonl", ".json"):
        return "jsonl"
    if not lines:
        return "pairs"
    first = lines[0].lstrip()
    if first.startswith(b"{"):
        return "jsonl"
    cells = first.decode("utf-8", errors="replace").split("\t")
    if _looks_like_header(cells):
        return "stsb"
    if _looks_like_sts_release(cells):
        return "sts"
    return "pairs"


def dataset_name(path: Path) -> str:
    """The file name without its extensions: ``data/csts_dev.tsv.gz`` -> ``csts_dev``."""
    name = path.name
    for suffix in reversed(path.suffixes):
        if suffix.lower() in (".gz", ".tsv", ".txt", ".csv", ".jsonl", ".json"):
            name = name[: -len(suffix)]
        else:
            break
    return name or path.name


def load_pairs(path: str | Path, format: str = "auto", split: str = "test", name: str | None = None) -> PairSet:
    """Read a pair file; malformed lines raise :class:`InputError` with ``file:line``, nothing is skipped.

    Formats: ``pairs`` is ``sentence1<TAB>sentence2<TAB>score_or_label`` (Chinese STS-B, LCQMC, BQ,
    AFQMC, PAWS-X); ``jsonl`` has ``sentence1``, ``sentence2`` and ``score`` or ``label`` per line; ``stsb``
    is a TSV with a header naming those columns (the STS benchmark's split/genre/.../score/sentence1/
    sentence2), and ``split`` keeps the rows of one split (``all`` keeps every row); ``sts`` is the STS
    benchmark as released (``sts-test.csv``: genre, file, year, id, score, sentence1, sentence2, no
    header). ``auto`` detects.
    Blank lines at the end of the file are ignored; a blank line elsewhere is an error.
    """
    if format not in FORMATS:
        raise InputError(f"unknown format {format!r}; use one of: {', '.join(FORMATS)}")
    path = Path(path)
    lines = _read_lines(path)
    chosen = detect_format(path, lines) if format == "auto" else format
    if chosen == "pairs":
        rows = _parse_pairs(path, lines)
    elif chosen == "jsonl":
        rows = _parse_jsonl(path, lines)
    elif chosen == "sts":
        rows = _parse_sts(path, lines)
    else:
        rows = _parse_stsb(path, lines, split)
    pairs = _pair_set(name or dataset_name(path), rows)
    _check_scores(pairs, str(path))
    return pairs


def _pair_set(name: str, rows: Sequence[tuple[str, str, float]]) -> PairSet:
    return PairSet(
        name=name,
        sentences1=tuple(row[0] for row in rows),
        sentences2=tuple(row[1] for row in rows),
        scores=np.array([row[2] for row in rows], dtype=np.float64),
    )


def _check_scores(pairs: PairSet, where: str) -> None:
    if len(pairs) < 2:
        raise InputError(f"{where}: {len(pairs)} pair(s); a correlation needs at least 2")
    if np.all(pairs.scores == pairs.scores[0]):
        raise InputError(
            f"{where}: all {len(pairs)} gold scores equal {pairs.scores[0]:g}, so no correlation is defined; "
            "use a file with different scores or labels"
        )


def _as_pair_set(pairs: PairSet | Sequence[tuple[str, str, float]]) -> PairSet:
    if isinstance(pairs, PairSet):
        return pairs
    if isinstance(pairs, (str, bytes, dict)) or not isinstance(pairs, Sequence):
        raise InputTypeError(f"pairs must be a PairSet or a list of (sentence1, sentence2, score), got {pairs!r:.60}")
    rows = []
    for index, pair in enumerate(pairs):
        if not isinstance(pair, (tuple, list)) or len(pair) != 3:
            raise InputTypeError(f"pairs[{index}] must be (sentence1, sentence2, score), got {pair!r:.60}")
        first, second, score = pair
        if not isinstance(first, str) or not isinstance(second, str):
            raise InputTypeError(f"pairs[{index}]: both sentences must be str")
        rows.append((first, second, _score(score, f"pairs[{index}]", "score")))
    return _pair_set("pairs", rows)


# ---------------------------------------------------------------------------------------------- scoring
def cosine_scores(
    encoder: SupportsEncode, pairs: PairSet | Sequence[tuple[str, str, float]], batch_size: int = 64
) -> np.ndarray:
    """Cosine similarity of each pair; every distinct sentence is embedded once."""
    pairs = _as_pair_set(pairs)
    index: dict[str, int] = {}
    for text in (*pairs.sentences1, *pairs.sentences2):
        index.setdefault(text, len(index))
    unique = list(index)
    embeddings = np.asarray(encoder.encode(unique, batch_size=batch_size), dtype=np.float64)
    if embeddings.shape[0] != len(unique):
        raise EmbedrtError(f"the encoder returned {embeddings.shape[0]} embeddings for {len(unique)} texts")
    norms = np.linalg.norm(embeddings, axis=1, keepdims=True)
    embeddings /= np.maximum(norms, 1e-12)
    left = embeddings[[index[text] for text in pairs.sentences1]]
    right = embeddings[[index[text] for text in pairs.sentences2]]
    return np.einsum("ij,ij->i", left, right)


def evaluate(
    encoder: SupportsEncode, pairs: PairSet | Sequence[tuple[str, str, float]], batch_size: int = 64
) -> dict[str, float]:
    """``{"spearman": .., "pearson": ..}`` x100 between the pairs' cosine similarity and their gold scores."""
    pair_set = _as_pair_set(pairs)
    _check_scores(pair_set, pair_set.name)
    cosines = cosine_scores(encoder, pair_set, batch_size)
    return {
        "spearman": 100.0 * spearman(cosines, pair_set.scores),
        "pearson": 100.0 * pearson(cosines, pair_set.scores),
    }


# ---------------------------------------------------------------------------------------------- reference model
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
        raise missing_extra("huggingface_hub", "export", "embedrt eval --reference") from err
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
            raise missing_extra("sentence-transformers and torch", "export", "embedrt eval --reference")


def load_reference(source: str) -> SupportsEncode:
    """The source model in sentence-transformers (PyTorch), loaded the way the export loaded it."""
    directory = _local_source(source)
    try:
        from embedrt.export.load import load_source
    except ImportError as err:
        raise missing_extra("the export stage", "export", "embedrt eval --reference") from err
    try:
        return load_source(directory).model
    except MissingExtraError as err:
        raise missing_extra("sentence-transformers and torch", "export", "embedrt eval --reference") from err


# ---------------------------------------------------------------------------------------------- command
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


def format_table(results: dict[str, dict[str, dict[str, float]]], datasets: Sequence[PairSet]) -> str:
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


def to_json(results: dict[str, dict[str, dict[str, float]]], datasets: Sequence[PairSet]) -> dict[str, Any]:
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


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _run_row(encoder: SupportsEncode, label: str, datasets: Sequence[PairSet], batch_size: int) -> dict[str, Any]:
    scores = {}
    for pairs in datasets:
        started = time.perf_counter()
        scores[pairs.name] = evaluate(encoder, pairs, batch_size)
        _say(
            f"  {label:7s} {pairs.name}: {len(pairs)} pairs, Spearman {_cell(scores[pairs.name]['spearman'])} "
            f"({time.perf_counter() - started:.1f} s)"
        )
    return scores


def run_eval_command(args: argparse.Namespace) -> int:
    """``embedrt eval BUNDLE DATA...``: read every file first, then score each precision (and PyTorch)."""
    from embedrt import Encoder
    from embedrt.bundle import Bundle
    from embedrt.runtime.backends.select import DEVICE_PRECISIONS
    from embedrt.runtime.encoder import resolve_precision

    bundle = Bundle.open(args.bundle)
    # By default every variant ONNX Runtime runs on this CPU (not fp16-trt, which only TensorRT runs).
    cpu_variants = [p for p in bundle.manifest.variants if p in DEVICE_PRECISIONS["cpu"]]
    precisions = list(dict.fromkeys(args.precision or cpu_variants))
    chosen = list(dict.fromkeys(resolve_precision(bundle, precision, "cpu") for precision in precisions))
    reference_source = getattr(args, "reference_model", None) or (bundle.manifest.source if args.reference else None)

    paths = [Path(path) for path in args.data]
    datasets = [
        load_pairs(path, args.format, args.split, name=name)
        for path, name in zip(paths, _unique_names(paths), strict=True)
    ]
    if reference_source is not None:  # fail before the long runs, not after them
        _require_reference_extra()
        _local_source(reference_source)

    results: dict[str, dict[str, dict[str, float]]] = {}
    for precision in chosen:
        encoder = Encoder.load(bundle.root, precision=precision, threads=args.threads)
        results[precision] = _run_row(encoder, precision, datasets, args.batch_size)
        del encoder
    if reference_source is not None:
        _say(f"loading the PyTorch reference {reference_source}")
        results[REFERENCE_ROW] = _run_row(load_reference(reference_source), REFERENCE_ROW, datasets, args.batch_size)

    if args.json:
        print(json.dumps(to_json(results, datasets), ensure_ascii=False))
        return 0
    sizes = ", ".join(f"{pairs.name} {len(pairs)}" for pairs in datasets)
    print(f"Spearman / Pearson x100, cosine similarity vs gold score ({bundle.root}; pairs: {sizes})")
    print(format_table(results, datasets))
    if "fp32" in results and "int8" in results:
        deltas = ", ".join(
            f"{n}: {results['int8'][n]['spearman'] - results['fp32'][n]['spearman']:+.2f}"
            for n in (pairs.name for pairs in datasets)
        )
        print(f"int8 - fp32 Spearman: {deltas}")
    return 0


__all__ = [
    "PairSet",
    "average_ranks",
    "cosine_scores",
    "evaluate",
    "load_pairs",
    "load_reference",
    "pearson",
    "run_eval_command",
    "spearman",
]
