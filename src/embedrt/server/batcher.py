"""Continuous batching: a request runs as soon as the engine is free; what arrives meanwhile shares the next run.

Requests enter a FIFO queue already tokenized. A cycle starts as soon as the engine is idle and
something is queued, with no task in between: a request that finds the engine idle submits the cycle
from :meth:`DynamicBatcher.embed` itself, and the engine thread's one hand-back at the end of a cycle
(which carries the answers of its last run) starts the next. A cycle takes texts from the front of the queue up to
``cycle_tokens`` (two runs' worth; a large request may span cycles), plans the cycle's engine runs over
all of them at once (:func:`~embedrt.runtime.batching.plan_runs`: fewest padded tokens plus a small cost
per run, at most ``max_batch_tokens`` padded tokens a run), runs the engine and resolves each request's
future as soon as its last row is done. Requests that arrive while a cycle runs wait in the queue and
form the next cycle, as in TEI's queue: low load gets batch-1 latency, high load full batches.
``max_wait_s`` > 0 (``--max-wait-ms``, off by default) makes the oldest request wait that long for
batch-mates before a cycle starts, as the server did before.

Cycles run on ONE worker thread, so the event loop keeps reading and tokenizing what arrives while the
engine runs (the engine already uses every core per run, so one thread is the right number). The
exception is a lone small request (``inline``, on by default in the server with one model on the CPU):
when the engine is idle, nothing else is queued and the cycle has at most :data:`INLINE_TOKENS` tokens, the
cycle runs on the event loop thread itself and the response leaves in the same event loop step: no hand-off
to the engine thread and back (two thread wake-ups, and the GIL passed between two threads). It starts from
:meth:`DynamicBatcher.embed` at once when :attr:`DynamicBatcher.alone` says no other request has been
received (the server asks uvicorn); otherwise one event loop step later, so that requests already received
queue first and the cycle, no longer lone, goes to the engine thread batched. A lone request of one text
that the server says is alone does not enter the queue at all: its cycle runs from :meth:`DynamicBatcher.embed`
at once, with the queue's bookkeeping (counts, gauge, taking rows) left out. Requests that arrive during
an inline run wait in the socket for those few milliseconds and are queued when it ends, as they would have
been queued behind it, but unread and untokenized: so after a cycle of several requests (overlapping
traffic) the next cycle goes to the engine thread even if it is lone (at 4-16 clients, inline after every
lone cycle cost 1-7% of the requests per second in ``benchmarks/latency.py``). An earlier measurement
had found the event-loop path slower back to back (7.5 against 6.4 ms); repeated for issue 25 with the loop
thread's infer request warmed, it was 0.03-0.38 ms closer to the engine (docs/serving.md). Pooling per row
and normalization per request make every fp32 result what ``Encoder.encode`` gives for that request alone,
on either thread.

A request may carry a deadline. One that passes while the request is queued, or while its cycle has
not yet reached its first row, fails with :class:`DeadlineExceeded` and none of its rows reach the engine.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
from tokenizers import Encoding

from embedrt.errors import BackendError, EmbedrtError
from embedrt.runtime.batching import plan_runs
from embedrt.runtime.encoder import Encoder
from embedrt.runtime.pooling import l2_normalize
from embedrt.server.metrics import Metrics

log = logging.getLogger("embedrt.server")

#: Requests with at most this many characters are tokenized on the event loop (well under a millisecond);
#: larger ones go to a helper thread so one big request cannot stall every other connection.
INLINE_TOKENIZE_CHARS = 4096
#: Engine runs' worth of real tokens one cycle takes from the queue: enough for the planner to pack runs
#: with little padding, few enough that a cycle stays short. Measured with 64 clients x 20 requests of
#: 1-8 short sentences (all-MiniLM-L6-v2, 2 cores): 1, 2 and 4 runs cost the same server CPU within noise,
#: and p99 / p50 was 1.4, 1.2 and 2.0: a long cycle makes a request that just missed it wait for all of it.
CYCLE_RUNS = 2
#: Tokens a cycle may have to run on the event loop thread (``inline``): a few short texts, a few milliseconds.
INLINE_TOKENS = 128


class DeadlineExceeded(EmbedrtError):
    """A request's deadline passed before the engine ran any of its texts."""


@dataclass
class Timing:
    """Where one request's time went, for TEI's x-queue-time and x-inference-time headers (seconds, summed)."""

    queue_s: float = 0.0
    inference_s: float = 0.0


