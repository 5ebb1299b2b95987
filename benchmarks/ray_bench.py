"""Rows/s of `embedrt embed-file` (one process) against `embed_dataset` on Ray with 1 and 2 workers.

Builds the DMetaSoul student stand-in (real Chinese vocabulary when /work/shared has it), exports it,
writes ROWS sentences (Chinese STS-B dev sentences repeated) as Parquet, then runs each engine in its
own process, alternating engines round by round so machine noise hits them alike. Wall time counts
what a job pays: process or actor start, bundle load, read, embed, write (not `ray.init`).

    python benchmarks/ray_bench.py --rows 20000 --rounds 1

Writes benchmarks/results/ray_<date>.json and prints a table. Needs embedrt[export,ray].
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
VOCAB = Path("/work/shared/data/bert-base-chinese-vocab.txt")
STS = Path("/work/shared/data/sts_zh_dev.tsv")
ENGINES = {
    "embed-file, 1 process x 2 threads": ("file", 1, 2),
    "ray, 1 worker x 2 threads": ("ray", 1, 2),
    "ray, 2 workers x 1 thread": ("ray", 2, 1),
}


def sentences() -> list[str]:
    if STS.is_file():
        out = []
        for line in STS.read_text(encoding="utf-8").splitlines():
            parts = line.split("\t")
            if len(parts) >= 2:
                out.extend(parts[:2])
        return out
    from embedrt.export.sentences import PARITY_SENTENCES

    return list(PARITY_SENTENCES)


def prepare(work: Path, rows: int, bundle: str | None) -> tuple[Path, Path, Path]:
    """Bundle, one Parquet file for embed-file, and the same rows as 20 files for Ray (20 blocks)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    base = sentences()
    texts = [base[i % len(base)] for i in range(rows)]
    table = pa.table({"id": list(range(rows)), "text": texts})
    single = work / "input.parquet"
    pq.write_table(table, single)
    parts = work / "input_parts"
    parts.mkdir()
    step = max(1, -(-rows // 20))
    for n, start in enumerate(range(0, rows, step)):
        pq.write_table(table.slice(start, step), parts / f"part-{n:03d}.parquet")
    if bundle:
        return Path(bundle), single, parts
    code = (
        "import sys; from embedrt.export.standin import DMETASOUL_STUDENT, build_standin; "
        "from embedrt.export import export_bundle; "
        "vocab = sys.argv[3] if sys.argv[3] != '-' else None; "
        "d = build_standin(sys.argv[1], DMETASOUL_STUDENT, vocab_file=vocab); export_bundle(str(d), sys.argv[2])"
    )
    target = work / "bundle"
    vocab = str(VOCAB) if VOCAB.is_file() else "-"
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-c", code, str(work / "model"), str(target), vocab],
        check=True,
        capture_output=True,
        timeout=900,
    )
    print(f"exported the stand-in in {time.perf_counter() - started:.0f} s (vocab: {vocab})", file=sys.stderr)
    return target, single, parts


def run_file(bundle: Path, single: Path, work: Path, threads: int, precision: str) -> dict:
    out = work / "out_file.parquet"
    started = time.perf_counter()
    cmd = [sys.executable, "-m", "embedrt.cli", "embed-file", str(bundle), str(single), "-o", str(out)]
    cmd += ["--threads", str(threads), "--precision", precision]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    wall = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(result.stderr)
    return {"wall_s": wall, "summary": result.stderr.strip().splitlines()[-1]}


def child_ray(args: argparse.Namespace) -> None:
    """One Ray pipeline in this process: read_parquet -> embed_dataset -> write_parquet."""
    import ray
    from embedrt.ray import embed_dataset

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    started = time.perf_counter()
    ds = ray.data.read_parquet(args.parts)
    ds = embed_dataset(
        ds, args.bundle, precision=args.precision, concurrency=args.workers, threads_per_worker=args.threads
    )
    ds.write_parquet(args.out)
    wall = time.perf_counter() - started
    ray.shutdown()
    print(json.dumps({"wall_s": wall}))


def run_ray(bundle: Path, parts: Path, work: Path, workers: int, threads: int, precision: str) -> dict:
    out = work / f"out_ray_{workers}x{threads}_{time.time_ns()}"
    cmd = [sys.executable, __file__, "_ray", "--bundle", str(bundle), "--parts", str(parts), "--out", str(out)]
    cmd += ["--workers", str(workers), "--threads", str(threads), "--precision", precision]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    if result.returncode != 0:
        raise RuntimeError(result.stderr[-3000:])
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", nargs="?", default="bench", choices=("bench", "_ray"))
    parser.add_argument("--rows", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--precision", default="int8")
    parser.add_argument("--bundle", default=None, help="reuse an exported bundle instead of building the stand-in")
    parser.add_argument("--output", default=str(HERE / "results" / f"ray_{time.strftime('%Y-%m-%d')}.json"))
    parser.add_argument("--parts", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--workers", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.mode == "_ray":
        child_ray(args)
        return

    with tempfile.TemporaryDirectory(prefix="embedrt-ray-bench-") as tmp:
        work = Path(tmp)
        bundle, single, parts = prepare(work, args.rows, args.bundle)
        walls: dict[str, list[float]] = {name: [] for name in ENGINES}
        names = list(ENGINES)
        for round_ in range(args.rounds):
            order = names[round_ % len(names) :] + names[: round_ % len(names)]  # rotate who goes first
            for name in order:
                kind, workers, threads = ENGINES[name]
                if kind == "file":
                    result = run_file(bundle, single, work, threads, args.precision)
                else:
                    result = run_ray(bundle, parts, work, workers, threads, args.precision)
                walls[name].append(result["wall_s"])
                print(
                    f"round {round_ + 1}: {name}: {args.rows / result['wall_s']:.0f} rows/s ({result['wall_s']:.1f} s)",
                    file=sys.stderr,
                )
    rows_per_s = {name: [args.rows / w for w in ws] for name, ws in walls.items()}
    report = {
        "benchmark": "ray_bench",
        "rows": args.rows,
        "rounds": args.rounds,
        "precision": args.precision,
        "model": "DMetaSoul student stand-in (4 x 768, vocab 21128)" if not args.bundle else args.bundle,
        "machine": {
            "cpus": os.cpu_count(),
            "processor": platform.processor() or platform.machine(),
            "loadavg_at_end": os.getloadavg(),
        },
        "rows_per_s": {
            name: {"best": max(v), "median": statistics.median(v), "all": v} for name, v in rows_per_s.items()
        },
        "wall_s": walls,
        "note": "wall time per job includes process/actor start and bundle load, not ray.init; shared machine",
    }
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    base = report["rows_per_s"]["embed-file, 1 process x 2 threads"]["median"]
    print(f"| engine ({args.rows} rows, {args.precision}) | rows/s median | best | vs embed-file |")
    print("|---|---|---|---|")
    for name, stats in report["rows_per_s"].items():
        print(f"| {name} | {stats['median']:.0f} | {stats['best']:.0f} | {stats['median'] / base:.2f}x |")
    print(f"wrote {args.output}", file=sys.stderr)


if __name__ == "__main__":
    main()
