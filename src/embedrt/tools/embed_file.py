"""``embedrt embed-file``: embed a text, JSONL, CSV or Parquet file of any size into Parquet or ``.npy``.

Memory stays constant: rows are read, embedded and written one chunk at a time (the encoder sorts by
token length within a chunk). Output goes to a hidden partial file (:class:`embedrt.files.PartialFile`)
that replaces OUTPUT only when the whole input has been embedded, so a failed or interrupted run leaves
no output rather than a truncated one. A bad row stops the run with its line (or row) number unless
``skip_bad_rows``.
"""

from __future__ import annotations

import csv
import io
import json
import os
import struct
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import IO, Any

import numpy as np

from embedrt.errors import InputError
from embedrt.extras import missing_extra
from embedrt.files import PartialFile, detect_format, iter_lines

#: Rows embedded per ``Encoder.encode`` call: big enough to sort well by length, small in memory.
DEFAULT_CHUNK_ROWS = 4096
#: Bad rows named one by one in the final report; the rest are only counted.
SKIPPED_SHOWN = 5
#: Files up to this size have their lines counted up front so the progress bar can show an ETA.
COUNT_LINES_UP_TO = 4 << 30
#: Bytes reserved for the ``.npy`` header, rewritten with the real row count at the end.
NPY_HEADER_BYTES = 128


class InputFormat(str, Enum):
    """How the input file stores its texts."""

    TEXT = "text"  # one text per line
    JSONL = "jsonl"  # one JSON object per line
    CSV = "csv"  # comma-separated with a header row
    TSV = "tsv"  # tab-separated with a header row
    PARQUET = "parquet"


def input_format(path: str, requested: str = "auto") -> InputFormat:
    """The input format asked for, or the one the file name says."""
    choices = [f.value for f in InputFormat]
    if requested != "auto":
        if requested not in choices:
            raise InputError(f"unknown input format {requested!r}; use auto or one of: {', '.join(choices)}")
        return InputFormat(requested)
    found = detect_format(path, choices) if path != "-" else None
    if found is None:
        raise InputError(f"cannot tell the format of {path} from its name; pass --format ({', '.join(choices)})")
    return InputFormat(found)


@dataclass(frozen=True)
class Row:
    """One input record: its default id is its 0-based position among the records of the file."""

    number: int  # 1-based record number
    line: int | None  # 1-based line where it starts (None for Parquet)
    id: Any
    text: str | None
    problem: str = ""  # why it cannot be embedded; empty for a good row

    @property
    def where(self) -> str:
        return f"line {self.line}" if self.line is not None else f"row {self.number}"


@dataclass(frozen=True)
class EmbedFileJob:
    """What to read and where to write; the encoder is passed separately."""

    input: str
    output: str
    format: InputFormat
    text_column: str = "text"
    id_column: str | None = None
    skip_bad_rows: bool = False
    chunk_rows: int = DEFAULT_CHUNK_ROWS
    batch_size: int = 32
    normalize: bool | None = None
    #: What goes before each text (``Encoder.encode``'s); neither: the bundle's default prompt, if any.
    prompt_name: str | None = None
    prompt: str | None = None


@dataclass
class EmbedFileReport:
    """What a run did: rows written, rows skipped (with the first few locations), time taken."""

    output: Path
    ids_output: Path | None = None
    rows: int = 0
    skipped: int = 0
    first_skipped: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def skip(self, row: Row) -> None:
        self.skipped += 1
        if len(self.first_skipped) < SKIPPED_SHOWN:
            self.first_skipped.append(f"{row.where} ({row.problem})")


# ---------------------------------------------------------------------------------------------- readers
def _text_rows(handle: IO[bytes], name: str) -> Iterator[Row]:
    """Every line is a text, empty lines included (they embed like ``""``)."""
    for index, line in enumerate(iter_lines(handle, name)):
        try:
            yield Row(index + 1, index + 1, index, line.decode("utf-8"))
        except UnicodeDecodeError as err:
            yield Row(index + 1, index + 1, index, None, f"not valid UTF-8: {err.reason}")


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return "a string"


