"""Rows/s of `embedrt embed-file` (one process) against `embed_dataset` on Ray with 1 and 2 workers.

Uses the DMetaSoul student stand-in bundle (real Chinese vocabulary when the data folder has it; built
once, ``benchmarks/.cache``, shared with ``compare_cpu.py``), writes ROWS sentences (Chinese STS-B dev
sentences repeated) as Parquet, then runs each engine in its own process, alternating engines round by
round so machine noise hits them alike. Wall time counts what a job pays: process or actor start, bundle
load, read, embed, write (not `ray.init`).

    python benchmarks/ray_bench.py --rows 20000 --rounds 1
    python benchmarks/ray_bench.py --quick            # smoke run: 400 rows

Writes benchmarks/results/ray_<date>.json and prints a table. Needs embedrt[export,ray].
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness import artifacts, report, workload
from harness.timing import rotate
from harness.workload import say

ENGINES = {
    "embed-file, 1 process x 2 threads": ("file", 1, 2),
    "ray, 1 worker x 2 threads": ("ray", 1, 2),
    "ray, 2 workers x 1 thread": ("ray", 2, 1),
}
BASELINE = "embed-file, 1 process x 2 threads"


def write_inputs(work: Path, rows: int) -> tuple[Path, Path]:
    """One Parquet file for embed-file, and the same rows as 20 files for Ray (20 blocks)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    base = workload.sentences().texts
    table = pa.table({"id": list(range(rows)), "text": [base[i % len(base)] for i in range(rows)]})
    single = work / "input.parquet"
    pq.write_table(table, single)
    parts = work / "input_parts"
    parts.mkdir()
    step = max(1, -(-rows // 20))
    for n, start in enumerate(range(0, rows, step)):
        pq.write_table(table.slice(start, step), parts / f"part-{n:03d}.parquet")
    return single, parts


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


def run_rounds(bundle: Path, args: argparse.Namespace) -> dict[str, list[float]]:
    """Each engine once a round, who goes first rotating; wall seconds per engine."""
    walls: dict[str, list[float]] = {name: [] for name in ENGINES}
    with tempfile.TemporaryDirectory(prefix="embedrt-ray-bench-") as tmp:
        work = Path(tmp)
        single, parts = write_inputs(work, args.rows)
        for round_ in range(args.rounds):
            for name in rotate(list(ENGINES), round_):
                kind, workers, threads = ENGINES[name]
                if kind == "file":
                    result = run_file(bundle, single, work, threads, args.precision)
                else:
                    result = run_ray(bundle, parts, work, workers, threads, args.precision)
                walls[name].append(result["wall_s"])
                rate = args.rows / result["wall_s"]
                say(f"round {round_ + 1}: {name}: {rate:.0f} rows/s ({result['wall_s']:.1f} s)")
    return walls


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", nargs="?", default="bench", choices=("bench", "_ray"))
    parser.add_argument("--rows", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--precision", default="int8")
    parser.add_argument("--bundle", default=None, help="reuse an exported bundle instead of building the stand-in")
    parser.add_argument("--output", default=None, help="results file (default: results/ray_DATE.json)")
    parser.add_argument("--work", type=Path, default=None, help="artefact cache (default: benchmarks/.cache)")
    parser.add_argument("--parts", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--workers", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, help=argparse.SUPPRESS)
    report.add_quick(parser)
    args = parser.parse_args()
    report.quick(args, rows=400, rounds=1)
    if args.output is None:
        folder = report.QUICK_RESULTS if args.quick else report.RESULTS
        args.output = str(folder / f"ray_{time.strftime('%Y-%m-%d')}.json")
    return args


def main() -> None:
    args = parse_args()
    if args.mode == "_ray":
        child_ray(args)
        return
    bundle = (
        Path(args.bundle)
        if args.bundle
        else artifacts.Standin(artifacts.work_dir("dmetasoul", args.work)).ensure_bundle()
    )
    walls = run_rounds(bundle, args)
    rows_per_s = {name: [args.rows / w for w in ws] for name, ws in walls.items()}
    result = {
        "benchmark": "ray_bench",
        "rows": args.rows,
        "rounds": args.rounds,
        "precision": args.precision,
        "model": "DMetaSoul student stand-in (4 x 768, vocab 21128)" if not args.bundle else args.bundle,
        "rows_per_s": {
            name: {"best": max(v), "median": statistics.median(v), "all": v} for name, v in rows_per_s.items()
        },
        "wall_s": walls,
        "note": "wall time per job includes process/actor start and bundle load, not ray.init; shared machine",
    }
    output = Path(args.output)
    report.write(output.parent, output.stem, result)
    base = result["rows_per_s"][BASELINE]["median"]
    print(f"| engine ({args.rows} rows, {args.precision}) | rows/s median | best | vs embed-file |")
    print("|---|---|---|---|")
    for name, stats in result["rows_per_s"].items():
        print(f"| {name} | {stats['median']:.0f} | {stats['best']:.0f} | {stats['median'] / base:.2f}x |")


if __name__ == "__main__":
    main()
