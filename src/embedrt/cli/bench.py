"""``embedrt bench BUNDLE``: throughput, batch-1 latency, cold start and memory of each precision, here."""

from __future__ import annotations

import argparse
import json
from typing import Any

from embedrt.cli.console import say
from embedrt.options import BATCH_SIZE, DEVICE, ENGINE_LIST, PRECISION_LIST, THREADS, add_option, whole_number


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="measure throughput, latency, cold start and memory of a bundle")
    p.add_argument("bundle")
    p.add_argument("--data", help="UTF-8 file, one text per line (default: a built-in Chinese workload)")
    add_option(p, PRECISION_LIST, help="precisions to measure (default: every variant of the bundle this CPU runs)")
    add_option(p, ENGINE_LIST, help="engines to measure them on (default: every installed engine the bundle has)")
    add_option(p, BATCH_SIZE, default=32)
    add_option(p, THREADS)
    p.add_argument(
        "--rounds",
        type=whole_number(1),
        default=3,
        metavar="N",
        help="timed passes over the data, best kept (default: 3)",
    )
    p.add_argument(
        "--max-batch-tokens", type=whole_number(1), default=None, metavar="N", help="padded-token budget per batch"
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")
    add_option(
        p,
        DEVICE,
        help="measure on this device instead: per batch size the engine alone (inputs resident) against encode, "
        "first-pass and warm batch-1 p99 (cpu, cuda or tensorrt; docs/gpu.md)",
    )
    p.add_argument(
        "--batch-sizes",
        type=_sizes,
        default=None,
        metavar="LIST",
        help="with --device: comma-separated batch sizes (default: 32,128,512,2048 on cuda, 32 on cpu)",
    )
    p.set_defaults(run=run)


def _sizes(text: str) -> tuple[int, ...]:
    parse = whole_number(1)
    return tuple(parse(part.strip()) for part in text.split(",") if part.strip())


def run(args: argparse.Namespace) -> int:
    if args.device is not None:
        return run_device(args)
    if args.batch_sizes is not None:
        from embedrt.errors import InputError

        raise InputError("--batch-sizes goes with --device; without it use --batch-size")
    from embedrt.tools.bench import BenchResult, BenchSettings, int8_note, run_bench, table_row

    settings = BenchSettings(
        batch_size=args.batch_size, threads=args.threads, rounds=args.rounds, max_batch_tokens=args.max_batch_tokens
    )
    if args.json:  # one JSON object at the end; what is being measured goes to stderr meanwhile

        def started(report: dict[str, Any]) -> None:
            say(f"measuring {', '.join(report['variants'])}, each in a fresh process")

        def measured(result: BenchResult) -> None:
            say(f"  {result.label}: {result.sentences_per_s:.1f} sent/s, batch-1 p50 {result.latency_p50_ms:.2f} ms")

        report = run_bench(args.bundle, args.precision, args.data, settings, args.engine, started, measured)
        print(json.dumps(report, ensure_ascii=False))
        return 0

    def row(result: BenchResult) -> None:
        print(table_row(result), flush=True)

    report = run_bench(args.bundle, args.precision, args.data, settings, args.engine, print_header, row)
    if report["fastest"]:
        print(report["fastest"])
    note = int8_note(report["machine"]["isa"], [r["precision"] for r in report["results"].values()])
    if note:
        print(note)
    return 0


def print_header(report: dict[str, Any]) -> None:
    """What the run measures, and the table's header, before the first row (each row takes a while)."""
    from embedrt.tools.bench import table_header

    machine, workload, settings = report["machine"], report["workload"], report["settings"]
    print(f"bundle    {report['bundle']}")
    print(
        f"machine   {machine['cpu']} ({machine['isa']}), {machine['usable_cores']} usable cores, "
        f"onnxruntime {machine['onnxruntime']}, openvino {machine['openvino']}"
    )
    print(
        f"workload  {workload['source']}: {workload['texts']} texts, mean {workload['mean_tokens']} tokens "
        f"(p95 {workload['p95_tokens']}, max {workload['max_tokens']}), {workload['gflop_per_text']} GFLOP each"
    )
    print(
        f"settings  batch {settings['batch_size']}, threads {settings['threads'] or machine['usable_cores']}, "
        f"best of {settings['rounds']} passes; latency = batch-1 encode, {settings['latency_samples']} calls"
    )
    print(f"measuring {', '.join(report['variants'])}, each in a fresh process", flush=True)
    print(table_header(), flush=True)


def run_device(args: argparse.Namespace) -> int:
    """``--device``: the engine alone against ``encode`` per batch size, first-pass and warm latency."""
    from embedrt.tools.device_bench import DEVICE_BATCH_SIZES, DeviceBenchSettings, format_rows, run_device_bench

    sizes = args.batch_sizes or DEVICE_BATCH_SIZES[args.device]
    settings = DeviceBenchSettings(device=args.device, batch_sizes=tuple(sizes), rounds=args.rounds)

    def measured(precision: str, result: dict[str, Any]) -> None:
        lines = format_rows(precision, result)
        if args.json:
            say(lines[0])
        else:
            print("\n".join(lines), flush=True)

    report = run_device_bench(args.bundle, args.precision, args.data, settings, measured)
    if args.json:
        print(json.dumps(report, ensure_ascii=False))
    else:
        machine = report["machine"]
        print(
            f"machine   {machine['cpu']}, {machine['usable_cores']} usable cores; GPU {machine.get('gpu')}, driver "
            f"{machine.get('driver', '-')}, CUDA {machine.get('cuda_driver_api', '-')}; "
            f"onnxruntime {machine['onnxruntime']}"
        )
    return 0