def _jsonl_rows(handle: IO[bytes], name: str, text_column: str, id_column: str | None) -> Iterator[Row]:
    """One JSON object per line; blank lines are not records. Ids must be all strings or all integers."""
    index = 0
    id_kind: type | None = None
    for number, line in enumerate(iter_lines(handle, name), start=1):
        if not line.strip():
            continue
        index += 1
        try:
            obj = json.loads(line.decode("utf-8"))
        except UnicodeDecodeError as err:
            yield Row(index, number, None, None, f"not valid UTF-8: {err.reason}")
            continue
        except json.JSONDecodeError as err:
            yield Row(index, number, None, None, f"not valid JSON: {err.msg} at column {err.colno}")
            continue
        if not isinstance(obj, dict):
            yield Row(index, number, None, None, f"is {_json_type(obj)}, expected a JSON object")
            continue
        row_id: Any = index - 1
        if id_column is not None:
            row_id = obj.get(id_column)
            kind = str if isinstance(row_id, str) else int if type(row_id) is int else None
            if kind is None:
                problem = f'"{id_column}" is {_json_type(row_id)}, expected a string or integer id'
                yield Row(index, number, None, None, problem)
                continue
            if id_kind is not None and kind is not id_kind:
                earlier = "strings" if id_kind is str else "integers"
                problem = f'"{id_column}" is {_json_type(row_id)} but earlier ids are {earlier}'
                yield Row(index, number, None, None, problem)
                continue
            id_kind = kind
        if text_column not in obj:
            fields = ", ".join(list(obj)[:10]) or "none"
            problem = f'has no "{text_column}" field (fields: {fields}); pass --text-column'
            yield Row(index, number, row_id, None, problem)
            continue
        text = obj[text_column]
        if not isinstance(text, str):
            yield Row(index, number, row_id, None, f'"{text_column}" is {_json_type(text)}, expected a string')
            continue
        yield Row(index, number, row_id, text)


def _column_index(header: list[str], name: str, flag: str, path: str) -> int:
    try:
        return header.index(name)
    except ValueError:
        shown = ", ".join(header[:20]) + (", ..." if len(header) > 20 else "")
        raise InputError(f"{path}: no column {name!r} in the header ({shown}); pass {flag} NAME") from None


