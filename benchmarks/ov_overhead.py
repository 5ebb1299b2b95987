"""What embedrt's OpenVINO path costs over OpenVINO used directly, measured in ONE process.

Separate processes (``compare_cpu.py``) vary by 5-10% from one to the next on a shared VM, more than the
difference being measured. Here the rows share one process, its warm caches and its CPU state:
throughput passes alternate between them, batch-1 calls are interleaved text by text, in alternating
order, and so are server-like cycles (one call of 4, 16 or 48 texts of mixed lengths, as a server's
batcher hands them over). The rows take the difference apart:

1. embedrt's ``Encoder`` (OpenVINO int8, its defaults: fused attention in length buckets);
2. the hand-written loop of ``harness.peers.ov_direct`` on embedrt's IR with embedrt's settings (1 vs 2: the
   runtime, length buckets included);
3. the same loop on NNCF's default IR of the same graph, attention unfused (2 vs 3: the recipe and the fusion);
4. that loop with OpenVINO's defaults, the reference (3 vs 4: fused attention off, for batch invariance);
5. the loop on embedrt's IR with fused attention kept and 15 masked keys added to every attention
   (``harness.peers.pad_attention_keys``): another batch-invariant way, tried for issue 20;
6. embedrt's ``Encoder`` with ``batch_invariant=False`` (OpenVINO's fused attention, as the reference);
7. embedrt's ``Encoder`` with ``buckets=False``: attention unfused (``SNIPPETS_MODE=DISABLE``), the other
   batch-invariant way, the default until length buckets took its place.

``--ladders`` times other rows instead: the reference, the default, ``buckets=False``, and the default with
the :class:`~embedrt.runtime.batching.LengthBuckets` ladder at other ``min_step`` values (the padding step of
short texts; 4 is the default), to show what the step trades between one text and bulk work.

embedrt's rows run with ``streams=1``, as the loops do: this script measures the runtime's own cost
(``threads_ab.py --cores`` measures streams).

Each row's vectors of every text alone are also compared with the same texts encoded in batches of 32.

    python benchmarks/ov_overhead.py [--rounds 8] [--threads 2]   # results/ov_overhead.{md,json}
    python benchmarks/ov_overhead.py --ladders --rounds 5         # results/ov_overhead_ladders.{md,json}
    python benchmarks/ov_overhead.py --quick                      # smoke run: 48 texts, one round
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

from embedrt import Encoder
from embedrt.export.validate import cosine_rows
from embedrt.runtime.backends.openvino import OpenVinoSettings
from embedrt.runtime.batching import LengthBuckets
from embedrt.tools.bench import machine_facts
from engines import ov_direct
from harness import artifacts, peers, report, workload
from harness.timing import Encode, alternate, elapsed_ms, interleaved_batch1, percentiles_ms

REFERENCE = "OpenVINO directly, NNCF default IR, OpenVINO defaults"
BATCH1_TEXTS = 200
#: Server-like cycles: texts per call, and calls of each size a round.
CYCLE_SIZES = (4, 16, 48)
CYCLES = 12


def rows(work: Path, threads: int) -> dict[str, Encode]:
    """The seven rows; row 2 compiles with exactly what embedrt's backend passes for its int8 variant by default
    (fused attention), row 3 with what it passes with ``buckets=False`` (attention unfused)."""
    unfused_config = OpenVinoSettings(threads=threads, batch_invariant=True).compile_config()
    fused_config = OpenVinoSettings(threads=threads).compile_config()  # what embedrt's default compiles with
    bundle = work / "bundle"
    options = {"precision": "int8", "engine": "openvino", "threads": threads, "streams": 1}
    encoder = Encoder.load(bundle, **options)
    fused = Encoder.load(bundle, batch_invariant=False, **options)
    unfused = Encoder.load(bundle, buckets=False, **options)
    tokenizer = bundle / "tokenizer.json"
    return {
        "embedrt Encoder, OpenVINO int8": lambda batch, size: encoder.encode(batch, batch_size=size),
        "OpenVINO directly, embedrt's IR and settings": peers.ov_direct(
            bundle / "openvino" / "model_int8.xml", tokenizer, threads, "f32", fused_config
        ),
        "OpenVINO directly, NNCF default IR, fused attention off": ov_direct(
            "ov-direct-int8", work, threads, unfused_config
        ),
        REFERENCE: ov_direct("ov-direct-int8", work, threads),
        "OpenVINO directly, embedrt's IR, fused + 15 masked keys": peers.ov_direct(
            bundle / "openvino" / "model_int8.xml", tokenizer, threads, "f32", fused_config, peers.pad_attention_keys
        ),
        "embedrt Encoder, batch_invariant=False": lambda batch, size: fused.encode(batch, batch_size=size),
        "embedrt Encoder, buckets=False (attention unfused)": lambda batch, size: unfused.encode(
            batch, batch_size=size
        ),
    }


#: ``min_step`` values of the ladders ``--ladders`` compares with the default's.
LADDER_STEPS = (1, 2, 8, 16)


def ladder_rows(work: Path, threads: int) -> dict[str, Encode]:
    """The reference, embedrt's default and ``buckets=False``, and the default at each of :data:`LADDER_STEPS`."""
    bundle = work / "bundle"
    options = {"precision": "int8", "engine": "openvino", "threads": threads, "streams": 1}
    encoders = {
        f"embedrt Encoder, OpenVINO int8 (ladder min_step {LengthBuckets().min_step})": Encoder.load(bundle, **options),
        "embedrt Encoder, buckets=False (attention unfused)": Encoder.load(bundle, buckets=False, **options),
    }
    for step in LADDER_STEPS:
        encoder = Encoder.load(bundle, **options)
        encoder.buckets = LengthBuckets(max_length=encoder.max_seq_length, min_step=step)
        encoders[f"embedrt Encoder, ladder min_step {step}"] = encoder
    found: dict[str, Encode] = {REFERENCE: ov_direct("ov-direct-int8", work, threads)}
    for name, encoder in encoders.items():
        found[name] = lambda batch, size, encoder=encoder: encoder.encode(batch, batch_size=size)
    return found


