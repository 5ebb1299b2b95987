"""Reading texts line by line, and writing files so that a failure never leaves half of one.

One line reader serves every command that reads texts (``encode --input``, ``bench --data``,
``embed-file``, ``eval``): a line ends at ``\\n`` (a ``\\r`` before it is dropped too), a UTF-8 byte
order mark before the first line is dropped, ``-`` is standard input and ``.gz`` files are
decompressed as they are read. One partial-file helper serves every writer: bytes go to a hidden,
uniquely named sibling that replaces the target only when it is complete, so two writers never
share a temporary file and an interrupted one leaves the old target untouched.
"""

from __future__ import annotations

import codecs
import contextlib
import gzip
import os
import secrets
import sys
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any

from embedrt.errors import InputError

BOM = codecs.BOM_UTF8
#: What a file name's ending says about its records, for every command that reads them (``.gz`` aside).
SUFFIX_FORMATS = {
    ".txt": "text",
    ".text": "text",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
    ".csv": "csv",
    ".tsv": "tsv",
    ".parquet": "parquet",
    ".pq": "parquet",
}


def _reason(err: OSError) -> str:
    return err.strerror or str(err)


@contextlib.contextmanager
def open_input(path: str | os.PathLike[str]) -> Iterator[IO[bytes]]:
    """The bytes of ``path`` as a stream (``-``: standard input; ``.gz``: decompressed as read)."""
    name = os.fspath(path)
    if name == "-":
        yield sys.stdin.buffer
        return
    try:
        handle: IO[bytes] = gzip.open(name, "rb") if name.endswith(".gz") else open(name, "rb")  # type: ignore[assignment]
    except OSError as err:
        raise InputError(f"cannot read {name}: {_reason(err)}") from err
    with handle:
        yield handle


def iter_lines(stream: Iterable[bytes], name: str = "the input") -> Iterator[bytes]:
    """Each line of a binary stream without its line ending; a BOM before the first line is dropped.

    Read errors (including a truncated or invalid ``.gz``) become :class:`InputError` naming ``name``.
    """
    lines = iter(stream)
    first = True
    while True:
        try:
            raw = next(lines)
        except StopIteration:
            return
        except EOFError as err:
            raise InputError(f"cannot read {name}: the gzip stream is truncated") from err
        except OSError as err:  # a read error, or a .gz file that is not gzip
            raise InputError(f"cannot read {name}: {_reason(err)}") from err
        if raw.endswith(b"\n"):
            raw = raw[:-1]
        if raw.endswith(b"\r"):
            raw = raw[:-1]
        if first:
            first = False
            if raw.startswith(BOM):
                raw = raw[len(BOM) :]
        yield raw


def detect_format(path: str | os.PathLike[str], choices: Sequence[str]) -> str | None:
    """The format among ``choices`` that the name of ``path`` says (``.gz`` ignored), else ``None``."""
    suffixes = [suffix.lower() for suffix in Path(path).suffixes if suffix.lower() != ".gz"]
    found = SUFFIX_FORMATS.get(suffixes[-1]) if suffixes else None
    return found if found in choices else None


def decode_line(raw: bytes, where: str) -> str:
    """A line as text, or :class:`InputError` naming ``where`` (``file:line``) if it is not UTF-8."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise InputError(f"{where}: not valid UTF-8 ({err.reason}); convert the file to UTF-8") from err


def read_lines(path: str | os.PathLike[str]) -> list[str]:
    """Every line of a UTF-8 text file (empty lines included); errors name the file and line."""
    name = os.fspath(path)
    with open_input(name) as stream:
        return [decode_line(raw, f"{name}:{number}") for number, raw in enumerate(iter_lines(stream, name), start=1)]


class PartialFile:
    """A new, hidden, uniquely named file beside ``target`` that becomes ``target`` on :meth:`commit`.

    ``handle`` is open for writing (binary unless ``mode`` says text). Until :meth:`commit`, readers
    of ``target`` see the old file or none; :meth:`discard` removes the partial file.
    """

    def __init__(self, target: str | os.PathLike[str], mode: str = "wb", **open_args: Any) -> None:
        self.target = Path(target)
        self.path = self.target.with_name(f".{self.target.name}.{os.getpid()}-{secrets.token_hex(4)}.partial")
        descriptor = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        self.handle: IO[Any] = os.fdopen(descriptor, mode, **open_args)

    def commit(self) -> None:
        try:
            self.handle.close()
            os.replace(self.path, self.target)
        except BaseException:
            self.discard()
            raise

    def discard(self) -> None:
        self.handle.close()
        self.path.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_write(target: str | os.PathLike[str], mode: str = "wb", **open_args: Any) -> Iterator[IO[Any]]:
    """Write ``target`` through a :class:`PartialFile`: complete when the block ends, absent if it raises."""
    partial = PartialFile(target, mode, **open_args)
    try:
        yield partial.handle
    except BaseException:
        partial.discard()
        raise
    partial.commit()


def write_npy_atomic(path: Path, array: Any) -> None:
    """Save ``array`` to ``path`` (which must end in ``.npy``) atomically."""
    import numpy as np

    if path.suffix != ".npy":
        raise InputError(f"--output {path} must end in .npy")
    try:
        with atomic_write(path) as handle:
            np.save(handle, array)
    except OSError as err:
        raise InputError(f"cannot write {path}: {_reason(err)}") from err
