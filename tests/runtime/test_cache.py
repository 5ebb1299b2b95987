"""``Encoder.load(cache_size=N)``: repeated texts come from the cache, bit for bit, without the engine."""

from __future__ import annotations

import numpy as np
import pytest

from embedrt import Encoder, InputError
from embedrt.runtime.cache import EmbeddingCache, cache_key
from tests.helpers import TEST_TEXTS


class CountingBackend:
    """Wraps a backend and counts the rows it runs."""

    def __init__(self, backend) -> None:
        self.inner, self.rows = backend, 0
        self.name, self.input_names = backend.name, backend.input_names

    def run(self, batch):
        self.rows += len(batch["input_ids"])
        return self.inner.run(batch)


@pytest.fixture
def cached(tiny_bundle):
    encoder = Encoder.load(tiny_bundle, precision="fp32", cache_size=100, streams=1)  # one backend to count
    encoder.backend = CountingBackend(encoder.backend)
    return encoder


def test_a_hit_is_the_vector_the_miss_computed_and_skips_the_engine(cached):
    first = cached.encode(TEST_TEXTS)
    assert cached.backend.rows == len(TEST_TEXTS) and cached.cache.misses == len(TEST_TEXTS)
    again = cached.encode(list(reversed(TEST_TEXTS)))  # other order, other batches: still the same vectors
    assert cached.backend.rows == len(TEST_TEXTS) and cached.cache.hits == len(TEST_TEXTS)
    assert np.array_equal(again, first[::-1])  # bit for bit
    mixed = cached.encode(["新的句子", TEST_TEXTS[0]])
    assert cached.backend.rows == len(TEST_TEXTS) + 1 and np.array_equal(mixed[1], first[0])


def test_the_key_is_what_the_model_sees_and_the_normalize_flag(cached):
    cached.encode(["Hello World"])
    cached.encode(["hello world"])  # the tiny model lower-cases: the same tokens, a hit
    assert cached.backend.rows == 1 and cached.cache.hits == 1
    plain, unit = cached.encode(["Hello World"], normalize=False), cached.encode(["Hello World"], normalize=True)
    assert cached.backend.rows == 2 and np.linalg.norm(unit) == pytest.approx(1.0, abs=1e-6)
    assert not np.allclose(plain, unit)


def test_least_recently_used_entries_go_first():
    cache = EmbeddingCache(capacity=2, dim=3, max_tokens=8)
    keys = [cache_key([101, n, 102], False) for n in range(3)]
    cache.put_many(keys[:2], np.ones((2, 3), np.float32))
    assert cache.get_many([keys[0]])[0] is not None  # keys[0] is now the most recent
    cache.put_many(keys[2:], np.zeros((1, 3), np.float32))
    assert [vector is not None for vector in cache.get_many(keys)] == [True, False, True]
    assert cache.stats()["entries"] == 2 and cache.bound_bytes == 2 * (3 * 4 + 8 * 4 + 256)
    stored = cache.get_many([keys[2]])[0]
    with pytest.raises(ValueError):
        stored[0] = 1.0  # read-only: a caller cannot change what later hits return


def test_cache_off_and_bad_sizes(tiny_bundle):
    assert Encoder.load(tiny_bundle, precision="fp32").cache is None
    with pytest.raises(InputError, match="cache_size must be >= 0"):
        Encoder.load(tiny_bundle, precision="fp32", cache_size=-1)
