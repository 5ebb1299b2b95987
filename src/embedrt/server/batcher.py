"""Dynamic batching: requests that arrive together share engine runs, and each gets back its own rows.

Requests enter a FIFO queue already tokenized. A collector coroutine waits until the oldest queued
request has waited ``max_wait`` or the queued tokens fill ``max_batch_tokens``, takes texts from the
front of the queue up to that budget (a large request may span cycles), and hands them to ONE worker
thread. The worker sorts them by length into padded batches (``Encoder.batches``), runs the engine
(ONNX Runtime already uses every core per run, so one thread is the right number), and resolves each
request's future as soon as its last row is done. Pooling per row and normalization per request make
every fp32 result what ``Encoder.encode`` gives for that request alone.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
from tokenizers import Encoding

from embedrt.errors import BackendError, EmbedrtError
from embedrt.runtime.encoder import Encoder
from embedrt.runtime.pooling import l2_normalize
from embedrt.server.metrics import Metrics

log = logging.getLogger("embedrt.server")

#: Requests with at most this many characters are tokenized on the event loop (well under a millisecond);
#: larger ones go to a helper thread so one big request cannot stall every other connection.
INLINE_TOKENIZE_CHARS = 4096


@dataclass(eq=False)
class _Job:
    """One request inside the batcher."""

    encodings: list[Encoding]
    normalize: bool
    future: asyncio.Future
    arrived: float
    output: np.ndarray
    lengths: list[int] = field(default_factory=list)
    taken: int = 0  # rows handed to the engine (event-loop side)
    done: int = 0  # rows finished (worker side)
    started: bool = False  # worker side: first row has run

    def __post_init__(self) -> None:
        self.lengths = [len(encoding.ids) for encoding in self.encodings]


class DynamicBatcher:
    """Merges concurrent requests into token-budgeted engine batches on one worker thread."""

    def __init__(
        self,
        encoder: Encoder,
        max_batch_tokens: int = 2048,
        max_wait_s: float = 0.002,
        max_batch_requests: int | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.encoder = encoder
        self.max_batch_tokens = max_batch_tokens
        self.max_wait_s = max_wait_s
        self.max_batch_requests = max_batch_requests
        self.metrics = metrics or Metrics()
        self._pending: collections.deque[_Job] = collections.deque()
        self._pending_texts = 0
        self._pending_tokens = 0
        self._arrived = asyncio.Event()  # binds to the loop that first waits on it
        self._closing = False
        self._task: asyncio.Task | None = None
        self._engine = ThreadPoolExecutor(max_workers=1, thread_name_prefix="embedrt-engine")
        self.cycles = 0  # batching cycles run; tests read it to see merging

    # ------------------------------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        """Start the collector on the running event loop."""
        self._task = asyncio.create_task(self._collect(), name="embedrt-batcher")

    async def stop(self) -> None:
        """Finish every queued request, then stop the collector and the worker threads."""
        self._closing = True
        self._arrived.set()
        if self._task is not None:
            await self._task
        self._engine.shutdown(wait=True)

    @property
    def healthy(self) -> bool:
        """The collector is running (it stops only on shutdown or a bug, which the log shows)."""
        return self._task is not None and not self._task.done() and not self._closing

    # ------------------------------------------------------------------------------------------ requests
    async def tokenize(self, texts: list[str]) -> list[Encoding]:
        """Token ids for validated texts, off the event loop when the request is large."""
        if sum(len(text) for text in texts) <= INLINE_TOKENIZE_CHARS:
            return self.encoder.tokenize(texts)
        return await asyncio.to_thread(self.encoder.tokenize, texts)

    async def embed(self, encodings: list[Encoding], normalize: bool) -> np.ndarray:
        """Float32 ``(len(encodings), dim)`` embeddings, in order, once the engine has run them."""
        if self._task is None:
            raise BackendError("the batcher is not started; call start() inside the event loop first")
        if self._closing:
            raise BackendError("the server is shutting down")
        loop = asyncio.get_running_loop()
        job = _Job(
            encodings=list(encodings),
            normalize=normalize,
            future=loop.create_future(),
            arrived=time.monotonic(),
            output=np.empty((len(encodings), self.encoder.dim), dtype=np.float32),
        )
        if not job.encodings:
            return job.output
        self._pending.append(job)
        self._pending_texts += len(job.lengths)
        self._pending_tokens += sum(job.lengths)
        self.metrics.queue_size.set(self._pending_texts)
        self._arrived.set()
        return await job.future

    # ------------------------------------------------------------------------------------------ collector
    async def _collect(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self._drop_cancelled()
            if not self._pending:
                if self._closing:
                    return
                self._arrived.clear()
                await self._arrived.wait()
                continue
            await self._wait_for_batch_mates()
            rows = self._take()
            if not rows:
                continue
            self.cycles += 1
            try:
                await loop.run_in_executor(self._engine, self._run_cycle, rows, loop)
            except Exception as err:  # a bug outside the engine call: fail this cycle, keep serving
                log.error("batching cycle of %d texts failed", len(rows), exc_info=err)
                reason = _backend_error(err)
                for job in {job for job, _ in rows}:
                    _fail(job.future, reason)

    async def _wait_for_batch_mates(self) -> None:
        """Wait until the oldest request's deadline, a full token budget, or the request cap."""
        deadline = self._pending[0].arrived + self.max_wait_s
        while not self._closing and self._pending_tokens < self.max_batch_tokens:
            if self.max_batch_requests is not None and len(self._pending) >= self.max_batch_requests:
                return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), remaining)
            except TimeoutError:
                return

    def _drop_cancelled(self) -> None:
        """Forget requests whose client left (their handler was cancelled) before they ran."""
        if any(job.future.done() for job in self._pending):
            kept = collections.deque(job for job in self._pending if not job.future.done())
            for job in self._pending:
                if job.future.done():
                    self._release(job, job.taken)
            self._pending = kept

    def _release(self, job: _Job, start: int, stop: int | None = None) -> None:
        lengths = job.lengths[start:stop]
        self._pending_texts -= len(lengths)
        self._pending_tokens -= sum(lengths)
        self.metrics.queue_size.set(self._pending_texts)

    def _take(self) -> list[tuple[_Job, int]]:
        """Rows from the front of the queue up to the token budget (always at least one row)."""
        rows: list[tuple[_Job, int]] = []
        tokens = 0
        requests = 0
        while self._pending:
            if self.max_batch_requests is not None and requests >= self.max_batch_requests:
                break
            job = self._pending[0]
            first = job.taken
            while job.taken < len(job.lengths):
                length = job.lengths[job.taken]
                if rows and tokens + length > self.max_batch_tokens:
                    break
                rows.append((job, job.taken))
                tokens += length
                job.taken += 1
            self._release(job, first, job.taken)
            if job.taken > first:
                requests += 1
            if job.taken < len(job.lengths):
                break  # budget full inside this request; its remaining rows lead the next cycle
            self._pending.popleft()
        self.metrics.batch_requests.observe(requests)
        return rows

    # ------------------------------------------------------------------------------------------ worker thread
    def _run_cycle(self, rows: list[tuple[_Job, int]], loop: asyncio.AbstractEventLoop) -> None:
        """Run the taken rows as length-sorted batches; resolve each request when its last row is done."""
        encodings = [job.encodings[index] for job, index in rows]
        failed: set[_Job] = set()
        for batch in self.encoder.batches(encodings, batch_size=len(encodings), max_batch_tokens=self.max_batch_tokens):
            picked = [rows[position] for position in batch.positions]
            live = [(job, index) for job, index in picked if job not in failed]
            if not live:
                continue
            now = time.monotonic()
            for job, _ in live:
                if not job.started:
                    job.started = True
                    self.metrics.queue_duration.observe(now - job.arrived)
            try:
                vectors = self.encoder.run_batch(batch, normalize=False)
            except Exception as err:  # fail these requests, keep serving the others
                reason = _backend_error(err)
                log.error("engine failed on a batch of %d texts", len(batch.positions), exc_info=err)
                for job, _ in live:
                    if job not in failed:
                        failed.add(job)
                        loop.call_soon_threadsafe(_fail, job.future, reason)
                continue
            self.metrics.inference_duration.observe(time.monotonic() - now)
            self.metrics.batch_size.observe(len(batch.positions))
            self.metrics.batch_tokens.observe(batch.inputs["attention_mask"].size)
            for (job, index), vector in zip(picked, vectors, strict=True):
                if job in failed:
                    continue
                job.output[index] = vector
                job.done += 1
                if job.done == len(job.lengths):
                    result = l2_normalize(job.output).astype(np.float32, copy=False) if job.normalize else job.output
                    loop.call_soon_threadsafe(_resolve, job.future, result)


def _backend_error(err: Exception) -> EmbedrtError:
    """``err`` itself if it is an embedrt error, else a :class:`BackendError` caused by it."""
    if isinstance(err, EmbedrtError):
        return err
    wrapped = BackendError(f"{type(err).__name__}: {err}")
    wrapped.__cause__ = err
    return wrapped


def _resolve(future: asyncio.Future, result: np.ndarray) -> None:
    if not future.done():
        future.set_result(result)


def _fail(future: asyncio.Future, err: BaseException) -> None:
    if not future.done():
        future.set_exception(err)
