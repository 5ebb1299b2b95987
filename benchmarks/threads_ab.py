"""Session settings A/B on one bundle: one 2-thread session, the same without spinning, or two 1-thread
sessions fed by two Python threads (ONNX Runtime releases the GIL). Times the engine only (no
tokenization), alternating the modes in fresh processes, best of ``--rounds`` passes each.

    python benchmarks/threads_ab.py BUNDLE [--precision int8] [--texts 512] [--repeats 2]
    python benchmarks/threads_ab.py BUNDLE --quick     # smoke run: 64 texts, one pass, one repeat

Prints a table (no results file) and the stamp of what it ran on.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from harness import report, workload

MODES = ("one-2-thread-session", "one-2-thread-session-no-spin", "two-1-thread-sessions")


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
    parser.add_argument("--mode", choices=MODES, help=argparse.SUPPRESS)  # one measurement, in a child
    report.add_quick(parser)
    args = parser.parse_args()
    report.quick(args, texts=64, rounds=1, repeats=1)
    if args.mode:
        print(measure(args.bundle, args.precision, args.mode, args.texts, args.rounds))
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
