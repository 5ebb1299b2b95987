"""The CLI: real commands in subprocesses, one-line errors, no tracebacks for user mistakes."""

import json
import subprocess
import sys

import numpy as np
import pytest

from embedrt import Encoder
from tests.helpers import assert_one_line_error
from tests.helpers import run_cli as run


def test_export_info_encode_round_trip(tiny_model_dir, tmp_path):
    bundle = tmp_path / "bundle"
    result = run("export", tiny_model_dir, "-o", bundle, "--precision", "fp32,int8")
    assert result.returncode == 0, result.stderr
    assert "fp32" in result.stderr and "min cos" in result.stderr

    info = run("info", bundle)
    assert info.returncode == 0
    assert "fused attention" in info.stdout and "int8" in info.stdout
    assert "batch-invariant" in info.stdout and "batch-dependent" not in info.stdout
    from embedrt.export.pipeline import default_engines

    with_openvino = "openvino" in default_engines()  # a no-flag export builds OpenVINO's variants where installed
    assert ("openvino-int8" in json.loads(run("info", bundle, "--json").stdout)["variants"]) == with_openvino
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
    env = {"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    result = run("export", "DMetaSoul/sbert-chinese-qmc-domain-v1", "-o", tmp_path / "b", env=env)
    assert_one_line_error(result, "pass that local directory")


@pytest.mark.parametrize(
    "args, pattern",
    [
        ((), "the following arguments are required: COMMAND"),
        (("frobnicate",), "invalid choice: 'frobnicate'"),
        (("encode",), "the following arguments are required: bundle"),
        (("encode", "b", "x", "--batch-size", "0"), "--batch-size: expected a number >= 1, got 0"),
        (("encode", "b", "x", "--precision", "fp8"), "--precision: unknown precision 'fp8'; use one of: auto, fp32"),
        (("bench", "b", "--precision", "fp32,,bf3"), "unknown precision 'bf3'"),
    ],
)
def test_usage_errors_are_one_line_with_exit_1(args, pattern):
    """argparse's own errors too: one line and status 1, as for every other user error (not usage + 2)."""
    message = assert_one_line_error(run(*args), pattern)
    assert "usage:" not in message


def test_building_the_parser_loads_no_engine_and_no_numpy():
    code = (
        "import sys\nfrom embedrt.cli import build_parser\nbuild_parser()\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in {'numpy', 'tokenizers', 'onnxruntime', 'torch'}"
        " or m.startswith('embedrt.tools.evaluate.metrics')))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout.strip() == "[]", result.stderr
    version = run("--version")
    assert version.returncode == 0 and version.stdout.startswith("embedrt ")


def test_help_names_every_precision_serve_runs():
    help_text = " ".join(run("serve", "--help").stdout.split())
    assert "fp32, int8, fp16" in help_text


def test_a_directory_that_is_not_a_bundle_gets_advice_that_works(tmp_path):
    (tmp_path / "notes.txt").write_text("not a bundle")
    message = assert_one_line_error(run("encode", tmp_path, "hello"), "is not an embedrt bundle")
    assert f"-o {tmp_path}" not in message and "NEW_DIR" in message  # export would refuse this directory


def test_encode_summary_says_the_vectors_are_float32(tiny_bundle, tmp_path):
    result = run("encode", tiny_bundle, "a", "b", "--precision", "int8", "--output", tmp_path / "v.npy")
    assert result.returncode == 0, result.stderr
    assert "wrote 2 x 32 float32 embeddings (onnxruntime int8) to" in result.stderr
