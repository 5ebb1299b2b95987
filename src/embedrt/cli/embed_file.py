"""``embedrt embed-file BUNDLE INPUT -o OUTPUT``: stream a file of any size into Parquet or ``.npy``."""

from __future__ import annotations

import argparse
import sys

from embedrt.cli.console import say
from embedrt.options import (
    BATCH_SIZE,
    DEVICE,
    ENGINE,
    PRECISION,
    THREADS,
    add_normalize,
    add_option,
    add_prompt,
    whole_number,
)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "embed-file",
        help="embed a text/JSONL/CSV/Parquet file of any size to Parquet or .npy",
        description="Stream INPUT in chunks, embed it and write OUTPUT through a temporary file renamed at the end. "
        "OUTPUT.parquet has columns id, embedding; OUTPUT.npy is float32 with ids in OUTPUT.ids.txt. "
        "Ids come from --id-column, else the 0-based record number.",
    )
    p.add_argument("bundle")
    p.add_argument("input", help="input file (.txt one text a line, .jsonl, .csv, .tsv, .parquet; - for stdin)")
    p.add_argument("-o", "--output", required=True, help="OUTPUT.parquet or OUTPUT.npy")
    p.add_argument(
        "--format",
        choices=("auto", "text", "jsonl", "csv", "tsv", "parquet"),
        default="auto",
        help="input format (default: from the file name)",
    )
    p.add_argument("--text-column", default="text", help="column/field with the texts (default: text)")
    p.add_argument("--id-column", default=None, help="column/field with row ids (default: the record number)")
    add_option(p, PRECISION, default="auto")
    add_option(p, ENGINE, default="auto")
    add_option(p, DEVICE, default="cpu")
    add_option(p, BATCH_SIZE, default=32)
    add_option(p, THREADS)
    p.add_argument(
        "--chunk-size", type=whole_number(1), default=4096, metavar="N", help="rows read and embedded at a time"
    )
    p.add_argument("--skip-bad-rows", action="store_true", help="skip rows that cannot be embedded and count them")
    p.add_argument("--progress", action="store_true", help="show the progress bar even when stderr is not a terminal")
    add_normalize(p)
    add_prompt(p)
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar, no summary")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from embedrt.runtime.encoder import Encoder
    from embedrt.tools.embed_file import EmbedFileJob, check_output, embed_file, input_format

    job = EmbedFileJob(
        input=args.input,
        output=args.output,
        format=input_format(args.input, args.format),
        text_column=args.text_column,
        id_column=args.id_column,
        skip_bad_rows=args.skip_bad_rows,
        chunk_rows=args.chunk_size,
        batch_size=args.batch_size,
        normalize=args.normalize,
        prompt_name=args.prompt_name,
        prompt=args.prompt,
    )
    check_output(job)
    encoder = Encoder.load(
        args.bundle, precision=args.precision, engine=args.engine, device=args.device, threads=args.threads
    )
    show = not args.quiet and (args.progress or sys.stderr.isatty())
    report = embed_file(encoder, job, show_progress=show)
    if not args.quiet:
        rate = report.rows / report.seconds if report.seconds > 0 else 0.0
        ids = f" (ids in {report.ids_output})" if report.ids_output else ""
        message = (
            f"wrote {report.rows} x {encoder.dim} float32 embeddings ({encoder.engine} {encoder.precision}) to "
            f"{report.output}"
            f"{ids} in {report.seconds:.1f} s ({rate:.0f} rows/s)"
        )
        if report.skipped:
            message += f"; skipped {report.skipped} bad rows: {', '.join(report.first_skipped)}"
            message += ", ..." if report.skipped > len(report.first_skipped) else ""
        say(message)
    return 0
