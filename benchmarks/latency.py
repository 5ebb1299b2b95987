"""What a user waits for one text: the engine alone, then `embedrt serve`, one client and a few.

    python benchmarks/latency.py                      # ~3-5 minutes on 2 cores (first run: + ~4 to export)
    python benchmarks/latency.py --before main        # also the server as of REF, interleaved with this one

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
import platform
import signal
import socket
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from io import BytesIO
from pathlib import Path

from embedrt.tools.bench import machine_facts, percentile

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DATA = REPO.parent / "shared" / "data" / "sts_zh_dev.tsv"
WORK = Path.home() / ".cache" / "embedrt-bench"
START_TIMEOUT_S = 180.0
#: One-client requests per route, and requests per concurrent level.
SINGLE_REQUESTS = 400
CONCURRENT_REQUESTS = 400
WARMUP_REQUESTS = 30
#: Parts a concurrent level is cut into; the servers take turns part by part.
CHUNKS = 4
LIBRARIES = ("onnxruntime", "openvino", "tokenizers", "numpy", "uvicorn", "uvloop", "httptools", "orjson")
ENGINE_LABEL = "engine alone"
#: label -> (path, JSON body of one text, measured at 4 and 16 clients too)
ROUTES: dict[str, tuple[str, Callable[[str], dict], bool]] = {
    "/embed": ("/embed", lambda text: {"inputs": text}, True),
    "/v1/embeddings float": ("/v1/embeddings", lambda text: {"input": text, "encoding_format": "float"}, False),
    "/v1/embeddings base64": ("/v1/embeddings", lambda text: {"input": text, "encoding_format": "base64"}, True),
}


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def load_texts() -> tuple[list[str], str]:
    if DATA.is_file():
        lines = DATA.read_text(encoding="utf-8").splitlines()
        texts = [part for line in lines for part in line.split("\t")[:2] if part.strip()]
        return list(dict.fromkeys(texts)), DATA.name  # a sentence can be in several pairs: once here
    text = (REPO / "src" / "embedrt" / "data" / "bench_zh.txt").read_text(encoding="utf-8")
    return list(dict.fromkeys(line for line in text.splitlines() if line.strip())), "src/embedrt/data/bench_zh.txt"


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


# ------------------------------------------------------------------------------------------ the engine alone
ENGINE = """
import json, sys, time
from embedrt import Encoder
encoder = Encoder.load(sys.argv[1])
print(json.dumps({"variant": encoder.variant}), flush=True)
for line in sys.stdin:
    text = json.loads(line)
    began = time.perf_counter()
    encoder.encode([text])
    print((time.perf_counter() - began) * 1000, flush=True)
"""


class Engine:
    """``Encoder.encode([text])`` in its own process; :meth:`time` returns the ms it took, timed inside."""

    def __init__(self, src: Path, bundle: Path) -> None:
        env = {**os.environ, "PYTHONPATH": str(src)}
        self.proc = subprocess.Popen(
            [sys.executable, "-c", ENGINE, str(bundle)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            env=env,
        )
        self.variant = json.loads(self._line())["variant"]

    def _line(self) -> str:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise SystemExit(f"the engine process exited with {self.proc.wait()}")
        return line

    def time(self, text: str) -> float:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(text, ensure_ascii=False) + "\n")
        self.proc.stdin.flush()
        return float(self._line())

    def stop(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(60)


# ------------------------------------------------------------------------------------------ the servers
class Connection:
    """One keep-alive HTTP/1.1 connection on a raw socket: send prepared bytes, read one response."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buffer = b""

    def exchange(self, request: bytes) -> tuple[int, bytes]:
        self.sock.sendall(request)
        while b"\r\n\r\n" not in self.buffer:
            self.buffer += self._recv()
        head, _, rest = self.buffer.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        length = next(int(line.split(b":", 1)[1]) for line in lines if line.lower().startswith(b"content-length:"))
        while len(rest) < length:
            rest += self._recv()
        self.buffer = rest[length:]
        return int(lines[0].split(b" ", 2)[1]), rest[:length]

    def timed(self, request: bytes) -> tuple[float, bool]:
        began = time.perf_counter()
        status, body = self.exchange(request)
        return (time.perf_counter() - began) * 1000, status == 200 and bool(body)

    def _recv(self) -> bytes:
        chunk = self.sock.recv(1 << 20)
        if not chunk:
            raise ConnectionError("the server closed the connection")
        return chunk

    def close(self) -> None:
        self.sock.close()


