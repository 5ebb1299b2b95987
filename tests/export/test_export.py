"""The export stage: fusion audit, manifest contents, atomic writes, clear failures."""

import json
import time
from pathlib import Path

import pytest

from embedrt.bundle import Bundle, sha256_file
from embedrt.errors import ExportError, ParityError
from embedrt.export import ExportSettings, export_bundle
from embedrt.export.sentences import PARITY_SENTENCES

#: These tests are about the export's checks and files: ONNX Runtime only keeps them quick.
ORT = ("onnxruntime",)


def _leftovers(parent: Path, name: str) -> list[str]:
    return [p.name for p in parent.iterdir() if p.name.startswith(f".{name}.")]


def test_manifest_records_what_was_built_and_measured(tiny_bundle):
    data = json.loads((tiny_bundle / "embedrt.json").read_text())
    assert data["format_version"] == 1
    assert (data["dim"], data["max_seq_length"], data["pooling"], data["normalize"]) == (32, 64, "mean", False)
    assert set(data["variants"]) == {"fp32", "int8"}
    assert data["architecture"]["num_layers"] == 2
    for variant in data["variants"].values():
        assert variant["sha256"] == sha256_file(tiny_bundle / variant["file"])
        assert variant["fused_attention"] is True
        assert variant["parity"]["n"] == len(PARITY_SENTENCES)
    assert data["variants"]["fp32"]["recipe"]["fusion"]["Attention"] == 2
    assert data["variants"]["fp32"]["recipe"]["fusion"]["SkipLayerNormalization"] == 4
    assert data["variants"]["fp32"]["parity"]["min_cos"] >= 0.99999
    assert data["variants"]["int8"]["parity"]["mean_cos"] >= 0.99
    assert (tiny_bundle / "tokenizer.json").is_file()
    assert not any(p.name.startswith(".") for p in tiny_bundle.iterdir())


def test_int8_graph_uses_quantized_attention(tiny_bundle):
    import onnx

    ops = {node.op_type for node in onnx.load(str(tiny_bundle / "model_int8.onnx")).graph.node}
    assert {"QAttention", "MatMulIntegerToFloat", "QuantizeLinear"} <= ops  # static scales: batch-invariant
    assert "DynamicQuantizeLinear" not in ops
    fp32_ops = [node.op_type for node in onnx.load(str(tiny_bundle / "model.onnx")).graph.node]
    assert fp32_ops.count("Attention") == 2
    assert not any(
        node.domain for node in onnx.load(str(tiny_bundle / "model.onnx")).graph.node if node.op_type == "MatMul"
    )


def test_fusion_audit_fails_when_fewer_attention_nodes_than_layers(tiny_model_dir, tmp_path):
    from embedrt.export.load import load_source
    from embedrt.export.onnx_export import export_transformer
    from embedrt.export.optimize import optimize_graph

    model = load_source(str(tiny_model_dir))
    raw = export_transformer(model.transformer, tmp_path / "raw.onnx")
    kwargs = dict(num_heads=model.num_heads, hidden_size=model.hidden_size, num_layers=model.num_layers + 1)
    with pytest.raises(ExportError, match="only 2 of 3 attention blocks fused.*--allow-unfused"):
        optimize_graph(raw, tmp_path / "fused.onnx", **kwargs)
    report = optimize_graph(raw, tmp_path / "fused.onnx", allow_unfused=True, **kwargs)
    assert not report.attention_fused


def test_failed_parity_leaves_nothing_behind(tiny_model_dir, tmp_path):
    out = tmp_path / "bundle"
    with pytest.raises(ParityError, match="fp32 parity failed"):
        export_bundle(str(tiny_model_dir), out, ExportSettings(engines=ORT, precisions=("fp32",), fp32_min_cos=1.01))
    assert not out.exists()
    assert _leftovers(tmp_path, "bundle") == []


def test_existing_bundle_needs_force_and_is_replaced_whole(tiny_model_dir, tiny_bundle, tmp_path):
    out = tmp_path / "bundle"
    export_bundle(str(tiny_model_dir), out, ExportSettings(engines=ORT, precisions=("fp32",)))
    with pytest.raises(ExportError, match="already exists; pass --force"):
        export_bundle(str(tiny_model_dir), out, ExportSettings(engines=ORT, precisions=("fp32",)))
    # A failing forced export keeps the old bundle intact.
    with pytest.raises(ParityError):
        export_bundle(str(tiny_model_dir), out, ExportSettings(engines=ORT, force=True, fp32_min_cos=1.01))
    assert set(Bundle.open(out).manifest.variants) == {"fp32"}
    export_bundle(str(tiny_model_dir), out, ExportSettings(engines=ORT, force=True))
    assert set(Bundle.open(out).manifest.variants) == {"fp32", "int8"}
    assert _leftovers(tmp_path, "bundle") == []


