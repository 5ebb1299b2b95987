"""What a user waits for one text: the engine alone, then `embedrt serve`, one client and a few.

    python benchmarks/latency.py                      # ~3-5 minutes on 2 cores (first run: + ~4 to export)
    python benchmarks/latency.py --before main        # also the server as of REF, interleaved with this one
    python benchmarks/latency.py --quick              # smoke run: 40 texts a route, 4 clients only
    python benchmarks/latency.py --modes back-to-back --block 40 --levels ""   # one client, back to back only

Model: the full-size DMetaSoul stand-in bundle that ``compare_cpu.py`` builds (cached in ``--work``), its
default variant (``Encoder.load(bundle)``: OpenVINO int8 where OpenVINO is installed). Texts: short
Chinese sentences, both columns of ``../shared/data/sts_zh_dev.tsv``, else embedrt's built-in workload;
no text is sent twice to one server, so the result cache (on by default) never answers (checked: the
servers' cache hits are in the results).

1. One client, one text per request, one request at a time, in two modes (``--modes``), the engine alone
   (``Encoder.encode([text])`` in its own process, timed inside it, driven over a pipe) and each server
   (default settings) on the same texts. ``interleaved``: text by text, each text through every participant
   in turn, so that every variant sees the same moment of a shared machine (and each runs right after
   another process ran, caches cold). ``back-to-back``: each participant sends a block of ``--block``
   texts (40) in a row, as one latency-critical client does, the order rotating block by block so that
   drift cancels; the first text of a block, right after another participant ran, is not counted.
   Routes: TEI ``/embed``, OpenAI ``/v1/embeddings`` as float and as base64. The client is a raw
   keep-alive socket: request bytes built before the clock starts, the response read by Content-Length.
   In the same turns, the floor: ``harness/echo.py`` answering as many bytes at once, with no
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
from harness.timing import percentile, rotate, turns
from harness.workload import REPO, say

#: One-client requests per route, and requests per concurrent level.
SINGLE_REQUESTS = 400
CONCURRENT_REQUESTS = 400
WARMUP_REQUESTS = 30
#: Parts a concurrent level is cut into; the servers take turns part by part.
CHUNKS = 4
ENGINE_LABEL = "engine alone"
FLOOR_LABEL = "floor (echo)"
#: One-client modes: each text through every participant in turn; or each participant sending a block of texts
#: back to back, as one latency-critical client does.
INTERLEAVED = "interleaved"
BACK_TO_BACK = "back-to-back"
#: Requests a participant sends in a row in the back-to-back mode.
BLOCK = 40
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


def one_route(
    engine: Engine, servers: dict[str, Connection], label: str, texts: list[str], mode: str, block: int
) -> list[dict]:
    """One route: the engine, then each server, on the same texts, text by text (``block`` 1) or back to back in
    blocks of ``block`` texts (:func:`harness.timing.turns`), in an order that rotates each text or block."""
    names = [ENGINE_LABEL, *servers]
    latencies: dict[str, list[float]] = {name: [] for name in names}
    errors = dict.fromkeys(names, 0)
    for name, text, counted in turns(names, texts, block):
        if name == ENGINE_LABEL:
            took, ok = engine.time(text), True
        else:
            took, ok = servers[name].timed(request_bytes(label, text))
        if counted:
            latencies[name].append(took)
        errors[name] += not ok
    return [
        {"server": name, "route": label, "clients": 1, "mode": mode, **summary(latencies[name]), "errors": errors[name]}
        for name in names
    ]


def modes(args: argparse.Namespace) -> list[tuple[str, int]]:
    """The one-client modes asked for, each with its block size: interleaved text by text, back to back."""
    known = {INTERLEAVED: 1, BACK_TO_BACK: args.block}
    asked = [mode.strip() for mode in args.modes.split(",") if mode.strip()]
    unknown = [mode for mode in asked if mode not in known]
    if unknown or not asked:
        raise SystemExit(f"--modes takes {INTERLEAVED} and/or {BACK_TO_BACK}, got {args.modes!r}")
    if BACK_TO_BACK in asked and args.block < 2:
        raise SystemExit(f"--block must be at least 2 (the first request of a block is not counted), got {args.block}")
    return [(mode, known[mode]) for mode in asked]


def one_client(engine: Engine, servers: dict[str, Connection], texts: Texts, args: argparse.Namespace) -> list[dict]:
    """Every route over one keep-alive connection a server: warm-up texts (first shapes, lazily built
    paths), then the timed ones in each mode, with the floor: an echo answering as many bytes at once."""
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
            for mode, block in modes(args):
                participants = {**servers, FLOOR_LABEL: echo}
                rows += one_route(engine, participants, label, texts.take(args.requests), mode, block)
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
        row = {"server": name, "route": label, "clients": clients, "mode": "concurrent"}
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
    """Each (server, route, clients, mode) cell's best round by p50."""
    cells: dict[tuple, list[dict]] = {}
    for round_ in rounds:
        for row in round_["rows"]:
            cells.setdefault((row["server"], row["route"], row["clients"], row.get("mode")), []).append(row)
    return [min(rows, key=lambda row: row["p50_ms"]) for rows in cells.values()]


