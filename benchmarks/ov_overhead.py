"""What embedrt's OpenVINO path costs over OpenVINO used directly, measured in ONE process.

Separate processes (``compare_cpu.py``) vary by 5-10% from one to the next on a shared VM, more than the
difference being measured. Here five rows share one process, its warm caches and its CPU state:
throughput passes alternate between them, and batch-1 calls are interleaved text by text, in alternating
order. The rows take the difference apart:

1. embedrt's ``Encoder`` (OpenVINO int8);
2. the hand-written loop of ``engines.py`` on embedrt's IR with embedrt's settings (1 vs 2: the runtime);
3. the same loop on NNCF's default IR of the same graph, same settings (2 vs 3: the quantization recipe);
4. that loop with OpenVINO's defaults, the reference (3 vs 4: fused attention off, for batch invariance);
5. embedrt's ``Encoder`` with ``batch_invariant=False`` (OpenVINO's fused attention, as the reference);
6. embedrt's ``Encoder`` with ``buckets=True``: fused attention, kept batch-invariant by length buckets.

embedrt's rows run with ``streams=1``, as the loops do: this script measures the runtime's own cost
(``threads_ab.py --cores`` measures streams).

Each row's vectors of every text alone are also compared with the same texts encoded in batches of 32.

    python benchmarks/compare_cpu.py --engines ov-direct-int8    # once: builds the bundle and NNCF's IR
    python benchmarks/ov_overhead.py [--rounds 8] [--threads 2]   # results/ov_overhead.{md,json}
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
from embedrt.export.validate import cosine_rows
from embedrt.runtime.backends.openvino import OpenVinoSettings
from embedrt.tools.bench import machine_facts, percentile
from engines import OV_DIRECT, _ov_direct

RESULTS = Path(__file__).parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path.home() / ".cache" / "embedrt-bench")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()

    texts, described = load_texts(args.data, 1000)
    # Rows 2 and 3 compile with exactly what embedrt's backend passes for its int8 variant.
    embedrt_config = OpenVinoSettings(threads=args.threads, batch_invariant=True).compile_config()
    OV_DIRECT["ov-direct-embedrt-ir"] = ("bundle/openvino/model_int8.xml", "f32", embedrt_config)
    OV_DIRECT["ov-direct-int8-unfused"] = (OV_DIRECT["ov-direct-int8"][0], "f32", embedrt_config)
    options = {"precision": "int8", "engine": "openvino", "threads": args.threads, "streams": 1}
    encoder = Encoder.load(args.work / "bundle", **options)
    fused = Encoder.load(args.work / "bundle", batch_invariant=False, **options)
    bucketed = Encoder.load(args.work / "bundle", buckets=True, **options)
    rows: dict[str, Callable[[list[str], int], object]] = {
        "embedrt Encoder, OpenVINO int8": lambda batch, size: encoder.encode(batch, batch_size=size),
        "OpenVINO directly, embedrt's IR and settings": _ov_direct("ov-direct-embedrt-ir", args.work, args.threads),
        "OpenVINO directly, NNCF default IR, fused attention off": _ov_direct(
            "ov-direct-int8-unfused", args.work, args.threads
        ),
        "OpenVINO directly, NNCF default IR, OpenVINO defaults": _ov_direct("ov-direct-int8", args.work, args.threads),
        "embedrt Encoder, batch_invariant=False": lambda batch, size: fused.encode(batch, batch_size=size),
        "embedrt Encoder, length buckets (fused attention)": lambda batch, size: bucketed.encode(
            batch, batch_size=size
        ),
    }
    throughput: dict[str, list[float]] = {name: [] for name in rows}
    batch1: dict[str, list[float]] = {name: [] for name in rows}
    invariance = {}
    for name, run in rows.items():  # warm-up (every input shape once), and batch invariance
        batched = np.asarray(run(texts, args.batch_size))
        alone = np.stack([np.asarray(run([text], 1))[0] for text in texts])
        cos = cosine_rows(alone, batched)
        invariance[name] = {
            "min_cos": float(cos.min()),
            "below_0.99999": int((cos < 0.99999).sum()),
            "bit_identical": int((alone == batched).all(axis=1).sum()),
        }
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

    reference = "OpenVINO directly, NNCF default IR, OpenVINO defaults"
    summary = {
        name: {
            "sentences_per_s_median": float(np.median(throughput[name])),
            "batch1_ms": {f"p{q}": percentile(sorted(batch1[name]), q) for q in (50, 95, 99)},
            "alone_vs_batched": invariance[name],
        }
        for name in rows
    }
    machine = machine_facts()
    lines = [
        f"# embedrt's OpenVINO path against OpenVINO used directly, one process ({args.rounds} alternated rounds)",
        "",
        f"Machine: {machine['cpu']} ({machine['isa']}), {args.threads} threads, load average "
        f"{Path('/proc/loadavg').read_text().split()[:3]} at the end. Workload: {described}, "
        f"batch {args.batch_size}; batch-1: 200 texts x {args.rounds}, interleaved text by text. Alone vs "
        f"batched: each of the {len(texts)} texts encoded alone against the same text in the batch-{args.batch_size} "
        "pass (length-sorted batches).",
        "",
        "| row | sentences/s (median) | x reference | batch-1 p50 ms | p95 ms | p99 ms | p50 x reference "
        "| alone vs batched: bit-identical | below cos 0.99999 | min cos |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, row in summary.items():
        speed = row["sentences_per_s_median"] / summary[reference]["sentences_per_s_median"]
        p50 = row["batch1_ms"]["p50"] / summary[reference]["batch1_ms"]["p50"]
        ms = row["batch1_ms"]
        lines.append(
            f"| {name} | {row['sentences_per_s_median']:.0f} | {speed:.3f} | {ms['p50']:.2f} | {ms['p95']:.2f} "
            f"| {ms['p99']:.2f} | {p50:.3f} | {row['alone_vs_batched']['bit_identical']} "
            f"| {row['alone_vs_batched']['below_0.99999']} | {row['alone_vs_batched']['min_cos']:.7f} |"
        )
    lines.append(f"\nReference: {reference}.")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "ov_overhead.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    record = {"machine": machine, "summary": summary, "throughput": throughput, "batch1_ms": batch1}
    (RESULTS / "ov_overhead.json").write_text(json.dumps(record, indent=1), encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
