"""``embedrt info BUNDLE``: the manifest, the variants and what the export measured."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from embedrt.bundle import Bundle, Parity, Variant


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="show a bundle's manifest, variants and measured parity")
    p.add_argument("bundle")
    p.add_argument("--json", action="store_true", help="print the manifest as JSON")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
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
    if manifest.prompts:
        shown = ", ".join(f"{name}={text!r}" for name, text in manifest.prompts.items())
        default = f" (default: {manifest.default_prompt_name})" if manifest.default_prompt_name else ""
        print(f"prompts        {shown}{default}")
    if manifest.similarity_fn_name != "cosine":
        print(f"similarity     {manifest.similarity_fn_name}")
    print(f"format         {manifest.format_version} (embedrt {manifest.embedrt_version or '?'})")
    print("variants")
    for name, variant in manifest.variants.items():
        _print_variant(bundle, name, variant)
    for engine in manifest.engines:
        print(f"engine         {engine.get('file')} ({engine.get('gpu', '?')}, TensorRT {engine.get('tensorrt', '?')})")
    return 0


def _print_variant(bundle: Bundle, name: str, variant: Variant) -> None:
    """One line a variant: file, size, what kind of graph, batch-invariance, measured parity; one a run precision."""
    from embedrt.bundle import Parity
    from embedrt.variants import ENGINE_TABLE, VARIANT_TABLE, variant_name

    paths = [bundle.root / relative for relative in (variant.file, *variant.data_files)]
    present = all(path.is_file() for path in paths)
    size = f"{sum(path.stat().st_size for path in paths) / 1e6:7.1f} MB" if present else "  MISSING"
    engine = ENGINE_TABLE.get(variant.engine)
    graph = engine.graph if engine else "file"
    if graph == "ONNX":
        kind = "fused attention" if variant.fused_attention else "unfused"
    else:
        kind = f"{variant.engine} {graph}"
    invariant = "batch-invariant" if variant.batch_invariant else "batch-dependent (re-export)"
    print(f"  {name:14s} {variant.file:24s} {size}  {kind:15s}  {invariant:27s}  {_parity(variant.parity)}")
    row = VARIANT_TABLE.get(name)
    if row is None:
        return
    for precision in row.also_runs:
        measured = variant.recipe.get(precision)  # the export records each other run precision's parity here
        if isinstance(measured, dict):
            found = measured.get("parity")
            parity = Parity(found["min_cos"], found["mean_cos"], found["n"]) if found else None
            text = _parity(parity) if parity else measured.get("note", "not measured")
            label, what = variant_name(variant.engine, precision), f"(the {row.precision} {graph} in {precision})"
            print(f"  {label:14s} {what:24s} {'':10s}  {'':15s}  {'':27s}  {text}")


def _parity(parity: Parity | None) -> str:
    if parity is None:
        return "parity not measured"
    return f"parity min cos {parity.min_cos:.6f}, mean cos {parity.mean_cos:.6f} (n={parity.n})"
