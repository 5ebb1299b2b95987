"""The GPU encode path run on the CPU: device pooling, buffers reused through IO binding, overlap, buckets.

The CUDA backend is the same code with the device ``"cpu"`` (IO binding and OrtValues work there too);
what only a GPU can show is in tests/e2e/ (``pytest -m gpu``, tests/e2e/gpu/check_on_gpu.sh).
"""

from __future__ import annotations

import threading
from types import SimpleNamespace

import numpy as np
import pytest

from embedrt import Encoder
from embedrt.export.validate import cosine_rows
from embedrt.runtime.batching import pad_batch
from embedrt.runtime.overlap import bucket_width, bucket_widths, overlapped
from tests.fixtures.gpu_style import gpu_style
from tests.helpers import TEST_TEXTS

TEXTS = [t for t in TEST_TEXTS if t.strip()]
SAME = 1 - 1e-6


def test_the_cpu_default_is_unchanged(tiny_bundle):
    encoder = Encoder.load(tiny_bundle, precision="fp32")
    assert not encoder.overlap and encoder.bucket_widths == () and encoder.warmed == []
    assert (encoder.default_batch_size, encoder.default_max_batch_tokens) == (32, None)
    assert not getattr(encoder.backend, "pools_on_device", False)  # NumPy pools on the CPU, the reference


def test_device_pooling_and_overlap_give_the_cpu_vectors_in_order(tiny_bundle):
    reference = Encoder.load(tiny_bundle, precision="fp32").encode(TEXTS, batch_size=3)
    encoder = gpu_style(tiny_bundle)
    assert encoder.backend.pools_on_device
    got = encoder.encode(TEXTS, batch_size=3)  # several batches through the helper thread
    assert cosine_rows(got, reference).min() >= SAME


def test_the_pooled_output_is_what_runs(tiny_bundle, monkeypatch):
    encoder = gpu_style(tiny_bundle)

    def unpooled(batch):
        raise AssertionError("the unpooled output was read")

    monkeypatch.setattr(encoder.backend, "run", unpooled)
    assert encoder.encode(TEXTS[:3]).shape == (3, encoder.dim)


def test_alone_equals_in_a_batch_with_buckets_and_device_pooling(tiny_bundle):
    encoder = gpu_style(tiny_bundle)
    together = encoder.encode(TEXTS, batch_size=len(TEXTS))
    alone = np.stack([encoder.encode(text) for text in TEXTS])
    assert cosine_rows(alone, together).min() >= SAME


def test_a_bucket_does_not_change_a_vector(tiny_bundle):
    plain = gpu_style(tiny_bundle, pooled=False)
    plain.bucket_widths = ()
    bucketed = gpu_style(tiny_bundle, pooled=False)
    bucketed.bucket_widths = (plain.max_seq_length,)  # every batch padded to the longest width
    assert cosine_rows(bucketed.encode(TEXTS), plain.encode(TEXTS)).min() >= SAME


@pytest.mark.parametrize(
    "options",
    [{"normalize_embeddings": True}, {"truncate_dim": 16}, {"prompt": "查询: "}, {"normalize": False}],
)
def test_normalization_truncation_and_prompts_still_apply(tiny_bundle, options):
    reference = Encoder.load(tiny_bundle, precision="fp32").encode(TEXTS, **options)
    got = gpu_style(tiny_bundle).encode(TEXTS, **options)
    assert got.shape == reference.shape
    np.testing.assert_allclose(got, reference, rtol=1e-4, atol=1e-5)


def test_a_kept_buffer_is_never_handed_out(tiny_bundle):
    encoder = gpu_style(tiny_bundle)
    (first,) = encoder.batches(encoder.tokenize(["花呗怎么还款", "今天天气不错"]), 8)
    (second,) = encoder.batches(encoder.tokenize(["我想退货", "订单在哪里"]), 8)
    assert first.inputs["input_ids"].shape == second.inputs["input_ids"].shape  # one kept binding
    a = encoder.backend.run_pooled(first.inputs)
    kept = a.copy()
    encoder.backend.run_pooled(second.inputs)
    np.testing.assert_array_equal(a, kept)


def test_the_resident_runner_runs_again_without_copying(tiny_bundle):
    encoder = gpu_style(tiny_bundle)
    batch = encoder.batches(encoder.tokenize(TEXTS[:4]), 8)[0]
    again = encoder.backend.resident(batch.inputs)
    again()
    again()


def test_defaults_come_from_the_encoder(tiny_bundle):
    encoder = gpu_style(tiny_bundle)
    encoder.default_batch_size = 3
    sizes: list[int] = []
    encoder.encode(TEXTS, progress=sizes.append)
    assert sum(sizes) == len(TEXTS) and max(sizes) <= 3