def request_bytes(label: str, text: str) -> bytes:
    path, body, _ = ROUTES[label]
    raw = json.dumps(body(text), ensure_ascii=False).encode()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\nContent-Length: {len(raw)}\r\n\r\n"
    )
    return head.encode() + raw


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    """`embedrt serve BUNDLE` from ``src`` with default settings (plus ``flags``), healthy before use."""

    def __init__(self, src: Path, bundle: Path, flags: list[str], log: Path) -> None:
        self.port = free_port()
        env = {**os.environ, "PYTHONPATH": str(src)}
        command = [sys.executable, "-m", "embedrt.cli", "serve", str(bundle), "--port", str(self.port), *flags]
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"server exited with {self.proc.returncode}; see {log}")
            if self.get("/health")[0] == 200:
                self.connection = Connection(self.port)
                return
            time.sleep(0.2)
        self.stop()
        raise SystemExit(f"server not healthy after {START_TIMEOUT_S:.0f} s; see {log}")

    def get(self, path: str) -> tuple[int, bytes]:
        try:
            connection = Connection(self.port)
        except OSError:
            return 0, b""
        try:
            return connection.exchange(f"GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n".encode())
        except OSError:
            return 0, b""
        finally:
            connection.close()

    def cache_hits(self) -> float | None:
        lines = self.get("/metrics")[1].decode().splitlines()
        hits = [line for line in lines if line.startswith("embedrt_cache_hits_total ")]
        return float(hits[0].split()[1]) if hits else None

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(60)


