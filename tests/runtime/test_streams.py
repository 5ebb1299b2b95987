"""Streams: several engine instances run the batches of one call side by side; a text's vector is the same
whichever stream runs it, and the same as on the single-stream path a lone text takes."""

from __future__ import annotations

import numpy as np
import pytest

from embedrt import Encoder, InputError
from embedrt.export.sentences import PARITY_SENTENCES
from embedrt.runtime.streams import default_streams, split_threads
from tests.helpers import TEST_TEXTS

TEXTS = [text for text in (*PARITY_SENTENCES, *TEST_TEXTS) if text.strip()]


def test_stream_counts_from_the_threads():
    assert [default_streams(n) for n in (1, 2, 4, 8, 16, 64)] == [1, 2, 4, 8, 8, 32]
    assert split_threads(5, 2) == [3, 2]
    assert split_threads(2, 4) == [1, 1, 1, 1]  # never a stream without a thread


@pytest.mark.parametrize(
    ("engine", "precision"), [("onnxruntime", "int8"), ("openvino", "int8"), ("onnxruntime", "fp32")]
)
def test_vectors_do_not_depend_on_the_stream(tiny_ov_bundle, engine, precision):
    single = Encoder.load(tiny_ov_bundle, precision=precision, engine=engine, threads=2, streams=1)
    multi = Encoder.load(tiny_ov_bundle, precision=precision, engine=engine, threads=2, streams=3)
    texts = TEXTS * 4
    assert single.encode(texts[:1]).shape == (1, single.dim)
    assert multi._stream_pool is None  # one batch: the single-stream path
    batched = multi.encode(texts, batch_size=4)
    assert multi._stream_pool is not None and multi._stream_pool.streams == 3
    assert np.array_equal(batched, single.encode(texts, batch_size=4))
    alone = np.stack([multi.encode(text) for text in TEXTS])
    assert np.array_equal(alone, batched[: len(TEXTS)])


def test_openvino_streams_share_one_compiled_model(tiny_ov_bundle):
    encoder = Encoder.load(tiny_ov_bundle, precision="int8", engine="openvino", threads=2, streams=2)
    encoder.encode(TEXTS, batch_size=2)
    backends = encoder._stream_pool.backends
    assert backends[0] is backends[1]
    assert backends[0].settings.compile_config()["NUM_STREAMS"] == 2


def test_streams_setting_is_checked(tiny_bundle):
    with pytest.raises(InputError, match="streams must be >= 1"):
        Encoder.load(tiny_bundle, streams=0)
    assert Encoder.load(tiny_bundle, threads=1).streams == 1
