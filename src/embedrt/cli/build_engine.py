"""``embedrt build-engine BUNDLE``: a TensorRT engine for this GPU, listed in the bundle's manifest."""

from __future__ import annotations

import argparse

from embedrt.cli.console import say
from embedrt.extras import needs


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "build-engine",
        help=f"build a TensorRT engine for this GPU ({needs('tensorrt')})",
        description="Build a TensorRT engine from the bundle's fp16-trt graph on this GPU, with one optimization "
        "profile over batch x sequence, and list it in the manifest (run it on the serving machine).",
    )
    p.add_argument("bundle")
    p.add_argument("--min-shape", default=None, help="smallest BATCHxSEQ the engine accepts (default 1x1)")
    p.add_argument("--opt-shape", default=None, help="BATCHxSEQ TensorRT tunes for (default 32x64)")
    p.add_argument("--max-shape", default=None, help="largest BATCHxSEQ (default 128x512, or the bundle's max length)")
    p.add_argument("--workspace-gb", type=float, default=4.0, help="builder workspace in GiB (default 4)")
    p.add_argument(
        "--runner",
        choices=("tensorrt", "onnxruntime"),
        default="tensorrt",
        help="tensorrt: a .plan run with TensorRT's API; onnxruntime: ONNX Runtime's TensorRT provider with an "
        "engine cache (default tensorrt)",
    )
    p.add_argument("-q", "--quiet", action="store_true")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from embedrt.tools.build_engine import build_engine

    record = build_engine(
        args.bundle,
        (args.min_shape, args.opt_shape, args.max_shape),
        workspace_gb=args.workspace_gb,
        runner=args.runner,
    )
    if not args.quiet:
        say(
            f"built {record.file} ({record.gpu}, sm{record.compute_capability.replace('.', '')}, TensorRT "
            f"{record.tensorrt}, profile {record.profile['min']}..{record.profile['max']})"
        )
    return 0
