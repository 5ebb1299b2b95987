"""``embedrt eval`` in subprocesses: the JSON shapes, the table, one-line errors, the PyTorch reference row."""

import json
import re

import pytest

from embedrt import Encoder
from embedrt.tools.evaluate.metrics import evaluate
from embedrt.tools.evaluate.readers import load_pairs
from tests.helpers import assert_one_line_error, run_cli, run_cli_blocking


def run(*args, timeout=300):
    return run_cli("eval", *args, timeout=timeout)


def run_blocked(blocked, *args, timeout=300):
    return run_cli_blocking(blocked, "eval", *args, timeout=timeout)


def test_json_for_one_file_has_the_documented_shape(tiny_bundle, pairs_tsv):
    result = run(tiny_bundle, pairs_tsv, "--json")
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.splitlines()) == 1
    report = json.loads(result.stdout)
    assert set(report) == {"n_pairs", "results"}
    assert report["n_pairs"] == len(load_pairs(pairs_tsv))
    assert list(report["results"]) == ["fp32", "int8"]
    for precision, scores in report["results"].items():
        assert set(scores) == {"spearman", "pearson"}
        expected = evaluate(Encoder.load(tiny_bundle, precision=precision), load_pairs(pairs_tsv), batch_size=64)
        assert scores["spearman"] == pytest.approx(expected["spearman"], abs=0.006)
        assert scores["pearson"] == pytest.approx(expected["pearson"], abs=0.006)


def test_several_files_give_one_column_each(tiny_bundle, pairs, tmp_path):
    (tmp_path / "lcqmc").mkdir()
    (tmp_path / "afqmc").mkdir()
    tsv = tmp_path / "lcqmc" / "dev.tsv"
    tsv.write_text("".join(f"{a}\t{b}\t{int(s > 2)}\n" for a, b, s in pairs), encoding="utf-8")
    jsonl = tmp_path / "afqmc" / "dev.jsonl"
    jsonl.write_text(
        "".join(
            json.dumps({"sentence1": a, "sentence2": b, "score": s}, ensure_ascii=False) + "\n" for a, b, s in pairs
        ),
        encoding="utf-8",
    )
    result = run(tiny_bundle, tsv, jsonl, "--precision", "fp32", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert list(report) == ["datasets"]
    assert list(report["datasets"]) == ["lcqmc_dev", "afqmc_dev"]  # same stem: the folder tells them apart
    for entry in report["datasets"].values():
        assert entry["n_pairs"] == len(pairs) and list(entry["results"]) == ["fp32"]

    table = run(tiny_bundle, tsv, jsonl)
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert "| precision | lcqmc_dev | afqmc_dev |" in lines
    fp32_row = next(line for line in lines if line.startswith("| fp32 |"))
    spearman = report["datasets"]["afqmc_dev"]["results"]["fp32"]["spearman"]
    assert f"{spearman:.2f} / " in fp32_row
    assert any(line.startswith("| int8 |") for line in lines)
    assert re.search(r"int8 - fp32 Spearman: lcqmc_dev: [+-]\d+\.\d\d, afqmc_dev: [+-]\d+\.\d\d", table.stdout)


@pytest.mark.parametrize(
    "make_args, pattern",
    [
        (lambda b, d, t: (b, t / "missing.tsv"), r"cannot read .*missing\.tsv"),
        (lambda b, d, t: (t / "no-bundle", d), r"does not exist"),
        (lambda b, d, t: (b, d, "--precision", "fp16"), r"no 'fp16' variant"),
        (lambda b, d, t: (b, d, "--reference-model", t / "gone"), r"is not a directory here"),
    ],
)
def test_user_errors_are_one_line(tiny_bundle, pairs_tsv, tmp_path, make_args, pattern):
    assert re.search(pattern, assert_one_line_error(run(*make_args(tiny_bundle, pairs_tsv, tmp_path))))


def test_malformed_line_is_one_line_error_with_location(tiny_bundle, tmp_path):
    bad = tmp_path / "bq.tsv"
    bad.write_text("甲\t乙\t1\n丙\t丁\t0\n戊\t己\n", encoding="utf-8")
    assert re.search(r"bq\.tsv:3: expected 3 tab-separated columns", assert_one_line_error(run(tiny_bundle, bad)))


def test_runs_without_torch_or_scipy(tiny_bundle, pairs_tsv):
    result = run_blocked(("torch", "transformers", "sentence_transformers", "scipy"), tiny_bundle, pairs_tsv, "--json")
    assert result.returncode == 0, result.stderr
    assert "LOADED []" in result.stderr
    assert set(json.loads(result.stdout)["results"]) == {"fp32", "int8"}


def test_reference_without_the_export_extra_names_the_install(tiny_bundle, pairs_tsv):
    result = run_blocked(("torch", "sentence_transformers"), tiny_bundle, pairs_tsv, "--reference")
    assert 'pip install "embedrt[export]"' in assert_one_line_error(result)
    assert "fp32" not in result.stderr  # refused before any precision ran


def test_reference_row(tiny_bundle, pairs_tsv):
    result = run(tiny_bundle, pairs_tsv, "--reference", "--precision", "fp32", "--json")
    assert result.returncode == 0, result.stderr
    results = json.loads(result.stdout)["results"]
    assert list(results) == ["fp32", "pytorch"]
    assert results["pytorch"]["pearson"] == pytest.approx(results["fp32"]["pearson"], abs=0.05)