@pytest.mark.parametrize("force", [False, True])
def test_a_directory_that_is_not_a_bundle_is_never_replaced(tiny_model_dir, tmp_path, force):
    precious = tmp_path / "data"
    precious.mkdir()
    (precious / "keep.txt").write_text("mine")
    with pytest.raises(ExportError, match="not an embedrt bundle; export to a new directory") as refused:
        export_bundle(str(tiny_model_dir), precious, ExportSettings(engines=ORT, force=force))
    assert "--force" not in str(refused.value)  # it would not help, so it is not advised
    assert (precious / "keep.txt").read_text() == "mine"


def test_an_empty_directory_is_a_fine_destination_and_a_path_a_fine_source(tiny_model_dir, tmp_path):
    out = tmp_path / "empty"
    out.mkdir()
    export_bundle(tiny_model_dir, out, ExportSettings(engines=ORT, precisions=("fp32",)))  # a Path, not str
    manifest = Bundle.open(out).manifest
    assert set(manifest.variants) == {"fp32"} and manifest.source == str(tiny_model_dir)


def test_hub_id_without_network_fails_fast_with_the_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    start = time.monotonic()
    with pytest.raises(ExportError, match="pass that local directory"):
        export_bundle("DMetaSoul/sbert-chinese-qmc-domain-v1", tmp_path / "b")
    assert time.monotonic() - start < 60  # a bound against hanging on retries, not a speed claim
    assert not (tmp_path / "b").exists()


def test_unknown_precision_and_bad_source(tmp_path, tiny_model_dir):
    with pytest.raises(ExportError, match="cannot export precision fp8"):
        ExportSettings(engines=ORT, precisions=("fp8",))
    with pytest.raises(ExportError, match="neither a model directory nor a hub id"):
        export_bundle(str(tmp_path / "missing" / "dir"), tmp_path / "b")
    with pytest.raises(ExportError, match="not a sentence-transformers model directory"):
        export_bundle(str(tmp_path), tmp_path / "b")


def test_max_seq_length_override(tiny_model_dir, tmp_path, reference_model):
    from embedrt import Encoder

    out = tmp_path / "short"
    settings = ExportSettings(engines=ORT, precisions=("fp32",), max_seq_length=16)
    manifest = export_bundle(str(tiny_model_dir), out, settings)
    assert manifest.max_seq_length == 16
    assert manifest.variants["fp32"].parity.min_cos >= 0.99999
    encoder = Encoder.load(out)
    assert encoder.max_seq_length == 16
    with pytest.raises(ExportError, match="outside 1..128"):
        export_bundle(str(tiny_model_dir), tmp_path / "long", ExportSettings(engines=ORT, max_seq_length=4096))


def test_cls_pooling_and_normalize_are_read_from_the_model(tiny_normalized_model_dir, tmp_path):
    settings = ExportSettings(engines=ORT, precisions=("fp32",))
    manifest = export_bundle(str(tiny_normalized_model_dir), tmp_path / "b", settings)
    assert manifest.pooling.value == "cls"
    assert manifest.normalize is True
    assert manifest.variants["fp32"].parity.min_cos >= 0.99999


def test_the_int8_graph_is_at_most_a_third_of_the_fp32_one(dmetasoul_bundle):
    """The DMetaSoul architecture: its 21128 x 768 word table is stored int8 too, folded back at load."""
    from embedrt import Encoder

    bundle = Bundle.open(dmetasoul_bundle)
    size = {name: (bundle.root / bundle.variant(name).file).stat().st_size for name in ("fp32", "int8")}
    assert size["int8"] <= 0.35 * size["fp32"], size
    assert bundle.variant("int8").recipe["word_table"] == "int8"
    encoder = Encoder.load(dmetasoul_bundle, precision="int8", engine="onnxruntime")
    assert encoder.backend.settings.fold_dequantize  # or every run would dequantize the whole table