def _not_utf8(value: str) -> str:
    """Why a field decoded with ``surrogateescape`` is not UTF-8, or ``""`` if it is."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "not valid UTF-8"
    return ""


def _csv_rows(handle: IO[str], job: EmbedFileJob, delimiter: str) -> Iterator[Row]:
    """Rows of a CSV/TSV file with a header; reads the header now so a missing column fails early."""
    reader = csv.reader(handle, delimiter=delimiter)
    try:
        header = next(reader)
    except StopIteration:
        return iter(())
    except csv.Error as err:
        raise InputError(f"{job.input}:1: not valid CSV ({err})") from err
    text_at = _column_index(header, job.text_column, "--text-column", job.input)
    id_at = _column_index(header, job.id_column, "--id-column", job.input) if job.id_column else None
    return _csv_body(reader, len(header), text_at, id_at, job.input)


def _csv_body(reader: Any, width: int, text_at: int, id_at: int | None, path: str) -> Iterator[Row]:
    index = 0
    while True:
        start = reader.line_num + 1
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error as err:
            raise InputError(f"{path}:{reader.line_num}: not valid CSV ({err}); fix the file") from err
        if not fields:  # a blank line is not a record
            continue
        index += 1
        row_id: Any = index - 1 if id_at is None else None
        if len(fields) != width:
            yield Row(index, start, row_id, None, f"has {len(fields)} fields, the header has {width}")
            continue
        if id_at is not None:
            row_id = fields[id_at]
            if problem := _not_utf8(row_id):
                yield Row(index, start, None, None, f"id {problem}")
                continue
        text = fields[text_at]
        yield Row(index, start, row_id, None if _not_utf8(text) else text, _not_utf8(text))


def import_pyarrow() -> tuple[Any, Any]:
    """``pyarrow`` and ``pyarrow.parquet``, or one :class:`~embedrt.errors.MissingExtraError` naming the extra."""
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError as err:
        raise missing_extra("pyarrow", "Parquet input and output") from err
    return pyarrow, pyarrow.parquet


def _parquet_source(job: EmbedFileJob) -> tuple[Iterator[Row], int, Any]:
    """Rows of a Parquet file read in record batches, its row count, and the id column's Arrow type."""
    pa, pq = import_pyarrow()
    try:
        parquet = pq.ParquetFile(job.input)
    except (OSError, pa.ArrowException) as err:
        raise InputError(f"{job.input} is not a readable Parquet file ({err})") from err
    schema = parquet.schema_arrow
    names = list(schema.names)
    _column_index(names, job.text_column, "--text-column", job.input)
    text_type = schema.field(job.text_column).type
    if pa.types.is_dictionary(text_type):
        text_type = text_type.value_type
    if not (pa.types.is_string(text_type) or pa.types.is_large_string(text_type) or str(text_type) == "string_view"):
        raise InputError(
            f"{job.input}: column {job.text_column!r} is {text_type}, expected strings; pass --text-column NAME "
            "of a string column"
        )
    columns = [job.text_column]
    id_type: Any = pa.int64()
    if job.id_column:
        _column_index(names, job.id_column, "--id-column", job.input)
        id_type = schema.field(job.id_column).type
        if job.id_column != job.text_column:
            columns.append(job.id_column)

    def rows() -> Iterator[Row]:
        index = 0
        try:
            for batch in parquet.iter_batches(batch_size=job.chunk_rows, columns=columns):
                texts = batch.column(job.text_column).to_pylist()
                ids = batch.column(job.id_column).to_pylist() if job.id_column else None
                for offset, text in enumerate(texts):
                    index += 1
                    row_id = ids[offset] if ids is not None else index - 1
                    if row_id is None:
                        yield Row(index, None, None, None, f"{job.id_column!r} is null")
                    elif text is None:
                        yield Row(index, None, row_id, None, f"{job.text_column!r} is null")
                    else:
                        yield Row(index, None, row_id, text)
        except (OSError, pa.ArrowException) as err:
            raise InputError(f"{job.input}: cannot read row {index + 1} onwards ({err})") from err

    return rows(), parquet.metadata.num_rows, id_type


def _count_lines(path: str) -> int | None:
    """Line count of a regular file small enough to scan quickly, for the progress bar's ETA."""
    try:
        size = os.path.getsize(path)
    except OSError:
        return None
    if size > COUNT_LINES_UP_TO:
        return None
    lines = 0
    last = b"\n"
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            lines += block.count(b"\n")
            last = block[-1:]
    return lines + (last != b"\n")


def open_rows(job: EmbedFileJob, stack: Any, want_total: bool) -> tuple[Iterator[Row], int | None, Any]:
    """The input's rows, an estimated row count (or None) and the ids' Arrow type (a name, a type, or None
    to infer it from the first chunk).

    Files are registered on ``stack`` (a ``contextlib.ExitStack``) so they close with the run.
    """
    if job.format is InputFormat.PARQUET:
        if job.input == "-":
            raise InputError("Parquet cannot be read from standard input; pass the file path")
        return _parquet_source(job)
    if job.format is InputFormat.TEXT and job.id_column:
        raise InputError("a text file has no columns, so --id-column needs JSONL, CSV or Parquet input")
    try:
        binary = sys.stdin.buffer if job.input == "-" else stack.enter_context(open(job.input, "rb"))
    except OSError as err:
        raise InputError(f"cannot read {job.input}: {err.strerror}") from err
    total = _count_lines(job.input) if want_total and job.input != "-" else None
    if job.format is InputFormat.TEXT:
        return _text_rows(binary, job.input), total, "int64"
    if job.format is InputFormat.JSONL:
        rows = _jsonl_rows(binary, job.input, job.text_column, job.id_column)
        return rows, total, None if job.id_column else "int64"
    text = io.TextIOWrapper(binary, encoding="utf-8-sig", errors="surrogateescape", newline="")
    delimiter = "\t" if job.format is InputFormat.TSV else ","
    csv_rows = _csv_rows(text, job, delimiter)
    return csv_rows, None if total is None else max(total - 1, 0), "string" if job.id_column else "int64"


