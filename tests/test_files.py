"""The one line reader and the one atomic writer every command uses."""

from __future__ import annotations

import gzip

import pytest

from embedrt.errors import InputError
from embedrt.files import PartialFile, atomic_write, detect_format, read_lines


def test_read_lines_drops_the_bom_and_line_ends_only(tmp_path):
    path = tmp_path / "texts.txt"
    path.write_bytes("\ufeff花呗怎么还款\r\n\r\n  two  \nlast".encode())
    assert read_lines(path) == ["花呗怎么还款", "", "  two  ", "last"]
    later = tmp_path / "later.txt"
    later.write_bytes("a\n\ufeffb\n".encode())  # only a BOM before the first line is a BOM
    assert read_lines(later) == ["a", "\ufeffb"]


def test_read_lines_gz_and_located_errors(tmp_path):
    packed = tmp_path / "texts.txt.gz"
    packed.write_bytes(gzip.compress("\ufeffa\nb\n".encode()))
    assert read_lines(packed) == ["a", "b"]
    truncated = tmp_path / "cut.txt.gz"
    whole = gzip.compress("".join(f"{i}\n" for i in range(20000)).encode())
    truncated.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(InputError, match="cut.txt.gz: the gzip stream is truncated"):
        read_lines(truncated)
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"ok\n\xff\n")
    with pytest.raises(InputError, match=r"bad.txt:2: not valid UTF-8"):
        read_lines(bad)
    with pytest.raises(InputError, match="cannot read .*missing.txt"):
        read_lines(tmp_path / "missing.txt")


def test_atomic_write_replaces_only_when_complete(tmp_path):
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_write(target) as handle:
        handle.write(b"half")
        raise RuntimeError("interrupted")
    assert target.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["out.bin"]
    with atomic_write(target) as handle:
        handle.write(b"new")
    assert target.read_bytes() == b"new" and sorted(p.name for p in tmp_path.iterdir()) == ["out.bin"]


def test_partial_files_of_one_target_never_collide(tmp_path):
    first, second = PartialFile(tmp_path / "x"), PartialFile(tmp_path / "x")
    assert first.path != second.path and first.path.name.startswith(".x.")
    first.handle.write(b"1")
    second.handle.write(b"2")
    first.commit()
    second.discard()
    assert (tmp_path / "x").read_bytes() == b"1" and [p.name for p in tmp_path.iterdir()] == ["x"]


@pytest.mark.parametrize(
    "name, choices, found",
    [
        ("a.jsonl", ("jsonl", "text"), "jsonl"),
        ("a.JSONL.gz", ("jsonl",), "jsonl"),
        ("a.tsv", ("jsonl",), None),
        ("a.pq", ("parquet",), "parquet"),
        ("noext", ("text",), None),
    ],
)
def test_detect_format_from_the_name(name, choices, found):
    assert detect_format(name, choices) == found
