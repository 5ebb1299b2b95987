"""`embedrt embed-file`: every input format, both outputs, bad rows, chunking, and no output on failure."""

import json
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from embedrt import Encoder, InputError
from embedrt.cli import main
from embedrt.tools.embed_file import EmbedFileJob, InputFormat, embed_file, npy_header
from tests.helpers import SHORT_TEXTS, assert_one_line_error, run_cli_blocking

TEXTS = SHORT_TEXTS


@pytest.fixture(scope="module")
def encoder(tiny_bundle):
    return Encoder.load(tiny_bundle, precision="fp32")


@pytest.fixture(scope="module")
def expected(encoder):
    return encoder.encode(TEXTS)


def embed(bundle, *args):
    return main(["embed-file", str(bundle), *map(str, args), "--precision", "fp32", "-q"])


def read_parquet(path):
    table = pq.read_table(path)
    return table.column("id").to_pylist(), np.array(table.column("embedding").to_pylist(), dtype=np.float32)


def leftovers(directory):
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".partial"))


def write_inputs(tmp_path):
    """The same texts in every format, with ids 100, 101, ..."""
    ids = [100 + i for i in range(len(TEXTS))]
    files = {}
    files["txt"] = tmp_path / "in.txt"
    files["txt"].write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    files["jsonl"] = tmp_path / "in.jsonl"
    files["jsonl"].write_text(
        "".join(
            json.dumps({"id": i, "text": t, "other": 1}, ensure_ascii=False) + "\n"
            for i, t in zip(ids, TEXTS, strict=True)
        ),
        encoding="utf-8",
    )
    files["csv"] = tmp_path / "in.csv"
    files["csv"].write_text(
        "id,text\n" + "".join(f'{i},"{t}"\n' for i, t in zip(ids, TEXTS, strict=True)), encoding="utf-8", newline=""
    )
    files["tsv"] = tmp_path / "in.tsv"
    files["tsv"].write_text(
        "text\tid\n" + "".join(f"{t}\t{i}\n" for i, t in zip(ids, TEXTS, strict=True)), encoding="utf-8"
    )
    files["parquet"] = tmp_path / "in.parquet"
    pq.write_table(pa.table({"id": ids, "text": TEXTS}), files["parquet"], row_group_size=3)
    return ids, files


@pytest.mark.parametrize("fmt", ["txt", "jsonl", "csv", "tsv", "parquet"])
@pytest.mark.parametrize("out_suffix", [".parquet", ".npy"])
def test_every_format_matches_encode(tiny_bundle, expected, tmp_path, fmt, out_suffix):
    ids, files = write_inputs(tmp_path)
    out = tmp_path / f"out{out_suffix}"
    id_args = () if fmt == "txt" else ("--id-column", "id")
    assert embed(tiny_bundle, files[fmt], "-o", out, "--chunk-size", 3, *id_args) == 0
    if out_suffix == ".parquet":
        got_ids, vectors = read_parquet(out)
        schema = pq.read_schema(out)
        assert schema.field("embedding").type == pa.list_(pa.float32(), expected.shape[1])
    else:
        vectors = np.load(out)
        got_ids = (tmp_path / "out.ids.txt").read_text(encoding="utf-8").splitlines()
        assert np.load(out, mmap_mode="r").shape == expected.shape
    np.testing.assert_allclose(vectors, expected, atol=1e-6)
    want_ids = list(range(len(TEXTS))) if fmt == "txt" else ids
    if fmt in ("csv", "tsv") and out_suffix == ".parquet":
        want_ids = [str(i) for i in ids]  # CSV fields are strings
    if out_suffix == ".npy":
        want_ids = [str(i) for i in want_ids]
    assert got_ids == want_ids
    assert leftovers(tmp_path) == []


def test_default_ids_are_record_numbers_and_parquet_types_are_kept(tiny_bundle, tmp_path):
    src = tmp_path / "in.parquet"
    pq.write_table(pa.table({"key": pa.array([7, 8, 9], pa.int32()), "body": ["a", "b", "c"]}), src)
    out = tmp_path / "out.parquet"
    assert embed(tiny_bundle, src, "-o", out, "--text-column", "body", "--id-column", "key") == 0
    assert pq.read_schema(out).field("id").type == pa.int32()
    assert embed(tiny_bundle, src, "-o", out, "--text-column", "body") == 0
    assert read_parquet(out)[0] == [0, 1, 2]


class SpyEncoder:
    """Wraps an encoder and records how many texts each call got; optionally fails on a given call."""

    def __init__(self, encoder, fail_on_call=None, error=KeyboardInterrupt):
        self.encoder, self.calls, self.fail_on_call, self.error = encoder, [], fail_on_call, error
        self.dim = encoder.dim

    def encode(self, texts, **kwargs):
        self.calls.append(len(texts))
        if len(self.calls) == self.fail_on_call:
            raise self.error()
        return self.encoder.encode(texts, **kwargs)


