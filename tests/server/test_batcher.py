"""The dynamic batcher in-process: merging, splitting, per-request normalization, failures, cancellation."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

from embedrt import BackendError
from embedrt.export.sentences import PARITY_SENTENCES
from embedrt.server.batcher import DynamicBatcher

TEXTS = list(PARITY_SENTENCES[:24])


class CountingEncoder:
    """The real encoder, counting engine runs; the runs numbered in ``fail_runs`` raise."""

    def __init__(self, encoder, fail_runs: tuple[int, ...] = ()) -> None:
        self._encoder = encoder
        self.fail_runs = fail_runs
        self.runs = 0

    def __getattr__(self, name):
        return getattr(self._encoder, name)

    def run_batch(self, batch, normalize=None):
        self.runs += 1
        if self.runs in self.fail_runs:
            raise RuntimeError("engine exploded")
        return self._encoder.run_batch(batch, normalize)


def run(coro, timeout: float = 120.0):
    return asyncio.run(asyncio.wait_for(coro, timeout))


async def _embed_all(batcher: DynamicBatcher, requests: list[tuple[list[str], bool]]):
    await batcher.start()
    try:
        encoded = [(await batcher.tokenize(texts), normalize) for texts, normalize in requests]
        return await asyncio.gather(*(batcher.embed(encodings, normalize) for encodings, normalize in encoded))
    finally:
        await batcher.stop()


def test_concurrent_requests_share_batches_and_get_their_own_rows(offline):
    counting = CountingEncoder(offline)
    batcher = DynamicBatcher(counting, max_batch_tokens=4096, max_wait_s=0.2)
    requests = [(TEXTS[i : i + 1 + i % 4], i % 2 == 0) for i in range(12)]
    results = run(_embed_all(batcher, requests))
    for (texts, normalize), got in zip(requests, results, strict=True):
        np.testing.assert_allclose(got, offline.encode(texts, normalize=normalize), atol=1e-5)
    assert batcher.cycles < len(requests)  # all arrived within the 200 ms window


def test_a_request_larger_than_the_budget_spans_cycles(offline):
    batcher = DynamicBatcher(offline, max_batch_tokens=16, max_wait_s=0.0)  # a cycle takes 2 runs: 32 tokens
    results = run(_embed_all(batcher, [(TEXTS, False), (TEXTS[:3], True)]))
    np.testing.assert_allclose(results[0], offline.encode(TEXTS), atol=1e-5)
    np.testing.assert_allclose(results[1], offline.encode(TEXTS[:3], normalize=True), atol=1e-5)
    assert batcher.cycles > 2


def test_max_batch_requests_one_turns_merging_off(offline):
    batcher = DynamicBatcher(offline, max_batch_tokens=4096, max_wait_s=0.0, max_batch_requests=1)
    requests = [([text], False) for text in TEXTS[:6]]
    results = run(_embed_all(batcher, requests))
    assert batcher.cycles == len(requests)
    np.testing.assert_allclose(np.concatenate(results), offline.encode(TEXTS[:6]), atol=1e-5)


def test_engine_failure_fails_that_request_and_the_batcher_keeps_serving(offline):
    counting = CountingEncoder(offline, fail_runs=(1,))
    batcher = DynamicBatcher(counting, max_batch_tokens=4096, max_wait_s=0.0, max_batch_requests=1)

    async def scenario():
        await batcher.start()
        try:
            with pytest.raises(BackendError, match="engine exploded"):
                await batcher.embed(await batcher.tokenize(["第一个"]), False)
            return await batcher.embed(await batcher.tokenize(TEXTS[:2]), False)
        finally:
            await batcher.stop()

    np.testing.assert_allclose(run(scenario()), offline.encode(TEXTS[:2]), atol=1e-5)


def test_a_cancelled_request_is_dropped_before_it_runs(offline):
    counting = CountingEncoder(offline)
    batcher = DynamicBatcher(counting, max_batch_tokens=4096, max_wait_s=0.3)

    async def scenario():
        await batcher.start()
        try:
            gone = asyncio.create_task(batcher.embed(await batcher.tokenize(["走了"]), False))
            await asyncio.sleep(0.05)
            gone.cancel()  # the client disconnected while its request waited for batch-mates
            kept = await batcher.embed(await batcher.tokenize(["留下"]), False)
            return gone, kept
        finally:
            await batcher.stop()

    gone, kept = run(scenario())
    assert gone.cancelled()
    np.testing.assert_allclose(kept, offline.encode(["留下"]), atol=1e-5)
    assert counting.runs == 1  # only the kept request reached the engine


def test_embed_before_start_is_an_error(offline):
    batcher = DynamicBatcher(offline)
    with pytest.raises(BackendError, match="not started"):
        run(batcher.embed(offline.tokenize(["a"]), False))


class SlowEncoder(CountingEncoder):
    """The real encoder, each engine run taking ``delay`` seconds; remembers every text it ran."""

    def __init__(self, encoder, delay: float) -> None:
        super().__init__(encoder)
        self.delay, self.seen = delay, []

    def run_batch(self, batch, normalize=None):
        time.sleep(self.delay)
        mask = batch.inputs["attention_mask"].astype(bool)
        self.seen.extend(tuple(row[keep].tolist()) for row, keep in zip(batch.inputs["input_ids"], mask, strict=True))
        return super().run_batch(batch, normalize)


def test_an_expired_request_never_reaches_the_engine(offline):
    """A request whose deadline passes while it waits behind a slow run fails with 504's error, unrun."""
    from embedrt.server.batcher import DeadlineExceeded

    slow = SlowEncoder(offline, delay=0.5)
    batcher = DynamicBatcher(slow, max_batch_tokens=4096, max_wait_s=0.0, max_batch_requests=1)

    async def scenario():
        await batcher.start()
        try:
            first = asyncio.create_task(batcher.embed(await batcher.tokenize(["the first request"]), False))
            await asyncio.sleep(0.1)  # the first request is in the engine for 0.5 s
            late = await batcher.tokenize(["too late"])
            with pytest.raises(DeadlineExceeded, match="past its deadline of 100 ms; none of its texts ran"):
                await batcher.embed(late, False, deadline=time.monotonic() + 0.1)
            patient = await batcher.embed(await batcher.tokenize(["patient"]), False, deadline=time.monotonic() + 30)
            return await first, late, patient
        finally:
            await batcher.stop()

    first, late, patient = run(scenario())
    assert tuple(late[0].ids) not in slow.seen  # the expired request's text never ran
    assert slow.runs == 2 and len(slow.seen) == 2  # the first and the patient one
    np.testing.assert_allclose(patient, offline.encode(["patient"]), atol=1e-5)
    assert batcher.metrics.expired._value.get() == 1


