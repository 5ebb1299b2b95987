"""``embedrt info BUNDLE``: the manifest, the variants and what the export measured."""

from __future__ import annotations

import argparse


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
        print(f"  {name:8s} {variant.file:22s} {size}  {fused}  {measured}")
    for engine in manifest.engines:
        print(f"engine         {engine.get('file')} ({engine.get('gpu', '?')}, TensorRT {engine.get('tensorrt', '?')})")
    return 0
