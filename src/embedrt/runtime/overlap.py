"""Keeping a GPU busy: host work overlapped with the device, few padded shapes, those shapes warmed at load.

- :func:`overlapped` pads batch n+1 on a helper thread while the caller's thread runs batch n on the
  device (ONNX Runtime releases the GIL while it runs, and so does the tokenizer's batch call), in order,
  a bounded number of batches ahead; ``Encoder.encode`` also tokenizes there, a chunk at a time, when it
  has many texts and no cache.
- :func:`bucket_width` rounds a batch's padded width up to one of a few widths, so a GPU sees a handful of
  shapes instead of every length; the attention mask keeps padded positions out of every vector.
- :func:`warm_shapes` runs each of those widths once at load, so that the first request of each width does not
  pay for the provider's first-run work on that shape (issue 23 measured the stall a new length costs, docs/gpu.md).
- :func:`graph_shapes` names the shapes that get a CUDA graph when asked for (one text at each width).

The server uses the same pieces: a cycle of several runs pads each on the helper thread while the device runs
the one before (``Encoder.packed``, called by ``server/batcher.py``).

Used for ``device="cuda"`` (buckets and warm-up) and ``"tensorrt"`` (overlap only: its engine profile fixes
the widths it takes). The CPU path does none of this.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Generator, Sequence
from typing import TypeVar

import numpy as np

T = TypeVar("T")
R = TypeVar("R")

#: Padded widths on a GPU: steps of 8 up to 64 tokens, then 16, 32 and 64 (at most 1/8 to 1/5 padding added).
BUCKET_WIDTHS = (8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384, 448, 512)
#: Batches padded ahead of the device.
AHEAD = 2
#: Texts tokenized at a time when ``encode`` tokenizes on the helper thread too (a GPU, many texts, no cache).
OVERLAP_CHUNK = 1024
#: ``encode``'s batch size and padded-token budget on a GPU when the caller gives none. Chosen from the H200
#: figures in docs/gpu.md (the engine alone gains up to batch 2048 at 24 tokens; ``encode`` peaked at 128 while
#: host work was serial), NOT measured with device pooling and overlap: `embedrt bench --device cuda` will say.
GPU_BATCH_SIZE = 256
GPU_MAX_BATCH_TOKENS = 32768
#: What one more engine run costs on a GPU, in padded tokens, when the server plans a cycle's runs
#: (:func:`~embedrt.runtime.batching.plan_runs`; the CPU's is 16). A guess from the H200 figures, NOT measured
#: with the planner: fp16 batch 1 took 0.41 ms on the engine alone, the time of ~1,400 tokens at its batch-128
#: rate (148K sentences/s of 24 tokens), so a run costs about a thousand tokens of work. Step 04d of
#: tests/e2e/gpu/check_on_gpu.sh compares it with the CPU's value.
GPU_RUN_COST_TOKENS = 1024
#: Row counts that get a CUDA graph at each bucket width with ``Encoder.load(cuda_graphs=True)``: one text, the lone
#: request, where launching ~100 kernels one by one is most of the time (issue 23 measured fp16 batch-1 p50 at
#: 0.41 ms for the engine alone and 1.21 ms through ``encode``). Bigger batches are bound by the kernels themselves.
GRAPH_ROWS = (1,)


def bucket_widths(max_seq_length: int) -> tuple[int, ...]:
    """The bucket widths a bundle can use: those below its maximum, and the maximum itself."""
    return (*(w for w in BUCKET_WIDTHS if w < max_seq_length), max_seq_length)


def bucket_width(width: int, widths: Sequence[int]) -> int:
    """The smallest of ``widths`` at least ``width`` (``width`` itself when none is)."""
    return next((w for w in widths if w >= width), width)


def graph_shapes(widths: Sequence[int], rows: Sequence[int] = GRAPH_ROWS) -> list[tuple[int, int]]:
    """The ``(rows, width)`` shapes that get a CUDA graph: each of ``rows`` at each of ``widths``."""
    return [(count, width) for width in widths for count in rows]


def overlapped(items: Sequence[T], make: Callable[[T], R], ahead: int = AHEAD) -> Generator[R, None, None]:
    """``make(item)`` for each item, in order, computed on a helper thread up to ``ahead`` items early.

    An exception in ``make`` is raised here, at its item. Leaving the loop early (or an error in the
    caller's loop) stops the helper before it starts another item.
    """
    done = object()
    results: queue.Queue[object] = queue.Queue(maxsize=max(1, ahead))
    stop = threading.Event()

    def offer(made: object) -> None:
        while not stop.is_set():
            try:
                results.put(made, timeout=0.1)
                return
            except queue.Full:
                continue

    def produce() -> None:
        for item in items:
            if stop.is_set():
                return
            try:
                made: object = make(item)
            except BaseException as err:  # handed to the consumer, raised there
                offer(_Failed(err))
                return
            offer(made)
        offer(done)

    helper = threading.Thread(target=produce, name="embedrt-host-batches", daemon=True)
    helper.start()
    try:
        while (made := results.get()) is not done:
            if isinstance(made, _Failed):
                raise made.error
            yield made  # type: ignore[misc]  # a produced R
    finally:
        stop.set()
        helper.join()


class _Failed:
    def __init__(self, error: BaseException) -> None:
        self.error = error


def warm_shapes(
    run: Callable[[dict[str, np.ndarray]], object],
    input_names: Sequence[str],
    widths: Sequence[int],
    rows: Sequence[int] = (1,),
    max_tokens: int | None = None,
) -> list[tuple[int, int, float]]:
    """Run one all-ones-mask batch of each ``rows`` x ``widths`` shape; return ``(rows, width, seconds)`` each.

    Row counts above what ``max_tokens`` lets a batch of that width hold are lowered to it. Ids are 0
    (values do not decide which kernels run); what is warmed is the shape.
    """
    took = []
    for width in widths:
        fits = max(1, max_tokens // width) if max_tokens else None
        for count in sorted({min(r, fits) if fits else r for r in rows}):
            ones = np.ones((count, width), dtype=np.int64)
            batch = {"input_ids": np.zeros_like(ones), "attention_mask": ones, "token_type_ids": np.zeros_like(ones)}
            started = time.perf_counter()
            run({name: batch[name] for name in input_names})
            took.append((count, width, time.perf_counter() - started))
    return took
