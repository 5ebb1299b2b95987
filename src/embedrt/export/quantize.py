"""int8 variants of the fused fp32 graph for the CPU."""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from embedrt.errors import ExportError

if TYPE_CHECKING:
    from embedrt.export.load import SourceModel


@dataclass(frozen=True)
class Int8Recipe:
    """A dynamic-quantization recipe; what it was is written into the manifest.

    Weights are signed int8 per output channel, activations uint8 per tensor, computed at run
    time: ``MatMulInteger``/``QAttention`` with u8s8 operands, which VNNI runs natively.
    Embeddings, LayerNorm and GELU stay fp32.

    ``min_input_sqnr_db``: before quantizing, the fp32 graph runs on calibration sentences and each
    quantizable node's input is quantized the way the runtime will (one uint8 scale for the whole
    tensor); nodes whose input keeps less signal-to-noise than this stay fp32. Only the nodes whose
    activations have outliers (in BERTs, typically some FFN down-projections) pay for accuracy.
    """

    name: str = "dynamic-per-channel"
    per_channel: bool = True
    reduce_range: bool = False
    op_types: tuple[str, ...] = ("MatMul", "Attention")
    #: Regular expressions; nodes whose name matches one stay fp32
    #: (``r"layer\.\d+/output/dense"`` matches the FFN down-projections).
    exclude: tuple[str, ...] = ()
    min_input_sqnr_db: float | None = None
    #: Store the word-embedding table as int8 rows with one scale each (``DequantizeLinear``, axis 0),
    #: a third of the weights at a quarter of the bytes; the runtime folds it back to fp32 at load.
    int8_word_table: bool = True

    def manifest_entry(self) -> dict[str, Any]:
        entry = asdict(self)
        entry["op_types"] = list(self.op_types)
        entry["exclude"] = list(self.exclude)
        return entry


#: Measured on all-MiniLM-L6-v2 (cosine to PyTorch over the 2,916 Chinese STS-B dev sentences):
#: every projection int8: mean 0.9879, min 0.972; all six FFN down-projections fp32: 0.9931, 0.980;
#: ``min_input_sqnr_db=23`` (keeps fp32 the down-projections of layers 0-2, whose GELU outputs carry
#: 50-100x channel outliers, and one up-projection): 0.9931, 0.982 with half as many fp32 FLOPs. On
#: a model without such outliers (the seeded stand-ins) it quantizes everything. Tried and dropped:
#: SmoothQuant-style migration of the down-projections' channel scales into their weights (alpha
#: 0.3-0.95) lowered the cosine (0.975-0.987): the weights have their own row outliers.
FFN_DOWN_FP32 = Int8Recipe(name="dynamic-per-channel-ffn-down-fp32", exclude=(r"layer\.\d+/output/dense",))
SENSITIVE_FP32 = Int8Recipe(name="dynamic-per-channel-sqnr23", min_input_sqnr_db=23.0)
DEFAULT_INT8 = SENSITIVE_FP32


def calibration_feeds(source: SourceModel, sentences: Sequence[str]) -> list[dict[str, np.ndarray]]:
    """One unpadded feed per sentence, tokenized like the bundle (padding would skew the statistics)."""
    texts = [s.lower() if source.do_lower_case else s for s in sentences if s.strip()]
    return unpadded_feeds(source.bundle_tokenizer(), texts)


def unpadded_feeds(tokenizer: Any, texts: Sequence[str]) -> list[dict[str, np.ndarray]]:
    """One batch-1 feed (``input_ids``, ``attention_mask``, ``token_type_ids``) per text, no padding."""
    feeds = []
    for encoding in tokenizer.encode_batch(list(texts)):
        ids = np.asarray([encoding.ids], dtype=np.int64)
        feeds.append(
            {
                "input_ids": ids,
                "attention_mask": np.ones_like(ids),
                "token_type_ids": np.asarray([encoding.type_ids], dtype=np.int64),
            }
        )
    return feeds


def uint8_sqnr_db(values: np.ndarray) -> float:
    """Signal-to-noise (dB) of ``values`` after ONNX ``DynamicQuantizeLinear`` (one uint8 scale)."""
    low, high = min(float(values.min()), 0.0), max(float(values.max()), 0.0)
    scale = (high - low) / 255 or 1.0
    zero = np.round(-low / scale)
    restored = (np.clip(np.round(values / scale) + zero, 0, 255) - zero) * scale
    noise = float(np.mean((values - restored) ** 2))
    return float("inf") if noise == 0 else 10 * float(np.log10(float(np.mean(values**2)) / noise))