def test_an_idle_batcher_runs_a_lone_request_without_waiting_for_batch_mates(offline):
    batcher = DynamicBatcher(offline)  # the defaults
    (vector,) = run(_embed_all(batcher, [(["只有一个请求"], False)]))
    assert batcher.max_wait_s == 0
    assert (batcher.cycles, batcher.waited_cycles) == (1, 0)  # its cycle started at once
    np.testing.assert_allclose(vector, offline.encode(["只有一个请求"]), atol=1e-5)


def test_a_fixed_wait_stays_an_option_and_holds_a_lone_request_back(offline):
    batcher = DynamicBatcher(offline, max_wait_s=600.0)  # --max-wait-ms 600000

    async def scenario():
        await batcher.start()
        try:
            task = asyncio.create_task(batcher.embed(await batcher.tokenize(["只有一个请求"]), False))
            for _ in range(20):  # the loop goes round: the collector takes the request and starts waiting
                await asyncio.sleep(0)
            seen = (task.done(), batcher.cycles, batcher.waited_cycles, len(batcher._pending))
        finally:
            await batcher.stop()  # ends the wait and runs what is queued
        return seen, await task

    seen, vector = run(scenario())
    assert seen == (False, 0, 1, 1)  # still queued, its cycle waiting for batch-mates
    assert batcher.cycles == 1
    np.testing.assert_allclose(vector, offline.encode(["只有一个请求"]), atol=1e-5)


