"""``embedrt encode BUNDLE TEXT...``: embed texts; JSON lines on standard output, or a ``.npy`` file."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from embedrt.cli.console import say
from embedrt.options import BATCH_SIZE, DEVICE, ENGINE, PRECISION, THREADS, add_normalize, add_option, add_prompt


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "encode",
        help="embed texts with a bundle",
        description="Embed TEXT arguments and/or the lines of --input; print JSON lines or write .npy.",
    )
    p.add_argument("bundle")
    p.add_argument("text", nargs="*", help="texts to embed")
    p.add_argument("--input", help="UTF-8 file with one text per line (- for stdin)")
    p.add_argument("--output", help="write a float32 .npy array here instead of printing JSON lines")
    add_option(p, PRECISION, default="auto")
    add_option(p, ENGINE, default="auto")
    add_option(p, DEVICE, default="cpu")
    add_option(p, BATCH_SIZE, help=f"{BATCH_SIZE.help} (default: 32 on the CPU, 256 on a GPU)")
    add_option(p, THREADS)
    add_normalize(p)
    add_prompt(p)
    p.add_argument("-q", "--quiet", action="store_true")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from embedrt.errors import InputError
    from embedrt.files import read_lines, write_npy_atomic
    from embedrt.runtime.encoder import Encoder

    texts = list(args.text)
    if args.input:
        texts.extend(read_lines(args.input))
    if not texts:
        if args.input:
            raise InputError(f"nothing to encode: {args.input} has no lines; give it one text per line")
        raise InputError("nothing to encode: give TEXT arguments or --input FILE")
    encoder = Encoder.load(
        args.bundle, precision=args.precision, engine=args.engine, device=args.device, threads=args.threads
    )
    show = args.input is not None and sys.stderr.isatty() and not args.quiet
    embeddings = encoder.encode(
        texts,
        batch_size=args.batch_size,
        normalize=args.normalize,
        show_progress_bar=show,
        prompt_name=args.prompt_name,
        prompt=args.prompt,
    )
    if args.output:
        write_npy_atomic(Path(args.output), embeddings)
        if not args.quiet:
            rows, dim = embeddings.shape
            say(f"wrote {rows} x {dim} float32 embeddings ({encoder.engine} {encoder.precision}) to {args.output}")
    else:
        out = sys.stdout
        for row in embeddings:
            out.write(json_row(row) + "\n")
    return 0


def json_row(row: Any) -> str:
    """A float32 vector as a JSON array of each value's shortest decimal that reads back as the same float32.

    What the server sends; rounding (to 7 decimals, say) would change the low bits of small values.
    """
    return "[" + ",".join(str(value) for value in row) + "]"
