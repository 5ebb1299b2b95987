"""Several engine instances ("streams") running batches side by side, so throughput grows with the cores.

One engine run of a small batch (32 short texts) cannot keep many cores busy: its intra-op pool waits
at every operator for the slowest thread, and the work per operator is small. Measured on 16 cores,
ONNX Runtime int8 at batch 32 ran 7x one core. Streams split the cores instead: ``streams`` instances
with ``threads // streams`` threads each, every one running whole batches from its own Python thread
(the engines release the GIL). ONNX Runtime gets one session a stream; OpenVINO gets one compiled model
with ``NUM_STREAMS`` streams and an infer request per calling thread, so its weights are loaded once.

The stream engines compute exactly what the single-stream engine does (the same graph, kernels and
settings, fewer threads: a row's sums do not depend on how many threads share the work), so a text's
vector does not depend on which stream ran it; ``tests/runtime/test_streams.py`` checks it. A single
batch (one text, a server's small request) keeps the single-stream latency path with every thread.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from embedrt.runtime.backends.base import Backend

T = TypeVar("T")
R = TypeVar("R")

#: Up to this many threads, one thread a stream; beyond it, two (memory: an ONNX Runtime session a stream).
ONE_THREAD_STREAMS_UP_TO = 8


def default_streams(threads: int) -> int:
    """Streams for ``threads`` cores: one a core up to :data:`ONE_THREAD_STREAMS_UP_TO`, then one per two."""
    if threads <= ONE_THREAD_STREAMS_UP_TO:
        return max(1, threads)
    return threads // 2


def split_threads(threads: int, streams: int) -> list[int]:
    """Threads of each stream: ``threads`` shared as evenly as possible, at least one each."""
    base, extra = divmod(max(threads, streams), streams)
    return [base + (1 if index < extra else 0) for index in range(streams)]


class StreamPool:
    """``len(backends)`` worker threads; worker ``i`` runs every batch it takes on ``backends[i]``.

    One backend may appear several times (OpenVINO: one compiled model with several streams, an infer
    request per thread).
    """

    def __init__(self, backends: Sequence[Backend]) -> None:
        self.backends = list(backends)
        self._next = itertools.count()
        self._local = threading.local()
        self._pool = ThreadPoolExecutor(len(self.backends), thread_name_prefix="embedrt-stream")

    @property
    def streams(self) -> int:
        return len(self.backends)

    def backend(self) -> Backend:
        """The backend of the calling worker thread (assigned on its first call)."""
        found: Backend | None = getattr(self._local, "backend", None)
        if found is None:
            found = self._local.backend = self.backends[next(self._next) % len(self.backends)]
        return found

    def map(self, work: Callable[[Backend, T], R], items: Sequence[T]) -> Iterator[R]:
        """``work(backend, item)`` for every item on the streams, results in the items' order."""
        return self._pool.map(lambda item: work(self.backend(), item), items)

    def close(self) -> None:
        self._pool.shutdown(wait=True)
