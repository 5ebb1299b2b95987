"""Similarity of two sets of embeddings, as sentence-transformers' ``SimilarityFunction`` computes it, in NumPy."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from embedrt.errors import InputError


def _as_batch(embeddings: Any, name: str) -> np.ndarray:
    """A 2-D float32 array; one vector ``(dim,)`` becomes ``(1, dim)`` (sentence-transformers does the same)."""
    try:
        array = np.asarray(embeddings, dtype=np.float32)
    except (TypeError, ValueError) as err:
        raise InputError(f"{name} must be an array of embeddings (n, dim) or one embedding (dim,): {err}") from err
    if array.ndim == 1:
        array = array[None, :]
    if array.ndim != 2:
        raise InputError(f"{name} must be (n, dim) or (dim,), got shape {array.shape}")
    return array


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``res[i, j]`` = cosine of ``a[i]`` and ``b[j]`` (rows normalized with eps 1e-12, as torch does)."""
    a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), np.float32(1e-12))
    b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), np.float32(1e-12))
    return a @ b.T


def dot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return a @ b.T


def euclidean(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Negative Euclidean distance (higher is more similar)."""
    squared = (a * a).sum(axis=1)[:, None] - 2 * (a @ b.T) + (b * b).sum(axis=1)[None, :]
    return -np.sqrt(np.maximum(squared, 0))


def manhattan(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Negative Manhattan distance, one row of ``a`` at a time so memory stays ``len(b) x dim``."""
    out = np.empty((len(a), len(b)), dtype=np.float32)
    for i, row in enumerate(a):
        out[i] = -np.abs(b - row).sum(axis=1)
    return out


FUNCTIONS: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "cosine": cosine,
    "dot": dot,
    "euclidean": euclidean,
    "manhattan": manhattan,
}


def similarity(embeddings1: Any, embeddings2: Any, function: str = "cosine") -> np.ndarray:
    """float32 ``(len(embeddings1), len(embeddings2))`` scores with the named similarity function."""
    if function not in FUNCTIONS:
        raise InputError(f"unknown similarity function {function!r}; use one of: {', '.join(FUNCTIONS)}")
    a, b = _as_batch(embeddings1, "embeddings1"), _as_batch(embeddings2, "embeddings2")
    if a.shape[1] != b.shape[1]:
        raise InputError(f"embeddings of different sizes: {a.shape[1]} and {b.shape[1]}; embed both with one model")
    return FUNCTIONS[function](a, b).astype(np.float32, copy=False)
