"""How much of its CPU `embedrt serve` spends on the work itself: served sentences per server CPU-second,
against offline ``Encoder.encode`` of the same sentences.

    python benchmarks/serve_cpu.py                       # ~10 minutes on 2 cores
    python benchmarks/serve_cpu.py --rounds 1 --clients 16 --requests 5
    python benchmarks/serve_cpu.py --quick               # smoke run: 4 clients x 2 requests, one round

Load: ``--clients`` concurrent clients (64), each sending ``--requests`` (20) OpenAI ``/v1/embeddings``
requests of 1-8 sentences drawn from Chinese STS-B (``../shared/data/sts_zh_dev.tsv``, else embedrt's
built-in workload), over keep-alive connections from a raw-socket asyncio client that costs little CPU.
The server's CPU is read from ``/proc/PID/stat`` (user + system) around the load, after warm-up; the
client's own CPU does not count. Offline: the same sentences through ``Encoder.encode(batch_size=32)`` in
a fresh process (``time.process_time``), with the library's defaults (ONNX Runtime spinning on) and with
spinning off. Servers: this checkout, and ``--before REF`` (the server as it was before the efficiency
work, its ``src/`` extracted with ``git archive``) for the before/after table; base64 and float responses;
result cache off (``--cache-size 0``) for the efficiency figure, and one run with the cache on, on FAQ-like
traffic (requests drawn from 200 distinct questions). Variants alternate in each of ``--rounds`` rounds;
each keeps its best round. Writes ``results/serve_cpu.json`` and ``results/serve_cpu.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
from pathlib import Path

from harness import artifacts, offline, report, workload
from harness.load import drive_raw
from harness.server import Server, cpu_seconds, source_of
from harness.timing import alternate
from harness.workload import REPO, say

#: The last commit whose server predates the efficiency work (FastAPI, fixed-size batches, spinning on).
BEFORE = "6de1a3e"
OFFLINE_ROWS = {"offline": True, "offline, spinning off": False}


def make_plan(pool: list[str], clients: int, requests: int, fmt: str, seed: int = 1) -> list[list[dict]]:
    rng = random.Random(seed)
    return [
        [{"input": rng.sample(pool, rng.randint(1, 8)), "encoding_format": fmt} for _ in range(requests)]
        for _ in range(clients)
    ]


def serve(src: Path, bundle: Path, plan: list[list[dict]], flags: list[str], log: Path) -> dict:
    """Start a server from ``src``, warm it up, measure its CPU over the load, stop it."""
    log.unlink(missing_ok=True)
    # Each server as shipped decides TOKENIZERS_PARALLELISM.
    with Server(bundle, flags, log, src=src, env={"TOKENIZERS_PARALLELISM": None}) as server:
        drive_raw(server.port, plan[:4])  # a few requests first: lazily built paths, first shapes
        before = cpu_seconds(server.pid)
        result = drive_raw(server.port, plan)
        result["server_cpu_s"] = cpu_seconds(server.pid) - before
        if "--cache-size" not in flags:
            result["cache_hits"] = server.cache_hits()
        return result


def run_offline(bundle: Path, texts: list[str], spin: bool, work: Path) -> float:
    path = work / "offline_texts.json"
    path.write_text(json.dumps(texts, ensure_ascii=False), encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "TOKENIZERS_PARALLELISM": "false"}
    command = offline.command("cpu", bundle, "on" if spin else "off", path)
    done = subprocess.run(command, capture_output=True, text=True, check=True, env=env)
    return json.loads(done.stdout.strip().splitlines()[-1])["cpu_s"]


def variants(before_src: Path, pool: list[str], args: argparse.Namespace) -> dict[str, tuple[Path, list, list]]:
    """name -> (sources, plan, flags). A "before" that already had the result cache measures with it off."""
    plans = {fmt: make_plan(pool, args.clients, args.requests, fmt) for fmt in ("base64", "float")}
    faq = make_plan(random.Random(7).sample(pool, 200), args.clients, args.requests, "base64", seed=2)
    settings = (before_src / "embedrt/server/settings.py").read_text()
    before_flags = ["--cache-size", "0"] if "cache_size" in settings else []
    after = REPO / "src"
    return {
        "before, base64": (before_src, plans["base64"], before_flags),
        "after, base64": (after, plans["base64"], ["--cache-size", "0"]),
        "before, float": (before_src, plans["float"], before_flags),
        "after, float": (after, plans["float"], ["--cache-size", "0"]),
        "after, cache on, FAQ traffic": (after, faq, []),
    }


def run_rounds(bundle: Path, found: dict, texts: list[str], args: argparse.Namespace) -> dict[str, list[dict]]:
    runs: dict[str, list[dict]] = {name: [] for name in [*found, *OFFLINE_ROWS]}
    for round_ in range(args.rounds):
        for name, spin in OFFLINE_ROWS.items():
            runs[name].append({"cpu_s": run_offline(bundle, texts, spin, args.work)})
        for name in alternate(list(found), round_):
            src, plan, flags = found[name]
            say(f"round {round_ + 1}: {name}")
            runs[name].append(serve(src, bundle, plan, flags, args.work / "serve.log"))
    return runs


def rows(runs: dict[str, list[dict]], found: dict, sentences: int) -> list[dict]:
    """Each variant at its best round (least CPU), against offline with the library's defaults."""
    best_offline = min(run["cpu_s"] for run in runs["offline"])
    out = []
    for name, results in runs.items():
        best = min(results, key=lambda r: r.get("server_cpu_s", r.get("cpu_s")))
        cpu = best.get("server_cpu_s", best.get("cpu_s"))
        count = sum(len(b["input"]) for bodies in found[name][1] for b in bodies) if name in found else sentences
        out.append(
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
    return out


def markdown(result: dict, bundle: Path) -> str:
    machine = result["machine"]
    lines = [
        f"# Server CPU efficiency ({result['workload']}; {bundle.name})",
        "",
        f"Machine: {machine['cpu']} ({machine['isa']}), {machine['usable_cores']} cores.",
        "",
        "| variant | CPU-s | sentences | sentences / CPU-s | x offline | p50 ms | p99 ms | errors | CPU-s per round |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in result["rows"]:
        lines.append(
            f"| {row['variant']} | {row['cpu_s']} | {row['sentences']} | {row['sentences_per_cpu_s']} | "
            f"{row['vs_offline']} | {row.get('p50_ms', '')} | {row.get('p99_ms', '')} | {row.get('errors', '')} | "
            f"{', '.join(map(str, row['rounds']))} |"
        )
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--requests", type=int, default=20, help="requests per client")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--before", default=BEFORE, help="git ref of the server to compare with")
    parser.add_argument("--work", type=Path, default=None, help="artefact cache (default: benchmarks/.cache)")
    parser.add_argument("--out", type=Path, default=report.RESULTS, help="results folder")
    report.add_quick(parser)
    args = parser.parse_args()
    report.quick(args, clients=4, requests=2, rounds=1)
    args.work = artifacts.work_dir("minilm", args.work)

    from embedrt.tools.bench import machine_facts

    bundle = artifacts.minilm_bundle(args.work)
    before_src, _ = source_of(args.before, args.work)
    pool = workload.sentences()
    found = variants(before_src, pool.texts, args)
    texts = [text for bodies in found["after, base64"][1] for body in bodies for text in body["input"]]
    runs = run_rounds(bundle, found, texts, args)
    result = {
        "machine": machine_facts(),
        "bundle": str(bundle),
        "workload": f"{args.clients} clients x {args.requests} requests of 1-8 sentences from {pool.source}",
        "before": args.before,
        "rows": rows(runs, found, len(texts)),
    }
    text = markdown(result, bundle)
    report.write(report.results_dir(args), "serve_cpu", result, text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