def drive(port: int, requests: list[bytes], clients: int) -> tuple[list[float], int, float]:
    """Send ``requests`` from ``clients`` threads (one connection each): latencies ms, errors, wall seconds."""
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()

    def client(share: list[bytes]) -> None:
        connection = Connection(port)
        mine, failed = [], 0
        try:
            for request in share:
                took, ok = connection.timed(request)
                mine.append(took)
                failed += not ok
        finally:
            connection.close()
            with lock:
                latencies.extend(mine)
                errors[0] += failed

    threads = [threading.Thread(target=client, args=(requests[i::clients],)) for i in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return latencies, errors[0], time.perf_counter() - started


# ------------------------------------------------------------------------------------------ one round
def one_client(engine: Engine, servers: dict[str, Server], texts: Texts, count: int) -> list[dict]:
    """Every route, text by text: the engine, then each server, in an order that rotates each text."""
    rows = []
    for label in ROUTES:
        for text in texts.take(WARMUP_REQUESTS):  # first shapes, lazily built paths
            engine.time(text)
            for server in servers.values():
                server.connection.timed(request_bytes(label, text))
        names = [ENGINE_LABEL, *servers]
        latencies: dict[str, list[float]] = {name: [] for name in names}
        errors = dict.fromkeys(names, 0)
        for index, text in enumerate(texts.take(count)):
            for name in names[index % len(names) :] + names[: index % len(names)]:
                if name == ENGINE_LABEL:
                    latencies[name].append(engine.time(text))
                    continue
                took, ok = servers[name].connection.timed(request_bytes(label, text))
                latencies[name].append(took)
                errors[name] += not ok
        for name in names:
            rows.append(
                {"server": name, "route": label, "clients": 1, **summary(latencies[name]), "errors": errors[name]}
            )
    return rows


def concurrent(servers: dict[str, Server], texts: Texts, levels: list[int], count: int) -> list[dict]:
    """Each level and route in :data:`CHUNKS` parts, the servers taking turns part by part (same texts)."""
    rows = []
    for clients in levels:
        for label, (_, _, busy) in ROUTES.items():
            if not busy:
                continue
            requests = [request_bytes(label, text) for text in texts.take(count)]
            totals = {name: {"latencies": [], "errors": 0, "wall": 0.0, "cpu": 0.0} for name in servers}
            for part in range(CHUNKS):
                names = list(servers)[part % len(servers) :] + list(servers)[: part % len(servers)]
                for name in names:
                    server, total = servers[name], totals[name]
                    before = cpu_seconds(server.proc.pid)
                    latencies, errors, wall = drive(server.port, requests[part::CHUNKS], clients)
                    total["cpu"] += cpu_seconds(server.proc.pid) - before
                    total["latencies"] += latencies
                    total["errors"] += errors
                    total["wall"] += wall
            for name, total in totals.items():
                row = {"server": name, "route": label, "clients": clients}
                row.update(summary(total["latencies"]), errors=total["errors"])
                row["requests_per_s"] = round(len(requests) / total["wall"], 1)
                row["server_cpu_ms_per_request"] = round(total["cpu"] * 1000 / len(requests), 3)
                rows.append(row)
    return rows


def one_round(sources: dict[str, Path], bundle: Path, pool: list[str], args: argparse.Namespace) -> dict:
    log = args.work / "latency_server.log"
    engine = Engine(REPO / "src", bundle)
    servers = {name: Server(src, bundle, args.flags.split(), log) for name, src in sources.items()}
    texts = Texts(pool)  # one sequence: no server (nor the engine) sees a text twice
    try:
        rows = one_client(engine, servers, texts, args.requests)
        engine.stop()
        levels = [int(level) for level in args.levels.split(",") if level]
        rows += concurrent(servers, texts, levels, args.concurrent)
        hits = {name: server.cache_hits() for name, server in servers.items()}
    finally:
        for server in servers.values():
            server.stop()
    return {"variant": engine.variant, "rows": rows, "cache_hits": hits}


# ------------------------------------------------------------------------------------------ report
def checkout_of(ref: str, work: Path) -> tuple[Path, str]:
    """``src/`` of git ``ref``, extracted once under ``work`` with ``git archive`` (no worktree is made)."""
    commit = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short", ref], capture_output=True, text=True, check=True
    ).stdout.strip()
    target = work / f"latency-before-{commit}"
    if not (target / "src" / "embedrt").is_dir():
        archive = subprocess.run(["git", "-C", str(REPO), "archive", commit, "src"], capture_output=True, check=True)
        with tarfile.open(fileobj=BytesIO(archive.stdout)) as tar:
            tar.extractall(target, filter="data")
    return target / "src", commit


