"""Hostile traffic against `embedrt serve`, measured: what the hardening issue must reach, with timings.

    python benchmarks/hostile.py            # ~2 minutes; a tiny seeded model, so the server's own work is small
    python benchmarks/hostile.py --quick    # smoke run: a 40 MB body, 30 stalled connections, 50 bodies a route

1. A 400 MB body sent chunked (no Content-Length): the status, how long until it, how much the client
   managed to send, and the server's resident memory (``/proc/PID/status`` VmRSS) before and after.
2. 300 connections that send half a request line and stop (with ``--read-timeout-s``, default 5): how long
   until the server has closed each, and meanwhile the latency of normal requests and of ``/health``.
3. ``--bodies`` (2,000) random JSON bodies of any shape, depth, number size and unicode, to each embedding
   route: the status codes seen (there must be no 5xx and no dropped connection).

Writes ``results/hostile.json`` and ``results/hostile.md``. The test suite checks the same behaviours
(``tests/server/test_hardening.py``); this script adds the timings, which tests never assert.
"""

from __future__ import annotations

import argparse
import json
import random
import socket
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import httpx

from embedrt.tools.bench import machine_facts
from harness import artifacts, report
from harness.server import Server, rss_mb
from harness.timing import percentile

ROUTES = ("/v1/embeddings", "/embed", "/similarity")


def huge_chunked_body(pid: int, port: int, megabytes: int = 400) -> dict:
    before = rss_mb(pid)
    sock = socket.create_connection(("127.0.0.1", port), timeout=60)
    chunk = b"%x\r\n" % (1 << 20) + b"[" * (1 << 20) + b"\r\n"
    sent = [0]
    peak = [before]

    def upload() -> None:
        try:
            sock.sendall(b"POST /embed HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
            while sent[0] < megabytes << 20:
                sock.sendall(chunk)
                sent[0] += 1 << 20
                peak[0] = max(peak[0], rss_mb(pid))
        except OSError:
            pass

    started = time.perf_counter()
    thread = threading.Thread(target=upload, daemon=True)
    thread.start()
    reply = sock.recv(65536)
    answered = time.perf_counter() - started
    while data := sock.recv(65536):
        reply += data
    thread.join(60)
    sock.close()
    return {
        "status": reply.split(b"\r\n", 1)[0].decode(errors="replace"),
        "answered_after_s": round(answered, 3),
        "client_sent_mb": round(sent[0] / (1 << 20), 1),
        "server_rss_before_mb": round(before, 1),
        "server_rss_peak_mb": round(max(peak[0], rss_mb(pid)), 1),
        "server_rss_growth_mb": round(max(peak[0], rss_mb(pid)) - before, 1),
    }


def stalled_connections(port: int, count: int = 300) -> dict:
    sockets = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=60)
        sock.sendall(b"POST /v1/embeddings HT")
        sockets.append(sock)
    opened = time.perf_counter()
    closed_after: list[float] = []
    done = threading.Event()

    def watch() -> None:
        for sock in sockets:
            while sock.recv(4096):
                pass
            closed_after.append(time.perf_counter() - opened)
        done.set()

    threading.Thread(target=watch, daemon=True).start()
    normal, health = [], []
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
        while not done.is_set():
            began = time.perf_counter()
            ok = client.post("/embed", json={"inputs": ["一个正常的请求", "a normal request"]}).status_code == 200
            normal.append((time.perf_counter() - began) * 1000 if ok else float("inf"))
            began = time.perf_counter()
            ok = client.get("/health").status_code == 200
            health.append((time.perf_counter() - began) * 1000 if ok else float("inf"))
            time.sleep(0.1)
    for sock in sockets:
        sock.close()
    normal.sort()
    health.sort()
    return {
        "stalled": count,
        "all_closed_after_s": round(max(closed_after), 2),
        "first_closed_after_s": round(min(closed_after), 2),
        "normal_requests": len(normal),
        "normal_max_ms": round(normal[-1], 1),
        "normal_p50_ms": round(percentile(normal, 50), 1),
        "health_checks": len(health),
        "health_max_ms": round(health[-1], 1),
    }


