"""`embedrt serve` under load: requests/s and p50/p99 latency at concurrency 1, 16 and 64, batching on and off.

The server is the real CLI in its own process on 127.0.0.1; the load generator (asyncio + httpx, in this
process) sends OpenAI-style requests of 1-8 sentences (uniform, seeded) from Chinese STS-B, as base64
like the official ``openai`` client does. Modes, alternated in every round, one server at a time:

- ``batching``: the defaults (``--max-wait-ms 0``, ``--max-batch-tokens 2048``): requests that arrive
  together, or queue while the engine is busy, share engine runs (``results/serve_int8.md`` was
  measured when the default was ``--max-wait-ms 2``).
- ``no-batching``: ``--max-wait-ms 0 --max-batch-requests 1``: one request per engine run (its own
  texts are still batched together), i.e. what a plain "one request, one encode()" server does.
- ``2-workers`` (only when ``--modes`` names it): ``--workers 2``, ``--threads`` split between two
  processes on one port.

Writes ``results/serve_<precision>.json`` and ``.md``; the server log goes to ``--work``. Model: the
full-size DMetaSoul stand-in (4 x 768, vocab 21128; the real bert-base-chinese vocabulary when
/work/shared has it), built and exported once under ``--work``.

    python benchmarks/serve_bench.py                    # 1-5 minutes on 2 cores, by how busy they are
    python benchmarks/serve_bench.py --precision fp32 --rounds 1
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from embedrt.tools.bench import percentile

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DEFAULT_DATA = REPO.parent / "shared" / "data" / "sts_zh_dev.tsv"
DEFAULT_VOCAB = REPO.parent / "shared" / "data" / "bert-base-chinese-vocab.txt"
MODES = {
    "batching": [],
    "no-batching": ["--max-wait-ms", "0", "--max-batch-requests", "1"],
    # --threads split between the workers: with --threads 2, 2 processes of 1 engine thread each.
    "2-workers": ["--workers", "2"],
}
START_TIMEOUT_S = 120.0
LEVEL_TIMEOUT_S = 120.0


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def load_texts(data: Path) -> tuple[list[str], str]:
    if data.is_file():
        texts = [part for line in data.read_text(encoding="utf-8").splitlines() for part in line.split("\t")[:2]]
        texts = [text for text in texts if text.strip()]
        return texts, f"{data.name} (both columns, {len(texts)} sentences)"
    from embedrt.export.sentences import PARITY_SENTENCES

    return list(PARITY_SENTENCES), "embedrt's built-in parity sentences"


def prepare_bundle(work: Path) -> tuple[Path, str]:
    """The full-size DMetaSoul stand-in, exported once (fp32 + int8) and kept under ``work``."""
    bundle = work / "bundle"
    vocab = DEFAULT_VOCAB if DEFAULT_VOCAB.is_file() else None
    what = f"DMetaSoul student stand-in (4 x 768, 12 heads, vocab 21128, {'real' if vocab else 'synthetic'} vocab)"
    if (bundle / "embedrt.json").is_file():
        return bundle, what
    from embedrt.export import export_bundle
    from embedrt.export.pipeline import ExportSettings
    from embedrt.export.standin import DMETASOUL_STUDENT, build_standin

    work.mkdir(parents=True, exist_ok=True)
    say(f"building and exporting the {what} under {work}")
    model = build_standin(work / "standin", DMETASOUL_STUDENT, vocab_file=vocab)
    export_bundle(str(model), bundle, ExportSettings(force=True), progress=say)
    shutil.rmtree(work / "standin", ignore_errors=True)
    return bundle, what


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """`embedrt serve` in a subprocess, healthy before use, SIGTERM-stopped after."""

    def __init__(self, bundle: Path, precision: str, threads: int, flags: list[str], log: Path) -> None:
        import httpx

        self.url = f"http://127.0.0.1:{free_port()}"
        port = self.url.rsplit(":", 1)[1]
        command = [sys.executable, "-m", "embedrt.cli", "serve", str(bundle), "--port", port]
        command += ["--precision", precision, "--threads", str(threads), *flags]
        self._log = open(log, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(command, stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"server exited with {self.proc.returncode}; see {log}")
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        raise SystemExit(f"server not healthy after {START_TIMEOUT_S} s; see {log}")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(30)
        self._log.close()
        return self.proc.returncode


async def drive(url: str, plan: list[list[str]], concurrency: int) -> dict:
    """Send ``plan`` (one request per item) from ``concurrency`` clients; latency of each request."""
    import httpx

    queue = list(reversed(plan))
    latencies: list[float] = []
    errors = 0

    async def client(http: httpx.AsyncClient) -> None:
        nonlocal errors
        while queue:
            texts = queue.pop()
            body = {"input": texts, "model": "bench", "encoding_format": "base64"}
            start = time.perf_counter()
            response = await http.post("/v1/embeddings", json=body)
            latencies.append(time.perf_counter() - start)
            if response.status_code != 200 or len(response.json()["data"]) != len(texts):
                errors += 1

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=LEVEL_TIMEOUT_S) as http:
        start = time.perf_counter()
        await asyncio.wait_for(asyncio.gather(*(client(http) for _ in range(concurrency))), LEVEL_TIMEOUT_S)
        wall = time.perf_counter() - start
    ms = np.array(latencies) * 1000
    sentences = sum(len(texts) for texts in plan)
    return {
        "requests": len(plan),
        "sentences": sentences,
        "errors": errors,
        "seconds": round(wall, 3),
        "requests_per_s": round(len(plan) / wall, 1),
        "sentences_per_s": round(sentences / wall, 1),
        "p50_ms": round(percentile(sorted(ms), 50), 1),
        "p99_ms": round(percentile(sorted(ms), 99), 1),
    }


OFFLINE = """
import json, sys, time
import numpy as np
from embedrt import Encoder
bundle, precision, threads, plan_file = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
warm, plan = json.load(open(plan_file, encoding="utf-8"))
encoder = Encoder.load(bundle, precision=precision, threads=threads)
for texts in warm:
    encoder.encode(texts)