def stamp() -> dict:
    def git(*command: str) -> str:
        done = subprocess.run(["git", "-C", str(REPO), *command], capture_output=True, text=True, check=False)
        return done.stdout.strip()

    libraries = {}
    for name in LIBRARIES:
        try:
            libraries[name] = version(name)
        except PackageNotFoundError:
            libraries[name] = "not installed"
    changed = git("status", "--porcelain", "--", "src", "benchmarks", ":!benchmarks/results")
    dirty = " (with uncommitted changes)" if changed else ""
    return {
        "commit": git("rev-parse", "--short", "HEAD") + dirty,
        "machine": machine_facts(),
        "python": platform.python_version(),
        "libraries": libraries,
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def best_rows(rounds: list[dict]) -> list[dict]:
    """Each (server, route, clients) cell's best round by p50."""
    cells: dict[tuple, list[dict]] = {}
    for round_ in rounds:
        for row in round_["rows"]:
            cells.setdefault((row["server"], row["route"], row["clients"]), []).append(row)
    return [min(rows, key=lambda row: row["p50_ms"]) for rows in cells.values()]


def markdown(report: dict) -> str:
    machine = report["stamp"]["machine"]
    engine = {row["route"]: row for row in report["best"] if row["server"] == ENGINE_LABEL}
    lines = [
        f"# Latency of one text ({report['model']}, {report['variant']})",
        "",
        f"Commit {report['stamp']['commit']}; {machine['cpu']} ({machine['isa']}), {machine['usable_cores']} "
        f"cores, shared with other work (load average {report['stamp']['load_average_at_start']} at start, "
        f"{report['load_average_at_end']} at end). Texts: {report['texts']}. Server cache hits: "
        f"{report['cache_hits']}. Best of {report['rounds']} round(s) by p50. Command: `{report['command']}`.",
        "",
        'One client: the engine and the servers interleaved text by text; "engine" columns compare with the '
        "engine's figures from the same interleaving.",
        "",
        "| server | route | clients | p50 ms | p99 ms | p50 - engine p50 | p99 / engine p99 | requests/s | "
        "server CPU ms / request | errors |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in report["best"]:
        base = engine.get(row["route"]) if row["clients"] == 1 and row["server"] != ENGINE_LABEL else None
        gap = f"{row['p50_ms'] - base['p50_ms']:+.2f}" if base else ""
        ratio = f"{row['p99_ms'] / base['p99_ms']:.2f}" if base else ""
        route = "`Encoder.encode([text])`" if row["server"] == ENGINE_LABEL else f"`{row['route']}`"
        lines.append(
            f"| {row['server']} | {route} | {row['clients']} | {row['p50_ms']} | {row['p99_ms']} | {gap} | {ratio} | "
            f"{row.get('requests_per_s', '')} | {row.get('server_cpu_ms_per_request', '')} | {row['errors']} |"
        )
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=WORK, help="artefact cache (shared with compare_cpu.py)")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--requests", type=int, default=SINGLE_REQUESTS, help="one-client requests per route")
    parser.add_argument("--concurrent", type=int, default=CONCURRENT_REQUESTS, help="requests per concurrent level")
    parser.add_argument("--levels", default="4,16", help="concurrent clients, comma-separated")
    parser.add_argument("--before", default=None, help="git ref of a server to interleave with this checkout's")
    parser.add_argument("--bundle", type=Path, default=None, help="this bundle instead of the stand-in")
    parser.add_argument("--flags", default="", help="extra `embedrt serve` flags (default: none, the defaults)")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args()

    if args.bundle is None:
        import compare_cpu

        compare_cpu.prepare(args.work, None, [], False)
    bundle = args.bundle or args.work / "bundle"
    pool, source = load_texts()
    sources = {"this checkout": REPO / "src"}
    if args.before:
        before_src, commit = checkout_of(args.before, args.work)
        sources[f"before ({commit})"] = before_src
    report: dict = {"stamp": stamp(), "command": " ".join(["python benchmarks/latency.py", *sys.argv[1:]])}
    rounds = []
    for turn in range(args.rounds):
        say(f"round {turn + 1} of {args.rounds}")
        rounds.append(one_round(sources, bundle, pool, args))
        for row in rounds[-1]["rows"]:
            say(
                f"  {row['server']:18s} {row['route']:22s} c={row['clients']:<3d} p50 {row['p50_ms']:7.3f} "
                f"p99 {row['p99_ms']:7.3f} ms  {row.get('requests_per_s', '')} req/s  errors {row['errors']}"
            )
    report.update(
        model=str(args.bundle) if args.bundle else "DMetaSoul stand-in (4 x 768), default variant",
        variant=rounds[0]["variant"],
        texts=f"{source}, one text per request, none sent twice to one server",
        rounds=args.rounds,
        load_average_at_end=[round(x, 2) for x in os.getloadavg()],
        cache_hits=[round_["cache_hits"] for round_ in rounds],
        best=best_rows(rounds),
        every_round=rounds,
    )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "latency.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    text = markdown(report)
    (args.out / "latency.md").write_text(text, encoding="utf-8")
    print(text)
    return 1 if any(row["errors"] for round_ in rounds for row in round_["rows"]) else 0


if __name__ == "__main__":
    sys.exit(main())
