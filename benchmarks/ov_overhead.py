"""What embedrt's OpenVINO path costs over OpenVINO used directly, measured in ONE process.

Separate processes (``compare_cpu.py``) vary by 5-10% from one to the next on a shared VM, more than the
difference being measured. Here embedrt's ``Encoder`` (OpenVINO int8) and the hand-written loop of
``engines.py`` (on embedrt's own int8 IR, and on NNCF's default int8 IR of the same graph) share one
process, its warm caches and its CPU state: throughput passes alternate between them, and batch-1 calls
are interleaved text by text, in alternating order.

    python benchmarks/compare_cpu.py --engines ov-direct-int8    # once: builds the bundle and NNCF's IR
    python benchmarks/ov_overhead.py [--rounds 5] [--threads 2]   # results/ov_overhead.{md,json}
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from compare_cpu import DEFAULT_DATA, load_texts
from embedrt import Encoder
from embedrt.tools.bench import machine_facts, percentile
from engines import OV_DIRECT, _ov_direct

RESULTS = Path(__file__).parent / "results"
#: The hand-written loop on embedrt's int8 IR: isolates the runtime from the recipe.
OV_DIRECT["ov-direct-embedrt-ir"] = ("bundle/openvino/model_int8.xml", "f32")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path.home() / ".cache" / "embedrt-bench")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()

    texts, described = load_texts(args.data, 1000)
    encoder = Encoder.load(args.work / "bundle", precision="int8", engine="openvino", threads=args.threads)
    rows: dict[str, Callable[[list[str], int], object]] = {
        "embedrt Encoder, OpenVINO int8": lambda batch, size: encoder.encode(batch, batch_size=size),
        "OpenVINO directly, embedrt's int8 IR": _ov_direct("ov-direct-embedrt-ir", args.work, args.threads),
        "OpenVINO directly, NNCF default int8 IR": _ov_direct("ov-direct-int8", args.work, args.threads),
    }
    throughput: dict[str, list[float]] = {name: [] for name in rows}
    batch1: dict[str, list[float]] = {name: [] for name in rows}
    for run in rows.values():  # warm-up: every input shape once
        run(texts, args.batch_size)
    for attempt in range(args.rounds):
        order = list(rows.items()) if attempt % 2 == 0 else list(rows.items())[::-1]
        for name, run in order:
            start = time.perf_counter()
            run(texts, args.batch_size)
            throughput[name].append(len(texts) / (time.perf_counter() - start))
        for text in texts[:200]:
            for name, run in order:
                start = time.perf_counter()
                run([text], 1)
                batch1[name].append((time.perf_counter() - start) * 1e3)

    reference = "OpenVINO directly, NNCF default int8 IR"
    summary = {
        name: {
            "sentences_per_s_median": float(np.median(throughput[name])),
            "batch1_ms": {f"p{q}": percentile(sorted(batch1[name]), q) for q in (50, 95, 99)},
        }
        for name in rows
    }
    machine = machine_facts()
    lines = [
        f"# embedrt's OpenVINO path against OpenVINO used directly, one process ({args.rounds} alternated rounds)",
        "",
        f"Machine: {machine['cpu']} ({machine['isa']}), {args.threads} threads. Workload: {described}, "
        f"batch {args.batch_size}; batch-1: 200 texts x {args.rounds}, interleaved text by text.",
        "",
        "| row | sentences/s (median) | x reference | batch-1 p50 ms | p95 ms | p99 ms | p50 x reference |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, row in summary.items():
        speed = row["sentences_per_s_median"] / summary[reference]["sentences_per_s_median"]
        p50 = row["batch1_ms"]["p50"] / summary[reference]["batch1_ms"]["p50"]
        ms = row["batch1_ms"]
        lines.append(
            f"| {name} | {row['sentences_per_s_median']:.0f} | {speed:.3f} | {ms['p50']:.2f} | {ms['p95']:.2f} "
            f"| {ms['p99']:.2f} | {p50:.3f} |"
        )
    lines.append(f"\nReference: {reference}.")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "ov_overhead.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    record = {"machine": machine, "summary": summary, "throughput": throughput, "batch1_ms": batch1}
    (RESULTS / "ov_overhead.json").write_text(json.dumps(record, indent=1), encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