# ---------------------------------------------------------------------------------------------- writers
def npy_header(rows: int, dim: int, size: int = NPY_HEADER_BYTES) -> bytes:
    """A version 1.0 ``.npy`` header for float32 ``(rows, dim)``, space-padded to exactly ``size`` bytes."""
    text = f"{{'descr': '<f4', 'fortran_order': False, 'shape': ({rows}, {dim}), }}"
    body = size - 10  # magic (6) + version (2) + header length (2)
    if len(text) + 1 > body:
        raise InputError(f"{rows} x {dim} does not fit a {size}-byte .npy header")
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", body) + (text.ljust(body - 1) + "\n").encode("latin1")


def ids_path_for(output: Path) -> Path:
    """``vectors.npy`` -> ``vectors.ids.txt``: the ids of a ``.npy`` output, one per line."""
    return output.with_name(output.name[: -len(".npy")] + ".ids.txt")


class NpySink:
    """Streams float32 rows after a reserved header, then writes the real shape: one pass, no copy."""

    def __init__(self, output: Path, dim: int) -> None:
        self.output = output
        self.ids_output: Path | None = ids_path_for(output)
        self.dim = dim
        self.rows = 0
        self._data = PartialFile(output)
        try:
            self._ids = PartialFile(ids_path_for(output), "w", encoding="utf-8", newline="\n")
        except BaseException:
            self._data.discard()
            raise
        self._data.handle.write(b"\0" * NPY_HEADER_BYTES)

    def write(self, ids: list[Any], vectors: np.ndarray) -> None:
        lines = []
        for row_id in ids:
            text = str(row_id)
            if "\n" in text or "\r" in text:
                raise InputError(
                    f"id {text[:40]!r} contains a line break, which {self.ids_output} cannot hold; "
                    "write Parquet output instead"
                )
            lines.append(text + "\n")
        self._data.handle.write(np.ascontiguousarray(vectors, dtype="<f4").tobytes())
        self._ids.handle.writelines(lines)
        self.rows += len(ids)

    def commit(self) -> None:
        self._data.handle.seek(0)
        self._data.handle.write(npy_header(self.rows, self.dim))
        self._ids.commit()
        self._data.commit()  # last: a present .npy means a complete run

    def discard(self) -> None:
        self._data.discard()
        self._ids.discard()


