"""The runtime reproduces sentence-transformers: per variant, per model, per sentence."""

import numpy as np
import pytest

from embedrt import Encoder
from embedrt.export.sentences import PARITY_SENTENCES
from embedrt.export.validate import cosine_rows
from tests.helpers import TEST_TEXTS

TEXTS = list(PARITY_SENTENCES) + TEST_TEXTS
MODELS = ["tiny", "minilm", "dmetasoul"]


@pytest.fixture(params=MODELS)
def case(request):
    """(bundle directory, PyTorch reference model) for each test model."""
    bundle = request.getfixturevalue(f"{request.param}_bundle")
    model_dir = request.getfixturevalue(f"{request.param}_model_dir")
    reference = request.getfixturevalue("reference_model")(model_dir)
    return request.param, bundle, reference


def _reference(model, texts):
    return model.encode(texts, batch_size=8, convert_to_numpy=True)


def test_fp32_matches_pytorch_on_every_sentence(case):
    name, bundle, reference = case
    ours = Encoder.load(bundle, precision="fp32").encode(TEXTS)
    cos = cosine_rows(ours, _reference(reference, TEXTS))
    assert cos.min() >= 0.99999, f"{name}: worst sentence {TEXTS[int(cos.argmin())]!r} at {cos.min()}"
    assert ours.dtype == np.float32 and ours.shape == (len(TEXTS), reference.get_embedding_dimension())


def test_int8_stays_close_to_pytorch(case):
    name, bundle, reference = case
    ours = Encoder.load(bundle, precision="int8").encode(TEXTS)
    cos = cosine_rows(ours, _reference(reference, TEXTS))
    assert cos.mean() >= 0.99, f"{name}: int8 mean cos {cos.mean()}"
    assert cos.min() >= 0.95, f"{name}: int8 worst {TEXTS[int(cos.argmin())]!r} at {cos.min()}"


def test_tokenization_equals_sentence_transformers(case):
    _, bundle, reference = case
    encoder = Encoder.load(bundle, precision="fp32")
    features = reference.tokenize(TEXTS)
    for row, encoding in enumerate(encoder.tokenize(TEXTS)):
        n = int(features["attention_mask"][row].sum())
        assert encoding.ids == features["input_ids"][row, :n].tolist(), TEXTS[row]


def test_normalization_follows_the_bundle(case):
    name, bundle, reference = case
    encoder = Encoder.load(bundle, precision="fp32")
    norms = np.linalg.norm(encoder.encode(TEXTS[:5]), axis=1)
    if encoder.manifest.normalize:
        np.testing.assert_allclose(norms, 1.0, rtol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(encoder.encode(TEXTS[:5], normalize=True), axis=1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("model", ["tiny", "dmetasoul"])
def test_fp32_is_batch_invariant(model, request):
    encoder = Encoder.load(request.getfixturevalue(f"{model}_bundle"), precision="fp32")
    together = encoder.encode(TEXTS, batch_size=16)
    alone = np.stack([encoder.encode(text) for text in TEXTS])
    np.testing.assert_allclose(together, alone, atol=1e-5)
    padded = encoder.encode(TEXTS, batch_size=len(TEXTS), max_batch_tokens=10**6)
    np.testing.assert_allclose(padded, alone, atol=1e-5)


def test_int8_batch_dependence_is_small_and_measured(dmetasoul_bundle):
    """Dynamic int8 picks activation scales per batch, so batch-mates shift a vector slightly."""
    encoder = Encoder.load(dmetasoul_bundle, precision="int8")
    together = encoder.encode(TEXTS, batch_size=16)
    alone = np.stack([encoder.encode(text) for text in TEXTS])
    assert cosine_rows(together, alone).min() >= 0.999


def test_order_is_restored(tiny_bundle):
    encoder = Encoder.load(tiny_bundle, precision="fp32")
    base = encoder.encode(TEXTS)
    perm = np.random.default_rng(0).permutation(len(TEXTS))
    shuffled = encoder.encode([TEXTS[i] for i in perm], batch_size=3)
    np.testing.assert_allclose(shuffled, base[perm], atol=1e-5)


def test_truncation_equals_the_reference(tiny_bundle, tiny_model_dir, reference_model):
    encoder = Encoder.load(tiny_bundle, precision="fp32")
    long_a = "花呗还款" * 100
    long_b = long_a + "完全不同的结尾" * 50
    ours = encoder.encode([long_a, long_b])
    np.testing.assert_allclose(ours[0], ours[1], atol=1e-6)  # both cut at max_seq_length
    assert len(encoder.tokenize([long_a])[0].ids) == encoder.max_seq_length
    ref = _reference(reference_model(tiny_model_dir), [long_a, long_b])
    assert cosine_rows(ours, ref).min() >= 0.99999
