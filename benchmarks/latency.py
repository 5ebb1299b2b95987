"""What a user waits for one text: the engine alone, then `embedrt serve`, one client and a few.

    python benchmarks/latency.py                      # ~3-5 minutes on 2 cores (first run: + ~4 to export)
    python benchmarks/latency.py --before main        # also the server as of REF, interleaved with this one
    python benchmarks/latency.py --quick              # smoke run: 40 texts a route, 4 clients only

Model: the full-size DMetaSoul stand-in bundle that ``compare_cpu.py`` builds (cached in ``--work``), its
default variant (``Encoder.load(bundle)``: OpenVINO int8 where OpenVINO is installed). Texts: short
Chinese sentences, both columns of ``../shared/data/sts_zh_dev.tsv``, else embedrt's built-in workload;
no text is sent twice to one server, so the result cache (on by default) never answers (checked: the
servers' cache hits are in the results).

1. One client, one text per request, one request at a time, interleaved text by text: the engine alone
   (``Encoder.encode([text])`` in its own process, timed inside it, driven over a pipe), then each server
   (default settings) on the same text, so that every variant sees the same moment of a shared machine.
   Routes: TEI ``/embed``, OpenAI ``/v1/embeddings`` as float and as base64. The client is a raw
   keep-alive socket: request bytes built before the clock starts, the response read by Content-Length.
   In the same interleaving, the floor: ``harness/echo.py`` answering as many bytes at once, with no
   HTTP framework and no application (the loopback's and the client's share, which no server removes).
2. 4 and 16 concurrent keep-alive clients (threads) on ``/embed`` and ``/v1/embeddings`` base64, one
   server at a time, the servers taking turns in four parts: p50, p99, requests/s and the server's CPU
   per request (``/proc/PID/stat`` utime + stime).

``--rounds`` repeats both with fresh processes; each cell keeps its best round by p50. Writes
``results/latency.json`` (every round, the git commit, CPU model and flags, library versions, load
averages) and ``results/latency.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from harness import artifacts, offline, report, workload
from harness.load import drive_threads
from harness.server import Connection, Floor, Server, cpu_seconds, post_bytes, source_of
from harness.timing import percentile, rotate
from harness.workload import REPO, say

#: One-client requests per route, and requests per concurrent level.
SINGLE_REQUESTS = 400
CONCURRENT_REQUESTS = 400
WARMUP_REQUESTS = 30
#: Parts a concurrent level is cut into; the servers take turns part by part.
CHUNKS = 4
ENGINE_LABEL = "engine alone"
FLOOR_LABEL = "floor (echo)"
#: label -> (path, JSON body of one text, measured at 4 and 16 clients too)
ROUTES: dict[str, tuple[str, Callable[[str], dict], bool]] = {
    "/embed": ("/embed", lambda text: {"inputs": text}, True),
    "/v1/embeddings float": ("/v1/embeddings", lambda text: {"input": text, "encoding_format": "float"}, False),
    "/v1/embeddings base64": ("/v1/embeddings", lambda text: {"input": text, "encoding_format": "base64"}, True),
}


class Texts:
    """Hands out texts not handed out before (numbered once the pool is used up)."""

    def __init__(self, pool: list[str]) -> None:
        self.pool, self.used = pool, 0

    def take(self, count: int) -> list[str]:
        start, self.used = self.used, self.used + count
        size = len(self.pool)
        return [self.pool[i % size] + (f" {i // size}" if i >= size else "") for i in range(start, self.used)]


def summary(latencies: list[float]) -> dict:
    ordered = sorted(latencies)
    return {
        "requests": len(ordered),
        "p50_ms": round(percentile(ordered, 50), 3),
        "p99_ms": round(percentile(ordered, 99), 3),
        "mean_ms": round(sum(ordered) / len(ordered), 3),
    }


class Engine:
    """``Encoder.encode([text])`` in its own process; :meth:`time` returns the ms it took, timed inside."""

    def __init__(self, src: Path, bundle: Path) -> None:
        env = {**os.environ, "PYTHONPATH": str(src)}
        pipes = {"stdin": subprocess.PIPE, "stdout": subprocess.PIPE, "text": True, "encoding": "utf-8"}
        self.proc = subprocess.Popen(offline.command("pipe", bundle), env=env, **pipes)
        self.variant = json.loads(self._line())["variant"]

    def _line(self) -> str:
        line = self.proc.stdout.readline() if self.proc.stdout else ""
        if not line:
            raise SystemExit(f"the engine process exited with {self.proc.wait()}")
        return line

    def time(self, text: str) -> float:
        if self.proc.stdin is None:
            raise SystemExit("the engine process has no stdin")
        self.proc.stdin.write(json.dumps(text, ensure_ascii=False) + "\n")
        self.proc.stdin.flush()
        return float(self._line())

    def stop(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc.wait(60)


def request_bytes(label: str, text: str) -> bytes:
    path, body, _ = ROUTES[label]
    return post_bytes(path, json.dumps(body(text), ensure_ascii=False).encode())


def one_route(engine: Engine, servers: dict[str, Connection], label: str, texts: list[str]) -> list[dict]:
    """One route, text by text: the engine, then each server, in an order that rotates each text."""
    names = [ENGINE_LABEL, *servers]
    latencies: dict[str, list[float]] = {name: [] for name in names}
    errors = dict.fromkeys(names, 0)
    for index, text in enumerate(texts):
        for name in rotate(names, index):
            if name == ENGINE_LABEL:
                latencies[name].append(engine.time(text))
                continue
            took, ok = servers[name].timed(request_bytes(label, text))
            latencies[name].append(took)
            errors[name] += not ok
    return [
        {"server": name, "route": label, "clients": 1, **summary(latencies[name]), "errors": errors[name]}
        for name in names
    ]


def one_client(engine: Engine, servers: dict[str, Connection], texts: Texts, args: argparse.Namespace) -> list[dict]:
    """Every route over one keep-alive connection a server: warm-up texts (first shapes, lazily built
    paths), then the timed ones, interleaved with the floor: an echo answering as many bytes at once."""
    rows = []
    for label in ROUTES:
        size = 0
        for text in texts.take(args.warmup):
            engine.time(text)
            for connection in servers.values():
                size = len(connection.exchange(request_bytes(label, text))[1])
        floor = Floor(size)
        try:
            echo = floor.open()
            for text in texts.take(args.warmup):
                echo.timed(request_bytes(label, text))
            rows += one_route(engine, {**servers, FLOOR_LABEL: echo}, label, texts.take(args.requests))
            echo.close()
        finally:
            floor.stop()
    return rows


def one_level(servers: dict[str, Server], label: str, requests: list[bytes], clients: int) -> list[dict]:
    """One level and route in :data:`CHUNKS` parts, the servers taking turns part by part (same texts)."""
    totals = {name: {"latencies": [], "errors": 0, "wall": 0.0, "cpu": 0.0} for name in servers}
    for part in range(CHUNKS):
        for name in rotate(list(servers), part):
            server, total = servers[name], totals[name]
            before = cpu_seconds(server.pid)
            latencies, errors, wall = drive_threads(server.port, requests[part::CHUNKS], clients)
            total["cpu"] += cpu_seconds(server.pid) - before
            total["latencies"] += latencies
            total["errors"] += errors
            total["wall"] += wall
    rows = []
    for name, total in totals.items():
        row = {"server": name, "route": label, "clients": clients}
        row.update(summary(total["latencies"]), errors=total["errors"])
        row["requests_per_s"] = round(len(requests) / total["wall"], 1)
        row["server_cpu_ms_per_request"] = round(total["cpu"] * 1000 / len(requests), 3)
        rows.append(row)
    return rows


def concurrent(servers: dict[str, Server], texts: Texts, levels: list[int], count: int) -> list[dict]:
    rows = []
    for clients in levels:
        for label, (_, _, busy) in ROUTES.items():
            if busy:
                rows += one_level(servers, label, [request_bytes(label, t) for t in texts.take(count)], clients)
    return rows


def one_round(sources: dict[str, Path], bundle: Path, pool: list[str], args: argparse.Namespace) -> dict:
    log = args.work / "latency_server.log"
    engine = Engine(REPO / "src", bundle)
    servers = {name: Server(bundle, args.flags.split(), log, src=src) for name, src in sources.items()}
    connections = {name: server.open() for name, server in servers.items()}
    texts = Texts(pool)  # one sequence: no server (nor the engine) sees a text twice
    try:
        rows = one_client(engine, connections, texts, args)
        engine.stop()
        levels = [int(level) for level in args.levels.split(",") if level]
        rows += concurrent(servers, texts, levels, args.concurrent)
        hits = {name: server.cache_hits() for name, server in servers.items()}
    finally:
        for name, server in servers.items():
            connections[name].close()
            server.stop()
    return {"variant": engine.variant, "rows": rows, "cache_hits": hits}


def best_rows(rounds: list[dict]) -> list[dict]:
    """Each (server, route, clients) cell's best round by p50."""
    cells: dict[tuple, list[dict]] = {}
    for round_ in rounds:
        for row in round_["rows"]:
            cells.setdefault((row["server"], row["route"], row["clients"]), []).append(row)
    return [min(rows, key=lambda row: row["p50_ms"]) for rows in cells.values()]