def input_sqnr(model_path: Path, nodes: Sequence, feeds: Sequence[dict[str, np.ndarray]]) -> dict[str, float]:
    """Each node's input SQNR over all calibration tokens at once (one scale, as in a large batch)."""
    import onnx
    import onnxruntime as ort

    tensors = sorted({node.input[0] for node in nodes})
    model = onnx.load(str(model_path))
    model.graph.output.extend(onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None) for n in tensors)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    wanted = {i.name for i in session.get_inputs()}
    rows: dict[str, list[np.ndarray]] = {name: [] for name in tensors}
    for feed in feeds:
        values = session.run(tensors, {k: v for k, v in feed.items() if k in wanted})
        for name, value in zip(tensors, values, strict=True):
            rows[name].append(value.reshape(-1, value.shape[-1]))
    sqnr = {name: uint8_sqnr_db(np.concatenate(parts)) for name, parts in rows.items()}
    return {node.name: sqnr[node.input[0]] for node in nodes}


def quantize_int8(
    fp32: Path,
    out: Path,
    recipe: Int8Recipe = DEFAULT_INT8,
    calibration: Sequence[dict[str, np.ndarray]] = (),
) -> dict[str, Any]:
    """Quantize the fused graph ``fp32`` into ``out`` following ``recipe``; returns its manifest entry.

    ``calibration`` (feeds from :func:`calibration_feeds`) is needed when the recipe has
    ``min_input_sqnr_db``; the entry then lists the nodes kept fp32 and the SQNR that decided it.
    """
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    graph = onnx.load(str(fp32), load_external_data=False).graph
    patterns = [re.compile(pattern) for pattern in recipe.exclude]
    excluded = [node.name for node in graph.node if any(p.search(node.name) for p in patterns)]
    entry = recipe.manifest_entry()
    if recipe.min_input_sqnr_db is not None:
        if not calibration:
            raise ExportError(f"int8 recipe {recipe.name} needs calibration sentences to measure input SQNR")
        candidates = [node for node in graph.node if node.op_type in recipe.op_types and node.name not in excluded]
        sqnr = input_sqnr(fp32, candidates, calibration)
        sensitive = [name for name, db in sqnr.items() if db < recipe.min_input_sqnr_db]
        excluded += sensitive
        entry["kept_fp32"] = sensitive
        entry["input_sqnr_db"] = {name: round(db, 1) for name, db in sqnr.items()}
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
    if recipe.int8_word_table:
        entry[WORD_TABLE] = store_word_table_int8(out)
    return entry


#: The recipe key that tells the runtime the word table is stored int8 (and must be folded at load).
WORD_TABLE = "word_table"


def store_word_table_int8(path: Path) -> str:
    """Replace the fp32 word table feeding ``EmbedLayerNormalization`` with int8 rows, a scale per row
    and a ``DequantizeLinear(axis=0)``; returns what the manifest records (``"int8"``, or ``"fp32"`` when
    the graph has no such table).

    Per-row symmetric int8 keeps each token's vector to within 1/254 of its largest entry. ONNX Runtime
    would dequantize the whole table on every run; sessions opened with ``session.disable_quant_qdq``
    fold it once at load (the runtime does so when the manifest says ``word_table: int8``).
    """
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(path))
    graph = model.graph
    initializers = {tensor.name: tensor for tensor in graph.initializer}
    nodes = [node for node in graph.node if node.op_type == "EmbedLayerNormalization"]
    if not nodes or nodes[0].input[2] not in initializers:
        return "fp32"
    name = nodes[0].input[2]
    table = numpy_helper.to_array(initializers[name]).astype(np.float32)
    scale = np.abs(table).max(axis=1) / 127.0
    scale[scale == 0] = 1.0
    rows = np.clip(np.round(table / scale[:, None]), -127, 127).astype(np.int8)
    graph.initializer.remove(initializers[name])
    graph.initializer.extend(
        [
            numpy_helper.from_array(rows, f"{name}_int8"),
            numpy_helper.from_array(scale.astype(np.float32), f"{name}_scale"),
            numpy_helper.from_array(np.zeros(len(scale), dtype=np.int8), f"{name}_zero_point"),
        ]
    )
    dequantize = helper.make_node(
        "DequantizeLinear",
        [f"{name}_int8", f"{name}_scale", f"{name}_zero_point"],
        [name],
        name=f"{name}_DequantizeLinear",
        axis=0,
    )
    graph.node.insert(0, dequantize)
    onnx.save(model, str(path))
    return "int8"
