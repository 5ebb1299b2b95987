"""Mean pooling as graph nodes (export/device_pooling.py): recorded in the manifest, equal to NumPy pooling."""

from __future__ import annotations

import types

import numpy as np
import onnxruntime
import pytest

from embedrt.bundle import Bundle, Pooling
from embedrt.export.device_pooling import POOLED_OUTPUT, add_mean_pooling
from embedrt.export.pipeline import _add_device_pooling
from embedrt.export.validate import cosine_rows
from embedrt.runtime.batching import pad_batch
from embedrt.runtime.pooling import pool
from embedrt.runtime.tokenizer import TextTokenizer
from tests.helpers import TEST_TEXTS


@pytest.fixture(scope="module")
def fp16_bundle(tiny_model_dir, tmp_path_factory):
    from embedrt.export import ExportSettings, export_bundle

    out = tmp_path_factory.mktemp("pooled") / "tiny_fp16"
    export_bundle(str(tiny_model_dir), out, ExportSettings(precisions=("fp32", "fp16"), engines=("onnxruntime",)))
    return out


def _padded(bundle: Bundle, texts):
    manifest = bundle.manifest
    tokenizer = TextTokenizer(bundle.tokenizer_path, manifest.max_seq_length, manifest.do_lower_case)
    return pad_batch(tokenizer.encode(texts), with_token_types=True)


def test_the_cuda_variants_record_their_pooled_output_and_the_others_have_none(fp16_bundle, tiny_bundle):
    variants = Bundle.open(fp16_bundle).manifest.variants
    assert variants["fp32"].pooled_output == POOLED_OUTPUT
    assert variants["fp16"].pooled_output == POOLED_OUTPUT
    assert variants["fp32"].recipe["device_pooling"]["pooling"] == "mean"
    assert variants["fp16-trt"].pooled_output is None  # TensorRT's graph keeps one output
    assert Bundle.open(tiny_bundle).manifest.variants["int8"].pooled_output is None  # derived before pooling


@pytest.mark.parametrize("variant", ["fp32", "fp16"])
def test_the_pooled_graph_output_equals_numpy_pooling(fp16_bundle, variant):
    """On the CPU provider: the first output, pooled by NumPy (the reference), against the graph's own mean."""
    bundle = Bundle.open(fp16_bundle)
    session = onnxruntime.InferenceSession(str(bundle.variant_path(variant)), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()][1:] == [POOLED_OUTPUT]
    texts = [t for t in TEST_TEXTS if t.strip()]
    batch = _padded(bundle, texts)
    assert batch["attention_mask"].min() == 0  # some rows padded: the mask matters
    feed = {i.name: batch[i.name] for i in session.get_inputs()}
    hidden, pooled = session.run(None, feed)
    reference = pool(hidden, batch["attention_mask"], Pooling.MEAN)
    assert pooled.dtype == np.float32 and pooled.shape == reference.shape
    assert cosine_rows(pooled, reference).min() >= 1 - 1e-6
    np.testing.assert_allclose(pooled, reference, rtol=1e-5, atol=1e-6)


def test_a_row_without_tokens_divides_by_the_same_floor_as_numpy(tmp_path, fp16_bundle):
    bundle = Bundle.open(fp16_bundle)
    session = onnxruntime.InferenceSession(str(bundle.variant_path("fp32")), providers=["CPUExecutionProvider"])
    batch = _padded(bundle, ["花呗怎么还款", "今天"])
    batch["attention_mask"][1] = 0  # nothing to average: NumPy clips the count at 1e-9, the graph too
    hidden, pooled = session.run(None, {i.name: batch[i.name] for i in session.get_inputs()})
    np.testing.assert_array_equal(pooled[1], pool(hidden, batch["attention_mask"], Pooling.MEAN)[1])


def test_only_mean_pooling_goes_into_the_graph(fp16_bundle, tmp_path):
    recipes = {"fp32": {}, "fp16": {}}
    said = []
    _add_device_pooling(types.SimpleNamespace(pooling=Pooling.CLS), tmp_path, recipes, said.append)
    assert recipes == {"fp32": {}, "fp16": {}}
    assert "cls pooling stays on the host" in said[0]


def test_a_graph_is_pooled_once(fp16_bundle, tmp_path):
    import shutil

    from embedrt.errors import ExportError

    graph = shutil.copy(Bundle.open(fp16_bundle).variant_path("fp32"), tmp_path / "g.onnx")
    with pytest.raises(ExportError, match="already has an output 'sentence_embedding'"):
        add_mean_pooling(graph)
