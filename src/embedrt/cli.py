"""The ``embedrt`` command: parses arguments, calls the library, prints one-line errors.

Heavy modules are imported inside each command so ``embedrt info`` or ``encode`` never load the
export stack, and a missing extra is reported as one line naming the pip extra to install.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from embedrt.errors import EmbedrtError, InputError
from embedrt.textio import read_lines, write_npy_atomic

PROG = "embedrt"


def _precisions(value: str) -> tuple[str, ...]:
    items = tuple(part.strip() for part in value.split(",") if part.strip())
    if not items:
        raise argparse.ArgumentTypeError("expected a comma-separated list such as fp32,int8")
    return items


def _positive_int(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {value!r}") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"expected a number >= 1, got {number}")
    return number


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------- export
def _cmd_export(args: argparse.Namespace) -> int:
    from embedrt.export.pipeline import ExportSettings, export_bundle

    settings = ExportSettings(
        precisions=args.precision,
        max_seq_length=args.max_seq_length,
        allow_unfused=args.allow_unfused,
        fp32_min_cos=args.fp32_min_cos,
        int8_mean_cos=args.int8_mean_cos,
        fp16_min_cos=args.fp16_min_cos,
        force=args.force,
    )
    manifest = export_bundle(args.source, args.output, settings, progress=None if args.quiet else _say)
    if not args.quiet:
        for name, variant in manifest.variants.items():
            parity = variant.parity
            _say(f"  {name:5s} {variant.file:18s} min cos {parity.min_cos:.6f}  mean cos {parity.mean_cos:.6f}")
    return 0


def _add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="export a sentence-transformers model to a bundle (needs embedrt[export])",
        description="Export a sentence-transformers model (a local directory or a hub id) to an embedrt bundle: "
        "fused ONNX fp32, an int8 variant for CPU, each checked against PyTorch on built-in sentences.",
    )
    p.add_argument(
        "source",
        nargs="?",
        default=None,
        help="model directory or hub id (default: DMetaSoul/sbert-chinese-qmc-domain-v1)",
    )
    p.add_argument("-o", "--output", required=True, help="bundle directory to write")
    p.add_argument(
        "--precision",
        type=_precisions,
        default=("fp32", "int8"),
        help="comma-separated variants to build: fp32, int8 (CPU), fp16 (GPU) (default: fp32,int8)",
    )
    p.add_argument("--max-seq-length", type=_positive_int, default=None, help="override the model's max_seq_length")
    p.add_argument("--force", action="store_true", help="replace an existing bundle")
    p.add_argument("--allow-unfused", action="store_true", help="accept a graph whose attention did not fuse")
    p.add_argument("--fp32-min-cos", type=float, default=0.99999, help="fp32 parity gate (default 0.99999)")
    p.add_argument("--int8-mean-cos", type=float, default=0.99, help="int8 parity gate (default 0.99)")
    p.add_argument("--fp16-min-cos", type=float, default=0.999, help="fp16 parity gate (default 0.999)")
    p.add_argument("-q", "--quiet", action="store_true", help="print nothing on success")
    p.set_defaults(func=_cmd_export)


# ---------------------------------------------------------------------------------------------- encode
def _cmd_encode(args: argparse.Namespace) -> int:
    from embedrt import Encoder

    texts = list(args.text)
    if args.input:
        texts.extend(read_lines(args.input))
    if not texts:
        raise InputError("nothing to encode: give TEXT arguments or --input FILE")
    encoder = Encoder.load(args.bundle, precision=args.precision, device=args.device, threads=args.threads)
    show = args.input is not None and sys.stderr.isatty() and not args.quiet
    embeddings = encoder.encode(texts, batch_size=args.batch_size, normalize=args.normalize, show_progress_bar=show)
    if args.output:
        write_npy_atomic(Path(args.output), embeddings)
        if not args.quiet:
            _say(f"wrote {embeddings.shape[0]} x {embeddings.shape[1]} {encoder.precision} embeddings to {args.output}")
    else:
        out = sys.stdout
        for row in embeddings:
            out.write(json.dumps([round(float(x), 7) for x in row]) + "\n")
    return 0


def _add_encode(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "encode",
        help="embed texts with a bundle",
        description="Embed TEXT arguments and/or the lines of --input; print JSON lines or write .npy.",
    )
    p.add_argument("bundle")
    p.add_argument("text", nargs="*", help="texts to embed")
    p.add_argument("--input", help="UTF-8 file with one text per line (- for stdin)")
    p.add_argument("--output", help="write a float32 .npy array here instead of printing JSON lines")
    p.add_argument(
        "--precision", default="auto", help="auto, fp32, int8 or fp16 (default auto: int8 on CPU if present)"
    )
    p.add_argument("--device", default="cpu", help="cpu, cuda or tensorrt (default cpu)")
    p.add_argument("--batch-size", type=_positive_int, default=32)
    p.add_argument("--threads", type=_positive_int, default=None, help="intra-op threads (default: all usable cores)")
    norm = p.add_mutually_exclusive_group()
    norm.add_argument("--normalize", dest="normalize", action="store_true", default=None, help="L2-normalize")
    norm.add_argument("--no-normalize", dest="normalize", action="store_false", help="do not L2-normalize")
    p.add_argument("-q", "--quiet", action="store_true")
    p.set_defaults(func=_cmd_encode)


# ---------------------------------------------------------------------------------------------- info
def _cmd_info(args: argparse.Namespace) -> int:
    from embedrt.bundle import Bundle

    bundle = Bundle.open(args.bundle)
    manifest = bundle.manifest
    if args.json:
        print(manifest.to_json(), end="")
        return 0
    arch = manifest.architecture
    print(f"bundle         {bundle.root}")
    print(f"source         {manifest.source}")
    if arch:
        millions = arch.get("parameters", 0) / 1e6
        print(
            f"architecture   {arch.get('model_type')} {arch.get('num_layers')} layers x {arch.get('hidden_size')}, "
            f"{arch.get('num_heads')} heads, vocab {arch.get('vocab_size')}, {millions:.1f}M params"
        )
    print(f"dim            {manifest.dim}")
    print(f"max_seq_length {manifest.max_seq_length}")
    print(f"pooling        {manifest.pooling.value}{' + normalize' if manifest.normalize else ''}")
    print(f"format         {manifest.format_version} (embedrt {manifest.embedrt_version or '?'})")
    print("variants")
    for name, variant in manifest.variants.items():
        path = bundle.root / variant.file
        size = f"{path.stat().st_size / 1e6:7.1f} MB" if path.is_file() else "  MISSING"
        parity = variant.parity
        measured = (
            f"parity min cos {parity.min_cos:.6f}, mean cos {parity.mean_cos:.6f} (n={parity.n})"
            if parity
            else "parity not measured"
        )
        fused = "fused attention" if variant.fused_attention else "unfused"
        print(f"  {name:5s} {variant.file:20s} {size}  {fused}  {measured}")
    for engine in manifest.engines:
        print(f"engine         {engine.get('file')} ({engine.get('gpu', '?')}, TensorRT {engine.get('tensorrt', '?')})")
    return 0


def _add_info(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="show a bundle's manifest, variants and measured parity")
    p.add_argument("bundle")
    p.add_argument("--json", action="store_true", help="print the manifest as JSON")
    p.set_defaults(func=_cmd_info)


# ---------------------------------------------------------------------------------------------- bench (issue 3)
def _cmd_bench(args: argparse.Namespace) -> int:
    from embedrt.bench import run_bench_command

    return run_bench_command(args)


def _add_bench(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="measure throughput, latency, cold start and memory of a bundle")
    p.add_argument("bundle")
    p.add_argument("--data", help="UTF-8 file, one text per line (default: a built-in Chinese workload)")
    p.add_argument("--precision", type=_precisions, default=None, help="comma-separated (default: fp32,int8)")
    p.add_argument("--batch-size", type=_positive_int, default=32)
    p.add_argument("--threads", type=_positive_int, default=None)
    p.add_argument("--rounds", type=_positive_int, default=3, help="timed passes over the data, best kept (default 3)")
    p.add_argument("--max-batch-tokens", type=_positive_int, default=None, help="padded-token budget per batch")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_cmd_bench)


# ---------------------------------------------------------------------------------------------- eval (issue 3)
def _cmd_eval(args: argparse.Namespace) -> int:
    from embedrt.evaluate import run_eval_command

    return run_eval_command(args)


def _add_eval(sub: argparse._SubParsersAction) -> None:
    from embedrt.evaluate import FORMATS

    p = sub.add_parser(
        "eval",
        help="Spearman/Pearson of cosine similarity against gold scores, per precision",
        description="Score sentence pairs with each precision of a bundle: Spearman and Pearson (x100) between "
        "cosine similarity and the gold score or label, one column per data file (named by its stem).",
    )
    p.add_argument("bundle")
    p.add_argument("data", nargs="+", help="pair files (TSV s1<TAB>s2<TAB>score, JSONL, or an STS benchmark file)")
    p.add_argument("--precision", type=_precisions, default=None, help="comma-separated (default: all variants)")
    p.add_argument(
        "--format",
        choices=FORMATS,
        default="auto",
        help="pairs: s1<TAB>s2<TAB>score; jsonl: sentence1/sentence2/score or label; stsb: TSV with a header; "
        "sts: the STS benchmark as released (sts-test.csv) (default auto: detected per file)",
    )
    p.add_argument("--split", default="test", help="split to keep in a file with a split column (default: test; all)")
    p.add_argument("--reference", action="store_true", help="add the PyTorch model's row (needs embedrt[export])")
    p.add_argument(
        "--reference-model",
        default=None,
        metavar="DIR",
        help="the PyTorch model for --reference if the bundle's source is not here (implies --reference)",
    )
    p.add_argument("--batch-size", type=_positive_int, default=64)
    p.add_argument("--threads", type=_positive_int, default=None, help="ONNX Runtime intra-op threads")
    p.add_argument("--json", action="store_true", help="print one JSON line")
    p.set_defaults(func=_cmd_eval)


# ---------------------------------------------------------------------------------------------- serve (issue 4)
def _cmd_serve(args: argparse.Namespace) -> int:
    from embedrt.server import run_serve_command

    return run_serve_command(args)


def _add_serve(sub: argparse._SubParsersAction) -> None:
    from embedrt.server.settings import OPTIONS, ServerSettings  # stdlib only: the one list of serve options

    p = sub.add_parser(
        "serve",
        help="HTTP server: OpenAI- and TEI-compatible embeddings (needs embedrt[server])",
        description="Serve a bundle over HTTP with dynamic batching: POST /v1/embeddings (OpenAI), POST /embed "
        "(TEI), GET /health, /info, /metrics. Every flag can also be set by its EMBEDRT_* variable; a flag wins.",
    )
    p.add_argument("bundle", nargs="?", default=None, help="bundle directory (or EMBEDRT_BUNDLE)")
    for option in OPTIONS:
        default = ServerSettings.__dataclass_fields__[option.field].default
        shown = "" if default is None or option.field == "api_key" else f", default {default}"
        p.add_argument(option.flag, default=None, metavar=option.metavar, help=f"{option.help} ({option.env}{shown})")
    p.set_defaults(func=_cmd_serve)


# ---------------------------------------------------------------------------------------------- build-engine (issue 5)
def _cmd_build_engine(args: argparse.Namespace) -> int:
    from embedrt.runtime.trt_build import run_build_engine_command

    return run_build_engine_command(args)


def _add_build_engine(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "build-engine",
        help="build a TensorRT engine for this GPU (needs embedrt[tensorrt])",
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
    p.set_defaults(func=_cmd_build_engine)


# ---------------------------------------------------------------------------------------------- embed-file (issue 6)
def _cmd_embed_file(args: argparse.Namespace) -> int:
    from embedrt.embed_file import run_embed_file_command

    return run_embed_file_command(args)


def _add_embed_file(sub: argparse._SubParsersAction) -> None:
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
    p.add_argument(
        "--precision", default="auto", help="auto, fp32, int8 or fp16 (default auto: int8 on CPU if present)"
    )
    p.add_argument("--device", default="cpu", help="cpu, cuda or tensorrt (default cpu)")
    p.add_argument("--batch-size", type=_positive_int, default=32)
    p.add_argument("--threads", type=_positive_int, default=None, help="intra-op threads (default: all usable cores)")
    p.add_argument("--chunk-size", type=_positive_int, default=4096, help="rows read and embedded at a time")
    p.add_argument("--skip-bad-rows", action="store_true", help="skip rows that cannot be embedded and count them")
    p.add_argument("--progress", action="store_true", help="show the progress bar even when stderr is not a terminal")
    norm = p.add_mutually_exclusive_group()
    norm.add_argument("--normalize", dest="normalize", action="store_true", default=None, help="L2-normalize")
    norm.add_argument("--no-normalize", dest="normalize", action="store_false", help="do not L2-normalize")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar, no summary")
    p.set_defaults(func=_cmd_embed_file)


# ---------------------------------------------------------------------------------------------- main
COMMANDS: tuple[Callable[[argparse._SubParsersAction], None], ...] = (
    _add_export,
    _add_encode,
    _add_info,
    _add_bench,
    _add_eval,
    _add_serve,
    _add_build_engine,
    _add_embed_file,
)


def build_parser() -> argparse.ArgumentParser:
    from embedrt import __version__

    parser = argparse.ArgumentParser(prog=PROG, description="Fast, torch-free sentence embeddings from BERT bundles.")
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in COMMANDS:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except EmbedrtError as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # `embedrt encode ... | head`: the reader left; not an error worth a traceback.
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
