"""Percentiles and the timing loops the scenarios share. Imports nothing of embedrt (the peers' venv runs it)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TypeVar

Item = TypeVar("Item")

#: ``encode(texts, batch_size)``: what every timed row offers, embedrt or peer.
Encode = Callable[[Sequence[str], int], object]


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of already sorted values, exactly as ``embedrt.tools.bench.percentile``."""
    if not sorted_values:
        raise ValueError("percentile of no values")
    rank = math.ceil(q / 100 * len(sorted_values) - 1e-9)
    return sorted_values[min(len(sorted_values), max(1, rank)) - 1]


def percentiles_ms(latencies: Sequence[float], qs: Sequence[int] = (50, 95, 99)) -> dict[str, float]:
    """``{"p50": ..., ...}`` of unsorted latencies."""
    ordered = sorted(latencies)
    return {f"p{q}": percentile(ordered, q) for q in qs}


def elapsed_ms(run: Callable[[], object]) -> float:
    """Milliseconds ``run()`` took."""
    start = time.perf_counter()
    run()
    return (time.perf_counter() - start) * 1e3


def best_pass_s(encode: Encode, texts: Sequence[str], batch_size: int, rounds: int) -> float:
    """The fastest of ``rounds`` full passes over ``texts``, in seconds."""
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        encode(texts, batch_size)
        best = min(best, time.perf_counter() - start)
    return best


def batch1_ms(encode: Encode, texts: Sequence[str], warmup: int) -> list[float]:
    """``encode([text], 1)`` for each text, after ``warmup`` untimed calls on the first ones."""
    for text in texts[:warmup]:
        encode([text], 1)
    return [elapsed_ms(lambda text=text: encode([text], 1)) for text in texts]


def peak_rss_mb() -> float:
    """Peak resident memory: ``VmHWM`` (``ru_maxrss`` survives exec and reports the parent's peak)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1e3
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3


def alternate(order: list, attempt: int) -> list:
    """``order`` on even attempts, reversed on odd ones, so no row always goes first."""
    return list(order) if attempt % 2 == 0 else list(order)[::-1]


def rotate(order: list, step: int) -> list:
    """``order`` rotated by ``step``: each row leads in turn."""
    shift = step % max(1, len(order))
    return list(order)[shift:] + list(order)[:shift]


def turns(names: list[str], items: Sequence[Item], block: int) -> Iterator[tuple[str, Item, bool]]:
    """Who sends which item when, as ``(name, item, counted)``: every name gets every item once.

    ``block`` <= 1: item by item, each through every name in an order that rotates each item (each pair of
    timings shares the machine's moment). ``block`` > 1: back to back, each name in turn sends a block of
    ``block`` consecutive items, the order rotating block by block so that drift cancels; the first item of
    each block (the one right after another name ran, caches cold) is not counted.
    """
    size = max(1, block)
    for step, start in enumerate(range(0, len(items), size)):
        chunk = items[start : start + size]
        for name in rotate(names, step):
            for position, item in enumerate(chunk):
                yield name, item, size == 1 or position > 0


def interleaved_batch1(order: list[tuple[str, Encode]], texts: Sequence[str], sink: dict[str, list[float]]) -> None:
    """Each text through every row in turn, batch 1: each pair of timings shares the machine's moment."""
    for text in texts:
        for name, run in order:
            sink[name].append(elapsed_ms(lambda run=run, text=text: run([text], 1)))
