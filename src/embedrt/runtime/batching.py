"""Grouping tokenized texts into padded batches, and nothing else (execution lives in backends/).

Texts are sorted by token length so a batch pays only for its own longest member; callers restore
their own order from the indices each batch carries.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from tokenizers import Encoding

#: A text joins a batch only if the batch's width is at most this many times its own length, so a
#: few long paragraphs do not make thirty short queries pay for 512 tokens each.
MAX_PADDING_RATIO = 2


def plan_batches(lengths: Sequence[int], batch_size: int, max_batch_tokens: int | None = None) -> list[np.ndarray]:
    """Split positions ``0..n-1`` into batches of similar length, longest first.

    A batch holds at most ``batch_size`` texts and, when ``max_batch_tokens`` is given, at most that
    many padded tokens (batch rows times its longest text), except that a single text always fits.
    A batch also ends where the next text is under ``1/MAX_PADDING_RATIO`` of the batch's width.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    order = np.argsort(-np.asarray(lengths, dtype=np.int64), kind="stable")
    batches: list[np.ndarray] = []
    start = 0
    n = len(order)
    while start < n:
        longest = int(lengths[order[start]])
        stop = min(start + batch_size, n)
        if max_batch_tokens is not None:
            # Sorted longest first, so the first row sets the padded width of the whole batch.
            stop = min(stop, start + max(1, max_batch_tokens // max(longest, 1)))
        floor = longest / MAX_PADDING_RATIO
        cut = start + 1
        while cut < stop and lengths[order[cut]] >= floor:
            cut += 1
        batches.append(order[start:cut])
        start = cut
    return batches


def pad_batch(encodings: Sequence[Encoding], with_token_types: bool = True) -> dict[str, np.ndarray]:
    """Right-pad a batch to its longest member: int64 ``input_ids``, ``attention_mask``, ``token_type_ids``."""
    width = max(len(encoding.ids) for encoding in encodings)
    rows = len(encodings)
    input_ids = np.zeros((rows, width), dtype=np.int64)
    attention_mask = np.zeros((rows, width), dtype=np.int64)
    token_type_ids = np.zeros((rows, width), dtype=np.int64) if with_token_types else None
    for row, encoding in enumerate(encodings):
        n = len(encoding.ids)
        input_ids[row, :n] = encoding.ids
        attention_mask[row, :n] = 1
        if token_type_ids is not None:
            token_type_ids[row, :n] = encoding.type_ids
    batch = {"input_ids": input_ids, "attention_mask": attention_mask}
    if token_type_ids is not None:
        batch["token_type_ids"] = token_type_ids
    return batch
