"""Session settings A/B on one bundle: one 2-thread session, the same without spinning, or two 1-thread
sessions fed by two Python threads (ONNX Runtime releases the GIL). Times the engine only (no
tokenization), alternating the modes in fresh processes, best of ``--rounds`` passes each.

``--cores 1,2`` measures ``Encoder.encode`` end to end instead (batch 32, the bundle's ``--engine``) in
children pinned with ``taskset`` to the first 1, then 2 cores: one stream (``streams=1``) against the
default streams (:mod:`embedrt.runtime.streams`), and writes ``results/streams.{md,json}``.

    python benchmarks/threads_ab.py BUNDLE [--precision int8] [--texts 512] [--repeats 2]
    python benchmarks/threads_ab.py BUNDLE --quick     # smoke run: 64 texts, one pass, one repeat

Prints a table (no results file; ``--cores`` writes ``streams.{md,json}``) and the stamp of what it ran on.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from harness import report, workload

MODES = ("one-2-thread-session", "one-2-thread-session-no-spin", "two-1-thread-sessions")
#: ``--cores`` modes: Encoder.encode end to end, one stream or the default streams for the cores it may use.
ENCODE_MODES = ("encode-one-stream", "encode-streams")


def measure_encode(bundle: str, precision: str, engine: str, mode: str, texts: int, rounds: int) -> float:
    """Sentences/s of ``Encoder.encode`` at batch 32 on the cores this process may use, best of ``rounds``."""
    from embedrt import Encoder

    streams = 1 if mode == "encode-one-stream" else None
    encoder = Encoder.load(bundle, precision=precision, engine=engine, streams=streams)
    sentences = workload.builtin_sentences(texts)
    best = float("inf")
    for attempt in range(rounds + 1):  # the first pass warms up (and starts the streams)
        start = time.perf_counter()
        encoder.encode(sentences, batch_size=32)
        if attempt:
            best = min(best, time.perf_counter() - start)
    return texts / best


def compare_cores(args: argparse.Namespace) -> None:
    """Each engine and mode on the first 1, 2, ... cores (taskset), alternated ``--repeats`` times, best kept."""
    cores = [int(n) for n in args.cores.split(",")]
    best: dict[str, float] = {}
    for _ in range(args.repeats):
        for engine in args.engine.split(","):
            for n in cores:
                for mode in ENCODE_MODES:
                    child = ["taskset", "-c", ",".join(str(c) for c in range(n)), sys.executable, __file__]
                    child += [args.bundle, "--precision", args.precision, "--mode", mode, "--engine", engine]
                    child += ["--texts", str(args.texts), "--rounds", str(args.rounds)]
                    done = subprocess.run(child, capture_output=True, text=True, check=True)
                    key = f"{engine} {mode} {n} cores"
                    best[key] = max(best.get(key, 0.0), float(done.stdout.strip().splitlines()[-1]))
    lines = [
        f"# Throughput against cores: one stream vs streams ({args.precision}, batch 32, Encoder.encode)",
        "",
        f"{time.strftime('%Y-%m-%d %H:%M')} UTC, {args.texts} built-in texts, best of {args.repeats} alternated "
        f"repeats x {args.rounds} passes, each in a child pinned with taskset. Load average at the end: "
        f"{os.getloadavg()[:3]} (other work shared the cores: compare ratios).",
        "",
        "| engine | mode | " + " | ".join(f"{n} cores sent/s" for n in cores) + f" | {cores[-1]} cores x 1 core |",
        "|---|---|" + "---|" * (len(cores) + 1),
    ]
    for engine in args.engine.split(","):
        for mode in ENCODE_MODES:
            rates = [best[f"{engine} {mode} {n} cores"] for n in cores]
            cells = " | ".join(f"{rate:.0f}" for rate in rates)
            lines.append(f"| {engine} | {mode} | {cells} | {rates[-1] / rates[0]:.2f} |")
    report.write(report.results_dir(args), "streams", {"sentences_per_s": best}, "\n".join(lines))
    print("\n".join(lines))


def measure(bundle: str, precision: str, mode: str, texts: int, rounds: int) -> float:
    from embedrt import Encoder
    from embedrt.runtime.backends.ort import OrtBackend, OrtSettings

    encoder = Encoder.load(bundle, precision=precision, threads=1)
    batches = encoder.batches(encoder.tokenize(workload.builtin_sentences(texts)), 32)
    path = encoder.bundle.variant_path(precision)
    if mode == "two-1-thread-sessions":
        backends = [OrtBackend(path, "cpu", OrtSettings(threads=1)) for _ in range(2)]
    else:
        backends = [OrtBackend(path, "cpu", OrtSettings(threads=2, spin=not mode.endswith("no-spin")))]
    shares = [batches[i :: len(backends)] for i in range(len(backends))]

    def run(index: int) -> None:
        for batch in shares[index]:
            backends[index].run(batch.inputs)

    best = float("inf")
    with ThreadPoolExecutor(len(backends)) as pool:
        for attempt in range(rounds + 1):  # the first pass warms up
            start = time.perf_counter()
            list(pool.map(run, range(len(backends))))
            if attempt:
                best = min(best, time.perf_counter() - start)
    return texts / best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle")
    parser.add_argument("--precision", default="int8")
    parser.add_argument("--texts", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--cores", help="e.g. 1,2: Encoder.encode pinned to that many cores, one stream vs streams")
    parser.add_argument("--engine", default="auto", help="with --cores: engines to compare, comma-separated")
    parser.add_argument("--mode", choices=MODES + ENCODE_MODES, help=argparse.SUPPRESS)  # one measurement, in a child
    parser.add_argument("--out", type=Path, help="results folder for --cores (default benchmarks/results)")
    report.add_quick(parser)
    args = parser.parse_args()
    report.quick(args, texts=64, rounds=1, repeats=1)
    if args.mode in ENCODE_MODES:
        print(measure_encode(args.bundle, args.precision, args.engine, args.mode, args.texts, args.rounds))
        return 0
    if args.mode:
        print(measure(args.bundle, args.precision, args.mode, args.texts, args.rounds))
        return 0
    if args.cores:
        compare_cores(args)
        return 0
    best = dict.fromkeys(MODES, 0.0)
    for _ in range(args.repeats):
        for mode in MODES:
            child = [sys.executable, __file__, args.bundle, "--precision", args.precision, "--mode", mode]
            child += ["--texts", str(args.texts), "--rounds", str(args.rounds)]
            done = subprocess.run(child, capture_output=True, text=True, check=True)
            best[mode] = max(best[mode], float(done.stdout.strip().splitlines()[-1]))
    for mode, rate in best.items():
        print(f"{mode:30s} {rate:8.1f} sentences/s (engine only, {args.precision})")
    print(report.stamp_line(report.stamp()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