def alone_vs_batched(run: Encode, texts: list[str], batch_size: int) -> dict:
    """Every text alone against the same text in the batched pass (also the warm-up of every input shape)."""
    batched = np.asarray(run(texts, batch_size))
    alone = np.stack([np.asarray(run([text], 1))[0] for text in texts])
    cos = cosine_rows(alone, batched)
    return {
        "min_cos": float(cos.min()),
        "below_0.99999": int((cos < 0.99999).sum()),
        "bit_identical": int((alone == batched).all(axis=1).sum()),
    }


def server_cycles(texts: list[str], seed: int = 0) -> list[list[str]]:
    """``CYCLES`` calls of each size in ``CYCLE_SIZES``, texts drawn at random (mixed lengths, as traffic comes)."""
    rng = np.random.default_rng(seed)
    return [
        [texts[i] for i in rng.choice(len(texts), size, replace=False)] for size in CYCLE_SIZES for _ in range(CYCLES)
    ]


def measure(found: dict[str, Encode], texts: list[str], args: argparse.Namespace) -> tuple[dict, dict, dict]:
    """Full passes alternated row by row, then batch-1 and server cycles interleaved call by call, ``--rounds``
    times."""
    throughput: dict[str, list[float]] = {name: [] for name in found}
    batch1: dict[str, list[float]] = {name: [] for name in found}
    cycles: dict[str, dict[int, list[float]]] = {name: {size: [] for size in CYCLE_SIZES} for name in found}
    calls = server_cycles(texts)
    for attempt in range(args.rounds):
        order = alternate(list(found.items()), attempt)
        for name, run in order:
            start = time.perf_counter()
            run(texts, args.batch_size)
            throughput[name].append(len(texts) / (time.perf_counter() - start))
        interleaved_batch1(order, texts[:BATCH1_TEXTS], batch1)
        for call in calls:
            for name, run in order:
                cycles[name][len(call)].append(elapsed_ms(lambda run=run, call=call: run(call, len(call))))
    return throughput, batch1, cycles


