"""``embedrt serve --workers N``: N processes serving one listening socket, the cores split between them.

The parent binds the port once and starts N worker processes (``spawn``: nothing of the parent's
threads or engines is copied), each given the socket, ``--threads`` divided by N (at least one each) and
``--workers 1``. Each worker runs :func:`embedrt.server.serve.serve`: its own engines, batcher and result
cache (a text cached by one worker is a miss in another). The kernel hands each new connection to
one worker that is waiting in ``accept``; a kept-alive connection stays with its worker. A worker
accepts only once warmed up, so ``/health`` is 200 as soon as the first worker is ready and no
connection waits on one that is still loading.

Metrics: the workers write them to files in a directory the parent creates (prometheus_client's
multiprocess mode, ``PROMETHEUS_MULTIPROC_DIR``), so ``/metrics`` on any worker shows the sum over all
of them; the gauges (requests in flight, queued texts, connections) are summed over live workers.

Stopping: SIGTERM or SIGINT to the parent is passed on as one SIGTERM to every worker (each runs in its
own process group, so a terminal's Ctrl-C reaches the parent alone), which drains its in-flight
requests (up to 30 s, as one process does) and exits; the parent exits 0 when all of them did.
A worker that dies on its own stops the others and the parent exits 1, for the supervisor to restart;
a worker whose parent dies (SIGKILL) drains and stops by itself.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from dataclasses import replace
from typing import Any

from embedrt.errors import BackendError, InputError
from embedrt.runtime.threads import default_threads
from embedrt.server.settings import ServerSettings

log = logging.getLogger("embedrt.server")

METRICS_DIR_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
#: Seconds a worker gets to exit beyond its drain before it is killed.
EXIT_GRACE_S = 10.0


def split_threads(settings: ServerSettings) -> int:
    """Engine threads per worker: ``--threads`` (default: the CPU budget) divided by the workers, at least 1."""
    total = settings.threads or default_threads()
    if settings.workers > total:
        log.warning(
            "embedrt: %d workers on %d threads: each gets 1 thread and the cores are oversubscribed",
            settings.workers,
            total,
        )
    return max(1, total // settings.workers)


def _worker(settings: ServerSettings, sock: socket.socket, parent: int) -> None:
    from embedrt.server.serve import serve

    # Its own process group: a terminal's Ctrl-C reaches the parent alone, which passes one SIGTERM on
    # (two signals would make uvicorn skip the drain).
    os.setpgrp()
    # Stopped while still loading or warming up (uvicorn's handlers are not installed yet): nothing to
    # drain, since a worker accepts connections only once warm; exit 0 rather than die by the signal.
    signal.signal(signal.SIGTERM, _exit_cleanly)
    threading.Thread(target=_watch_parent, args=(parent,), name="embedrt-parent-watch", daemon=True).start()
    sys.exit(serve(settings, sock))


def _exit_cleanly(signum: int, frame: object) -> None:
    raise SystemExit(0)


def _watch_parent(parent: int) -> None:
    """Drain and stop this worker if the parent dies without stopping it (SIGKILL, OOM killer)."""
    while os.getppid() == parent:
        time.sleep(1.0)
    log.error("embedrt: the parent process %d is gone; stopping this worker", parent)
    os.kill(os.getpid(), signal.SIGTERM)


def serve_workers(settings: ServerSettings, sock: socket.socket) -> int:
    """Run ``settings.workers`` worker processes on ``sock`` until SIGTERM/SIGINT; 0 when all stopped cleanly."""
    if not hasattr(os, "fork"):
        raise InputError("--workers needs a POSIX system (Linux, macOS); run one process per port instead")
    threads = split_threads(settings)
    metrics_dir = tempfile.mkdtemp(prefix="embedrt-metrics-")
    os.environ[METRICS_DIR_VARIABLE] = metrics_dir  # read by each worker's prometheus_client at import
    child = replace(settings, workers=1, threads=threads)
    context = multiprocessing.get_context("spawn")
    workers = [
        context.Process(target=_worker, args=(child, sock, os.getpid()), name=f"embedrt-worker-{index}")
        for index in range(settings.workers)
    ]
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    failed = False
    try:
        for worker in workers:
            worker.start()
        log.info("embedrt: %d workers of %d engine threads each", len(workers), threads)
        while not stop.wait(0.5):
            gone = [worker for worker in workers if not worker.is_alive()]
            if gone:
                log.error("embedrt: worker %d exited with %s; stopping the others", gone[0].pid, gone[0].exitcode)
                failed = True
                break
    finally:
        _stop(workers, settings.graceful_timeout_s + EXIT_GRACE_S)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        sock.close()
        shutil.rmtree(metrics_dir, ignore_errors=True)
        os.environ.pop(METRICS_DIR_VARIABLE, None)
    codes = [worker.exitcode for worker in workers]
    if failed or any(code != 0 for code in codes):
        raise BackendError(f"the workers exited with {codes}; the log above says why")
    log.info("embedrt: all %d workers stopped", len(workers))
    return 0


def _stop(workers: list[Any], timeout_s: float) -> None:
    """SIGTERM to each live worker, wait for them to drain, kill what is left."""
    for worker in workers:
        if worker.pid is not None and worker.is_alive():
            os.kill(worker.pid, signal.SIGTERM)
    for worker in workers:
        if worker.pid is None:
            continue
        worker.join(timeout_s)
        if worker.is_alive():
            log.error("embedrt: worker %d did not stop in %g s; killing it", worker.pid, timeout_s)
            worker.kill()
            worker.join()
