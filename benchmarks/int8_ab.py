"""ONNX Runtime's static (batch-invariant) int8 against the old dynamic int8 and OpenVINO, in ONE process.

On the full-size DMetaSoul stand-in (real bert-base-chinese vocabulary when ``../shared`` has it) and the
Chinese STS-B sentences, rows alternate in every round, batch-1 calls interleave text by text:

1. embedrt ONNX Runtime int8, static scales (the default ONNX Runtime int8 since issue 20);
2. embedrt ONNX Runtime int8, dynamic scales (the recipe before; ``--int8-recipe dynamic``, run with
   ``batch_invariant=False``, the only way the runtime still opens it);
3. what ``Encoder.load(bundle)`` picks on a bundle exported with no flags where OpenVINO is installed
   (OpenVINO static int8, attention unfused);
4. OpenVINO used directly on NNCF's default int8 IR with OpenVINO's defaults (``compare_cpu.py``'s peer);
5. row 3 with ``buckets=True``: length buckets, OpenVINO's fused attention kept (``runtime/batching.py``).

Throughput feeds one batch a call, so no row runs streams (row 5 is pinned to one: its buckets split a batch).

For each row, also the lowest cosine between a text embedded alone and the same text inside random
batches of random size (1-32), padded to random extra widths. Writes ``results/int8_ab.{md,json}``
stamped with the commit.

    python benchmarks/int8_ab.py [--rounds 6] [--threads 2]     # ~10 minutes on 2 cores, first run ~5 more
    python benchmarks/int8_ab.py --quick                        # smoke run: 64 texts, one round, 4 trials
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from embedrt import Encoder
from embedrt.export.validate import cosine_rows
from embedrt.runtime.encoder import EncodedBatch
from embedrt.tools.bench import machine_facts
from engines import ov_direct
from harness import artifacts, report, workload
from harness.timing import Encode, alternate, interleaved_batch1, percentiles_ms

REFERENCE = "ONNX Runtime int8, dynamic (before)"
DIRECT = "OpenVINO directly, NNCF default int8 IR, OpenVINO defaults"


def worst_alone_vs_batch(encoder: Encoder, texts: list[str], trials: int, seed: int = 0) -> dict:
    """Lowest cosine of a text alone vs inside a random batch (1-32 rows) padded 0-32 columns wider.

    With length buckets a text's width is its bucket's by contract: the batch is ``encode``'s, unwidened."""
    rng = np.random.default_rng(seed)
    encodings = encoder.tokenize(texts)
    worst, identical = 1.0, 0
    for _ in range(trials):
        rows = rng.choice(len(texts), size=min(len(texts), int(rng.integers(1, 33))), replace=False)
        if encoder.buckets is not None:  # a text's width is its bucket's by contract: encode's batch, unwidened
            together = encoder.encode([texts[row] for row in rows], batch_size=32)
        else:
            (batch,) = encoder.pack([encodings[row] for row in rows], [np.arange(len(rows))])
            extra = int(rng.integers(0, 33))
            wide = {name: np.pad(value, ((0, 0), (0, extra))) for name, value in batch.inputs.items()}
            together = encoder.run_batch(EncodedBatch(batch.positions, wide))
        alone = encoder.encode([texts[row] for row in rows], batch_size=1)
        worst = min(worst, float(cosine_rows(alone, together).min()))
        identical += int((alone == together).all(axis=1).sum())
    return {"min_cos": worst, "bit_identical_rows": identical}


def encoders(standin: artifacts.Standin, threads: int) -> dict[str, Encoder]:
    """The embedrt rows: static int8, the old dynamic int8, and what a no-flag ``Encoder.load`` picks."""
    found = {
        "ONNX Runtime int8, static (now)": Encoder.load(standin.bundle, "int8", engine="onnxruntime", threads=threads),
        REFERENCE: Encoder.load(standin.dynamic, "int8", threads=threads, batch_invariant=False),
    }
    auto = Encoder.load(standin.bundle, threads=threads)
    found[f"Encoder.load(bundle) default: {auto.variant}"] = auto
    found[f"Encoder.load(bundle, buckets=True): {auto.variant}"] = Encoder.load(
        standin.bundle, threads=threads, buckets=True, streams=1
    )
    return found