def random_json(rng: random.Random, depth: int = 0) -> object:
    kind = rng.randrange(9 if depth < 6 else 6)
    if kind == 0:
        return None
    if kind == 1:
        return rng.random() < 0.5
    if kind == 2:
        return rng.choice([0, -1, 7, 2**63, -(2**64) + 1, 10 ** rng.randrange(1, 600)])
    if kind == 3:
        return rng.choice([0.5, -1e308, 1e-320, 3.14159])
    if kind in (4, 5):
        ranges = [(32, 127), (0x4E00, 0x9FFF), (0x1F600, 0x1F64F)]  # ASCII, CJK, emoji
        return "".join(chr(rng.randrange(*rng.choice(ranges))) for _ in range(rng.randrange(0, 40)))
    if kind == 6:
        return [random_json(rng, depth + 1) for _ in range(rng.randrange(0, 5))]
    if kind == 7:
        keys = ["input", "inputs", "encoding_format", "normalize", "truncate", "dimensions", "sentences", "x"]
        return {rng.choice(keys): random_json(rng, depth + 1) for _ in range(rng.randrange(0, 5))}
    return (
        "[" * rng.randrange(1, 200_000)
        if rng.random() < 0.3
        else {"inputs": {"source_sentence": "a", "sentences": [random_json(rng, depth + 1)]}}
    )


def random_bodies(port: int, count: int) -> dict:
    rng = random.Random(0)
    seen: dict[str, Counter] = {route: Counter() for route in ROUTES}
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
        for route in ROUTES:
            for _ in range(count):
                body = random_json(rng)
                raw = body.encode() if isinstance(body, str) and body.startswith("[") else json.dumps(body).encode()
                try:
                    seen[route][str(client.post(route, content=raw).status_code)] += 1
                except httpx.HTTPError as err:
                    seen[route][f"dropped: {type(err).__name__}"] += 1
    return {route: dict(sorted(counts.items())) for route, counts in seen.items()}


def markdown(result: dict, args: argparse.Namespace) -> str:
    chunked, stalled = result["chunked_400mb"], result["stalled_300"]
    lines = [
        "# Hostile traffic (tests/server/test_hardening.py checks the same behaviours)",
        "",
        f"Machine: {result['machine']['cpu']} ({result['machine']['isa']}); --read-timeout-s {args.read_timeout_s}.",
        "",
        f"- {args.megabytes} MB chunked body: `{chunked['status']}` after {chunked['answered_after_s']} s; the client "
        f"got {chunked['client_sent_mb']} MB out; server RSS {chunked['server_rss_before_mb']} -> peak "
        f"{chunked['server_rss_peak_mb']} MB (+{chunked['server_rss_growth_mb']} MB).",
        f"- {args.stalled} stalled connections: all closed {stalled['first_closed_after_s']}-"
        f"{stalled['all_closed_after_s']} s after they stalled; meanwhile {stalled['normal_requests']} normal requests "
        f"(p50 {stalled['normal_p50_ms']} ms, max {stalled['normal_max_ms']} ms) and {stalled['health_checks']} "
        f"health checks (max {stalled['health_max_ms']} ms), all 200.",
        f"- {args.bodies} random JSON bodies per route, status codes:",
    ]
    lines += [f"  - `{route}`: {counts}" for route, counts in result["random_bodies"].items()]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--read-timeout-s", type=float, default=5.0)
    parser.add_argument("--bodies", type=int, default=2000, help="random bodies per embedding route")
    parser.add_argument("--work", type=Path, default=None, help="artefact cache (default: benchmarks/.cache)")
    parser.add_argument("--out", type=Path, default=report.RESULTS, help="results folder")
    report.add_quick(parser)
    args = parser.parse_args()
    args.megabytes, args.stalled = 400, 300
    report.quick(args, bodies=50, megabytes=40, stalled=30)
    bundle = artifacts.tiny_bundle(artifacts.work_dir("tiny", args.work))
    flags = ["--precision", "fp32", "--read-timeout-s", str(args.read_timeout_s)]
    with Server(bundle, flags) as server:
        result = {
            "machine": machine_facts(),
            "read_timeout_s": args.read_timeout_s,
            "chunked_400mb": huge_chunked_body(server.pid, server.port, args.megabytes),
            "stalled_300": stalled_connections(server.port, args.stalled),
            "random_bodies": random_bodies(server.port, args.bodies),
        }
    text = markdown(result, args)
    report.write(report.results_dir(args), "hostile", result, text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
