"""The fp16 export, checked on the CPU: what is fp16, what stays fp32, and the numbers it gives."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from embedrt import Encoder
from embedrt.bundle import Bundle
from embedrt.errors import EmbedrtWarning
from embedrt.export.fp16 import CUDA_FLAVOUR, MASK_VALUE, TRT_FLAVOUR, _replace_mask_constants
from embedrt.export.validate import cosine_rows
from tests.helpers import TEST_TEXTS


def _graph(bundle, precision: str) -> onnx.ModelProto:
    return onnx.load(str(Bundle.open(bundle).variant_path(precision)))


def test_both_flavours_are_listed_with_parity(tiny_fp16_bundle):
    manifest = Bundle.open(tiny_fp16_bundle).manifest
    assert set(manifest.variants) == {"fp32", "fp16", "fp16-trt"}
    cuda, trt = manifest.variants["fp16"], manifest.variants["fp16-trt"]
    assert cuda.file == "model_fp16.onnx" and trt.file == "model_fp16_trt.onnx"
    assert cuda.fused_attention and not trt.fused_attention
    assert cuda.recipe["flavour"] == CUDA_FLAVOUR.name and trt.recipe["flavour"] == TRT_FLAVOUR.name
    assert "ReferenceEvaluator" in trt.recipe["parity_method"]
    assert "CPUExecutionProvider" in cuda.recipe["parity_method"]
    for variant in (cuda, trt):
        assert variant.parity.min_cos >= 0.999, variant
        assert variant.recipe["keep_io_types"] is True
    assert trt.parity.n == 16 and cuda.parity.n == manifest.variants["fp32"].parity.n


def test_io_stays_fp32_and_weights_are_fp16(tiny_fp16_bundle):
    for precision in ("fp16", "fp16-trt"):
        graph = _graph(tiny_fp16_bundle, precision).graph
        assert [i.type.tensor_type.elem_type for i in graph.input] == [TensorProto.INT64] * len(graph.input)
        assert graph.output[0].type.tensor_type.elem_type == TensorProto.FLOAT
        matmul_weights = [i for i in graph.initializer if i.data_type == TensorProto.FLOAT16 and len(i.dims) == 2]
        assert matmul_weights, precision


def test_tensorrt_flavour_is_plain_onnx_with_layernorm_and_softmax_in_fp32(tiny_fp16_bundle):
    graph = _graph(tiny_fp16_bundle, "fp16-trt").graph
    assert {node.domain for node in graph.node} <= {"", "ai.onnx"}  # TensorRT parses no com.microsoft op
    producer = {out: node for node in graph.node for out in node.output}
    guarded = [node for node in graph.node if node.op_type in ("LayerNormalization", "Softmax")]
    assert len(guarded) >= 5
    for node in guarded:
        source = producer[node.input[0]]
        assert source.op_type == "Cast" and source.attribute[0].i == TensorProto.FLOAT, node.name


def test_cuda_flavour_keeps_fused_ops_and_layernorm_in_fp32(tiny_fp16_bundle):
    graph = _graph(tiny_fp16_bundle, "fp16").graph
    ops = {node.op_type for node in graph.node}
    assert {"Attention", "SkipLayerNormalization", "EmbedLayerNormalization"} <= ops
    producer = {out: node for node in graph.node for out in node.output}
    for node in graph.node:
        if node.op_type == "SkipLayerNormalization":
            source = producer[node.input[0]]
            assert source.op_type == "Cast" and source.attribute[0].i == TensorProto.FLOAT


def test_mask_constant_is_fp16_safe(tiny_fp16_bundle):
    trt = Bundle.open(tiny_fp16_bundle).manifest.variants["fp16-trt"]
    assert trt.recipe["mask_constants_replaced"] >= 1 and trt.recipe["mask_value"] == MASK_VALUE
    graph = _graph(tiny_fp16_bundle, "fp16-trt").graph
    tensors = [*graph.initializer, *(a.t for n in graph.node if n.op_type == "Constant" for a in n.attribute)]
    for tensor in tensors:
        if tensor.data_type in (TensorProto.FLOAT, TensorProto.FLOAT16):
            values = numpy_helper.to_array(tensor).astype(np.float64)
            assert np.isfinite(values).all() and np.abs(values).max(initial=0) <= 65504, tensor.name


def test_replace_mask_constants_touches_only_out_of_range_scalars():
    big = helper.make_node("Constant", [], ["m"], value=numpy_helper.from_array(np.array(-3.4e38, np.float32), "m"))
    small = helper.make_node("Constant", [], ["s"], value=numpy_helper.from_array(np.array(-5.0, np.float32), "s"))
    table = numpy_helper.from_array(np.full((2, 2), -1e30, np.float32), "table")  # not a scalar: left alone
    graph = helper.make_graph([big, small], "g", [], [], initializer=[table])
    model = helper.make_model(graph)
    assert _replace_mask_constants(model) == 1
    assert float(numpy_helper.to_array(model.graph.node[0].attribute[0].t)) == MASK_VALUE
    assert float(numpy_helper.to_array(model.graph.node[1].attribute[0].t)) == -5.0
    assert numpy_helper.to_array(model.graph.initializer[0]).min() == np.float32(-1e30)


def test_fp16_matches_fp32_through_the_runtime_and_is_batch_invariant(tiny_fp16_bundle):
    texts = [t for t in TEST_TEXTS if t.strip()]
    fp32 = Encoder.load(tiny_fp16_bundle, precision="fp32").encode(texts)
    with pytest.warns(EmbedrtWarning, match="emulated"):  # fp16 on a CPU: run only when named, and said
        fp16 = Encoder.load(tiny_fp16_bundle, precision="fp16")
    together = fp16.encode(texts, batch_size=16)
    assert cosine_rows(together, fp32).min() >= 0.999
    alone = np.stack([fp16.encode(text) for text in texts])
    assert cosine_rows(alone, together).min() >= 0.9999


def test_tensorrt_graph_on_onnxruntime_cpu_agrees_with_the_reference_evaluator(tiny_fp16_bundle):
    """The same fp16-trt graph through two independent CPU engines, padded batch vs one at a time."""
    import onnxruntime as ort
    from onnx.reference import ReferenceEvaluator

    bundle = Bundle.open(tiny_fp16_bundle)
    path = str(bundle.variant_path("fp16-trt"))
    encoder = Encoder.load(tiny_fp16_bundle, precision="fp32")
    (batch,) = encoder.batches(encoder.tokenize(["花呗怎么还款", "今天天气不错，我想查询"]), 8)
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    (batched,) = session.run(None, batch.inputs)
    evaluator = ReferenceEvaluator(path)
    for row in range(len(batch.positions)):
        n = int(batch.inputs["attention_mask"][row].sum())
        one = {k: v[row : row + 1, :n] for k, v in batch.inputs.items()}
        (hidden,) = evaluator.run(None, one)
        assert cosine_rows(hidden[0], batched[row, :n]).min() >= 0.999


@pytest.mark.slow
def test_minilm_fp16_parity(minilm_fp16_bundle):
    """Real weights (all-MiniLM-L6-v2): both flavours hold cosine >= 0.999 to PyTorch fp32."""
    manifest = Bundle.open(minilm_fp16_bundle).manifest
    for precision in ("fp16", "fp16-trt"):
        assert manifest.variants[precision].parity.min_cos >= 0.999, precision
