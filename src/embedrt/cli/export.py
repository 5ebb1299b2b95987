"""``embedrt export SOURCE -o BUNDLE``: a sentence-transformers model becomes a parity-checked bundle."""

from __future__ import annotations

import argparse

from embedrt.cli.console import say
from embedrt.export.load import DEFAULT_SOURCE, POOLING_MODES
from embedrt.extras import needs
from embedrt.options import ENGINE_LIST, PRECISION_LIST, add_option, whole_number

POOLING_CHOICES = tuple(POOLING_MODES)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help=f"export a sentence-transformers model to a bundle ({needs('export')})",
        description="Export a sentence-transformers model (a local directory or a hub id) to an embedrt bundle: "
        "fused ONNX fp32, an int8 variant for CPU, each checked against PyTorch on built-in sentences.",
    )
    p.add_argument("source", nargs="?", default=None, help=f"model directory or hub id (default: {DEFAULT_SOURCE})")
    p.add_argument("-o", "--output", required=True, help="bundle directory to write (new, empty, or a bundle)")
    add_option(p, PRECISION_LIST, default=("fp32", "int8"), help="variants to build: fp32, int8 (CPU), fp16 (GPU)")
    add_option(
        p,
        ENGINE_LIST,
        default=None,
        help=f"engines to build them for: onnxruntime (fused ONNX), openvino (IR; {needs('openvino')}); "
        "default: both where openvino and nncf are installed, else onnxruntime",
    )
    p.add_argument(
        "--int8-recipe",
        choices=("static", "dynamic"),  # embedrt.export.quantize.INT8_RECIPES (numpy is not imported to parse)
        default="static",
        help="ONNX Runtime int8: static (activation scales calibrated at export; batch-invariant, the default) or "
        "dynamic (scales per batch: a text's vector moves with its batch-mates; kept for benchmarks)",
    )
    p.add_argument(
        "--calibration",
        metavar="FILE",
        help="texts to calibrate static int8 (ONNX Runtime and OpenVINO) on: one a line, or JSONL with a text field "
        "(default: 640 built-in Chinese and English texts)",
    )
    p.add_argument("--max-seq-length", type=whole_number(1), metavar="N", help="override the model's max_seq_length")
    p.add_argument(
        "--pooling",
        choices=POOLING_CHOICES,
        help="how a plain Hugging Face model (no modules.json) pools tokens, as it was trained; required for one",
    )
    p.add_argument("--force", action="store_true", help="replace an existing bundle")
    p.add_argument("--allow-unfused", action="store_true", help="accept a graph whose attention did not fuse")
    p.add_argument("--fp32-min-cos", type=float, default=0.99999, help="fp32 parity gate (default 0.99999)")
    p.add_argument("--int8-mean-cos", type=float, default=0.99, help="int8 parity gate (default 0.99)")
    p.add_argument("--fp16-min-cos", type=float, default=0.999, help="fp16 parity gate (default 0.999)")
    p.add_argument(
        "--bf16-min-cos", type=float, default=0.999, help="OpenVINO bf16 parity gate, where measured (default 0.999)"
    )
    p.add_argument("-q", "--quiet", action="store_true", help="print nothing on success")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from embedrt.export.pipeline import ExportSettings, default_engines, export_bundle
    from embedrt.export.quantize import INT8_RECIPES

    settings = ExportSettings(
        engines=args.engine or default_engines(),
        precisions=args.precision,
        int8_recipe=INT8_RECIPES[args.int8_recipe],
        calibration=args.calibration,
        bf16_min_cos=args.bf16_min_cos,
        max_seq_length=args.max_seq_length,
        pooling=args.pooling,
        allow_unfused=args.allow_unfused,
        fp32_min_cos=args.fp32_min_cos,
        int8_mean_cos=args.int8_mean_cos,
        fp16_min_cos=args.fp16_min_cos,
        force=args.force,
    )
    manifest = export_bundle(args.source, args.output, settings, progress=None if args.quiet else say)
    if not args.quiet:
        for name, variant in manifest.variants.items():
            if variant.parity is not None:
                parity = variant.parity
                say(f"  {name:14s} {variant.file:24s} min cos {parity.min_cos:.6f}  mean cos {parity.mean_cos:.6f}")
    return 0
