"""Length buckets: a text's padded width depends only on its own length, so it is the same alone or in any
batch, and OpenVINO int8 keeps its fused attention while staying batch-invariant."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from embedrt import Encoder
from embedrt.errors import InputError
from embedrt.export.openvino import builtin_calibration
from embedrt.export.sentences import PARITY_SENTENCES
from embedrt.export.validate import cosine_rows
from embedrt.runtime.batching import LengthBuckets, pad_batch, plan_batches, plan_runs
from tests.helpers import TEST_TEXTS

TEXTS = [text for text in (*PARITY_SENTENCES, *TEST_TEXTS) if text.strip()]
lengths = st.lists(st.integers(1, 512), min_size=1, max_size=80)


@given(length=st.integers(1, 512), max_length=st.integers(1, 512))
def test_a_width_holds_its_text_and_wastes_under_a_step_or_at_most_an_eighth(length, max_length):
    buckets = LengthBuckets(max_length=max(max_length, length))
    width = buckets.width(length)
    assert length <= width <= buckets.max_length
    assert width - length < buckets.min_step or width - length <= length / 8
    assert buckets.width(width) == width  # a width is its own bucket
    assert width in buckets.widths()
    assert all(buckets.width(shorter) <= width for shorter in range(1, length))  # monotone


def test_widths_are_multiples_of_four_up_to_64_then_climb_a_ladder():
    widths = LengthBuckets(max_length=128).widths()
    assert widths[:16] == list(range(4, 65, 4))
    assert widths[16:] == [72, 80, 88, 96, 104, 112, 120, 128]
    assert LengthBuckets(max_length=6).widths() == [4, 6]  # never past the bundle's maximum
    assert LengthBuckets(min_step=1).widths()[:16] == list(range(1, 17))  # exact widths for short texts


@given(lengths=lengths, batch_size=st.integers(1, 40), budget=st.none() | st.integers(1, 4096))
def test_planned_batches_hold_one_bucket_each(lengths, batch_size, budget):
    buckets = LengthBuckets()
    for plan in (
        plan_batches(lengths, batch_size, budget, buckets),
        plan_runs(lengths, budget or 2048, buckets=buckets),
    ):
        assert sorted(np.concatenate(plan).tolist()) == list(range(len(lengths)))
        for batch in plan:
            assert len({buckets.width(lengths[i]) for i in batch}) == 1
        if plan is not None and budget is not None:
            for batch in plan:
                assert len(batch) == 1 or len(batch) * buckets.width(lengths[batch[0]]) <= budget


def test_pad_batch_to_a_given_width(minilm_ov_bundle):
    encoder = Encoder.load(minilm_ov_bundle, precision="int8", engine="openvino", buckets=True, warmup=False)
    encodings = encoder.tokenize(["短", "a somewhat longer sentence here"])
    batch = pad_batch(encodings, width=40)
    assert batch["input_ids"].shape == (2, 40)
    assert batch["attention_mask"].sum() == sum(len(e.ids) for e in encodings)
    with pytest.raises(ValueError, match="shorter than"):
        pad_batch(encodings, width=2)


@pytest.fixture(scope="module")
def bucketed(minilm_ov_bundle) -> Encoder:
    """OpenVINO int8 as ``Encoder.load`` runs it by default, on real weights: length buckets, fused attention."""
    encoder = Encoder.load(minilm_ov_bundle, precision="int8", engine="openvino", streams=1)
    assert encoder.buckets is not None and "SNIPPETS_MODE" not in encoder.backend.settings.compile_config()
    return encoder


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(st.integers(0, len(TEXTS) - 1), min_size=1, max_size=40), batch_size=st.integers(1, 40))
def test_fused_attention_with_buckets_alone_vs_random_batches(bucketed, rows, batch_size):
    texts = [TEXTS[row] for row in rows]
    together = bucketed.encode(texts, batch_size=batch_size)
    alone = np.stack([bucketed.encode(text) for text in texts])
    assert np.array_equal(alone, together), f"min cos {cosine_rows(alone, together).min()}"


def test_fused_attention_with_buckets_on_640_texts_in_batches_of_32(bucketed):
    """The texts whose vectors moved with fused attention and batch-wide padding (docs/openvino.md)."""
    texts = builtin_calibration()
    order = np.random.default_rng(0).permutation(len(texts))
    shuffled = [texts[i] for i in order]
    together = bucketed.encode(shuffled, batch_size=32)
    alone = np.stack([bucketed.encode(text) for text in shuffled])
    cos = cosine_rows(alone, together)
    assert cos.min() >= 0.999999, f"{shuffled[int(cos.argmin())]!r}: alone vs batched cos {cos.min()}"
    assert int((alone == together).all(axis=1).sum()) == len(texts)


def test_one_row_and_32_rows_of_one_width_give_the_same_vector(bucketed):
    """Batch-size independence of the fused kernel at a fixed width (the property buckets rely on)."""
    encodings = bucketed.tokenize(builtin_calibration()[:32])
    width = max(bucketed.buckets.width(len(e.ids)) for e in encodings)
    names = bucketed.backend.input_names
    full = {k: v for k, v in pad_batch(encodings, width=width).items() if k in names}
    together = bucketed.backend.run(full).copy()
    for row in range(32):
        one = {name: value[row : row + 1] for name, value in full.items()}
        assert np.array_equal(bucketed.backend.run(one)[0], together[row])


def test_the_server_planner_and_encode_agree(bucketed):
    """The batcher plans with plan_runs(buckets=...) and packs with the encoder: same vectors as encode."""
    texts = TEXTS[:40]
    encodings = bucketed.tokenize(texts)
    plan = plan_runs([len(e.ids) for e in encodings], 512, buckets=bucketed.buckets)
    served = np.empty((len(texts), bucketed.dim), dtype=np.float32)
    for batch in bucketed.pack(encodings, plan):
        assert batch.inputs["input_ids"].shape[1] == bucketed.buckets.width(
            int(batch.inputs["attention_mask"].sum(1).max())
        )
        served[batch.positions] = bucketed.run_batch(batch)
    assert np.array_equal(served, bucketed.encode(texts))


@pytest.mark.parametrize("engine", ["onnxruntime", "openvino"])
def test_buckets_on_every_engine_auto_can_pick(tiny_ov_bundle, engine):
    encoder = Encoder.load(tiny_ov_bundle, engine=engine, buckets=True)
    together = encoder.encode(TEXTS, batch_size=16)
    alone = np.stack([encoder.encode(text) for text in TEXTS])
    assert cosine_rows(alone, together).min() >= 0.999999


def test_warm_up_runs_every_bucket_width(minilm_ov_bundle, monkeypatch):
    encoder = Encoder.load(minilm_ov_bundle, precision="int8", engine="openvino", buckets=True, warmup=False)
    seen = []
    real = encoder.backend.run
    monkeypatch.setattr(encoder.backend, "run", lambda batch: seen.append(batch["input_ids"].shape[1]) or real(batch))
    encoder.warm_up()
    assert seen == encoder.buckets.widths()
    assert max(seen) == encoder.max_seq_length


def test_the_server_batcher_with_buckets_returns_what_encode_returns(bucketed):
    """Concurrent requests merged by the server's batcher: each vector bit-identical to offline ``encode``."""
    import asyncio

    from embedrt.server.batcher import DynamicBatcher

    requests = [TEXTS[i : i + 1 + i % 5] for i in range(0, 40, 3)]

    async def serve():
        batcher = DynamicBatcher(bucketed, max_batch_tokens=512, max_wait_s=0.1)
        await batcher.start()
        try:
            encoded = [await batcher.tokenize(texts) for texts in requests]
            normalize = bucketed.manifest.normalize
            return await asyncio.gather(*(batcher.embed(encodings, normalize) for encodings in encoded))
        finally:
            await batcher.stop()

    for texts, served in zip(requests, asyncio.run(serve()), strict=True):
        assert np.array_equal(served, bucketed.encode(texts))


