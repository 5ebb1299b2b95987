"""int8 variants of the fused fp32 graph for the CPU."""

from __future__ import annotations

import logging
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from embedrt.errors import ExportError


@dataclass(frozen=True)
class Int8Recipe:
    """A dynamic-quantization recipe; what it was is written into the manifest.

    Weights are signed int8 per output channel, activations uint8 per tensor, computed at run
    time: ``MatMulInteger``/``QAttention`` with u8s8 operands, which VNNI runs natively.
    Embeddings, LayerNorm and GELU stay fp32.
    """

    name: str = "dynamic-per-channel"
    per_channel: bool = True
    reduce_range: bool = False
    op_types: tuple[str, ...] = ("MatMul", "Attention")
    #: Regular expressions; nodes whose name matches one stay fp32
    #: (``r"layer\.\d+/output/dense"`` matches the FFN down-projections).
    exclude: tuple[str, ...] = ()

    def manifest_entry(self) -> dict[str, Any]:
        entry = asdict(self)
        entry["op_types"] = list(self.op_types)
        entry["exclude"] = list(self.exclude)
        return entry


#: Measured on all-MiniLM-L6-v2 (mean cosine to PyTorch on the parity sentences): quantizing every
#: MatMul gives 0.986; keeping the FFN down-projections fp32 (their GELU inputs have outliers that a
#: per-tensor uint8 scale cannot hold) gives 0.992, above the 0.99 gate.
DEFAULT_INT8 = Int8Recipe(name="dynamic-per-channel-ffn-down-fp32", exclude=(r"layer\.\d+/output/dense",))


def quantize_int8(fp32: Path, out: Path, recipe: Int8Recipe = DEFAULT_INT8) -> Path:
    """Dynamically quantize the fused graph ``fp32`` into ``out`` following ``recipe``."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    excluded: list[str] = []
    if recipe.exclude:
        graph = onnx.load(str(fp32), load_external_data=False).graph
        patterns = [re.compile(pattern) for pattern in recipe.exclude]
        excluded = [n.name for n in graph.node if any(p.search(n.name) for p in patterns)]
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # quantize_dynamic logs an unconditional pre-processing hint
    try:
        quantize_dynamic(
            fp32,
            out,
            op_types_to_quantize=list(recipe.op_types),
            per_channel=recipe.per_channel,
            reduce_range=recipe.reduce_range,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=excluded,
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT, "MatMulConstBOnly": True},
        )
    except Exception as err:
        raise ExportError(f"int8 quantization failed: {err}") from err
    finally:
        root.setLevel(level)
    return out
