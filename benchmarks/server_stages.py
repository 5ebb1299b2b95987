"""Where a lone request's time goes inside `embedrt serve`: stage by stage, against the engine alone.

    python benchmarks/server_stages.py [--requests 400]   # ~1 minute; results/server_stages.{md,json}
    python benchmarks/server_stages.py --quick            # smoke run: 20 requests a route

The server is this checkout's `embedrt serve` with its defaults (result cache off) on the DMetaSoul stand-in,
started through this script (``python benchmarks/server_stages.py serve BUNDLE ...``, readings to the file
``$STAGES_OUT`` names), which wraps seven
functions with clock readings before handing over to the CLI: uvicorn's ``data_received`` (the request
arrives), the application's ``_http`` (it starts), the tokenizer, the engine's ``run``, pooling, the response
body's rendering, and the gathered send (the response leaves in one ``send``). One client sends one text per
request, back to back on one keep-alive connection, route after route; the server writes each request's
readings when it stops, and the medians of the gaps between them are the stages. The engine alone is
``Encoder.encode([text])`` in its own process on the same texts, as in ``latency.py``; it includes the
tokenizer, padding, the engine run and pooling, so the stages outside those are what serving adds. The
wrappers cost a few microseconds each: this says where the time goes, ``latency.py`` how much there is.
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness import artifacts, report, workload
from harness.server import Server
from harness.workload import say
from latency import ROUTES, WARMUP_REQUESTS, Engine, Texts, request_bytes

#: (from, to, what happens between): the gaps reported, in the order a request meets them.
STAGES = (
    ("received", "app", "HTTP parsing, the request's ASGI task"),
    ("app", "tokenize", "routing, the body, JSON, validation"),
    ("tokenize", "tokenized", "tokenizer"),
    ("tokenized", "engine", "batcher, padding, the engine's inputs"),
    ("engine", "engined", "engine run"),
    ("engined", "pooled", "pooling"),
    ("pooled", "render", "normalizing, the answer back to the route, counting"),
    ("render", "rendered", "the response body (JSON or base64)"),
    ("rendered", "send", "headers, the ASGI sends"),
    ("send", "sent", "the send system call"),
)
REPO_SRC = workload.REPO / "src"
#: Where the instrumented server writes its readings (set by the parent for the child).
OUT_VARIABLE = "STAGES_OUT"
#: Stages ``Encoder.encode([text])`` has too (the engine alone).
ENGINE_STAGES = {"tokenizer", "engine run", "pooling"}


def instrument(out: Path) -> None:
    """Wrap the functions the stages are read at; each request's readings go to ``out`` at exit."""
    from uvicorn.protocols.http import httptools_impl

    from embedrt.runtime import encoder, tokenizer
    from embedrt.runtime.backends import openvino, ort
    from embedrt.server import app, http

    requests: list[dict[str, float]] = []
    now: dict[str, float] = {}

    def mark(name: str) -> None:
        now.setdefault(name, time.perf_counter())

    def around(owner: Any, attribute: str, before: str, after: str | None = None) -> None:
        original = getattr(owner, attribute)

        def wrapped(*args: Any, **kwargs: Any) -> Any:
            mark(before)
            result = original(*args, **kwargs)
            if after:
                now[after] = time.perf_counter()
            return result

        setattr(owner, attribute, wrapped)

    around(httptools_impl.HttpToolsProtocol, "data_received", "received")
    around(tokenizer.TextTokenizer, "encode", "tokenize", "tokenized")
    around(openvino.OpenVinoBackend, "run", "engine", "engined")
    around(ort.OrtBackend, "run", "engine", "engined")
    around(encoder, "pool", "engined", "pooled")
    around(app, "openai_body", "render", "rendered")
    around(app, "tei_body", "render", "rendered")
    handle = app.EmbeddingServer._http

    async def started(self: Any, scope: dict, receive: Callable, send: Callable) -> None:
        if "received" in now:
            mark("app")
        await handle(self, scope, receive, send)

    app.EmbeddingServer._http = started  # type: ignore[method-assign]
    flush = http._LingeringTransport.flush

    def sent(self: Any) -> None:
        if not (self._pending and "engined" in now):
            return flush(self)
        now["send"] = time.perf_counter()
        flush(self)
        now["sent"] = time.perf_counter()
        requests.append(dict(now))
        now.clear()
        return None

    http._LingeringTransport.flush = sent  # type: ignore[method-assign]
    atexit.register(lambda: out.write_text(json.dumps(requests)))


def serve_instrumented(argv: list[str]) -> int:
    """The CLI's ``serve`` with :func:`instrument`'s wrappers, the readings written to ``$STAGES_OUT`` at exit."""
    instrument(Path(os.environ[OUT_VARIABLE]))
    from embedrt.cli import main

    return main(argv)