def table_row(row: dict, engine: dict[tuple[str, str], dict]) -> str:
    mode = row.get("mode", "")
    base = engine.get((mode, row["route"])) if row["clients"] == 1 and row["server"] != ENGINE_LABEL else None
    gap = f"{row['p50_ms'] - base['p50_ms']:+.2f}" if base else ""
    ratio = f"{row['p99_ms'] / base['p99_ms']:.2f}" if base else ""
    route = "`Encoder.encode([text])`" if row["server"] == ENGINE_LABEL else f"`{row['route']}`"
    return (
        f"| {row['server']} | {route} | {row['clients']} | {mode} | {row['p50_ms']} | {row['p99_ms']} | {gap} | "
        f"{ratio} | {row.get('requests_per_s', '')} | {row.get('server_cpu_ms_per_request', '')} | {row['errors']} |"
    )


def markdown(result: dict) -> str:
    started = result["started"]
    engine = {(row.get("mode", ""), row["route"]): row for row in result["best"] if row["server"] == ENGINE_LABEL}
    lines = [
        f"# Latency of one text ({result['model']}, {result['variant']})",
        "",
        f"Commit {started['commit']}; {started['cpu']} ({started['cpu_flags']}), {started['usable_cores']} "
        f"cores, shared with other work (load average {started['load_average']} at start, "
        f"{result['load_average_at_end']} at end). Texts: {result['texts']}. Server cache hits: "
        f"{result['cache_hits']}. Best of {result['rounds']} round(s) by p50. Command: `{result['command']}`.",
        "",
        f"One client, two modes, the engine and the servers on the same texts. {INTERLEAVED}: text by text, each "
        "text through every participant in turn, so every participant runs right after another process ran (caches "
        f"cold). {BACK_TO_BACK}: each participant sends a block of {result['block']} texts back to back, as one "
        "latency-critical client does, the order rotating block by block; the first text of each block (right "
        'after another participant ran) is not counted. "engine" columns compare with the engine\'s figures of the '
        f"same mode. {FLOOR_LABEL}: `harness/echo.py`, a bare uvloop protocol answering as many bytes at once (no "
        "HTTP framework, no application), in the same turns: the part of a server's figures that the loopback and "
        "the client take, which no server removes. Issue 25's mark: p50 within 0.3 ms of the engine's, p99 "
        "within 1.5x.",
        "",
        "| server | route | clients | mode | p50 ms | p99 ms | p50 - engine p50 | p99 / engine p99 | requests/s | "
        "server CPU ms / request | errors |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
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
    parser.add_argument(
        "--modes",
        default=f"{INTERLEAVED},{BACK_TO_BACK}",
        help=f"one-client modes, comma-separated: {INTERLEAVED} (text by text), {BACK_TO_BACK} (blocks of --block)",
    )
    parser.add_argument("--block", type=int, default=BLOCK, help="requests a participant sends in a row, back to back")
    parser.add_argument("--before", default=None, help="git ref of a server to interleave with this checkout's")
    parser.add_argument("--bundle", type=Path, default=None, help="this bundle instead of the stand-in")
    parser.add_argument("--flags", default="", help="extra `embedrt serve` flags (default: none, the defaults)")
    parser.add_argument("--out", type=Path, default=report.RESULTS)
    report.add_quick(parser)
    args = parser.parse_args()
    args.warmup = WARMUP_REQUESTS
    report.quick(args, requests=40, concurrent=40, levels="4", warmup=5, block=10)
    args.work = artifacts.work_dir("dmetasoul", args.work)
    return args


def log_rows(rows: list[dict]) -> None:
    for row in rows:
        say(
            f"  {row['server']:18s} {row['route']:22s} c={row['clients']:<3d} {row.get('mode', ''):13s} "
            f"p50 {row['p50_ms']:7.3f} p99 {row['p99_ms']:7.3f} ms  {row.get('requests_per_s', '')} req/s  "
            f"errors {row['errors']}"
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
        block=args.block,
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