def table_row(row: dict, engine: dict[str, dict]) -> str:
    base = engine.get(row["route"]) if row["clients"] == 1 and row["server"] != ENGINE_LABEL else None
    gap = f"{row['p50_ms'] - base['p50_ms']:+.2f}" if base else ""
    ratio = f"{row['p99_ms'] / base['p99_ms']:.2f}" if base else ""
    route = "`Encoder.encode([text])`" if row["server"] == ENGINE_LABEL else f"`{row['route']}`"
    return (
        f"| {row['server']} | {route} | {row['clients']} | {row['p50_ms']} | {row['p99_ms']} | {gap} | {ratio} | "
        f"{row.get('requests_per_s', '')} | {row.get('server_cpu_ms_per_request', '')} | {row['errors']} |"
    )


def markdown(result: dict) -> str:
    started = result["started"]
    engine = {row["route"]: row for row in result["best"] if row["server"] == ENGINE_LABEL}
    lines = [
        f"# Latency of one text ({result['model']}, {result['variant']})",
        "",
        f"Commit {started['commit']}; {started['cpu']} ({started['cpu_flags']}), {started['usable_cores']} "
        f"cores, shared with other work (load average {started['load_average']} at start, "
        f"{result['load_average_at_end']} at end). Texts: {result['texts']}. Server cache hits: "
        f"{result['cache_hits']}. Best of {result['rounds']} round(s) by p50. Command: `{result['command']}`.",
        "",
        'One client: the engine and the servers interleaved text by text; "engine" columns compare with the '
        f"engine's figures from the same interleaving. {FLOOR_LABEL}: `harness/echo.py`, a bare uvloop protocol "
        "answering as many bytes at once (no HTTP framework, no application), in the same interleaving: the part "
        "of a server's figures that the loopback and the client take, which no server removes.",
        "",
        "| server | route | clients | p50 ms | p99 ms | p50 - engine p50 | p99 / engine p99 | requests/s | "
        "server CPU ms / request | errors |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    lines += [table_row(row, engine) for row in result["best"]]
    return "\n".join(lines) + "\n"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=None, help="artefact cache (shared with compare_cpu.py)")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--requests", type=int, default=SINGLE_REQUESTS, help="one-client requests per route")
    parser.add_argument("--concurrent", type=int, default=CONCURRENT_REQUESTS, help="requests per concurrent level")
    parser.add_argument("--levels", default="4,16", help="concurrent clients, comma-separated")
    parser.add_argument("--before", default=None, help="git ref of a server to interleave with this checkout's")
    parser.add_argument("--bundle", type=Path, default=None, help="this bundle instead of the stand-in")
    parser.add_argument("--flags", default="", help="extra `embedrt serve` flags (default: none, the defaults)")
    parser.add_argument("--out", type=Path, default=report.RESULTS)
    report.add_quick(parser)
    args = parser.parse_args()
    args.warmup = WARMUP_REQUESTS
    report.quick(args, requests=40, concurrent=40, levels="4", warmup=5)
    args.work = artifacts.work_dir("dmetasoul", args.work)
    return args


