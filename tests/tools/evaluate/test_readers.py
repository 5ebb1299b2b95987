"""Pair files: every format, auto-detection, and a located error for every malformed line."""

import gzip
import json

import numpy as np
import pytest

from embedrt.errors import InputError
from embedrt.tools.evaluate.readers import dataset_name, load_pairs

STSB_HEADER = "split\tgenre\tdataset\tyear\tsid\tscore\tsentence1\tsentence2\n"


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


def test_pairs_tsv(pairs_tsv, pairs):
    loaded = load_pairs(pairs_tsv)
    assert loaded.name == "csts_dev"
    assert len(loaded) == len(pairs)
    assert loaded.sentences1 == tuple(a for a, _, _ in pairs)
    assert loaded.sentences2 == tuple(b for _, b, _ in pairs)
    np.testing.assert_array_equal(loaded.scores, [s for _, _, s in pairs])
    assert load_pairs(pairs_tsv, format="pairs").sentences1 == loaded.sentences1


def test_jsonl_label_or_score(tmp_path):
    lines = [
        {"sentence1": "花呗怎么还款", "sentence2": "花呗如何还", "label": "1"},  # CLUE AFQMC writes labels as strings
        {"sentence1": "借呗额度", "sentence2": "我的快递", "label": 0},
        {"sentence1": "a", "sentence2": "b", "score": 3.5, "label": 1},  # score wins when both are present
    ]
    path = write(tmp_path / "afqmc.jsonl", "".join(json.dumps(x, ensure_ascii=False) + "\n" for x in lines))
    loaded = load_pairs(path)
    assert loaded.name == "afqmc"
    assert loaded.sentences1 == ("花呗怎么还款", "借呗额度", "a")
    np.testing.assert_array_equal(loaded.scores, [1.0, 0.0, 3.5])
    # Detected by content too, whatever the file is called.
    renamed = write(tmp_path / "afqmc_dev.txt", path.read_text(encoding="utf-8"))
    assert list(load_pairs(renamed).scores) == [1.0, 0.0, 3.5]


def test_stsb_header_and_split(tmp_path):
    rows = [
        "train\tmain-captions\tMSRvid\t2012test\t0001\t5.000\tA plane is taking off.\tAn air plane is taking off.",
        "test\tmain-captions\tMSRvid\t2012test\t0002\t3.800\tA man is playing a flute.\tA man plays a flute.",
        "test\tmain-captions\tMSRvid\t2012test\t0003\t0.500\tA dog runs.\tA cat sleeps.",
        "dev\tmain-news\theadlines\t2013\t0004\t2.000\tStocks fall.\tMarkets drop sharply.",
    ]
    path = write(tmp_path / "stsbenchmark.tsv", STSB_HEADER + "\n".join(rows) + "\n")
    test = load_pairs(path)  # auto: the header names sentence1/sentence2; --split test is the default
    assert test.name == "stsbenchmark"
    assert test.sentences1 == ("A man is playing a flute.", "A dog runs.")
    np.testing.assert_array_equal(test.scores, [3.8, 0.5])
    assert len(load_pairs(path, format="stsb", split="all")) == 4
    with pytest.raises(InputError, match=r"no rows of split 'validation'.*test \(2\), dev \(1\)"):
        load_pairs(path, split="validation")
    # gzip, as sentence-transformers distributes it
    packed = tmp_path / "stsbenchmark.tsv.gz"
    packed.write_bytes(gzip.compress(path.read_bytes()))
    assert load_pairs(packed).sentences2 == test.sentences2
    assert load_pairs(packed).name == "stsbenchmark"


def test_header_without_split_column_keeps_every_row(tmp_path):
    path = write(tmp_path / "pawsx.tsv", "id\tsentence1\tsentence2\tlabel\n1\t甲\t乙\t1\n2\t丙\t丁\t0\n")
    loaded = load_pairs(path)
    assert loaded.sentences1 == ("甲", "丙") and list(loaded.scores) == [1.0, 0.0]


def test_bom_and_trailing_blank_lines(tmp_path):
    path = tmp_path / "lcqmc.tsv"
    path.write_bytes(b"\xef\xbb\xbf" + "甲\t乙\t1\n丙\t丁\t0\r\n\n\n".encode())
    loaded = load_pairs(path)
    assert loaded.sentences1 == ("甲", "丙") and loaded.sentences2 == ("乙", "丁")


