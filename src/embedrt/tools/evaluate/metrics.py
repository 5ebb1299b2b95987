"""How well cosine similarity ranks sentence pairs: Spearman and Pearson (x100) against gold scores.

NumPy only (average ranks for ties, as ``scipy.stats.spearmanr``): the runtime does not depend on SciPy.
Every distinct sentence is embedded once, by anything with an ``encode`` method (an
:class:`~embedrt.Encoder` or a ``SentenceTransformer``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from embedrt.errors import EmbedrtError
from embedrt.tools.evaluate.readers import PairSet, as_pair_set, check_scores


class SupportsEncode(Protocol):
    """Anything that embeds a list of texts: an :class:`~embedrt.Encoder` or a ``SentenceTransformer``."""

    def encode(self, texts: list[str], batch_size: int = ...) -> Any: ...


def average_ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 1..n of ``values``; tied values share the mean of the ranks they span."""
    values = np.asarray(values, dtype=np.float64)
    n = values.shape[0]
    order = np.argsort(values, kind="mergesort")
    ordered = values[order]
    starts_group = np.empty(n, dtype=bool)
    starts_group[:1] = True
    starts_group[1:] = ordered[1:] != ordered[:-1]
    starts = np.flatnonzero(starts_group)
    ends = np.append(starts[1:], n)
    mean_rank = (starts + ends + 1) / 2.0  # mean of the 1-based ranks starts+1 .. ends
    ranks = np.empty(n, dtype=np.float64)
    ranks[order] = np.repeat(mean_rank, ends - starts)
    return ranks


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson correlation of two equal-length vectors; NaN when either one is constant."""
    x = np.asarray(x, dtype=np.float64) - np.mean(x)
    y = np.asarray(y, dtype=np.float64) - np.mean(y)
    denominator = math.sqrt(float(np.dot(x, x)) * float(np.dot(y, y)))
    if denominator == 0.0:
        return math.nan
    return max(-1.0, min(1.0, float(np.dot(x, y)) / denominator))


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman rank correlation (Pearson of average ranks, as SciPy computes it)."""
    return pearson(average_ranks(x), average_ranks(y))


def cosine_scores(
    encoder: SupportsEncode, pairs: PairSet | Sequence[tuple[str, str, float]], batch_size: int = 64
) -> np.ndarray:
    """Cosine similarity of each pair; every distinct sentence is embedded once."""
    pairs = as_pair_set(pairs)
    index: dict[str, int] = {}
    for text in (*pairs.sentences1, *pairs.sentences2):
        index.setdefault(text, len(index))
    unique = list(index)
    embeddings = np.asarray(encoder.encode(unique, batch_size=batch_size), dtype=np.float64)
    if embeddings.shape[0] != len(unique):
        raise EmbedrtError(f"the encoder returned {embeddings.shape[0]} embeddings for {len(unique)} texts")
    norms = np.linalg.norm(embeddings, axis=1, keepdims=True)
    embeddings /= np.maximum(norms, 1e-12)
    left = embeddings[[index[text] for text in pairs.sentences1]]
    right = embeddings[[index[text] for text in pairs.sentences2]]
    return np.einsum("ij,ij->i", left, right)


def evaluate(
    encoder: SupportsEncode, pairs: PairSet | Sequence[tuple[str, str, float]], batch_size: int = 64
) -> dict[str, float]:
    """``{"spearman": .., "pearson": ..}`` x100 between the pairs' cosine similarity and their gold scores."""
    pair_set = as_pair_set(pairs)
    check_scores(pair_set, pair_set.name)
    cosines = cosine_scores(encoder, pair_set, batch_size)
    return {
        "spearman": 100.0 * spearman(cosines, np.asarray(pair_set.scores)),
        "pearson": 100.0 * pearson(cosines, np.asarray(pair_set.scores)),
    }
