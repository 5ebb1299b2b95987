"""One text, one vector: every variant ``auto`` can pick, and every int8 variant, embeds a text the same
alone and inside random batches padded to random widths; old bundles' dynamic int8 is never picked silently."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from embedrt import BackendError, Encoder
from embedrt.bundle import Bundle
from embedrt.errors import EmbedrtWarning
from embedrt.export.sentences import PARITY_SENTENCES
from embedrt.export.validate import cosine_rows
from embedrt.runtime.encoder import EncodedBatch
from tests.helpers import TEST_TEXTS

TEXTS = [text for text in (*PARITY_SENTENCES, *TEST_TEXTS) if text.strip()]
#: The issue's bar; ONNX Runtime's static int8 and OpenVINO's unfused int8 measured bit-identical.
MIN_COS = 0.999999


def _alone_vs_batch(encoder: Encoder, index: int, mates: list[int], place: int, extra: int) -> float:
    """Cosine of ``TEXTS[index]`` alone and at ``place`` among ``mates``, padded ``extra`` columns wider."""
    rows = [*mates[:place], index, *mates[place:]]
    encodings = encoder.tokenize([TEXTS[row] for row in rows])
    (batch,) = encoder.pack(encodings, [np.arange(len(rows))])
    wide = {name: np.pad(value, ((0, 0), (0, extra))) for name, value in batch.inputs.items()}
    together = encoder.run_batch(EncodedBatch(batch.positions, wide))[place]
    alone = encoder.encode(TEXTS[index])
    return float(cosine_rows(alone[None], together[None])[0])


batches = st.tuples(
    st.integers(0, len(TEXTS) - 1),
    st.lists(st.integers(0, len(TEXTS) - 1), min_size=1, max_size=15),
    st.integers(0, 15),
    st.integers(0, 24),
)


def _check(encoder: Encoder, case: tuple[int, list[int], int, int]) -> None:
    index, mates, place, extra = case
    cos = _alone_vs_batch(encoder, index, mates, min(place, len(mates)), extra)
    assert cos >= MIN_COS, f"{encoder.variant}: {TEXTS[index]!r} alone vs in a batch: cos {cos}"


@pytest.fixture(scope="module", params=["auto", "int8", "fp32"])
def minilm_encoder(request, minilm_bundle) -> Encoder:
    """Real weights (all-MiniLM-L6-v2) on ONNX Runtime: what auto picks, static int8, fp32."""
    precision = request.param
    return Encoder.load(minilm_bundle, precision=precision, engine="onnxruntime", threads=1)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=batches)
def test_onnx_runtime_variants_alone_vs_random_batches(minilm_encoder, case):
    _check(minilm_encoder, case)


def test_static_int8_is_bit_identical_alone_and_in_a_batch(minilm_bundle):
    encoder = Encoder.load(minilm_bundle, precision="int8", threads=1)
    alone = np.stack([encoder.encode(text) for text in TEXTS])
    assert np.array_equal(alone, encoder.encode(TEXTS, batch_size=len(TEXTS)))


def test_manifest_records_batch_invariance(minilm_bundle):
    variants = json.loads((minilm_bundle / "embedrt.json").read_text())["variants"]
    assert all(variant["batch_invariant"] is True for variant in variants.values())
    assert variants["int8"]["recipe"]["activations"] == "static"


@pytest.fixture
def old_bundle(tiny_bundle, copy_bundle):
    """``tiny_bundle`` as an older embedrt wrote it: dynamic int8, no ``batch_invariant`` in the manifest."""
    bundle = copy_bundle(tiny_bundle)
    manifest = json.loads((bundle / "embedrt.json").read_text())
    for variant in manifest["variants"].values():
        del variant["batch_invariant"]
        variant["recipe"].pop("activations", None)
    manifest["variants"]["int8"]["recipe"]["name"] = "dynamic-per-channel-sqnr23"
    (bundle / "embedrt.json").write_text(json.dumps(manifest))
    return bundle


def test_an_old_dynamic_int8_is_never_picked_unasked(old_bundle):
    assert not Bundle.open(old_bundle).manifest.variants["int8"].batch_invariant
    assert Bundle.open(old_bundle).manifest.variants["fp32"].batch_invariant
    with pytest.warns(EmbedrtWarning, match=r"dynamic int8.*re-export.*batch_invariant=False"):
        encoder = Encoder.load(old_bundle)
    assert encoder.variant == "fp32"
    with pytest.raises(BackendError, match=r"dynamic int8.*re-export.*batch_invariant=False"):
        Encoder.load(old_bundle, precision="int8")
    assert Encoder.load(old_bundle, batch_invariant=False).variant == "int8"
    assert Encoder.load(old_bundle, precision="int8", batch_invariant=False).variant == "int8"