class GatedEncoder(CountingEncoder):
    """The real encoder; its first engine run (on the engine thread) waits until the test opens the gate."""

    def __init__(self, encoder) -> None:
        super().__init__(encoder)
        self.entered, self.gate = threading.Event(), threading.Event()
        self.rows: list[int] = []

    def run_batch(self, batch, normalize=None):
        self.rows.append(len(batch.positions))
        if len(self.rows) == 1:
            self.entered.set()
            self.gate.wait(60)
        return super().run_batch(batch, normalize)


def test_requests_that_arrive_while_the_engine_is_busy_share_the_next_run(offline):
    gated = GatedEncoder(offline)
    batcher = DynamicBatcher(gated, max_batch_tokens=4096)  # no wait
    small = [[text] for text in TEXTS[:5]]

    async def scenario():
        await batcher.start()
        try:
            first = asyncio.create_task(batcher.embed(await batcher.tokenize(TEXTS), False))
            for _ in range(600):  # bounded: until the engine thread is inside the first run
                if gated.entered.is_set():
                    break
                await asyncio.sleep(0.05)
            later = [asyncio.create_task(batcher.embed(await batcher.tokenize(texts), False)) for texts in small]
            await asyncio.sleep(0)
            queued = len(batcher._pending)
            gated.gate.set()
            return queued, await first, await asyncio.gather(*later)
        finally:
            await batcher.stop()

    queued, first, later = run(scenario())
    assert queued == len(small)  # all waited while the engine was busy
    assert batcher.cycles == 2  # then ran together, in the next cycle
    np.testing.assert_allclose(first, offline.encode(TEXTS), atol=1e-5)
    for texts, got in zip(small, later, strict=True):
        np.testing.assert_allclose(got, offline.encode(texts), atol=1e-5)


@pytest.mark.parametrize(
    ("alone", "inline_cycles", "cycles"),
    [
        (None, 0, 1),  # unknown: the first request waits one loop step, the second joins it on the engine thread
        (lambda: False, 0, 1),  # others received: the same
        (lambda: True, 2, 2),  # told each is alone: each runs at once, on the event loop thread
    ],
)
def test_inline_runs_a_lone_request_on_the_loop_and_never_splits_what_was_received_together(
    offline, alone, inline_cycles, cycles
):
    counting = CountingEncoder(offline)
    batcher = DynamicBatcher(counting, max_batch_tokens=4096, inline=True)
    batcher.alone = alone
    requests = [([TEXTS[0]], True), ([TEXTS[1]], True)]
    results = run(_embed_all(batcher, requests))
    assert (batcher.inline_cycles, batcher.cycles) == (inline_cycles, cycles)
    for (texts, _), got in zip(requests, results, strict=True):
        np.testing.assert_array_equal(got, offline.encode(texts, normalize=True))


def test_a_shared_engine_pool_turns_inline_off(offline):
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=1) as pool:
        batcher = DynamicBatcher(offline, inline=True, engine=pool)
        batcher.alone = lambda: True
        run(_embed_all(batcher, [([TEXTS[0]], True)]))
    assert batcher.inline is False and batcher.inline_cycles == 0 and batcher.cycles == 1


def test_after_a_cycle_of_several_requests_the_next_lone_one_still_uses_the_engine_thread(offline):
    batcher = DynamicBatcher(offline, max_batch_tokens=4096, inline=True)

    async def scenario():
        await batcher.start()
        try:
            one, two = await batcher.tokenize([TEXTS[0]]), await batcher.tokenize([TEXTS[1]])
            batcher.alone = lambda: False
            await asyncio.gather(batcher.embed(one, True), batcher.embed(two, True))  # one cycle, both
            seen = [(batcher.cycles, batcher.inline_cycles)]
            batcher.alone = lambda: True
            for _ in range(2):
                got = await batcher.embed(one, True)
                seen.append((batcher.cycles, batcher.inline_cycles))
            return seen, got
        finally:
            await batcher.stop()

    seen, got = run(scenario())
    start = seen[0][0]
    # overlapping traffic just now: the engine thread; then, lone after lone: the event loop thread
    assert seen == [(start, 0), (start + 1, 0), (start + 2, 1)]
    np.testing.assert_array_equal(got[0], offline.encode(TEXTS[0], normalize=True))
