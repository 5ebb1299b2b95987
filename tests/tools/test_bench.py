"""``embedrt bench``: real runs on the tiny bundle in subprocesses, checked for sense, never for speed."""

from __future__ import annotations

import json
import os

import pytest

from embedrt.errors import InputError
from embedrt.tools.bench import BenchSettings, builtin_workload, flops_per_sentence, percentile
from tests.helpers import SHORT_TEXTS, TEST_TEXTS, assert_one_line_error
from tests.helpers import run_cli as run

HEAVY = ("torch", "transformers", "optimum", "sentence_transformers")


def test_builtin_workload_is_chinese_and_fixed():
    texts = builtin_workload()
    assert len(texts) == 1024 and texts == builtin_workload()
    assert len(set(texts)) > 80  # every bundled line appears, not one sentence repeated
    assert all(text.strip() for text in texts)
    assert sum(any("\u4e00" <= ch <= "\u9fff" for ch in text) for text in texts) > 0.9 * len(texts)


def test_flops_match_the_hand_count_for_the_dmetasoul_student():
    arch = {"num_layers": 4, "hidden_size": 768, "intermediate_size": 3072}
    # 4 layers x (2 x 19 x (4 x 768^2 + 2 x 768 x 3072) + 4 x 19^2 x 768)
    assert flops_per_sentence(arch, 19) == 4 * (2 * 19 * (4 * 768**2 + 2 * 768 * 3072) + 4 * 19**2 * 768)
    assert 1.0e9 < flops_per_sentence(arch, 19) < 1.2e9
    assert flops_per_sentence({}, 19) == 0.0  # a bundle without architecture facts reports no GFLOP/s


def test_settings_reject_nonsense():
    with pytest.raises(InputError, match="rounds"):
        BenchSettings(rounds=0)
    with pytest.raises(InputError, match="threads"):
        BenchSettings(threads=0)


#: A small workload for the runs here: the built-in 1,024 texts would only make the tests slower.
DATA_TEXTS = [text for text in TEST_TEXTS + SHORT_TEXTS if text.strip()] * 3


@pytest.fixture(scope="module")
def data_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("bench") / "texts.txt"
    path.write_text("\n".join(DATA_TEXTS) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def bench_report(tiny_bundle, data_file):
    result = run("bench", tiny_bundle, "--data", data_file, "--json", "--rounds", "1", "--threads", "1")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1
    return json.loads(lines[0])


def test_bench_json_reports_every_variant_with_sane_numbers(bench_report, tiny_bundle):
    assert set(bench_report["results"]) == {"fp32", "int8"}
    assert bench_report["workload"]["texts"] == len(DATA_TEXTS)
    assert 5 < bench_report["workload"]["mean_tokens"] < 100
    # The int8 speed depends on the instruction sets (AVX2 alone vs VNNI), so the report names them.
    assert isinstance(bench_report["machine"]["isa"], str) and bench_report["machine"]["isa"]
    for precision, row in bench_report["results"].items():
        assert row["precision"] == precision
        assert row["threads"] == 1
        assert row["sentences_per_s"] > 0 and row["tokens_per_s"] > row["sentences_per_s"]
        assert row["gflops_per_s"] > 0
        assert 0 < row["latency_p50_ms"] <= row["latency_p95_ms"] <= row["latency_p99_ms"]
        assert 0 < row["cold_start_s"] < 120
        assert row["peak_rss_mb"] > 10


def test_bench_table_and_data_file(tiny_bundle, tmp_path):
    data = tmp_path / "texts.txt"
    data.write_text("花呗怎么还款\n\n借呗额度为什么降低了\n今天天气不错\n", encoding="utf-8")
    result = run("bench", tiny_bundle, "--data", data, "--precision", "int8", "--rounds", "1", "--batch-size", "2")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "3 texts" in out and "sent/s" in out and "p99 ms" in out
    rows = [line for line in out.splitlines() if line.startswith("int8")]
    assert len(rows) == 1 and not any(line.startswith("fp32") for line in out.splitlines())


def test_bench_data_is_read_by_the_shared_reader(tmp_path):
    """A UTF-8 byte order mark and CRLF line ends are not part of the first text (they were, once)."""
    from embedrt.tools.bench import load_workload

    data = tmp_path / "bom.txt"
    data.write_bytes("\ufeff花呗怎么还款\r\n\r\n借呗额度\r\n".encode())
    assert load_workload(str(data)) == ["花呗怎么还款", "借呗额度"]


def test_percentile_is_nearest_rank():
    values = [float(i) for i in range(1, 101)]  # 1..100
    assert percentile(values, 95) == 95.0  # the 95th value, not the 96th (round-half-even once gave 96)
    assert percentile(values, 50) == 50.0 and percentile(values, 99) == 99.0 and percentile(values, 100) == 100.0
    assert percentile([float(i) for i in range(1, 201)], 95) == 190.0
    assert percentile([3.0], 50) == 3.0 and percentile([1.0, 2.0], 0) == 1.0


def test_bench_never_imports_torch(tiny_bundle, data_file, tmp_path):
    """The bench and its worker processes run where torch & co. cannot be imported."""
    for name in HEAVY:
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text(f"raise ImportError('{name} is blocked in this test')\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    result = run("bench", tiny_bundle, "--data", data_file, "--precision", "fp32", "--rounds", "1", "--json", env=env)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["results"]["fp32"]["sentences_per_s"] > 0


@pytest.mark.parametrize(
    ("args", "pattern"),
    [
        (("--precision", "fp16"), "no 'fp16' variant .*fp32, int8"),
        (("--precision", "bf3"), "unknown precision|no 'bf3' variant"),
        (("--data", "MISSING.txt"), "cannot read MISSING.txt"),
    ],
)
def test_bench_bad_arguments_give_one_line_errors(tiny_bundle, args, pattern):
    assert_one_line_error(run("bench", tiny_bundle, *args), pattern)


def test_bench_empty_data_and_missing_bundle(tiny_bundle, tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n", encoding="utf-8")
    assert_one_line_error(run("bench", tiny_bundle, "--data", empty), "no non-empty lines")
    assert_one_line_error(run("bench", tmp_path / "nope"), "does not exist")
    assert_one_line_error(run("bench", tiny_bundle, "--rounds", "0"), "--rounds: expected a number >= 1")


def test_int8_note_only_without_native_int8_instructions():
    from embedrt.tools.bench import int8_note

    assert "no VNNI/AMX" in int8_note("avx2", ["fp32", "int8"])
    assert int8_note("avx2 avx512f avx512_vnni", ["fp32", "int8"]) is None
    assert int8_note("avx2 avx_vnni", ["int8"]) is None
    assert int8_note("avx2", ["fp32"]) is None  # nothing to say when int8 was not measured
    assert int8_note("unknown", ["int8"]) is None  # not Linux: no flags to judge by
