"""``embedrt serve``: load the bundles, bind the socket, run uvicorn, drain on SIGTERM and exit 0.

With ``--workers N`` the process binds the socket and starts N worker processes
(:mod:`embedrt.server.workers`) that serve it, each running :func:`serve` with its share of the threads.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import signal
import socket
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import uvicorn

from embedrt.errors import BackendError, InputError
from embedrt.runtime.encoder import Encoder
from embedrt.runtime.threads import cpu_budget, default_threads
from embedrt.server.app import EmbeddingServer, Served
from embedrt.server.http import guarded_protocol
from embedrt.server.metrics import Metrics
from embedrt.server.settings import ServerSettings

#: File descriptors kept free of connections (the model's files, logs, the engine's own).
RESERVED_DESCRIPTORS = 64

log = logging.getLogger("embedrt.server")


class _GracefulServer(uvicorn.Server):
    """uvicorn, except that a SIGTERM/SIGINT after a graceful drain ends the process with exit 0.

    Stock uvicorn re-raises the signal once it has drained, so the process dies by SIGTERM (exit 143),
    which orchestrators report as a crash of a server that shut down cleanly.
    """

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket, so a busy port is one clear error before anything else starts."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.socket(family, kind, proto)
    except (OSError, UnicodeError) as err:
        raise InputError(f"cannot listen on {host}:{port}: {err}; check --host") from err
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError as err:
        sock.close()
        raise InputError(
            f"cannot listen on {host}:{port}: {err.strerror}; choose another --port or stop what is using it"
        ) from err
    sock.set_inheritable(True)
    return sock


def _configure_logging() -> None:
    logger = logging.getLogger("embedrt")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(levelname)s:     %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False


def connection_cap(asked: int | None) -> int:
    """``--max-connections``, or what the process's file-descriptor limit leaves room for."""
    try:
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (ImportError, OSError, ValueError):  # Windows: no such limit to respect
        soft = -1
    room = soft - RESERVED_DESCRIPTORS if soft > RESERVED_DESCRIPTORS else None
    if asked is None:
        return room if room is not None else 10_000
    if room is not None and asked > room:
        log.warning("embedrt: --max-connections %d is above what the descriptor limit allows (%d)", asked, room)
    return asked


def bundle_spec(spec: str) -> tuple[str | None, str]:
    """``NAME=DIRECTORY`` -> ``(NAME, DIRECTORY)``; a directory (even one with ``=`` in its name) -> ``(None, it)``."""
    name, sep, path = spec.partition("=")
    if not sep or not name or not path or "/" in name or Path(spec).exists():
        return None, spec
    return name, path


def plan_threads(total: int, models: int) -> tuple[int, int]:
    """(engine threads shared by the models, threads each model's engine uses): their product is at most ``total``.

    Two models on 2 cores: 2 engine threads, 1 thread each, so both can run a batch at once and the
    cores are never oversubscribed; 3 models on 2 cores: they take turns on 2 engine threads.
    """
    lanes = max(1, min(models, total))
    return lanes, max(1, total // lanes)


def load_models(settings: ServerSettings) -> tuple[list[Served], int]:
    """Each bundle loaded once, and how many engine threads the server's models share."""
    specs = [bundle_spec(spec) for spec in settings.bundles]
    if len(specs) > 1 and settings.served_model_name:
        raise InputError("--served-model-name names one bundle; with several, name each as NAME=DIRECTORY")
    lanes, threads = 1, settings.threads
    if len(specs) > 1:
        lanes, threads = plan_threads(settings.threads or default_threads(), len(specs))
    served = []
    for name, path in specs:
        encoder = Encoder.load(
            path,
            precision=settings.precision,
            engine=settings.engine,
            device=settings.device,
            threads=threads,
            cache_size=settings.cache_size,
            spin=False,  # idle between requests: spinning threads would burn the CPU the batches need
            batch_invariant=settings.batch_invariant,
            buckets=settings.length_buckets,
            cuda_graphs=settings.cuda_graphs,
            streams=1,  # the batcher runs each engine run on its engine thread; --workers adds processes
        )
        served.append(Served(encoder, name or (settings.served_model_name if len(specs) == 1 else None)))
        described = f"{threads} threads" if threads else cpu_budget().describe()
        padding = "length buckets" if encoder.buckets is not None else "padded to each batch"
        log.info("embedrt: %s: engine %s %s on %s, %s", path, encoder.engine, encoder.precision, described, padding)
    if len(specs) > 1:
        log.info("embedrt: %d models share %d engine threads of %d threads each", len(specs), lanes, threads)
    return served, lanes


def serve(settings: ServerSettings, sock: socket.socket | None = None) -> int:
    """Serve until SIGTERM or SIGINT; return 0 after a graceful drain. ``sock``: a listening socket to serve."""
    _configure_logging()
    # A request's few texts are tokenized faster on the calling thread than by the tokenizers thread pool,
    # which competes with the engine for the cores (measured: -30% tokenizer CPU). The caller's value wins.
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if settings.workers > 1 and sock is None:
        from embedrt.server.workers import serve_workers

        return serve_workers(settings, bind(settings.host, settings.port))
    served, lanes = load_models(settings)
    # What is loaded now lives as long as the process: out of the garbage collector's sight, a full collection
    # no longer walks it (measured: 8.9 ms with the stand-in bundle loaded, ~0 after; such a pause lands on
    # whichever request is being served when it comes).
    gc.freeze()
    sock = sock or bind(settings.host, settings.port)
    host, port = sock.getsockname()[:2]
    metrics = Metrics()
    app = EmbeddingServer(served, settings, metrics, engine_threads=lanes)
    cap = connection_cap(settings.max_connections)
    protocol = guarded_protocol(
        settings.read_timeout_s, cap, metrics.connections_refused.inc, metrics.read_timeouts.inc
    )
    config = uvicorn.Config(
        app,
        http=protocol,
        loop="auto",  # uvloop where it is installed
        ws="none",
        lifespan="on",
        access_log=settings.access_log,
        log_level="info",
        timeout_graceful_shutdown=round(settings.graceful_timeout_s),
        server_header=False,
        backlog=2048,
    )
    server = _GracefulServer(config)
    app.received_requests(lambda: len(server.server_state.tasks))  # uvicorn's task per request being answered
    log.info(
        "embedrt: listening on http://%s:%d (warming up); at most %d connections, %g s to send a request",
        host,
        port,
        cap,
        settings.read_timeout_s,
    )
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
    if not server.started:
        raise BackendError("the server did not start (warm-up failed); the log above says why")
    log.info("embedrt: stopped after finishing in-flight requests")
    return 0
