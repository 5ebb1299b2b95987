"""`embedrt serve` under load: requests/s and p50/p99 latency at concurrency 1, 16 and 64, batching on and off.

The server is the real CLI in its own process on 127.0.0.1; the load generator (asyncio + httpx, in this
process) sends OpenAI-style requests of 1-8 sentences (uniform, seeded) from Chinese STS-B, as base64
like the official ``openai`` client does. Modes, alternated in every round, one server at a time:

- ``batching``: the defaults (``--max-wait-ms 0``, ``--max-batch-tokens 2048``): requests that arrive
  together, or queue while the engine is busy, share engine runs.
- ``no-batching``: ``--max-wait-ms 0 --max-batch-requests 1``: one request per engine run (its own
  texts are still batched together), i.e. what a plain "one request, one encode()" server does.
- ``2-workers`` (only when ``--modes`` names it): ``--workers 2``, ``--threads`` split between two
  processes on one port.
- ``unfused`` (only when ``--modes`` names it): ``--length-buckets false``, OpenVINO int8's attention unfused
  instead of length buckets, the other batch-invariant way (``--modes batching,unfused`` compares them).

Writes ``results/serve_<precision>.json`` and ``.md``; the server log goes to ``--work``. Model: the
full-size DMetaSoul stand-in (4 x 768, vocab 21128; the real bert-base-chinese vocabulary when the data
folder has it), built and exported once (``benchmarks/.cache``, shared with ``compare_cpu.py``).

    python benchmarks/serve_bench.py                    # 1-5 minutes on 2 cores, by how busy they are
    python benchmarks/serve_bench.py --precision fp32 --rounds 1
    python benchmarks/serve_bench.py --quick            # smoke run: concurrency 1 and 4, 8 requests each
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
from pathlib import Path

from harness import artifacts, offline, report, workload
from harness.load import drive_httpx, throughput_row
from harness.server import Server
from harness.workload import say

MODES = {
    "batching": [],
    "no-batching": ["--max-wait-ms", "0", "--max-batch-requests", "1"],
    # --threads split between the workers: with --threads 2, 2 processes of 1 engine thread each.
    "2-workers": ["--workers", "2"],
    # OpenVINO int8's attention unfused instead of length buckets (the default before 2026-12-05).
    "unfused": ["--length-buckets", "false"],
}
LEVEL_TIMEOUT_S = 120.0
OFFLINE = "offline encode()"


def make_plan(texts: list[str], requests: int, seed: int) -> list[list[str]]:
    rng = random.Random(seed)
    return [rng.sample(texts, rng.randint(1, 8)) for _ in range(requests)]


def run_offline(bundle: Path, args: argparse.Namespace, warm: list, plan: list) -> dict:
    """The same requests through ``Encoder.encode`` one after another in a fresh process: the floor for c=1."""
    plan_file = args.work / "offline_plan.json"
    plan_file.write_text(json.dumps([warm, plan], ensure_ascii=False), encoding="utf-8")
    command = offline.command("plan", bundle, args.precision, args.threads, plan_file)
    done = subprocess.run(command, capture_output=True, text=True, timeout=LEVEL_TIMEOUT_S * 2, check=True)
    data = json.loads(done.stdout)
    return throughput_row(len(plan), sum(len(texts) for texts in plan), data["wall"], data["latencies"], 0)


def requests_at(args: argparse.Namespace, concurrency: int) -> int:
    return args.requests or 40 + 3 * concurrency


def one_mode(bundle: Path, mode: str, texts: list[str], args: argparse.Namespace, round_index: int) -> list[dict]:
    """One server in ``mode``: a warm-up, then every concurrency level."""
    flags = ["--precision", args.precision, "--threads", str(args.threads), *MODES[mode]]
    server = Server(bundle, flags, args.work / "server.log")
    rows = []
    try:
        drive_httpx(server.url, make_plan(texts, 32, seed=99), 8, LEVEL_TIMEOUT_S)  # warm-up, not measured
        for concurrency in args.levels:
            plan = make_plan(texts, requests_at(args, concurrency), seed=concurrency)
            row = drive_httpx(server.url, plan, concurrency, LEVEL_TIMEOUT_S)
            row.update(mode=mode, concurrency=concurrency, round=round_index)
            rows.append(row)
            say(
                f"round {round_index} {mode:12s} c={concurrency:<3d} {row['requests_per_s']:7.1f} req/s "
                f"{row['sentences_per_s']:7.1f} sent/s  p50 {row['p50_ms']:7.1f} ms  "
                f"p99 {row['p99_ms']:7.1f} ms  errors {row['errors']}"
            )
    finally:
        code = server.stop()
        if code != 0:
            say(f"warning: server exited with {code} after SIGTERM; see {args.work / 'server.log'}")
    return rows


def run_rounds(bundle: Path, texts: list[str], args: argparse.Namespace) -> list[dict]:
    runs = []
    for round_index in range(args.rounds):
        plan = make_plan(texts, requests_at(args, args.levels[0]), 1)
        row = run_offline(bundle, args, make_plan(texts, 32, 99), plan)
        row.update(mode=OFFLINE, concurrency=1, round=round_index)
        runs.append(row)
        say(f"round {round_index} offline      c=1   {row['requests_per_s']:7.1f} req/s  p50 {row['p50_ms']:7.1f} ms")
        order = list(args.modes) if round_index % 2 == 0 else list(reversed(args.modes))
        for mode in order:
            runs += one_mode(bundle, mode, texts, args, round_index)
    return runs


def best_cells(runs: list[dict], modes: list[str]) -> list[dict]:
    """Each (mode, concurrency) cell's best round by requests/s."""
    best = []
    for mode in (OFFLINE, *modes):
        for concurrency in sorted({r["concurrency"] for r in runs if r["mode"] == mode}):
            cell = [r for r in runs if r["mode"] == mode and r["concurrency"] == concurrency]
            best.append(max(cell, key=lambda r: r["requests_per_s"]))
    return best


