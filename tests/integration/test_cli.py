"""The CLI: real commands in subprocesses, one-line errors, no tracebacks for user mistakes."""

import json
import subprocess
import sys

import numpy as np
import pytest

from embedrt import Encoder


def run(*args, input=None, timeout=300):
    return subprocess.run(
        [sys.executable, "-m", "embedrt.cli", *map(str, args)],
        capture_output=True,
        text=input is None or isinstance(input, str),
        input=input,
        timeout=timeout,
    )


def assert_one_line_error(result, pattern):
    import re

    assert result.returncode != 0
    err = result.stderr.decode() if isinstance(result.stderr, bytes) else result.stderr
    lines = [line for line in err.strip().splitlines() if line]
    errors = [line for line in lines if line.startswith("embedrt: error:")]
    assert len(errors) == 1 and lines[-1] == errors[0], err  # progress may precede it, nothing follows
    assert "Traceback" not in err
    assert re.search(pattern, errors[0]), errors[0]


def test_export_info_encode_round_trip(tiny_model_dir, tmp_path):
    bundle = tmp_path / "bundle"
    result = run("export", tiny_model_dir, "-o", bundle, "--precision", "fp32,int8")
    assert result.returncode == 0, result.stderr
    assert "fp32" in result.stderr and "min cos" in result.stderr

    info = run("info", bundle)
    assert info.returncode == 0
    assert "fused attention" in info.stdout and "int8" in info.stdout
    assert json.loads(run("info", bundle, "--json").stdout)["dim"] == 32

    again = run("export", tiny_model_dir, "-o", bundle)
    assert_one_line_error(again, "already exists; pass --force")

    texts = tmp_path / "texts.txt"
    texts.write_text("花呗怎么还款\n\n混合 English\n", encoding="utf-8")
    out = tmp_path / "vectors.npy"
    result = run("encode", bundle, "--input", texts, "--output", out, "--precision", "fp32")
    assert result.returncode == 0, result.stderr
    vectors = np.load(out)
    expected = Encoder.load(bundle, precision="fp32").encode(["花呗怎么还款", "", "混合 English"])
    np.testing.assert_allclose(vectors, expected, atol=1e-6)

    printed = run("encode", bundle, "花呗", "--precision", "fp32")
    assert printed.returncode == 0
    rows = [json.loads(line) for line in printed.stdout.splitlines()]
    np.testing.assert_allclose(rows, Encoder.load(bundle, precision="fp32").encode(["花呗"]), atol=1e-6)


@pytest.mark.parametrize(
    "args, pattern",
    [
        (("info", "/nonexistent/bundle"), "does not exist"),
        (("encode", "/nonexistent/bundle", "x"), "does not exist"),
        (("export", "/nonexistent/model", "-o", "/tmp/embedrt-never"), "neither a model directory"),
    ],
)
def test_user_errors_are_one_line(args, pattern):
    assert_one_line_error(run(*args), pattern)


def test_encode_errors(tiny_bundle, tmp_path):
    assert_one_line_error(run("encode", tiny_bundle, "x", "--precision", "fp16"), "no 'fp16' variant")
    assert_one_line_error(run("encode", tiny_bundle), "nothing to encode")
    bad = tmp_path / "bad.txt"
    bad.write_bytes("好\n".encode() + b"\xff\xfe\n")
    assert_one_line_error(run("encode", tiny_bundle, "--input", bad), r"bad.txt:2: not valid UTF-8")
    assert_one_line_error(run("encode", tiny_bundle, "x", "--output", tmp_path / "v.txt"), "must end in .npy")
    assert not (tmp_path / "v.txt").exists()


def test_hub_id_offline_is_one_line(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "embedrt.cli",
            "export",
            "DMetaSoul/sbert-chinese-qmc-domain-v1",
            "-o",
            str(tmp_path / "b"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**__import__("os").environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")},
    )
    err_lines = [line for line in result.stderr.splitlines() if line.startswith("embedrt: error:")]
    assert result.returncode == 1 and len(err_lines) == 1
    assert "pass that local directory" in err_lines[0]
    assert "Traceback" not in result.stderr