def markdown(summary: dict, args: argparse.Namespace, described: str, count: int) -> str:
    machine = machine_facts()
    lines = [
        f"# embedrt's OpenVINO path against OpenVINO used directly, one process ({args.rounds} alternated rounds)",
        "",
        f"Machine: {machine['cpu']} ({machine['isa']}), {args.threads} threads, 1-minute load average "
        f"{args.load[0]:.1f} at the start, {args.load[1]:.1f} at the end (other work may share the cores). "
        f"Workload: {described}, "
        f"batch {args.batch_size}; batch-1: {min(BATCH1_TEXTS, count)} texts x {args.rounds}, interleaved text by "
        f"text. Alone vs batched: each of the {count} texts encoded alone against the same text in the "
        f"batch-{args.batch_size} pass (length-sorted batches).",
        "",
        "| row | sentences/s (median) | x reference | batch-1 p50 ms | p95 ms | p99 ms | p50 x reference "
        "| alone vs batched: bit-identical | below cos 0.99999 | min cos |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    base = summary[REFERENCE]
    for name, row in summary.items():
        speed = row["sentences_per_s_median"] / base["sentences_per_s_median"]
        ms, same = row["batch1_ms"], row["alone_vs_batched"]
        lines.append(
            f"| {name} | {row['sentences_per_s_median']:.0f} | {speed:.3f} | {ms['p50']:.2f} | {ms['p95']:.2f} "
            f"| {ms['p99']:.2f} | {ms['p50'] / base['batch1_ms']['p50']:.3f} | {same['bit_identical']} "
            f"| {same['below_0.99999']} | {same['min_cos']:.7f} |"
        )
    lines += [
        "",
        f"Server-like cycles: one call of N texts drawn at random (mixed lengths), {CYCLES} calls of each size a "
        "round, interleaved call by call; median ms per call and its ratio to the reference.",
        "",
        "| row | " + " | ".join(f"{size} texts ms | x ref" for size in CYCLE_SIZES) + " |",
        "|---|" + "---|---|" * len(CYCLE_SIZES),
    ]
    for name, row in summary.items():
        cells = [
            f"{row['cycle_ms'][size]:.2f} | {row['cycle_ms'][size] / base['cycle_ms'][size]:.3f}"
            for size in CYCLE_SIZES
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines.append(f"\nReference: {REFERENCE}.")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = report.one_process_parser(__doc__, rounds=8)
    parser.add_argument("--ladders", action="store_true", help="compare length-bucket ladders instead")
    args = parser.parse_args()
    report.quick(args, rounds=1, limit=48)
    standin = artifacts.Standin(artifacts.work_dir("dmetasoul", args.work))
    standin.ensure_ov_direct_int8()
    found = workload.sentences(args.data, getattr(args, "limit", 1000))
    texts = found.texts
    timed = (ladder_rows if args.ladders else rows)(standin.work, args.threads)
    load_at_start = os.getloadavg()[0]
    invariance = {name: alone_vs_batched(run, texts, args.batch_size) for name, run in timed.items()}
    throughput, batch1, cycles = measure(timed, texts, args)
    summary = {
        name: {
            "sentences_per_s_median": float(np.median(throughput[name])),
            "batch1_ms": percentiles_ms(batch1[name]),
            "cycle_ms": {size: float(np.median(cycles[name][size])) for size in CYCLE_SIZES},
            "alone_vs_batched": invariance[name],
        }
        for name in timed
    }
    args.load = (load_at_start, os.getloadavg()[0])
    text = markdown(summary, args, found.source, len(texts))
    record = {
        "machine": machine_facts(),
        "load_average_1min": args.load,
        "summary": summary,
        "throughput": throughput,
        "batch1_ms": batch1,
        "cycle_ms": cycles,
    }
    report.write(report.results_dir(args), "ov_overhead_ladders" if args.ladders else "ov_overhead", record, text)
    print(text)


if __name__ == "__main__":
    main()
