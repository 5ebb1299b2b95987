"""Cases that used to run silently wrong or empty: each is now an error or a warning saying what to do."""

from __future__ import annotations

import json
import os
import shutil
import stat
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from embedrt import Encoder
from embedrt.bundle import Bundle, Manifest, Pooling, Variant
from embedrt.errors import BundleError, EmbedrtWarning, ExportError, InputError
from embedrt.runtime.backends.select import choose, cpu_choices
from tests.helpers import assert_one_line_error, run_cli, run_cli_blocking

HEAVY = ("torch", "transformers", "sentence_transformers", "optimum", "onnx")


def _fake_bundle(tmp_path: Path, variants: tuple[str, ...]) -> Bundle:
    """A bundle whose manifest lists ``variants`` (choosing reads only the manifest)."""
    entries = {
        name: Variant(file=f"{name}.onnx", sha256="0" * 64, fused_attention=True, engine=name.partition("-")[0])
        if name.startswith("openvino-")
        else Variant(file=f"{name}.onnx", sha256="0" * 64, fused_attention=True)
        for name in variants
    }
    return Bundle(tmp_path, Manifest("src", 32, 64, Pooling.MEAN, False, entries))


# ------------------------------------------------------------------------------------ selections
def test_an_engine_the_bundle_lacks_is_an_error_not_an_empty_report(tmp_path):
    bundle = _fake_bundle(tmp_path, ("fp32", "int8"))
    with pytest.raises(BundleError, match=r"has no openvino variant \(it has: fp32, int8\).*--engine onnxruntime,open"):
        cpu_choices(bundle, None, ["openvino"])
    with pytest.raises(BundleError, match=r"no openvino variant in int8, fp32 \(it has: fp32, int8\)"):
        cpu_choices(bundle, ["int8", "fp32"], ["onnxruntime", "openvino"])


def test_a_precision_no_named_engine_runs_is_an_error(tmp_path):
    bundle = _fake_bundle(tmp_path, ("fp32", "int8", "openvino-fp32"))
    with pytest.raises(InputError, match=r"precision 'bf16' runs on openvino only.*--engine openvino"):
        cpu_choices(bundle, ["bf16"], ["onnxruntime"])
    with pytest.raises(BundleError, match=r"no 'fp16' variant \(it has: fp32, int8, openvino-fp32\)"):
        cpu_choices(bundle, ["fp16"], None)


def test_fp16_on_a_cpu_only_by_name_and_with_a_warning(tmp_path):
    bundle = _fake_bundle(tmp_path, ("fp32", "int8", "fp16"))
    assert "fp16" not in [choice.precision for choice in cpu_choices(bundle, None, ["onnxruntime"])]
    with pytest.warns(EmbedrtWarning, match="emulated"):
        assert [c.precision for c in cpu_choices(bundle, ["fp16"], ["onnxruntime"])] == ["fp16"]
    with pytest.warns(EmbedrtWarning, match="fp16 on the CPU is emulated.*slower than fp32"):
        assert choose(bundle, "fp16", "auto", "cpu").variant == "fp16"
    assert choose(bundle, "auto", "auto", "cpu").precision == "int8"


@pytest.mark.parametrize("command", ["bench", "eval"])
def test_bench_and_eval_refuse_an_engine_the_bundle_lacks(tiny_bundle, tmp_path, command):
    pairs = tmp_path / "pairs.tsv"
    pairs.write_text("甲\t乙\t1\n丙\t丁\t0\n", encoding="utf-8")
    extra = (pairs,) if command == "eval" else ()
    result = run_cli(command, tiny_bundle, *extra, "--engine", "openvino")
    assert_one_line_error(result, r"has no openvino variant \(it has: fp32, int8\)")
    assert result.stdout == ""


# ------------------------------------------------------------------------------------ export
def test_wrong_source_fails_before_torch_is_imported(tmp_path):
    result = run_cli_blocking(HEAVY, "export", "/wrong/path", "-o", tmp_path / "b")
    assert_one_line_error(result, r"/wrong/path is neither a model directory nor a hub id")
    assert not (tmp_path / "b").exists()


@pytest.fixture(scope="module")
def plain_model_dir(tmp_path_factory):
    """A plain Hugging Face BERT folder: the stand-in without sentence-transformers' module files."""
    from embedrt.export.standin import TINY, build_standin

    model_dir = build_standin(tmp_path_factory.mktemp("plain_model"), replace(TINY, seed=5))
    for name in ("modules.json", "config_sentence_transformers.json", "sentence_bert_config.json"):
        (model_dir / name).unlink(missing_ok=True)
    shutil.rmtree(model_dir / "1_Pooling", ignore_errors=True)
    return model_dir