def measure(rows: dict[str, Encode], texts: list[str], chunks: list[list[str]], args: argparse.Namespace):
    """Rows alternate batch by batch and text by text, so each pair of timings shares the machine's load."""
    for run in rows.values():
        run(texts, args.batch_size)  # warm-up: every input shape once
    throughput: dict[str, list[float]] = {name: [] for name in rows}
    batch1: dict[str, list[float]] = {name: [] for name in rows}
    for attempt in range(args.rounds):
        order = alternate(list(rows.items()), attempt)
        spent = dict.fromkeys(rows, 0.0)
        for chunk in chunks:
            for name, run in order:
                start = time.perf_counter()
                run(chunk, args.batch_size)
                spent[name] += time.perf_counter() - start
        for name in rows:
            throughput[name].append(len(texts) / spent[name])
        interleaved_batch1(order, texts[attempt * 50 : attempt * 50 + 150], batch1)
    return throughput, batch1


def summarize(rows: dict, throughput: dict, batch1: dict, invariance: dict) -> dict:
    return {
        name: {
            "sentences_per_s_median": float(np.median(throughput[name])),
            "batch1_ms": percentiles_ms(batch1[name]),
            # Medians of paired ratios (round by round, text by text): robust to load that drifts.
            "throughput_x_reference": float(np.median(np.divide(throughput[name], throughput[REFERENCE]))),
            "batch1_x_reference": float(np.median(np.divide(batch1[name], batch1[REFERENCE]))),
            "alone_vs_batch": invariance.get(name),
        }
        for name in rows
    }


def markdown(args: argparse.Namespace, described: str, summary: dict) -> str:
    machine = machine_facts()
    lines = [
        f"# ONNX Runtime static int8 against the old dynamic int8 and OpenVINO, one process ({args.rounds} rounds)",
        "",
        f"Commit {report.commit()}, {time.strftime('%Y-%m-%d %H:%M')} UTC. Machine: {machine['cpu']} "
        f"({machine['isa']}), {args.threads} threads, load average {Path('/proc/loadavg').read_text().split()[:3]} "
        f"at the end (other work shared the cores: compare the ratios). Workload: {described}, batch "
        f"{args.batch_size} (length-sorted batches, rows alternated batch by batch); batch-1: texts interleaved "
        f"row by row. Alone vs batch: {args.trials} random batches "
        "of 1-32 texts padded 0-32 columns wider, every row against the same text alone.",
        "",
        "| row | sentences/s (median) | throughput x dynamic (median of paired rounds) | batch-1 p50 ms | p95 ms "
        "| batch-1 time x dynamic (median of paired calls) | alone vs batch: min cos | bit-identical rows |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, row in summary.items():
        ms, same = row["batch1_ms"], row["alone_vs_batch"]
        lines.append(
            f"| {name} | {row['sentences_per_s_median']:.0f} | {row['throughput_x_reference']:.3f} "
            f"| {ms['p50']:.2f} | {ms['p95']:.2f} | {row['batch1_x_reference']:.3f} "
            + (f"| {same['min_cos']:.7f} | {same['bit_identical_rows']} |" if same else "| | |")
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = report.one_process_parser(__doc__, rounds=6)
    parser.add_argument("--trials", type=int, default=40, help="random batches per row for alone vs batch")
    args = parser.parse_args()
    report.quick(args, rounds=1, trials=4, limit=64)

    standin = artifacts.Standin(artifacts.work_dir("dmetasoul", args.work))
    standin.ensure_dynamic()
    standin.ensure_ov_direct_int8(in_child=False)
    found = workload.sentences(args.data, getattr(args, "limit", 1000))
    texts = found.texts
    embedrt_rows = encoders(standin, args.threads)
    rows: dict[str, Encode] = {
        name: (lambda batch, size, e=encoder: e.encode(batch, batch_size=size))
        for name, encoder in embedrt_rows.items()
    }
    rows[DIRECT] = ov_direct("ov-direct-int8", standin.work, args.threads)
    invariance = {name: worst_alone_vs_batch(encoder, texts, args.trials) for name, encoder in embedrt_rows.items()}
    auto = list(embedrt_rows.values())[-1]
    lengths = [len(encoding.ids) for encoding in auto.tokenize(texts)]
    ordered = [texts[i] for i in np.argsort(lengths, kind="stable")]
    chunks = [ordered[i : i + args.batch_size] for i in range(0, len(ordered), args.batch_size)]
    throughput, batch1 = measure(rows, texts, chunks, args)
    summary = summarize(rows, throughput, batch1, invariance)
    text = markdown(args, found.source, summary)
    record = {"commit": report.commit(), "machine": machine_facts(), "summary": summary}
    record |= {"throughput": throughput, "batch1_ms": batch1}
    report.write(report.results_dir(args), "int8_ab", record, text)
    print(text)


if __name__ == "__main__":
    main()