@pytest.mark.parametrize(
    "name, content, format, pattern",
    [
        ("a.tsv", "甲\t乙\t1\n丙\t丁\n", "auto", r"a\.tsv:2: expected 3 tab-separated columns .* found 2"),
        ("a.tsv", "甲\t乙\t1\n丙\t丁\t0\t9\n", "auto", r"a\.tsv:2: expected 3 .* found 4"),
        ("a.tsv", "甲\t乙\t1\n丙\t丁\t很像\n", "auto", r"a\.tsv:2: score '很像' is not a number"),
        ("a.tsv", "甲\t乙\t1\n丙\t丁\tnan\n", "auto", r"a\.tsv:2: score 'nan' is not a finite number"),
        ("a.tsv", "甲\t乙\t1\n\n丙\t丁\t0\n", "auto", r"a\.tsv:2: empty line"),
        ("a.tsv", "sentence_a\tsentence_b\tlabel\n甲\t乙\t1\n", "auto", r"a\.tsv:1: score 'label' is not a number"),
        (
            "a.jsonl",
            '{"sentence1": "甲", "sentence2": "乙", "label": 1}\n{"sentence1": "甲",\n',
            "auto",
            r"a\.jsonl:2: not valid JSON",
        ),
        ("a.jsonl", '{"sentence1": "甲", "label": 1}\n', "auto", r"a\.jsonl:1: missing key 'sentence2'"),
        ("a.jsonl", '{"sentence1": "甲", "sentence2": "乙"}\n', "auto", r"a\.jsonl:1: missing key 'score' or 'label'"),
        (
            "a.jsonl",
            '{"sentence1": "甲", "sentence2": 5, "label": 1}\n',
            "auto",
            r"a\.jsonl:1: sentence2 must be a string",
        ),
        (
            "a.jsonl",
            '{"sentence1": "甲", "sentence2": "乙", "label": true}\n',
            "auto",
            r"a\.jsonl:1: label must be a number",
        ),
        ("a.jsonl", '["甲", "乙", 1]\n', "jsonl", r"a\.jsonl:1: expected a JSON object"),
        ("a.tsv", "score\tsentence1\n1\t甲\n", "stsb", r"a\.tsv:1: the header must name .* missing sentence2"),
        ("a.tsv", STSB_HEADER + "test\tg\td\ty\t1\t2.0\t甲\n", "stsb", r"a\.tsv:2: expected 8 tab-separated columns"),
        ("a.tsv", "甲\t乙\t1\n", "auto", r"a\.tsv: 1 pair\(s\); a correlation needs at least 2"),
        ("a.tsv", "", "auto", r"a\.tsv: 0 pair\(s\)"),
        ("a.tsv", "甲\t乙\t1\n丙\t丁\t1\n", "auto", r"all 2 gold scores equal 1"),
    ],
)
def test_malformed_files_raise_with_file_and_line(tmp_path, name, content, format, pattern):
    with pytest.raises(InputError, match=pattern):
        load_pairs(write(tmp_path / name, content), format=format)


def test_invalid_utf8_names_the_line(tmp_path):
    path = tmp_path / "bq.tsv"
    path.write_bytes("甲\t乙\t1\n".encode() + b"\xff\xfe\t\xe4\xb9\x99\t0\n")
    with pytest.raises(InputError, match=r"bq\.tsv:2: not valid UTF-8"):
        load_pairs(path)


def test_unreadable_file_and_unknown_format(tmp_path):
    with pytest.raises(InputError, match=r"cannot read .*missing\.tsv: No such file"):
        load_pairs(tmp_path / "missing.tsv")
    with pytest.raises(InputError, match=r"unknown format 'csv'"):
        load_pairs(tmp_path / "missing.tsv", format="csv")
    broken = tmp_path / "broken.tsv.gz"
    broken.write_bytes(gzip.compress("甲\t乙\t1\n".encode() * 100)[:30])
    with pytest.raises(InputError, match=r"cannot read .*broken\.tsv\.gz"):
        load_pairs(broken)


@pytest.mark.parametrize(
    "path, name",
    [("data/csts_dev.tsv", "csts_dev"), ("lcqmc.test.tsv.gz", "lcqmc.test"), ("afqmc.jsonl", "afqmc"), ("x", "x")],
)
def test_dataset_names(path, name):
    from pathlib import Path

    assert dataset_name(Path(path)) == name


def test_sts_benchmark_as_released(tmp_path):
    """``sts-test.csv`` from the STS benchmark release: no header, score fifth, some rows with source columns."""
    rows = [
        "main-captions\tMSRvid\t2012test\t0024\t2.500\tA girl is styling her hair.\tA girl is brushing her hair.",
        'main-news\theadlines\t2013\t0001\t0.000\tHe said "no".\tStocks fall.\tsrc-a\tsrc-b',
        "main-forums\tdeft-forum\t2014\t0003\t5.000\tYes.\tYes.",
    ]
    path = write(tmp_path / "sts-test.csv", "\n".join(rows) + "\n")
    for format in ("auto", "sts"):
        loaded = load_pairs(path, format=format)
        assert loaded.name == "sts-test"
        assert loaded.sentences1 == ("A girl is styling her hair.", 'He said "no".', "Yes.")
        assert loaded.sentences2 == ("A girl is brushing her hair.", "Stocks fall.", "Yes.")
        np.testing.assert_array_equal(loaded.scores, [2.5, 0.0, 5.0])
    short = write(tmp_path / "short.csv", rows[0] + "\nmain-captions\tMSRvid\t2012test\t0025\t1.0\tonly one\n")
    with pytest.raises(InputError, match=r"short\.csv:2: expected at least 7 tab-separated columns \(genre, .*found 6"):
        load_pairs(short)
    bad = write(tmp_path / "bad.csv", rows[0] + "\nmain-captions\tMSRvid\t2012test\t0025\thigh\ta\tb\n")
    with pytest.raises(InputError, match=r"bad\.csv:2: score 'high' is not a number"):
        load_pairs(bad)