def test_chunks_bound_memory_and_give_the_same_numbers(encoder, tmp_path):
    src = tmp_path / "big.txt"
    texts = [f"{TEXTS[i % len(TEXTS)]}{i}" for i in range(50)]
    src.write_text("\n".join(texts), encoding="utf-8")  # no final newline
    spy = SpyEncoder(encoder)
    job = EmbedFileJob(input=str(src), output=str(tmp_path / "o.npy"), format=InputFormat.TEXT, chunk_rows=8)
    report = embed_file(spy, job)
    assert report.rows == 50 and max(spy.calls) <= 8 and sum(spy.calls) == 50
    np.testing.assert_allclose(np.load(tmp_path / "o.npy"), encoder.encode(texts), atol=1e-6)


@pytest.mark.parametrize("suffix", [".parquet", ".npy"])
def test_interrupted_run_leaves_old_output_and_no_partial(encoder, tmp_path, suffix):
    src = tmp_path / "in.txt"
    src.write_text("\n".join(TEXTS * 4), encoding="utf-8")
    out = tmp_path / f"out{suffix}"
    out.write_bytes(b"previous result")
    job = EmbedFileJob(input=str(src), output=str(out), format=InputFormat.TEXT, chunk_rows=5)
    with pytest.raises(KeyboardInterrupt):
        embed_file(SpyEncoder(encoder, fail_on_call=2), job)
    assert out.read_bytes() == b"previous result"
    assert leftovers(tmp_path) == [] and not (tmp_path / "out.ids.txt").exists()


BAD_INPUTS = [
    ("bad.txt", "好\n".encode() + b"\xff\xfe\n" + b"ok\n", (), r"bad.txt:2: not valid UTF-8"),
    ("bad.jsonl", b'{"text": "a"}\n{"text": null}\n', (), r'bad.jsonl:2: "text" is null, expected a string'),
    ("bad.jsonl", b'{"text": "a"}\n\n{"text": 3}\n', (), r"bad.jsonl:3: .*is a number"),
    ("bad.jsonl", b'{"text": "a"}\n{"text": "b"\n', (), r"bad.jsonl:2: not valid JSON"),
    ("bad.jsonl", b'{"text": "a"}\n["b"]\n', (), r"bad.jsonl:2: is an array, expected a JSON object"),
    ("bad.jsonl", b'{"body": "a"}\n', (), r'bad.jsonl:1: has no "text" field \(fields: body\); pass --text-column'),
    ("bad.jsonl", b'{"text": "a", "id": 1}\n{"text": "b", "id": "x"}\n', ("--id-column", "id"), r"earlier ids"),
    ("bad.jsonl", b'{"text": "a", "id": null}\n', ("--id-column", "id"), r'"id" is null'),
    ("bad.csv", b"id,text\n1,a\n2\n", (), r"bad.csv:3: has 1 fields, the header has 2"),
    ("bad.csv", b"id,text\n1,a\n2,\xff\n", (), r"bad.csv:3: not valid UTF-8"),
]


@pytest.mark.parametrize("name, data, extra, pattern", BAD_INPUTS)
def test_bad_rows_name_their_line_and_write_nothing(tiny_bundle, tmp_path, capsys, name, data, extra, pattern):
    src = tmp_path / name
    src.write_bytes(data)
    out = tmp_path / "out.parquet"
    assert embed(tiny_bundle, src, "-o", out, *extra) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("embedrt: error:") and "\n" not in err
    assert __import__("re").search(pattern, err), err
    assert "--skip-bad-rows" in err
    assert not out.exists() and leftovers(tmp_path) == []


def test_bad_parquet_rows_name_their_row(tiny_bundle, tmp_path, capsys):
    src = tmp_path / "in.parquet"
    pq.write_table(pa.table({"text": ["a", None, "c", None]}), src)
    assert embed(tiny_bundle, src, "-o", tmp_path / "o.parquet") == 1
    assert "in.parquet: row 2: 'text' is null" in capsys.readouterr().err
    assert main(["embed-file", str(tiny_bundle), str(src), "-o", str(tmp_path / "o.parquet"), "--skip-bad-rows"]) == 0
    err = capsys.readouterr().err
    assert "skipped 2 bad rows: row 2 ('text' is null), row 4 ('text' is null)" in err
    assert read_parquet(tmp_path / "o.parquet")[0] == [0, 2]


def test_skip_bad_rows_counts_and_keeps_positions(tiny_bundle, encoder, tmp_path, capsys):
    src = tmp_path / "in.jsonl"
    lines = ['{"text": "花呗"}', "oops", '{"text": null}', '{"text": "借呗"}', "[1]", "{}", "{}", "{}", "{}"]
    src.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / "out.npy"
    assert (
        main(["embed-file", str(tiny_bundle), str(src), "-o", str(out), "--skip-bad-rows", "--precision", "fp32"]) == 0
    )
    err = capsys.readouterr().err
    assert "skipped 7 bad rows: line 2 (not valid JSON" in err and err.rstrip().endswith(", ...")
    assert (tmp_path / "out.ids.txt").read_text().split() == ["0", "3"]
    np.testing.assert_allclose(np.load(out), encoder.encode(["花呗", "借呗"]), atol=1e-6)


