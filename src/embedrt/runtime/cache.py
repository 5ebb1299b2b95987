"""An in-memory LRU of sentence embeddings, for traffic that repeats (FAQ matching, popular queries).

The key is what the model sees (the token ids after lower-casing and truncation) and whether the
vector is L2-normalized; one cache belongs to one encoder, so to one variant. A hit returns the very
vector the miss computed, bit for bit. For fp32 that is also what any later batch would give (to about
1e-6); for dynamic int8, whose activation scales come from the whole batch, it is the vector of the
batch that first computed it (within about 0.995 cosine of another batch's).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence

import numpy as np

#: Bytes an entry costs beyond its vector and its key: the OrderedDict node, the key tuple and bytes
#: headers (measured with tracemalloc on CPython 3.11, rounded up).
ENTRY_OVERHEAD_BYTES = 256


def cache_key(ids: Sequence[int], normalize: bool) -> tuple[bool, bytes]:
    """The cache key of a tokenized text: 4 bytes per token id, and the normalize flag."""
    return normalize, np.asarray(ids, dtype=np.int32).tobytes()


class EmbeddingCache:
    """Least-recently-used map from :func:`cache_key` to a float32 vector; safe to share between threads."""

    def __init__(self, capacity: int, dim: int, max_tokens: int) -> None:
        if capacity < 0:
            raise ValueError(f"cache size must be >= 0, got {capacity}")
        self.capacity = capacity
        self.dim = dim
        self.max_tokens = max_tokens
        self.hits = 0
        self.misses = 0
        self._entries: OrderedDict[tuple[bool, bytes], np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def bound_bytes(self) -> int:
        """The most memory a full cache can hold: every entry at the longest key the bundle allows."""
        return self.capacity * (self.dim * 4 + self.max_tokens * 4 + ENTRY_OVERHEAD_BYTES)

    def get_many(self, keys: Sequence[tuple[bool, bytes]]) -> list[np.ndarray | None]:
        """The cached vector for each key, or ``None``; hits become the most recently used."""
        found: list[np.ndarray | None] = []
        with self._lock:
            for key in keys:
                vector = self._entries.get(key)
                if vector is not None:
                    self._entries.move_to_end(key)
                found.append(vector)
            hits = sum(vector is not None for vector in found)
            self.hits += hits
            self.misses += len(keys) - hits
        return found

    def fill(
        self, token_ids: Sequence[Sequence[int]], normalize: bool, out: np.ndarray
    ) -> tuple[list[tuple[bool, bytes]], list[int]]:
        """Copy the cached vectors of these tokenized texts into their rows of ``out``.

        Returns every text's key (to :meth:`put_many` what gets computed) and the rows the cache lacks.
        """
        keys = [cache_key(ids, normalize) for ids in token_ids]
        missing = []
        for row, vector in enumerate(self.get_many(keys)):
            if vector is None:
                missing.append(row)
            else:
                out[row] = vector
        return keys, missing

    def put_many(self, keys: Sequence[tuple[bool, bytes]], vectors: np.ndarray) -> None:
        """Remember ``vectors`` (one row per key), evicting the least recently used beyond capacity."""
        if self.capacity == 0:
            return
        with self._lock:
            for key, vector in zip(keys, vectors, strict=True):
                stored = np.array(vector, dtype=np.float32)  # a copy: callers own their arrays
                stored.flags.writeable = False  # and a hit cannot be changed through the array it returns
                self._entries[key] = stored
                self._entries.move_to_end(key)
            while len(self._entries) > self.capacity:
                self._entries.popitem(last=False)

    def stats(self) -> dict[str, int]:
        return {
            "size": self.capacity,
            "entries": len(self._entries),
            "hits": self.hits,
            "misses": self.misses,
            "bound_bytes": self.bound_bytes,
        }
