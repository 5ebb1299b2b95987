"""Mean pooling as graph nodes, for GPUs: a second output ``sentence_embedding`` ``(batch, dim)``.

On a GPU the unpooled ``(batch, seq, dim)`` output is the largest copy back to the host and NumPy pooling
is serial host work; with the masked mean in the graph, ``(batch, dim)`` comes back instead. The nodes
compute what :func:`embedrt.runtime.pooling.pool` computes for mean pooling, in float32 on the graph's
float32 output (the fp16 graphs keep fp32 outputs): ``ReduceSum(hidden * mask, seq) / max(ReduceSum(mask), 1e-9)``.
``last_hidden_state`` stays the first output, so every CPU path reads and pools exactly as before; only the
GPU runtime asks for the second one. Other poolings (CLS, max) get no graph output and keep the NumPy path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from embedrt.errors import ExportError
from embedrt.variants import VARIANT_TABLE

#: The graph output holding the pooled sentence embeddings (named as sentence-transformers names them).
POOLED_OUTPUT = "sentence_embedding"
#: Variants that get the pooled output: those the CUDA provider runs (read from the variant table).
POOLED_VARIANTS = tuple(name for name, kind in VARIANT_TABLE.items() if "cuda" in kind.devices)
#: NumPy pooling's floor on the token count (``np.clip(..., 1e-9)``), kept identical here.
MIN_COUNT = 1e-9


def add_mean_pooling(path: Path) -> dict[str, Any]:
    """Add the masked mean of ``path``'s first output as the output :data:`POOLED_OUTPUT`; return its recipe."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(path))
    graph = model.graph
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset < 13:  # ReduceSum and Unsqueeze take their axes as inputs from opset 13
        raise ExportError(f"{path.name}: device pooling needs opset >= 13, the graph has {opset}")
    if "attention_mask" not in {i.name for i in graph.input}:
        raise ExportError(f"{path.name} has no attention_mask input to pool with")
    if any(o.name == POOLED_OUTPUT for o in graph.output):
        raise ExportError(f"{path.name} already has an output {POOLED_OUTPUT!r}")
    hidden = graph.output[0]
    dims = hidden.type.tensor_type.shape.dim
    width = dims[2].dim_value if len(dims) == 3 and dims[2].HasField("dim_value") else "dim"
    prefix = "embedrt_pool_"
    graph.initializer.extend(
        [
            numpy_helper.from_array(np.array([1], dtype=np.int64), prefix + "seq_axis"),
            numpy_helper.from_array(np.array([2], dtype=np.int64), prefix + "last_axis"),
            numpy_helper.from_array(np.array(MIN_COUNT, dtype=np.float32), prefix + "min_count"),
        ]
    )
    n = prefix  # node and tensor names share the prefix so they cannot clash with the exporter's
    graph.node.extend(
        [
            helper.make_node("Cast", ["attention_mask"], [n + "mask"], to=TensorProto.FLOAT, name=n + "cast"),
            helper.make_node("Unsqueeze", [n + "mask", n + "last_axis"], [n + "mask3"], name=n + "unsqueeze"),
            helper.make_node("Mul", [hidden.name, n + "mask3"], [n + "masked"], name=n + "mul"),
            helper.make_node("ReduceSum", [n + "masked", n + "seq_axis"], [n + "sum"], keepdims=0, name=n + "sum"),
            helper.make_node("ReduceSum", [n + "mask", n + "seq_axis"], [n + "count"], keepdims=1, name=n + "count"),
            helper.make_node("Max", [n + "count", n + "min_count"], [n + "floor"], name=n + "floor"),
            helper.make_node("Div", [n + "sum", n + "floor"], [POOLED_OUTPUT], name=n + "mean"),
        ]
    )
    graph.output.append(helper.make_tensor_value_info(POOLED_OUTPUT, TensorProto.FLOAT, ["batch", width]))
    onnx.save(model, str(path))
    return {"output": POOLED_OUTPUT, "pooling": "mean", "dtype": "float32", "from": hidden.name}