def log_rows(rows: list[dict]) -> None:
    for row in rows:
        say(
            f"  {row['server']:18s} {row['route']:22s} c={row['clients']:<3d} p50 {row['p50_ms']:7.3f} "
            f"p99 {row['p99_ms']:7.3f} ms  {row.get('requests_per_s', '')} req/s  errors {row['errors']}"
        )


def main() -> int:
    args = parse_args()
    bundle = args.bundle or artifacts.Standin(args.work).ensure_bundle()
    found = workload.sentences(distinct=True)
    sources = {"this checkout": REPO / "src"}
    if args.before:
        before_src, commit = source_of(args.before, args.work)
        sources[f"before ({commit})"] = before_src
    result: dict = {"started": report.stamp(), "command": " ".join(["python benchmarks/latency.py", *sys.argv[1:]])}
    rounds = []
    for turn in range(args.rounds):
        say(f"round {turn + 1} of {args.rounds}")
        rounds.append(one_round(sources, bundle, found.texts, args))
        log_rows(rounds[-1]["rows"])
    result.update(
        model=str(args.bundle) if args.bundle else "DMetaSoul stand-in (4 x 768), default variant",
        variant=rounds[0]["variant"],
        texts=f"{found.source}, one text per request, none sent twice to one server",
        rounds=args.rounds,
        load_average_at_end=[round(x, 2) for x in os.getloadavg()],
        cache_hits=[round_["cache_hits"] for round_ in rounds],
        best=best_rows(rounds),
        every_round=rounds,
    )
    text = markdown(result)
    report.write(args.out, "latency", result, text)
    print(text)
    return 1 if any(row["errors"] for round_ in rounds for row in round_["rows"]) else 0


if __name__ == "__main__":
    sys.exit(main())