def test_warm_shapes_runs_each_shape_once(tiny_bundle):
    encoder = gpu_style(tiny_bundle)
    took = encoder.warm_shapes((8, 16), rows=(1, 3))
    assert [(rows, width) for rows, width, _ in took] == [(1, 8), (3, 8), (1, 16), (3, 16)]
    assert encoder.warmed == took
    encoder.default_max_batch_tokens = 16  # at most 16 tokens a batch: 2 rows of 8, 1 of 16
    assert [(r, w) for r, w, _ in encoder.warm_shapes((8, 16), rows=(1, 3))] == [(1, 8), (2, 8), (1, 16)]


def test_buckets():
    assert bucket_widths(64)[-1] == 64 and bucket_widths(64)[:3] == (8, 16, 24)
    assert bucket_widths(100)[-2:] == (96, 100)
    assert [bucket_width(w, (8, 16)) for w in (1, 8, 9, 16, 17)] == [8, 8, 16, 16, 17]
    texts = [SimpleNamespace(ids=[1, 2, 3], type_ids=[0, 0, 0]) for _ in range(2)]
    wide = pad_batch(texts, width=bucket_width(3, (5, 8)))  # a batch padded straight to its bucket
    assert wide["input_ids"].shape == (2, 5) and wide["attention_mask"][:, 3:].sum() == 0


def test_overlapped_keeps_order_and_raises_at_the_failing_item():
    assert list(overlapped(range(50), lambda i: i * i)) == [i * i for i in range(50)]

    def fail_at_3(i):
        if i == 3:
            raise ValueError("three")
        return i

    got = []
    with pytest.raises(ValueError, match="three"):
        for item in overlapped(range(10), fail_at_3):
            got.append(item)
    assert got == [0, 1, 2]


def test_leaving_early_stops_the_helper():
    made = []
    before = threading.active_count()
    for item in overlapped(range(1000), lambda i: made.append(i) or i, ahead=2):
        if item == 5:
            break
    assert threading.active_count() == before
    assert len(made) <= 5 + 1 + 2 + 1  # never more than a few items ahead


def test_many_texts_are_tokenized_a_chunk_at_a_time_on_the_helper_thread(tiny_bundle, monkeypatch):
    from embedrt.runtime import encoder as encoder_module

    monkeypatch.setattr(encoder_module, "OVERLAP_CHUNK", 4)
    texts = [f"{text}{i}" for i, text in enumerate(TEXTS * 3)]
    reference = Encoder.load(tiny_bundle, precision="fp32").encode(texts, batch_size=3)
    encoder = gpu_style(tiny_bundle)
    chunks = []
    tokenize = encoder.tokenize
    monkeypatch.setattr(encoder, "tokenize", lambda items: chunks.append(len(items)) or tokenize(items))
    got = encoder.encode(texts, batch_size=3)
    assert max(chunks) == 4 and sum(chunks) == len(texts)
    assert cosine_rows(got, reference).min() >= SAME


def test_a_bad_text_in_a_later_chunk_is_named_by_its_index(tiny_bundle, monkeypatch):
    from embedrt.errors import InputError
    from embedrt.runtime import encoder as encoder_module

    monkeypatch.setattr(encoder_module, "OVERLAP_CHUNK", 4)
    texts = TEXTS[:6] + ["bad \ud800 text"]
    with pytest.raises(InputError, match=r"texts\[6\] is not valid Unicode"):
        gpu_style(tiny_bundle).encode(texts)


def test_an_engine_error_stops_the_helper_thread(tiny_bundle, monkeypatch):
    from embedrt.errors import BackendError

    encoder = gpu_style(tiny_bundle)
    before = threading.active_count()

    def broken(batch):
        raise BackendError("the device failed")

    monkeypatch.setattr(encoder.backend, "run_pooled", broken)
    with pytest.raises(BackendError, match="the device failed"):
        encoder.encode(TEXTS * 4, batch_size=2)
    assert threading.active_count() == before


def test_batches_are_padded_off_the_thread_that_runs_the_engine(tiny_bundle, monkeypatch):
    encoder = gpu_style(tiny_bundle)
    padded_on, run_on = set(), set()
    pack, run = encoder._pack_one, encoder.backend.run_pooled

    def pack_here(encodings, positions):
        padded_on.add(threading.current_thread().name)
        return pack(encodings, positions)

    def run_here(batch):
        run_on.add(threading.current_thread().name)
        return run(batch)

    monkeypatch.setattr(encoder, "_pack_one", pack_here)
    monkeypatch.setattr(encoder.backend, "run_pooled", run_here)
    encoder.encode(TEXTS, batch_size=2)
    assert padded_on == {"embedrt-host-batches"} and run_on == {threading.current_thread().name}