latencies = []
start = time.perf_counter()
for texts in plan:
    began = time.perf_counter()
    encoder.encode(texts)
    latencies.append(time.perf_counter() - began)
print(json.dumps({"wall": time.perf_counter() - start, "latencies": latencies}))
"""


def offline(bundle: Path, precision: str, threads: int, warm: list, plan: list, work: Path) -> dict:
    """The same requests through ``Encoder.encode`` one after another in a fresh process: the floor for c=1."""
    plan_file = work / "offline_plan.json"
    plan_file.write_text(json.dumps([warm, plan], ensure_ascii=False), encoding="utf-8")
    command = [sys.executable, "-c", OFFLINE, str(bundle), precision, str(threads), str(plan_file)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=LEVEL_TIMEOUT_S * 2, check=True)
    data = json.loads(done.stdout)
    ms = np.array(data["latencies"]) * 1000
    sentences = sum(len(texts) for texts in plan)
    return {
        "requests": len(plan),
        "sentences": sentences,
        "errors": 0,
        "seconds": round(data["wall"], 3),
        "requests_per_s": round(len(plan) / data["wall"], 1),
        "sentences_per_s": round(sentences / data["wall"], 1),
        "p50_ms": round(percentile(sorted(ms), 50), 1),
        "p99_ms": round(percentile(sorted(ms), 99), 1),
    }


def make_plan(texts: list[str], requests: int, seed: int) -> list[list[str]]:
    rng = random.Random(seed)
    return [rng.sample(texts, rng.randint(1, 8)) for _ in range(requests)]


def machine() -> dict:
    from embedrt.tools.bench import machine_facts

    facts = machine_facts()
    return {**facts, "cores": facts["usable_cores"], "load_average_at_start": [round(x, 2) for x in os.getloadavg()]}


def write_markdown(result: dict, path: Path) -> None:
    lines = [
        f"# embedrt serve under load ({result['precision']})",
        "",
        f"Model: {result['model']}. Texts: {result['data']}; requests of 1-8 sentences (uniform), "
        f"OpenAI `/v1/embeddings`, base64. Machine: {result['machine']['cpu']}, {result['machine']['cores']} cores, "
        f"shared with other work (load average at start {result['machine']['load_average_at_start']}): noisy. "
        f"Best of {result['rounds']} round(s) per cell by requests/s; modes alternated in each round.",
        "",
        f"Command: `{result['command']}`",
        "",
        "Modes: " + "; ".join(f"`{mode}`: {flags}" for mode, flags in result["modes"].items()) + ".",
        "",
        "| mode | concurrency | requests | requests/s | sentences/s | p50 ms | p99 ms | errors |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in result["best"]:
        lines.append(
            f"| {row['mode']} | {row['concurrency']} | {row['requests']} | {row['requests_per_s']} | "
            f"{row['sentences_per_s']} | {row['p50_ms']} | {row['p99_ms']} | {row['errors']} |"
        )
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path.home() / ".cache" / "embedrt-serve-bench")
    parser.add_argument("--bundle", type=Path, default=None, help="use this bundle instead of the stand-in")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--precision", default="int8", help="served variant (default int8, the CPU default)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--concurrency", default="1,16,64")
    parser.add_argument("--requests", type=int, default=0, help="requests per level (default: 40 + 3 x concurrency)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("--modes", default="batching,no-batching", help=f"of {', '.join(MODES)}")
    parser.add_argument("--name", default=None, help="results file name (default: serve_PRECISION)")
    args = parser.parse_args()
    modes = {mode: MODES[mode] for mode in args.modes.split(",")}

    texts, data = load_texts(args.data)
    if args.bundle is not None:
        bundle, model = args.bundle, str(args.bundle)
    else:
        bundle, model = prepare_bundle(args.work)
    levels = [int(level) for level in args.concurrency.split(",")]
    args.work.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    log = args.work / "server.log"
    log.unlink(missing_ok=True)
    host = machine()
    runs = []
    for round_index in range(args.rounds):
        count = args.requests or 40 + 3 * levels[0]
        row = offline(
            bundle, args.precision, args.threads, make_plan(texts, 32, 99), make_plan(texts, count, 1), args.work
        )
        row.update(mode="offline encode()", concurrency=1, round=round_index)
        runs.append(row)
        say(f"round {round_index} offline      c=1   {row['requests_per_s']:7.1f} req/s  p50 {row['p50_ms']:7.1f} ms")
        order = list(modes) if round_index % 2 == 0 else list(reversed(modes))
        for mode in order:
            server = Server(bundle, args.precision, args.threads, modes[mode], log)
            try:
                asyncio.run(drive(server.url, make_plan(texts, 32, seed=99), 8))  # warm-up, not measured
                for concurrency in levels:
                    count = args.requests or 40 + 3 * concurrency
                    plan = make_plan(texts, count, seed=concurrency)
                    row = asyncio.run(drive(server.url, plan, concurrency))
                    row.update(mode=mode, concurrency=concurrency, round=round_index)
                    runs.append(row)
                    say(
                        f"round {round_index} {mode:12s} c={concurrency:<3d} {row['requests_per_s']:7.1f} req/s "
                        f"{row['sentences_per_s']:7.1f} sent/s  p50 {row['p50_ms']:7.1f} ms  "
                        f"p99 {row['p99_ms']:7.1f} ms  errors {row['errors']}"
                    )
            finally:
                code = server.stop()
                if code != 0:
                    say(f"warning: server exited with {code} after SIGTERM; see {log}")
    best = []
    for mode in ("offline encode()", *modes):
        for concurrency in sorted({r["concurrency"] for r in runs if r["mode"] == mode}):
            cell = [r for r in runs if r["mode"] == mode and r["concurrency"] == concurrency]
            best.append(max(cell, key=lambda r: r["requests_per_s"]))
    result = {
        "command": " ".join(["python benchmarks/serve_bench.py", *sys.argv[1:]]),
        "model": model,
        "data": data,
        "precision": args.precision,
        "threads": args.threads,
        "rounds": args.rounds,
        "modes": {
            "offline encode()": "the same requests, Encoder.encode one after another in one process (no HTTP)",
            **{mode: " ".join(flags) or "(defaults)" for mode, flags in modes.items()},
        },
        "machine": host,
        "best": best,
        "runs": runs,
    }
    stem = args.out / (args.name or f"serve_{args.precision}")
    stem.with_suffix(".json").write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    write_markdown(result, stem.with_suffix(".md"))
    say(f"wrote {stem}.json and {stem}.md")
    return 1 if any(row["errors"] for row in runs) else 0


if __name__ == "__main__":
    sys.exit(main())