@dataclass(eq=False)
class _Job:
    """One request inside the batcher."""

    encodings: list[Encoding]
    normalize: bool
    future: asyncio.Future
    arrived: float
    output: np.ndarray
    deadline: float | None = None  # time.monotonic() after which it must not start
    lengths: list[int] = field(default_factory=list)
    taken: int = 0  # rows handed to the engine (event-loop side)
    done: int = 0  # rows finished (worker side)
    started: bool = False  # worker side: first row has run
    first_run: float = 0.0  # worker side: when the first row's run began
    timing: Timing | None = None

    def __post_init__(self) -> None:
        self.lengths = [len(encoding.ids) for encoding in self.encodings]

    def expired(self, now: float) -> bool:
        return self.deadline is not None and not self.started and now >= self.deadline


#: A request's answer as the engine thread hands it to the event loop: its future, and vectors or an error.
_Outcome = tuple[asyncio.Future, "np.ndarray | BaseException"]


class DynamicBatcher:
    """Merges concurrent requests into token-budgeted engine runs on one worker thread."""

    def __init__(
        self,
        encoder: Encoder,
        max_batch_tokens: int = 2048,
        max_wait_s: float = 0.0,
        max_batch_requests: int | None = None,
        metrics: Metrics | None = None,
        engine: ThreadPoolExecutor | None = None,
        inline: bool = False,
    ) -> None:
        self.encoder = encoder
        self.max_batch_tokens = max_batch_tokens
        self.cycle_tokens = CYCLE_RUNS * max_batch_tokens
        self.max_wait_s = max_wait_s
        self.max_batch_requests = max_batch_requests
        self.metrics = metrics or Metrics()
        self._pending: collections.deque[_Job] = collections.deque()
        self._pending_texts = 0
        self._pending_tokens = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closing = False
        self._running = False  # a cycle is on the engine thread (set and read on the event loop only)
        self._waiting = False  # the queue's head is waiting for batch-mates (max_wait_s > 0)
        self._timer: asyncio.TimerHandle | None = None
        self._drained = asyncio.Event()  # binds to the loop that first waits on it
        #: The engine thread; a server with several models passes one pool they share (and shuts it down).
        self._owns_engine = engine is None
        self._engine = engine or ThreadPoolExecutor(max_workers=1, thread_name_prefix="embedrt-engine")
        #: Run a lone small cycle on the event loop thread (never with a shared pool: other models may be running).
        self.inline = inline and self._owns_engine
        #: Whether the request calling :meth:`embed` is the only one received and not answered (None: unknown).
        self.alone: Callable[[], bool] | None = None
        self._kick_scheduled = False
        self._last_requests = 1  # requests the last cycle took: more than one means traffic overlaps
        # Counters tests read to see what the batcher did (never timings): cycles run, and cycles whose
        # start waited for batch-mates (only with max_wait_s > 0), cycles run on the event loop thread.
        self.cycles = 0
        self.waited_cycles = 0
        self.inline_cycles = 0

    # ------------------------------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        """Bind to the running event loop; from now on requests start cycles. A GPU encoder's CUDA graphs move to
        the engine thread, the one that runs its batches (:meth:`Encoder.adopt_thread`)."""
        self._loop = asyncio.get_running_loop()
        if self.encoder.cuda_graphs:
            await self._loop.run_in_executor(self._engine, self.encoder.adopt_thread)

    async def stop(self) -> None:
        """Finish every queued request (a fixed wait ends at once), then stop the engine thread."""
        self._closing = True
        if self._loop is not None:
            self._kick()
            while self._running or self._pending:
                self._drained.clear()
                await self._drained.wait()
        if self._owns_engine:
            self._engine.shutdown(wait=True)

    @property
    def healthy(self) -> bool:
        """Started and not stopping."""
        return self._loop is not None and not self._closing

    # ------------------------------------------------------------------------------------------ requests
    async def tokenize(self, texts: list[str], direction: str = "right") -> list[Encoding]:
        """Token ids for validated texts, off the event loop when the request is large."""
        started = time.perf_counter()
        if sum(len(text) for text in texts) <= INLINE_TOKENIZE_CHARS:
            encodings = self.encoder.tokenizer.encode(texts, direction)
        else:
            encodings = await asyncio.to_thread(self.encoder.tokenizer.encode, texts, direction)
        self.metrics.tokenize_duration.observe(time.perf_counter() - started)
        return encodings

    async def embed(
        self, encodings: list[Encoding], normalize: bool, deadline: float | None = None, timing: Timing | None = None
    ) -> np.ndarray:
        """Float32 ``(len(encodings), dim)`` embeddings, in order, once the engine has run them.

        ``deadline`` (``time.monotonic()``): if it passes before the first of these texts runs, raise
        :class:`DeadlineExceeded` and run none of them. ``timing`` gets the time queued and in the engine added.
        """
        loop = self._loop
        if loop is None:
            raise BackendError("the batcher is not started; call start() inside the event loop first")
        if self._closing:
            raise BackendError("the server is shutting down")
        job = _Job(
            encodings=list(encodings),
            normalize=normalize,
            future=loop.create_future(),
            arrived=time.monotonic(),
            output=np.empty((len(encodings), self.encoder.dim), dtype=np.float32),
            deadline=deadline,
            timing=timing,
        )
        if not job.encodings:
            return job.output
        if self._runs_now(job):
            self._run_now(job, loop)
            return job.future.result()  # answered (or failed) here and now
        self._pending.append(job)
        self._pending_texts += len(job.lengths)
        self._pending_tokens += sum(job.lengths)
        self.metrics.queue_size.set(self._pending_texts)
        if not self._running:
            if self.inline and not (self.alone is not None and self.alone()):
                self._kick_soon()  # others were received: let them queue first, then run them all
            else:
                self._kick()  # an idle engine starts on this request now, from this very call
        if deadline is None:
            return await job.future
        expiry = loop.call_at(loop.time() + max(0.0, deadline - job.arrived), self._expire, job)
        try:
            return await job.future
        finally:
            expiry.cancel()

    def _expire(self, job: _Job) -> None:
        """The deadline of a request still queued passed: answer now (the next cycle drops it unrun).

        Rows already taken into a cycle are failed by the engine thread before their run, since
        :meth:`_Job.expired` holds for them too.
        """
        if not job.future.done() and job.taken == 0:
            self.metrics.expired.inc()
            _fail(job.future, _deadline_error(job, time.monotonic()))

    # ------------------------------------------------------------------------------------------ cycles
    def _kick(self) -> None:
        """Start a cycle if the engine is idle and something is queued (after ``max_wait_s``, if set).

        Called when a request arrives at an idle engine, when a cycle ends and when a fixed wait ends:
        no task sits between a request and the engine thread.
        """
        if self._running or self._loop is None:
            return
        self._drop_finished()
        if not self._pending:
            self._drained.set()
            return
        if self.max_wait_s > 0 and not self._closing and self._wait_for_batch_mates(self._loop):
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._waiting = False
        overlapping = self._last_requests > 1
        rows = self._take()
        self.cycles += 1
        self._running = True
        if not overlapping and self._lone(rows):
            self.inline_cycles += 1
            self._cycle_inline(rows, self._loop)
            return
        try:
            self._engine.submit(self._cycle, rows, self._loop)
        except RuntimeError as err:  # the engine pool is shut down: nothing can run these
            self._running = False
            self._settle_cycle(rows, [], err)

    def _runs_now(self, job: _Job) -> bool:
        """Whether ``job`` is a lone cycle that can run at once without queueing: one text of at most
        :data:`INLINE_TOKENS` tokens, inline allowed, the engine idle, nothing queued and nothing else received,
        the last cycle lone too, no fixed wait, its deadline not passed. (What :meth:`_kick` would decide for it,
        without the queue's bookkeeping.)"""
        return (
            not self._running
            and self._last_requests <= 1
            and self.max_wait_s <= 0
            and len(job.lengths) == 1
            and self.alone is not None  # known to be alone, not merely not known otherwise
            and not job.expired(job.arrived)
            and self._lone([(job, 0)])  # inline, nothing queued, few tokens, alone
        )

    def _run_now(self, job: _Job, loop: asyncio.AbstractEventLoop) -> None:
        """Run ``job``'s cycle here, on the event loop thread, as :meth:`_kick` would have after queueing it."""
        job.taken = 1
        self.metrics.batch_requests.observe(1)
        self.cycles += 1
        self.inline_cycles += 1
        self._running = True
        self._cycle_inline([(job, 0)], loop)

    def _lone(self, rows: list[tuple[_Job, int]]) -> bool:
        """Whether this cycle runs on the event loop thread: one small request, nothing else queued nor (if known)
        received. (Nor when the cycle before took several requests: :meth:`_kick` checks that. Overlapping
        traffic is served better on the engine thread, while the loop reads and tokenizes what arrives.)"""
        return (
            self.inline
            and rows[0][0] is rows[-1][0]  # a cycle's rows are its requests' in turn: first and last, one request
            and not self._pending
            and sum(job.lengths[index] for job, index in rows) <= INLINE_TOKENS
            and (self.alone is None or self.alone())
        )

    def _kick_soon(self) -> None:
        """:meth:`_kick` after the handlers already scheduled on the event loop have run (and queued)."""
        if not self._kick_scheduled and self._loop is not None:
            self._kick_scheduled = True
            self._loop.call_soon(self._kick_now)

    def _kick_now(self) -> None:
        self._kick_scheduled = False
        self._kick()

    def _wait_for_batch_mates(self, loop: asyncio.AbstractEventLoop) -> bool:
        """Whether the queue's head should still wait: its wait is not over, no full engine run nor the
        request cap is queued. Arms a timer for the end of the wait; arrivals re-check at once."""
        if self._pending_tokens >= self.max_batch_tokens:
            return False
        if self.max_batch_requests is not None and len(self._pending) >= self.max_batch_requests:
            return False
        remaining = self._pending[0].arrived + self.max_wait_s - time.monotonic()
        if remaining <= 0:
            return False
        if not self._waiting:
            self._waiting = True
            self.waited_cycles += 1
        if self._timer is None:
            self._timer = loop.call_later(remaining, self._wait_over)
        return True

    def _wait_over(self) -> None:
        self._timer = None
        self._kick()

    def _cycle_done(self, rows: list[tuple[_Job, int]], settled: list[_Outcome], error: Exception | None) -> None:
        """Event loop: answer what the cycle's last run finished, then start the next cycle."""
        self._running = False
        try:
            self._settle_cycle(rows, settled, error)
        finally:
            self._kick()

    def _settle_cycle(self, rows: list[tuple[_Job, int]], settled: list[_Outcome], error: Exception | None) -> None:
        _settle(settled)
        if error is not None:  # a bug outside the engine call: fail this cycle, keep serving
            log.error("batching cycle of %d texts failed", len(rows), exc_info=error)
            reason = _backend_error(error)
            for job in {job for job, _ in rows}:
                _fail(job.future, reason)

    def _drop_finished(self) -> None:
        """Forget requests whose client left (their handler was cancelled) and fail those past their deadline."""
        now = time.monotonic()
        if not any(job.future.done() or job.expired(now) for job in self._pending):
            return
        kept: collections.deque[_Job] = collections.deque()
        for job in self._pending:
            if job.expired(now) and not job.future.done():
                self.metrics.expired.inc()
                _fail(job.future, _deadline_error(job, now))
            if job.future.done():
                self._release(job, job.taken)
            else:
                kept.append(job)
        self._pending = kept

    def _release(self, job: _Job, start: int, stop: int | None = None) -> None:
        lengths = job.lengths[start:stop]
        self._pending_texts -= len(lengths)
        self._pending_tokens -= sum(lengths)
        self.metrics.queue_size.set(self._pending_texts)

    def _take(self) -> list[tuple[_Job, int]]:
        """Rows from the front of the queue up to the cycle's token budget (always at least one row)."""
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
                if rows and tokens + length > self.cycle_tokens:
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
        self._last_requests = requests
        return rows

    # ------------------------------------------------------------------------------------------ engine thread
    def _cycle(self, rows: list[tuple[_Job, int]], loop: asyncio.AbstractEventLoop) -> None:
        """Run one cycle, then hand the event loop, in one call, its last answers and the end of the cycle."""
        settled, error, waits, runs = self._outcome(rows, loop)
        loop.call_soon_threadsafe(self._cycle_done, rows, settled, error)
        self._observe(waits, runs)  # metrics after the answers left: off the requests' path

    def _cycle_inline(self, rows: list[tuple[_Job, int]], loop: asyncio.AbstractEventLoop) -> None:
        """Event loop: run one cycle here and answer it; its metrics wait until the response has been written."""
        settled, error, waits, runs = self._outcome(rows, loop)
        self._cycle_done(rows, settled, error)
        loop.call_soon(self._observe, waits, runs)

    def _outcome(
        self, rows: list[tuple[_Job, int]], loop: asyncio.AbstractEventLoop
    ) -> tuple[list[_Outcome], Exception | None, list[float], list[tuple[float, int, int]]]:
        """Run one cycle: its last answers, an error outside the engine call (or None), and what the metrics get."""
        settled: list[_Outcome] = []
        error: Exception | None = None
        waits: list[float] = []
        runs: list[tuple[float, int, int]] = []
        try:
            self._run_cycle(rows, loop, settled, waits, runs)
        except Exception as err:  # noqa: BLE001 - reported on the event loop, which fails the cycle's requests
            error = err
        return settled, error, waits, runs

    def _observe(self, waits: list[float], runs: list[tuple[float, int, int]]) -> None:
        for wait in waits:
            self.metrics.queue_duration.observe(wait)
        for took, size, tokens in runs:
            self.metrics.inference_duration.observe(took)
            self.metrics.batch_size.observe(size)
            self.metrics.batch_tokens.observe(tokens)

    def _run_cycle(
        self,
        rows: list[tuple[_Job, int]],
        loop: asyncio.AbstractEventLoop,
        settled: list[_Outcome],
        waits: list[float],
        runs: list[tuple[float, int, int]],
    ) -> None:
        """Run the taken rows as planned engine runs; each request is answered once its last row is done.

        Answers go to ``settled``; those of earlier runs are sent to the event loop before each next run,
        the last run's by :meth:`_cycle`. ``waits`` gets each request's seconds queued before its first run,
        ``runs`` each run's (engine seconds, rows, padded tokens), for the metrics.
        """
        encodings = [job.encodings[index] for job, index in rows]
        plan = plan_runs(
            [len(encoding.ids) for encoding in encodings],
            self.max_batch_tokens,
            self.encoder.run_cost_tokens,  # a run costs more on a GPU
            buckets=self.encoder.buckets,
        )
        failed: set[_Job] = set()
        for batch in self.encoder.packed(encodings, plan):  # on a GPU: the next run padded while this one runs
            picked = [rows[position] for position in batch.positions]
            now = time.monotonic()
            for job, _ in picked:
                if job not in failed and job.expired(now):  # its deadline passed while earlier runs ran
                    failed.add(job)
                    self.metrics.expired.inc()
                    settled.append((job.future, _deadline_error(job, now)))
            if settled:  # what earlier runs finished is answered before this run starts
                loop.call_soon_threadsafe(_settle, settled[:])
                settled.clear()
            live = [(job, index) for job, index in picked if job not in failed and not job.future.done()]
            if not live:
                continue
            if len(live) < len(picked):  # run only the rows still wanted
                keep = [i for i, pair in enumerate(picked) if pair in live]
                batch = self.encoder.pack([encodings[batch.positions[i]] for i in keep], [np.arange(len(keep))])[0]
                picked = live
            for job, _ in picked:
                if not job.started:
                    job.started = True
                    job.first_run = now
                    waits.append(now - job.arrived)
            try:
                vectors = self.encoder.run_batch(batch, normalize=False)
            except Exception as err:  # fail these requests, keep serving the others
                reason = _backend_error(err)
                log.error("engine failed on a batch of %d texts", len(picked), exc_info=err)
                for job, _ in picked:
                    if job not in failed:
                        failed.add(job)
                        settled.append((job.future, reason))
                continue
            finished = time.monotonic()
            runs.append((finished - now, len(picked), int(batch.inputs["attention_mask"].size)))
            _record(picked, vectors, finished, settled)


def _record(picked: list[tuple[_Job, int]], vectors: np.ndarray, finished: float, settled: list[_Outcome]) -> None:
    """Store a run's vectors in their requests; a request whose last row this was goes to ``settled``."""
    for (job, index), vector in zip(picked, vectors, strict=True):
        job.output[index] = vector
        job.done += 1
        if job.done == len(job.lengths):
            if job.timing is not None:
                job.timing.queue_s += job.first_run - job.arrived
                job.timing.inference_s += finished - job.first_run
            result = l2_normalize(job.output).astype(np.float32, copy=False) if job.normalize else job.output
            settled.append((job.future, result))


def _deadline_error(job: _Job, now: float) -> DeadlineExceeded:
    waited = (now - job.arrived) * 1000
    allowed = ((job.deadline or now) - job.arrived) * 1000
    return DeadlineExceeded(
        f"the request waited {waited:.0f} ms in the queue, past its deadline of {allowed:.0f} ms; none of its "
        "texts ran: retry later, or allow more time (X-Request-Timeout-Ms)"
    )


def _backend_error(err: Exception) -> EmbedrtError:
    """``err`` itself if it is an embedrt error, else a :class:`BackendError` caused by it."""
    if isinstance(err, EmbedrtError):
        return err
    wrapped = BackendError(f"{type(err).__name__}: {err}")
    wrapped.__cause__ = err
    return wrapped


def _settle(outcomes: list[_Outcome]) -> None:
    """Event loop: resolve each future with its vectors, or fail it with its error."""
    for future, outcome in outcomes:
        if isinstance(outcome, BaseException):
            _fail(future, outcome)
        else:
            _resolve(future, outcome)


def _resolve(future: asyncio.Future, result: np.ndarray) -> None:
    if not future.done():
        future.set_result(result)


def _fail(future: asyncio.Future, err: BaseException) -> None:
    if not future.done():
        future.set_exception(err)