def test_serve_has_a_length_buckets_switch_that_defaults_to_auto():
    from embedrt.server.settings import ServerSettings, resolve_settings

    assert ServerSettings(bundle="b").length_buckets is None
    assert ServerSettings(bundle="b").public()["length_buckets"] == "auto"
    assert ServerSettings(bundle="b", length_buckets=True).public()["length_buckets"] is True
    for flag, expected in (("auto", None), ("true", True), ("false", False)):
        assert resolve_settings({"bundle": "b", "length_buckets": flag}).length_buckets is expected
    with pytest.raises(InputError, match="expected true, false or auto"):
        resolve_settings({"bundle": "b", "length_buckets": "maybe"})


def test_the_servers_info_says_whether_a_model_runs_in_length_buckets(bucketed, tiny_ov_bundle):
    from embedrt.server.app import EmbeddingServer
    from embedrt.server.settings import ServerSettings

    for encoder, expected in ((bucketed, True), (Encoder.load(tiny_ov_bundle, engine="onnxruntime"), False)):
        server = EmbeddingServer(encoder, ServerSettings(bundle="b"))
        card = server.card(server.models[0])
        assert card["length_buckets"] is expected and card["limits"]["length_buckets"] == "auto"


def test_buckets_are_the_default_for_openvino_int8_only(minilm_ov_bundle, tiny_ov_bundle):
    """``buckets=None``: OpenVINO int8 gets them with its fused attention; ``False`` unfuses instead; other
    engines and precisions, and ``batch_invariant=False``, pad to the batch as before."""
    default = Encoder.load(minilm_ov_bundle, precision="int8", engine="openvino", streams=1)
    assert default.buckets is not None
    assert "SNIPPETS_MODE" not in default.backend.settings.compile_config()
    unfused = Encoder.load(minilm_ov_bundle, precision="int8", engine="openvino", buckets=False, streams=1)
    assert unfused.buckets is None and unfused.backend.settings.compile_config()["SNIPPETS_MODE"] == "DISABLE"
    for options in (
        {"precision": "fp32", "engine": "openvino"},
        {"precision": "int8", "engine": "openvino", "batch_invariant": False},
    ):
        assert Encoder.load(minilm_ov_bundle, streams=1, **options).buckets is None, options
    assert Encoder.load(tiny_ov_bundle, precision="int8", engine="onnxruntime", streams=1).buckets is None