def markdown(result: dict) -> str:
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
    return "\n".join(lines) + "\n"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=None, help="artefact cache (default: benchmarks/.cache)")
    parser.add_argument("--bundle", type=Path, default=None, help="use this bundle instead of the stand-in")
    parser.add_argument("--data", type=Path, default=workload.sts_file())
    parser.add_argument("--precision", default="int8", help="served variant (default int8, the CPU default)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--concurrency", default="1,16,64")
    parser.add_argument("--requests", type=int, default=0, help="requests per level (default: 40 + 3 x concurrency)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", type=Path, default=report.RESULTS)
    parser.add_argument("--modes", default="batching,no-batching", help=f"of {', '.join(MODES)}")
    parser.add_argument("--name", default=None, help="results file name (default: serve_PRECISION)")
    report.add_quick(parser)
    args = parser.parse_args()
    report.quick(args, concurrency="1,4", requests=8, rounds=1)
    args.modes = args.modes.split(",")
    unknown = [mode for mode in args.modes if mode not in MODES]
    if unknown:
        parser.error(f"unknown modes {unknown}; choose from {', '.join(MODES)}")
    args.levels = [int(level) for level in args.concurrency.split(",")]
    args.work = artifacts.work_dir("dmetasoul", args.work)
    return args


def main() -> int:
    args = parse_args()
    found = workload.sentences(args.data)
    if args.bundle is not None:
        bundle, model = args.bundle, str(args.bundle)
    else:
        standin = artifacts.Standin(args.work)
        bundle, model = standin.ensure_bundle(), standin.describe()
    (args.work / "server.log").unlink(missing_ok=True)
    started = report.stamp()
    host = {"cpu": started["cpu"], "cores": started["usable_cores"], "load_average_at_start": started["load_average"]}
    runs = run_rounds(bundle, found.texts, args)
    result = {
        "command": " ".join(["python benchmarks/serve_bench.py", *sys.argv[1:]]),
        "model": model,
        "data": found.source,
        "precision": args.precision,
        "threads": args.threads,
        "rounds": args.rounds,
        "modes": {
            OFFLINE: "the same requests, Encoder.encode one after another in one process (no HTTP)",
            **{mode: " ".join(MODES[mode]) or "(defaults)" for mode in args.modes},
        },
        "machine": host,
        "best": best_cells(runs, args.modes),
        "runs": runs,
    }
    report.write(args.out, args.name or f"serve_{args.precision}", result, markdown(result))
    return 1 if any(row["errors"] for row in runs) else 0


if __name__ == "__main__":
    sys.exit(main())
