"""Sentence-pair files for ``embedrt eval``: TSV pairs, JSONL, the STS benchmark with or without a header.

Malformed lines raise :class:`~embedrt.errors.InputError` with ``file:line``; nothing is skipped.
Standard library only (lines come from :mod:`embedrt.files`, the reader every command shares), so the
CLI can list the formats without loading NumPy.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from embedrt.errors import InputError, InputTypeError
from embedrt.files import decode_line, detect_format, iter_lines, open_input

FORMATS = ("auto", "pairs", "jsonl", "stsb", "sts")
#: Columns of the STS benchmark as released (``sts-test.csv``); some rows add source columns after them.
STS_COLUMNS = ("genre", "file", "year", "id", "score", "sentence1", "sentence2")
#: ``--split`` value that keeps every row of a file with a split column.
ALL_SPLITS = "all"


@dataclass(frozen=True)
class PairSet:
    """Sentence pairs with gold scores (a similarity score or a 0/1 label), read from one file."""

    name: str
    sentences1: tuple[str, ...]
    sentences2: tuple[str, ...]
    scores: tuple[float, ...]

    def __len__(self) -> int:
        return len(self.scores)


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
    with open_input(path) as stream:
        lines = list(iter_lines(stream, str(path)))
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
        cells = decode_line(raw, where).split("\t")
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
            record = json.loads(decode_line(raw, where))
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
    cells = decode_line(lines[0], f"{path}:1").split("\t")
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
        row = decode_line(raw, where).split("\t")
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
        cells = decode_line(raw, where).split("\t")
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


def sniff_format(path: Path, lines: list[bytes]) -> str:
    """``jsonl`` for files named ``.jsonl``/``.json`` or lines starting with ``{``; ``stsb`` for a TSV whose
    first line names sentence1 and sentence2; ``sts`` for the STS benchmark as released (7 or more columns
    with the score fifth); else ``pairs``."""
    if detect_format(path, ("jsonl",)) == "jsonl":
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
    chosen = sniff_format(path, lines) if format == "auto" else format
    if chosen == "pairs":
        rows = _parse_pairs(path, lines)
    elif chosen == "jsonl":
        rows = _parse_jsonl(path, lines)
    elif chosen == "sts":
        rows = _parse_sts(path, lines)
    else:
        rows = _parse_stsb(path, lines, split)
    pairs = _pair_set(name or dataset_name(path), rows)
    check_scores(pairs, str(path))
    return pairs


def _pair_set(name: str, rows: Sequence[tuple[str, str, float]]) -> PairSet:
    return PairSet(
        name=name,
        sentences1=tuple(row[0] for row in rows),
        sentences2=tuple(row[1] for row in rows),
        scores=tuple(row[2] for row in rows),
    )


def check_scores(pairs: PairSet, where: str) -> None:
    if len(pairs) < 2:
        raise InputError(f"{where}: {len(pairs)} pair(s); a correlation needs at least 2")
    if len(set(pairs.scores)) == 1:
        raise InputError(
            f"{where}: all {len(pairs)} gold scores equal {pairs.scores[0]:g}, so no correlation is defined; "
            "use a file with different scores or labels"
        )


def as_pair_set(pairs: PairSet | Sequence[tuple[str, str, float]]) -> PairSet:
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
