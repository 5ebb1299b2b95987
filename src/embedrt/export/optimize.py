"""Fuse the exported graph with ONNX Runtime's transformer optimizer, and audit what fused."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from embedrt.errors import ExportError
from embedrt.extras import missing_extra

#: Fused operators worth reporting, in the order a reader expects them.
FUSED_OPS = ("EmbedLayerNormalization", "Attention", "SkipLayerNormalization", "BiasGelu", "Gelu", "FastGelu")


@dataclass(frozen=True)
class FusionReport:
    """How many of each fused operator the optimized graph holds."""

    counts: dict[str, int]
    num_layers: int

    @property
    def attention_fused(self) -> bool:
        return self.counts.get("Attention", 0) >= self.num_layers


def optimize_graph(
    raw: Path,
    out: Path,
    num_heads: int,
    hidden_size: int,
    num_layers: int,
    embed_layer_norm: bool = True,
    allow_unfused: bool = False,
) -> FusionReport:
    """Fuse attention, SkipLayerNorm, BiasGelu (and EmbedLayerNorm) into ``out``.

    ``opt_level=0`` keeps ONNX Runtime's own hardware-specific rewrites out of the saved file, so
    the same graph serves every CPU and the session applies them at load time.
    Raises :class:`ExportError` if fewer Attention nodes than layers fused, unless ``allow_unfused``.
    """
    try:
        from onnxruntime.transformers.fusion_options import FusionOptions
        from onnxruntime.transformers.optimizer import optimize_model
    except ImportError as err:
        raise missing_extra("onnxruntime", "embedrt export", also=("export",)) from err

    options = FusionOptions("bert")
    options.enable_embed_layer_norm = embed_layer_norm
    try:
        model = optimize_model(
            str(raw),
            model_type="bert",
            num_heads=num_heads,
            hidden_size=hidden_size,
            optimization_options=options,
            opt_level=0,
        )
    except Exception as err:
        raise ExportError(f"onnxruntime's transformer optimizer failed on {raw.name}: {err}") from err
    counts = {op: 0 for op in FUSED_OPS}
    for node in model.model.graph.node:
        if node.op_type in counts:
            counts[node.op_type] += 1
    report = FusionReport(counts={k: v for k, v in counts.items() if v}, num_layers=num_layers)
    if not report.attention_fused and not allow_unfused:
        raise ExportError(
            f"only {counts['Attention']} of {num_layers} attention blocks fused; the graph would run "
            "unfused and slow. Export with eager attention (embedrt does) and a supported BERT model, "
            "or pass --allow-unfused to accept it"
        )
    model.save_model_to_file(str(out))
    return report