class ParquetSink:
    """Appends one row group per chunk: ``id`` and ``embedding`` (``fixed_size_list<float32>[dim]``)."""

    def __init__(self, output: Path, dim: int, id_type: Any) -> None:
        self._pa, self._pq = import_pyarrow()
        self.output = output
        self.ids_output: Path | None = None
        self.dim = dim
        self._id_type = self._pa.type_for_alias(id_type) if isinstance(id_type, str) else id_type
        self._writer: Any = None
        self._file = PartialFile(output)

    def write(self, ids: list[Any], vectors: np.ndarray) -> None:
        pa = self._pa
        flat = pa.array(np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1), type=pa.float32())
        embeddings = pa.FixedSizeListArray.from_arrays(flat, self.dim)
        try:
            id_array = pa.array(ids, type=self._id_type)
        except (pa.ArrowException, OverflowError) as err:
            raise InputError(f"ids cannot be stored as one Parquet column ({err}); check --id-column") from err
        table = pa.table({"id": id_array, "embedding": embeddings})
        if self._writer is None:
            self._id_type = id_array.type
            self._writer = self._pq.ParquetWriter(self._file.handle, table.schema)
        self._writer.write_table(table)

    def commit(self) -> None:
        if self._writer is None:  # no rows: still a valid, empty file with the schema
            if self._id_type is None:
                self._id_type = self._pa.string()
            self.write([], np.zeros((0, self.dim), dtype=np.float32))
        self._writer.close()
        self._file.commit()

    def discard(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._file.discard()


def check_output(job: EmbedFileJob) -> Path:
    """The output path, if its suffix and directory are usable and it is not the input."""
    output = Path(job.output)
    if output.suffix.lower() not in (".parquet", ".npy"):
        raise InputError(f"-o {output} must end in .parquet (columns id, embedding) or .npy (plus .ids.txt)")
    if not output.parent.is_dir():
        raise InputError(f"-o {output}: directory {output.parent} does not exist; create it first")
    if job.input != "-" and Path(job.input).resolve() == output.resolve():
        raise InputError(f"-o {output} is the input file; write somewhere else")
    return output


# ---------------------------------------------------------------------------------------------- the run
def _chunks(rows: Iterable[Row], job: EmbedFileJob, report: EmbedFileReport) -> Iterator[tuple[list, list[str], int]]:
    """Good rows in chunks of ``job.chunk_rows``: (ids, texts, records consumed including skipped ones)."""
    ids: list[Any] = []
    texts: list[str] = []
    consumed = 0
    for row in rows:
        consumed += 1
        if row.problem or row.text is None:
            if not job.skip_bad_rows:
                location = f"{job.input}:{row.line}" if row.line is not None else f"{job.input}: row {row.number}"
                raise InputError(f"{location}: {row.problem}; fix it, or pass --skip-bad-rows to skip bad rows")
            report.skip(row)
            continue
        ids.append(row.id)
        texts.append(row.text)
        if len(texts) >= job.chunk_rows:
            yield ids, texts, consumed
            ids, texts, consumed = [], [], 0
    if texts or consumed:
        yield ids, texts, consumed


def progress_bar(total: int | None) -> Any:
    """A bar on standard error that moves with every batch: rows done, rows/s and, when the total is known, ETA."""
    from tqdm.auto import tqdm

    if total is None:
        form = "{desc}: {n_fmt} rows [{elapsed}, {rate_fmt}]"
    else:
        form = "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} rows [{elapsed}, ETA {remaining}, {rate_fmt}]"
    return tqdm(
        total=total,
        unit="rows",
        desc="embedding",
        file=sys.stderr,
        dynamic_ncols=True,
        smoothing=0.1,
        bar_format=form,
        mininterval=0.2,
    )


def embed_file(encoder: Any, job: EmbedFileJob, show_progress: bool = False) -> EmbedFileReport:
    """Embed every row of ``job.input`` into ``job.output`` with ``encoder`` (an :class:`embedrt.Encoder`)."""
    from contextlib import ExitStack

    output = check_output(job)
    if job.prompt_name is not None:
        encoder.prompt_text(job.prompt_name, job.prompt)  # an unknown name fails before anything is read
    report = EmbedFileReport(output=output)
    started = time.perf_counter()
    with ExitStack() as stack:
        rows, total, id_type = open_rows(job, stack, want_total=show_progress)
        try:
            if output.suffix.lower() == ".npy":
                sink: NpySink | ParquetSink = NpySink(output, encoder.dim)
            else:
                sink = ParquetSink(output, encoder.dim, id_type)
        except OSError as err:
            raise InputError(f"cannot write {err.filename or output}: {err.strerror or err}") from err
        progress = stack.enter_context(progress_bar(total)) if show_progress else None
        moved = progress.update if progress is not None else None
        try:
            for ids, texts, consumed in _chunks(rows, job, report):
                if texts:
                    vectors = encoder.encode(
                        texts,
                        batch_size=job.batch_size,
                        normalize=job.normalize,
                        prompt_name=job.prompt_name,
                        prompt=job.prompt,
                        progress=moved,
                    )
                    sink.write(ids, vectors)
                    report.rows += len(texts)
                if progress is not None:
                    progress.update(consumed - len(texts))  # skipped rows; embedded ones moved it batch by batch
            if progress is not None and progress.total != progress.n:  # the count was an estimate
                progress.total = progress.n
                progress.refresh()
            sink.commit()
        except OSError as err:
            sink.discard()
            raise InputError(f"cannot read or write {err.filename or output}: {err.strerror or err}") from err
        except BaseException:
            sink.discard()
            raise
    report.ids_output = sink.ids_output
    report.seconds = time.perf_counter() - started
    return report
