"""Grouping tokenized texts into padded batches, and nothing else (execution lives in backends/).

Texts are sorted by token length so a batch pays only for its own longest member; callers restore
their own order from the indices each batch carries.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from tokenizers import Encoding


@dataclass(frozen=True)
class LengthBuckets:
    """Padded widths that depend only on a text's own token length, never on its batch-mates.

    Widths climb a ladder: multiples of ``min_step`` (default 4) up to ``16 * min_step`` tokens, then
    ``steps`` widths per doubling of length (with the default 8: 72, 80, ... 128, then 144, 160, ... 256,
    ...), so a text pays fewer than ``min_step`` tokens, or at most 1/8 of its length, in padding, and
    widths stop at ``max_length``. Texts of one bucket are batched together and padded to its width, so a
    kernel sees the same width for a text alone or in any batch: OpenVINO's fused attention, whose result
    moves with the padded width, then gives bit-identical vectors whatever the batch (docs/openvino.md,
    Length buckets). Few widths also mean fewer new shapes for an engine to prepare: one text padded to a
    multiple of 4 ran faster than at its exact length (``benchmarks/results/ov_overhead.md``).
    """

    max_length: int = 512
    min_step: int = 4
    steps: int = 8

    def width(self, length: int) -> int:
        """The padded width of a text of ``length`` tokens."""
        length = max(1, length)
        ladder = (1 << (length - 1).bit_length()) // (2 * self.steps)  # (2^(k-1), 2^k] in steps
        step = max(self.min_step, ladder, 1)
        return max(length, min(-(-length // step) * step, self.max_length))

    def widths(self) -> list[int]:
        """Every width a text of 1 to ``max_length`` tokens can be padded to (for warm-up), shortest first."""
        return sorted({self.width(length) for length in range(1, self.max_length + 1)})


#: A text joins a batch only if the batch's width is at most this many times its own length, so a
#: few long paragraphs do not make thirty short queries pay for 512 tokens each.
MAX_PADDING_RATIO = 2


def plan_batches(
    lengths: Sequence[int],
    batch_size: int,
    max_batch_tokens: int | None = None,
    buckets: LengthBuckets | None = None,
) -> list[np.ndarray]:
    """Split positions ``0..n-1`` into batches of similar length, longest first.

    A batch holds at most ``batch_size`` texts and, when ``max_batch_tokens`` is given, at most that
    many padded tokens (batch rows times its longest text), except that a single text always fits.
    A batch also ends where the next text is under ``1/MAX_PADDING_RATIO`` of the batch's width.
    With ``buckets``, lengths are read as bucket widths and a batch holds texts of one bucket only.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if buckets is not None:
        lengths = [buckets.width(length) for length in lengths]
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
        floor = longest if buckets is not None else longest / MAX_PADDING_RATIO
        cut = start + 1
        while cut < stop and lengths[order[cut]] >= floor:
            cut += 1
        batches.append(order[start:cut])
        start = cut
    return batches


#: What one more engine run costs, in padded tokens, when :func:`plan_runs` weighs runs against padding.
#: Measured with ONNX Runtime (spinning off) serving short Chinese queries: the CPU cost per token is flat
#: from about 4 rows a run, so a run is cheap; 16 and 32 gave the same server CPU.
RUN_COST_TOKENS = 16


def plan_runs(
    lengths: Sequence[int],
    max_batch_tokens: int,
    run_cost_tokens: float = RUN_COST_TOKENS,
    buckets: LengthBuckets | None = None,
) -> list[np.ndarray]:
    """Split positions ``0..n-1`` into engine runs with the fewest padded tokens plus ``run_cost_tokens`` a run.

    Texts are sorted longest first and each run is a contiguous stretch of that order, its width set by
    its first text; a dynamic programme over the cut points finds the cheapest plan. A run holds at most
    ``max_batch_tokens`` padded tokens, except that a single text always fits. The server plans each
    batching cycle this way, so requests of a few short queries waste little padding where fixed-size
    batches waste much (figures: ``benchmarks/serve_bench.py`` results). With ``buckets``, a run holds
    texts of one bucket only, padded to its width (:meth:`LengthBuckets.width`).
    """
    if buckets is not None:
        return plan_batches(lengths, max(1, len(lengths)), max_batch_tokens, buckets)
    if len(lengths) == 1:  # the lone request of an idle server: one run, no programme to solve
        return [np.zeros(1, dtype=np.int64)]
    order = np.argsort(-np.asarray(lengths, dtype=np.int64), kind="stable")
    width = np.asarray(lengths, dtype=np.float64)[order]
    n = len(order)
    cost = np.full(n + 1, np.inf)
    cost[0] = 0.0
    start = np.zeros(n + 1, dtype=np.int64)
    for end in range(1, n + 1):
        # A run of rows first..end-1 is as wide as its first row; the longest runs are cut off by the budget.
        first = np.arange(max(0, end - max(1, max_batch_tokens)), end)
        padded = (end - first) * width[first]
        total = cost[first] + padded + run_cost_tokens
        total[(padded > max_batch_tokens) & (end - first > 1)] = np.inf
        best = int(np.argmin(total))
        cost[end], start[end] = total[best], first[best]
    runs = []
    end = n
    while end > 0:
        runs.append(order[start[end] : end])
        end = int(start[end])
    return runs[::-1]


def pad_batch(
    encodings: Sequence[Encoding], with_token_types: bool = True, width: int | None = None
) -> dict[str, np.ndarray]:
    """Right-pad a batch to ``width`` (default: its longest member): int64 ``input_ids``, ``attention_mask``,
    ``token_type_ids``."""
    longest = max(len(encoding.ids) for encoding in encodings)
    if width is None:
        width = longest
    elif width < longest:
        raise ValueError(f"pad width {width} is shorter than the batch's longest text ({longest} tokens)")
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