def medians(requests: list[dict[str, float]]) -> list[dict]:
    """Each stage's median in microseconds over the requests that have both of its readings."""
    rows = []
    for start, end, what in STAGES:
        gaps = [(r[end] - r[start]) * 1e6 for r in requests if start in r and end in r]
        rows.append({"stage": what, "median_us": round(statistics.median(gaps), 1) if gaps else None})
    return rows


def measure(bundle: Path, args: argparse.Namespace, log: Path) -> dict:
    """The engine alone on each route's texts, then the instrumented server on the same texts, back to back."""
    texts = Texts(workload.sentences(distinct=True).texts)
    per_route = {label: texts.take(WARMUP_REQUESTS + args.requests) for label in ROUTES}
    engine = Engine(REPO_SRC, bundle)
    alone = {label: [engine.time(text) for text in chosen][WARMUP_REQUESTS:] for label, chosen in per_route.items()}
    engine.stop()
    readings = log.with_suffix(".json")
    entry = [sys.executable, str(Path(__file__).resolve())]
    served: dict[str, list[float]] = {}
    with Server(bundle, ["--cache-size", "0"], log, env={OUT_VARIABLE: str(readings)}, entry=entry) as server:
        connection = server.open()
        for label, chosen in per_route.items():
            took = [connection.timed(request_bytes(label, text)) for text in chosen]
            if not all(ok for _, ok in took):
                raise SystemExit(f"{label}: a request failed; see {log}")
            served[label] = [ms for ms, _ in took][WARMUP_REQUESTS:]
        connection.close()
    every = json.loads(readings.read_text())
    result: dict[str, Any] = {"routes": {}}
    for index, label in enumerate(ROUTES):
        start = index * (WARMUP_REQUESTS + args.requests) + WARMUP_REQUESTS
        result["routes"][label] = {
            "engine_alone_p50_ms": round(statistics.median(alone[label]), 3),
            "served_p50_ms": round(statistics.median(served[label]), 3),
            "stages": medians(every[start : start + args.requests]),
        }
    return result


def markdown(result: dict) -> str:
    routes = list(result["routes"])
    lines = [
        "# Where a lone request's time goes inside `embedrt serve` (medians, back to back, one client)",
        "",
        f"Model: {result['model']}. {result['texts']}. {args_line(result)}",
        "",
        "| stage | " + " | ".join(f"{label} us" for label in routes) + " | in the engine alone too |",
        "|---|" + "---|" * len(routes) + "---|",
    ]
    for index, (_, _, what) in enumerate(STAGES):
        cells = [str(result["routes"][label]["stages"][index]["median_us"]) for label in routes]
        lines.append(f"| {what} | " + " | ".join(cells) + f" | {'yes' if what in ENGINE_STAGES else 'no'} |")
    for key, name in (("served_p50_ms", "served p50 ms (client)"), ("engine_alone_p50_ms", "engine alone p50 ms")):
        lines.append(f"| {name} | " + " | ".join(str(result["routes"][label][key]) for label in routes) + " | |")
    lines += ["", report.stamp_line(result)]
    return "\n".join(lines) + "\n"


def args_line(result: dict) -> str:
    start, end = result["load_average_start_end"]
    return (
        f"{result['requests']} requests a route after {WARMUP_REQUESTS} not counted; load average {start:.1f} at the "
        f"start, {end:.1f} at the end (other work may share the cores). The stage gaps come from clock readings in "
        "the server process (a few us each); the p50 rows from the client and from `Encoder.encode([text])` in its "
        "own process."
    )


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "serve":
        return serve_instrumented(sys.argv[1:])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=None, help="artefact cache (shared with compare_cpu.py)")
    parser.add_argument("--requests", type=int, default=400, help="counted requests a route")
    parser.add_argument("--out", type=Path, default=report.RESULTS)
    report.add_quick(parser)
    args = parser.parse_args()
    report.quick(args, requests=20)
    bundle = artifacts.Standin(artifacts.work_dir("dmetasoul", args.work)).ensure_bundle()
    load_at_start = os.getloadavg()[0]
    say("engine alone, then the instrumented server, route by route")
    with tempfile.TemporaryDirectory() as scratch:
        result = measure(bundle, args, Path(scratch) / "server.log")
    result.update(
        report.stamp(),
        model="DMetaSoul stand-in (4 x 768), default variant",
        texts="Texts: Chinese STS sentences, one per request, none sent twice",
        requests=args.requests,
        load_average_start_end=[load_at_start, os.getloadavg()[0]],
    )
    text = markdown(result)
    report.write(args.out, "server_stages", result, text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
