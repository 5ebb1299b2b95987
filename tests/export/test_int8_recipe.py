"""The int8 recipe: nodes whose calibrated input SQNR is low stay fp32, the rest run int8."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

from embedrt.errors import ExportError
from embedrt.export.quantize import DEFAULT_INT8, Int8Recipe, quantize_int8, uint8_sqnr_db


def test_sqnr_drops_with_an_outlier_channel():
    rng = np.random.default_rng(0)
    plain = rng.normal(size=(200, 64)).astype(np.float32)
    spiky = plain.copy()
    spiky[:, 3] *= 80  # one outlier channel forces a coarse per-tensor scale on all the others
    assert uint8_sqnr_db(plain) > 30
    assert uint8_sqnr_db(spiky) < uint8_sqnr_db(plain) - 10
    assert uint8_sqnr_db(np.zeros((4, 4), dtype=np.float32)) == float("inf")


def test_tiny_bundle_records_the_measured_recipe(tiny_bundle):
    recipe = json.loads((tiny_bundle / "embedrt.json").read_text())["variants"]["int8"]["recipe"]
    assert recipe["name"] == DEFAULT_INT8.name
    assert recipe["min_input_sqnr_db"] == DEFAULT_INT8.min_input_sqnr_db
    assert recipe["input_sqnr_db"] and all(isinstance(v, float) for v in recipe["input_sqnr_db"].values())
    kept = set(recipe["kept_fp32"])
    assert kept == {name for name, db in recipe["input_sqnr_db"].items() if db < recipe["min_input_sqnr_db"]}
    graph = onnx.load(str(tiny_bundle / "model_int8.onnx")).graph
    still_float = {node.name for node in graph.node if node.op_type in ("MatMul", "Attention")}
    assert kept <= still_float


def test_real_weights_keep_only_the_outlier_projections_fp32(minilm_bundle):
    """all-MiniLM-L6-v2: the early FFN down-projections have GELU outliers; attention does not."""
    manifest = json.loads((minilm_bundle / "embedrt.json").read_text())
    int8 = manifest["variants"]["int8"]
    kept = int8["recipe"]["kept_fp32"]
    assert any("layer.0/output/dense" in name for name in kept)
    assert not any(name.startswith("Attention") for name in kept)
    # Most projections run int8: at 25 dB 8 of 24 stay fp32 (the FFN layers 0-4 carry GELU outliers).
    assert len(kept) < len(int8["recipe"]["input_sqnr_db"]) / 2
    assert int8["parity"]["mean_cos"] >= 0.99


def test_sqnr_recipe_without_calibration_is_an_export_error(tiny_bundle, tmp_path):
    with pytest.raises(ExportError, match="calibration"):
        quantize_int8(tiny_bundle / "model.onnx", tmp_path / "int8.onnx", Int8Recipe(min_input_sqnr_db=20.0))


def test_static_recipe_without_calibration_is_an_export_error(tiny_bundle, tmp_path):
    with pytest.raises(ExportError, match="calibration"):
        quantize_int8(tiny_bundle / "model.onnx", tmp_path / "int8.onnx", Int8Recipe())


def test_static_scales_are_constants_and_onnx_runtime_keeps_its_int8_kernels(minilm_bundle, tmp_path):
    """No scale is computed at run time; the session still runs QAttention and MatMulIntegerToFloat."""
    import onnxruntime as ort

    graph = onnx.load(str(minilm_bundle / "model_int8.onnx")).graph
    ops = {node.op_type for node in graph.node}
    assert "DynamicQuantizeLinear" not in ops and "MatMulInteger" not in ops
    assert {"QuantizeLinear", "QAttention", "MatMulIntegerToFloat"} <= ops
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    options.add_session_config_entry("session.disable_quant_qdq", "1")  # as the runtime opens it
    ort.InferenceSession(str(minilm_bundle / "model_int8.onnx"), options, providers=["CPUExecutionProvider"])
    optimized = [node.op_type for node in onnx.load(str(tmp_path / "optimized.onnx")).graph.node]
    assert optimized.count("QAttention") == 6 and optimized.count("MatMulIntegerToFloat") >= 10
    kept = json.loads((minilm_bundle / "embedrt.json").read_text())["variants"]["int8"]["recipe"]["kept_fp32"]
    assert optimized.count("MatMul") <= len(kept)  # only the projections kept fp32


def test_plain_dynamic_recipe_quantizes_everything(tiny_bundle, tmp_path):
    entry = quantize_int8(tiny_bundle / "model.onnx", tmp_path / "int8.onnx", Int8Recipe(activations="dynamic"))
    assert "kept_fp32" not in entry and entry["batch_invariant"] is False
    ops = [node.op_type for node in onnx.load(str(tmp_path / "int8.onnx")).graph.node]
    assert "MatMul" not in ops and "QAttention" in ops
