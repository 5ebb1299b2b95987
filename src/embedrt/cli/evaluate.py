"""``embedrt eval BUNDLE DATA...``: Spearman/Pearson of cosine similarity against gold scores, per precision."""

from __future__ import annotations

import argparse
import json

from embedrt.cli.console import say
from embedrt.extras import needs
from embedrt.options import BATCH_SIZE, ENGINE_LIST, PRECISION_LIST, THREADS, add_option
from embedrt.tools.evaluate.readers import FORMATS


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval",
        help="Spearman/Pearson of cosine similarity against gold scores, per precision",
        description="Score sentence pairs with each precision of a bundle: Spearman and Pearson (x100) between "
        "cosine similarity and the gold score or label, one column per data file (named by its stem).",
    )
    p.add_argument("bundle")
    p.add_argument("data", nargs="+", help="pair files (TSV s1<TAB>s2<TAB>score, JSONL, or an STS benchmark file)")
    add_option(p, PRECISION_LIST, help="precisions to score (default: every variant of the bundle this CPU runs)")
    add_option(p, ENGINE_LIST, help="engines to score them on (default: every installed engine the bundle has)")
    p.add_argument(
        "--format",
        choices=FORMATS,
        default="auto",
        help="pairs: s1<TAB>s2<TAB>score; jsonl: sentence1/sentence2/score or label; stsb: TSV with a header; "
        "sts: the STS benchmark as released (sts-test.csv) (default auto: detected per file)",
    )
    p.add_argument("--split", default="test", help="split to keep in a file with a split column (default: test; all)")
    p.add_argument("--reference", action="store_true", help=f"add the PyTorch model's row ({needs('export')})")
    p.add_argument(
        "--reference-model",
        default=None,
        metavar="DIR",
        help="the PyTorch model for --reference if the bundle's source is not here (implies --reference)",
    )
    add_option(p, BATCH_SIZE, default=64)
    add_option(p, THREADS)
    p.add_argument("--json", action="store_true", help="print one JSON line")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from embedrt.tools.evaluate.run import EvalJob, format_table, run_eval, to_json

    job = EvalJob(
        bundle=args.bundle,
        data=tuple(args.data),
        precisions=args.precision,
        engines=args.engine,
        format=args.format,
        split=args.split,
        reference=args.reference,
        reference_model=args.reference_model,
        batch_size=args.batch_size,
        threads=args.threads,
    )
    datasets, results = run_eval(job, say)
    if args.json:
        print(json.dumps(to_json(results, datasets), ensure_ascii=False))
        return 0
    sizes = ", ".join(f"{pairs.name} {len(pairs)}" for pairs in datasets)
    print(f"Spearman / Pearson x100, cosine similarity vs gold score ({args.bundle}; pairs: {sizes})")
    print(format_table(results, datasets))
    if "fp32" in results and "int8" in results:
        deltas = ", ".join(
            f"{n}: {results['int8'][n]['spearman'] - results['fp32'][n]['spearman']:+.2f}"
            for n in (pairs.name for pairs in datasets)
        )
        print(f"int8 - fp32 Spearman: {deltas}")
    return 0
