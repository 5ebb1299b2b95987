"""Sentence pooling and normalization in float32 NumPy, matching sentence-transformers' modules."""

from __future__ import annotations

import numpy as np

from embedrt.bundle import Pooling


def pool(token_embeddings: np.ndarray, attention_mask: np.ndarray, mode: Pooling) -> np.ndarray:
    """Pool ``(batch, seq, dim)`` token embeddings into ``(batch, dim)`` float32 sentence embeddings."""
    hidden = np.asarray(token_embeddings, dtype=np.float32)
    if mode is Pooling.CLS:
        return np.ascontiguousarray(hidden[:, 0, :])
    mask = attention_mask.astype(np.float32)
    if mode is Pooling.MAX:
        # sentence-transformers sets padded positions to -1e9 before taking the max.
        masked = np.where(mask[:, :, None] > 0, hidden, np.float32(-1e9))
        return masked.max(axis=1)
    # Mean: a (batch, 1, seq) @ (batch, seq, dim) product sums the unmasked tokens in one BLAS call.
    summed = np.matmul(mask[:, None, :], hidden)[:, 0, :]
    counts = np.clip(mask.sum(axis=1, keepdims=True), 1e-9, None)
    return summed / counts


def l2_normalize(embeddings: np.ndarray) -> np.ndarray:
    """Unit-length rows, as ``torch.nn.functional.normalize`` (eps 1e-12) does."""
    norms = np.linalg.norm(embeddings, axis=1, keepdims=True)
    return embeddings / np.maximum(norms, np.float32(1e-12))