def test_a_plain_model_needs_its_pooling_stated(plain_model_dir, tmp_path):
    from embedrt.export import ExportSettings, export_bundle

    with pytest.raises(ExportError, match=r"no modules.json.*pass --pooling mean\|cls\|max"):
        export_bundle(str(plain_model_dir), tmp_path / "none", ExportSettings(precisions=("fp32",)))
    assert not (tmp_path / "none").exists()
    said: list[str] = []
    settings = ExportSettings(precisions=("fp32",), pooling="cls")
    manifest = export_bundle(str(plain_model_dir), tmp_path / "cls", settings, progress=said.append)
    assert manifest.pooling is Pooling.CLS and manifest.normalize is False
    assert any("no modules.json: pooling cls (from --pooling), no normalization" in line for line in said)
    assert manifest.variants["fp32"].parity.min_cos >= 0.99999  # against PyTorch pooling the same way
    from embedrt.tools.evaluate.run import load_reference

    reference = load_reference(str(plain_model_dir), manifest.pooling.value)  # what eval --reference runs
    texts = ["花呗怎么还款", "今天天气不错！"]
    ours = Encoder.load(tmp_path / "cls", precision="fp32").encode(texts)
    np.testing.assert_allclose(ours, reference.encode(texts), atol=1e-5)


def test_export_command_refuses_a_plain_model_without_pooling(plain_model_dir, tmp_path):
    result = run_cli("export", plain_model_dir, "-o", tmp_path / "b", "--precision", "fp32")
    assert_one_line_error(result, r"has no modules.json .*--pooling mean\|cls\|max")


def test_bundles_get_the_umask_modes_of_any_file(tiny_model_dir, tmp_path):
    """A bundle one user exports can be read by another (mkdtemp's 0700 used to travel with the rename)."""
    from embedrt.export import ExportSettings, export_bundle

    previous = os.umask(0o022)
    try:
        export_bundle(str(tiny_model_dir), tmp_path / "bundle", ExportSettings(precisions=("fp32",)))
    finally:
        os.umask(previous)
    paths = [tmp_path / "bundle", *(tmp_path / "bundle").rglob("*")]
    modes = {str(p.relative_to(tmp_path)): stat.S_IMODE(p.stat().st_mode) for p in paths}
    assert all(mode == (0o755 if Path(tmp_path / name).is_dir() else 0o644) for name, mode in modes.items()), modes


# ------------------------------------------------------------------------------------ progress
def test_encode_reports_progress_per_batch(tiny_bundle):
    encoder = Encoder.load(tiny_bundle, precision="fp32", cache_size=16)
    texts = [f"第{i}个句子" for i in range(10)]
    moved: list[int] = []
    encoder.encode(texts, batch_size=3, progress=moved.append)
    assert len(moved) >= 4 and sum(moved) == 10
    moved.clear()
    encoder.encode(texts[:4], batch_size=3, progress=moved.append)  # all cached: one report
    assert moved == [4]


def test_embed_file_moves_with_every_batch(tiny_bundle, tmp_path):
    from embedrt.tools.embed_file import EmbedFileJob, InputFormat, embed_file

    source = tmp_path / "in.txt"
    source.write_text("".join(f"第{i}行\n" for i in range(50)), encoding="utf-8")
    encoder = Encoder.load(tiny_bundle, precision="fp32")
    calls: list[int] = []
    original = encoder.encode

    def spying_encode(texts, **kwargs):
        inner = kwargs["progress"]

        def progress(rows: int) -> None:
            calls.append(rows)
            inner(rows)

        return original(texts, **{**kwargs, "progress": progress})

    encoder.encode = spying_encode
    job = EmbedFileJob(str(source), str(tmp_path / "out.npy"), InputFormat.TEXT, batch_size=8)
    report = embed_file(encoder, job, show_progress=True)
    assert report.rows == 50 and sum(calls) == 50 and len(calls) >= 6  # one chunk, seven batches
    np.testing.assert_array_equal(np.load(tmp_path / "out.npy"), original([f"第{i}行" for i in range(50)]))


def test_bench_reports_each_row_as_it_finishes(tiny_bundle, tmp_path):
    from embedrt.tools.bench import BenchSettings, run_bench

    data = tmp_path / "data.txt"
    data.write_text("花呗怎么还款\n今天天气不错\n", encoding="utf-8")
    events: list[str] = []
    report = run_bench(
        str(tiny_bundle),
        ("fp32", "int8"),
        str(data),
        BenchSettings(rounds=1, latency_samples=2),
        ["onnxruntime"],
        on_start=lambda started: events.append("start:" + ",".join(started["variants"])),
        on_result=lambda result: events.append(result.label),
    )
    assert events == ["start:fp32,int8", "fp32", "int8"]
    assert set(report["results"]) == {"fp32", "int8"} and "variants" not in report
    json.dumps(report)


def test_fp16_on_a_cpu_is_one_warning_line_in_the_cli(tiny_bundle, copy_bundle):
    bundle = copy_bundle(tiny_bundle)
    data = json.loads((bundle / "embedrt.json").read_text(encoding="utf-8"))
    data["variants"]["fp16"] = data["variants"]["fp32"]  # any graph will do: what is said is the point
    (bundle / "embedrt.json").write_text(json.dumps(data), encoding="utf-8")
    result = run_cli("encode", bundle, "你好", "--precision", "fp16")
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip().splitlines() == [
        "embedrt: warning: fp16 on the CPU is emulated (ONNX Runtime computes it through fp32 casts) and slower "
        "than fp32; fp16 variants are for GPUs (device='cuda' or 'tensorrt'); on a CPU use int8 or fp32"
    ]