@pytest.mark.parametrize("suffix", [".parquet", ".npy"])
def test_empty_input_gives_an_empty_valid_output(tiny_bundle, encoder, tmp_path, suffix):
    src = tmp_path / "empty.jsonl"
    src.write_bytes(b"")
    out = tmp_path / f"out{suffix}"
    assert embed(tiny_bundle, src, "-o", out) == 0
    if suffix == ".npy":
        assert np.load(out).shape == (0, encoder.dim)
    else:
        assert pq.read_table(out).num_rows == 0


@pytest.mark.parametrize(
    "make_args, pattern",
    [
        (lambda d: (d / "in.xml", "-o", d / "o.parquet"), r"cannot tell the format.*pass --format"),
        (lambda d: (d / "in.txt", "-o", d / "o.csv"), r"must end in .parquet .* or .npy"),
        (lambda d: (d / "in.txt", "-o", d / "missing" / "o.npy"), r"directory .*missing does not exist"),
        (lambda d: (d / "nope.txt", "-o", d / "o.npy"), r"cannot read .*nope.txt"),
        (lambda d: (d / "in.txt", "-o", d / "o.npy", "--id-column", "id"), r"text file has no columns"),
        (lambda d: (d / "in.csv", "-o", d / "o.npy", "--text-column", "body"), r"no column 'body'.*\(id, text\)"),
        (lambda d: (d / "in.parquet", "-o", d / "o.npy", "--text-column", "id"), r"column 'id' is int64"),
        (lambda d: (d / "in.parquet", "-o", d / "in.parquet"), r"is the input file"),
    ],
)
def test_usage_errors_are_one_line(tiny_bundle, tmp_path, capsys, make_args, pattern):
    write_inputs(tmp_path)
    assert embed(tiny_bundle, *make_args(tmp_path)) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("embedrt: error:") and "\n" not in err
    assert __import__("re").search(pattern, err), err


def test_npy_header_is_what_numpy_reads(tmp_path):
    for rows in (0, 3, 10**12):
        header = npy_header(rows, 768)
        assert len(header) == 128
        path = tmp_path / "h.npy"
        path.write_bytes(header + b"\0" * (min(rows, 3) * 768 * 4))
        if rows <= 3:
            assert np.load(path).shape == (rows, 768)
    with pytest.raises(InputError):
        npy_header(10**200, 768)


def test_cli_subprocess_with_progress_and_stdin(tiny_bundle, expected, tmp_path):
    out = tmp_path / "o.parquet"
    result = subprocess.run(
        [sys.executable, "-m", "embedrt.cli", "embed-file", str(tiny_bundle), "-", "--format", "text", "-o", str(out)]
        + ["--precision", "fp32", "--progress"],
        input="\n".join(TEXTS).encode(),
        capture_output=True,
        timeout=120,
    )
    err = result.stderr.decode()
    assert result.returncode == 0, err
    assert "rows/s" in err and f"wrote {len(TEXTS)} x" in err
    np.testing.assert_allclose(read_parquet(out)[1], expected, atol=1e-6)


@pytest.mark.parametrize("suffix", [".npy", ".parquet"])
def test_output_that_cannot_be_created_is_one_line(tiny_bundle, tmp_path, capsys, monkeypatch, suffix):
    import os

    from embedrt import files

    src = tmp_path / "in.txt"
    src.write_text("a\n", encoding="utf-8")
    real_open = os.open

    def refuse_partials(path, *args, **kwargs):  # as a full disk or a read-only directory would, even for root
        if str(path).endswith(".partial"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(files.os, "open", refuse_partials)
    assert embed(tiny_bundle, src, "-o", tmp_path / f"o{suffix}") == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("embedrt: error: cannot") and "\n" not in err, err
    assert not (tmp_path / f"o{suffix}").exists()


def test_device_is_passed_to_the_engine(tiny_bundle, tmp_path, capsys):
    """``--device cuda`` asks for the GPU: here (no CUDA provider) that is a one-line error, never a CPU run."""
    src = tmp_path / "in.txt"
    src.write_text("a\n", encoding="utf-8")
    assert embed(tiny_bundle, src, "-o", tmp_path / "o.npy", "--device", "cuda") == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("embedrt: error:") and "CUDAExecutionProvider" in err and "\n" not in err, err
    assert not (tmp_path / "o.npy").exists()


@pytest.mark.parametrize("direction", ["output", "input"])
def test_parquet_without_pyarrow_names_the_io_extra(tiny_bundle, tmp_path, direction):
    """A runtime-only install (``embedrt[cpu]``, no pyarrow): one line naming the extra, no traceback."""
    src, out = tmp_path / "in.txt", tmp_path / "o.parquet"
    src.write_text("a\n", encoding="utf-8")
    if direction == "input":
        src, out = tmp_path / "in.parquet", tmp_path / "o.npy"
        pq.write_table(pa.table({"text": ["a"]}), src)
    result = run_cli_blocking({"pyarrow"}, "embed-file", tiny_bundle, src, "-o", out, "--precision", "fp32")
    assert_one_line_error(result, r'Parquet input and output needs pyarrow: pip install "embedrt\[io\]"')
    assert not out.exists()
