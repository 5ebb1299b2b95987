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


#: How activations get their int8 scale: fixed at export from calibration texts, or per batch at run time.
ACTIVATIONS = ("static", "dynamic")


@dataclass(frozen=True)
class Int8Recipe:
    """An int8 recipe for ONNX Runtime; what it was is written into the manifest.

    Weights are signed int8 per output channel, activations uint8 per tensor: ``MatMulInteger``/
    ``QAttention`` with u8s8 operands, which VNNI runs natively. Embeddings, LayerNorm and GELU stay fp32.

    ``activations``: ``"static"`` fixes each activation's (scale, zero point) at export, from the range it
    takes over every calibration token (``QuantizeLinear`` with constants, ``MatMulIntegerToFloat``). Integer
    GEMMs are exact, so a text's vector is the same alone and in any batch at any padded width
    (bit-identical where measured). ``"dynamic"`` (the recipe before 0.x, kept for benchmarks) computes one
    scale per tensor at run time (``DynamicQuantizeLinear``) from the whole padded batch, so a text's vector
    moves with its batch-mates (all-MiniLM-L6-v2: cosine 0.991 alone vs in a batch).

    ``min_input_sqnr_db``: before quantizing, the fp32 graph runs on calibration sentences and each
    quantizable node's input is quantized with one uint8 scale over all calibration tokens (what a static
    scale does; a dynamic scale over a large batch does about the same); nodes whose input keeps less
    signal-to-noise than this stay fp32. Only the nodes whose activations have outliers (in BERTs,
    typically some FFN down-projections) pay for accuracy.
    """

    name: str = "static-per-channel"
    activations: str = "static"
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

    def __post_init__(self) -> None:
        if self.activations not in ACTIVATIONS:
            raise ExportError(f"int8 activations {self.activations!r} unknown; use one of: {', '.join(ACTIVATIONS)}")

    @property
    def batch_invariant(self) -> bool:
        """Whether a text's vector is independent of its batch-mates (static activation scales)."""
        return self.activations == "static"

    def manifest_entry(self) -> dict[str, Any]:
        entry = asdict(self)
        entry["op_types"] = list(self.op_types)
        entry["exclude"] = list(self.exclude)
        return entry


#: Measured with dynamic scales on all-MiniLM-L6-v2 (cosine to PyTorch over the 2,916 Chinese STS-B dev
#: sentences): every projection int8: mean 0.9879, min 0.972; all six FFN down-projections fp32: 0.9931,
#: 0.980; ``min_input_sqnr_db=23`` (keeps fp32 the down-projections of layers 0-2, whose GELU outputs carry
#: 50-100x channel outliers, and one up-projection): 0.9931, 0.982 with half as many fp32 FLOPs. On
#: a model without such outliers (the seeded stand-ins) it quantizes everything. Tried and dropped:
#: SmoothQuant-style migration of the down-projections' channel scales into their weights (alpha
#: 0.3-0.95) lowered the cosine (0.975-0.987): the weights have their own row outliers.
FFN_DOWN_FP32 = Int8Recipe(
    name="dynamic-per-channel-ffn-down-fp32", activations="dynamic", exclude=(r"layer\.\d+/output/dense",)
)
#: The default: static scales calibrated on the export's calibration texts, projections whose input keeps less
#: than 25 dB under its static scale kept fp32: the lowest threshold that kept all-MiniLM-L6-v2's STS loss
#: within 0.15 Spearman of fp32 (figures per threshold: ``benchmarks/eval_int8.py`` and its results).
STATIC_INT8 = Int8Recipe(name="static-per-channel-sqnr25", min_input_sqnr_db=25.0)
#: The recipe embedrt exported by default before static scales (batch-dependent); for benchmarks.
DYNAMIC_INT8 = Int8Recipe(name="dynamic-per-channel-sqnr23", activations="dynamic", min_input_sqnr_db=23.0)
SENSITIVE_FP32 = DYNAMIC_INT8
DEFAULT_INT8 = STATIC_INT8
#: ``embedrt export --int8-recipe NAME``.
INT8_RECIPES = {"static": STATIC_INT8, "dynamic": DYNAMIC_INT8}


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


def uint8_params(low: float, high: float) -> tuple[float, int]:
    """(scale, zero point) of ONNX ``DynamicQuantizeLinear`` for values in [low, high] (0 always representable)."""
    low, high = min(low, 0.0), max(high, 0.0)
    scale = float(np.float32((high - low) / 255)) or 1.0
    return scale, int(np.clip(np.round(-low / scale), 0, 255))


def _uint8_noise(values: np.ndarray, scale: float, zero: int) -> tuple[float, float]:
    """Sum of squares of ``values`` and of their error after uint8 quantization with (scale, zero)."""
    restored = (np.clip(np.round(values / scale) + zero, 0, 255) - zero) * scale
    signal = np.sum(np.square(values, dtype=np.float64))
    return float(signal), float(np.sum(np.square(values - restored, dtype=np.float64)))


def _sqnr_db(signal: float, noise: float) -> float:
    return float("inf") if noise == 0 else 10 * float(np.log10(signal / noise))


def uint8_sqnr_db(values: np.ndarray) -> float:
    """Signal-to-noise (dB) of ``values`` after ONNX ``DynamicQuantizeLinear`` (one uint8 scale)."""
    scale, zero = uint8_params(float(values.min()), float(values.max()))
    return _sqnr_db(*_uint8_noise(values, scale, zero))


@dataclass(frozen=True)
class ActivationStats:
    """An activation over all calibration tokens: its range and its SQNR with one uint8 scale for that range."""

    low: float
    high: float
    sqnr_db: float


def activation_stats(
    model_path: Path, tensors: Sequence[str], feeds: Sequence[dict[str, np.ndarray]], sqnr_every: int = 4
) -> dict[str, ActivationStats]:
    """Range and uint8 SQNR of each named fp32 tensor of ``model_path`` over ``feeds``, in two streaming passes:
    the range over every feed, then the SQNR with that range over every ``sqnr_every``-th feed (an average,
    estimated as well from a sample of a few hundred texts at a fraction of the time)."""
    import onnx
    import onnxruntime as ort

    names = sorted(set(tensors))
    model = onnx.load(str(model_path))
    model.graph.output.extend(onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None) for n in names)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    wanted = {i.name for i in session.get_inputs()}
    texts = [{k: v for k, v in feed.items() if k in wanted} for feed in feeds]
    runs = same_length_batches(texts)
    low = dict.fromkeys(names, 0.0)
    high = dict.fromkeys(names, 0.0)
    for feed in runs:
        for name, value in zip(names, session.run(names, feed), strict=True):
            low[name], high[name] = min(low[name], float(value.min())), max(high[name], float(value.max()))
    params = {name: uint8_params(low[name], high[name]) for name in names}
    signal, noise = dict.fromkeys(names, 0.0), dict.fromkeys(names, 0.0)
    for feed in same_length_batches(texts[::sqnr_every]):
        for name, value in zip(names, session.run(names, feed), strict=True):
            energy, error = _uint8_noise(value, *params[name])
            signal[name] += energy
            noise[name] += error
    return {name: ActivationStats(low[name], high[name], _sqnr_db(signal[name], noise[name])) for name in names}


def same_length_batches(feeds: Sequence[dict[str, np.ndarray]], rows: int = 64) -> list[dict[str, np.ndarray]]:
    """Batch-1 feeds stacked into batches of texts of one length: no padding enters the statistics, and the
    calibration runs a few dozen times instead of once a text."""
    by_length: dict[int, list[dict[str, np.ndarray]]] = {}
    for feed in feeds:
        by_length.setdefault(next(iter(feed.values())).shape[1], []).append(feed)
    return [
        {name: np.concatenate([feed[name] for feed in group[start : start + rows]]) for name in group[0]}
        for group in by_length.values()
        for start in range(0, len(group), rows)
    ]


def input_sqnr(model_path: Path, nodes: Sequence, feeds: Sequence[dict[str, np.ndarray]]) -> dict[str, float]:
    """Each node's input SQNR over all calibration tokens at once (one scale, as a static scale or a large batch)."""
    stats = activation_stats(model_path, [node.input[0] for node in nodes], feeds)
    return {node.name: stats[node.input[0]].sqnr_db for node in nodes}


def quantize_int8(
    fp32: Path,
    out: Path,
    recipe: Int8Recipe = DEFAULT_INT8,
    calibration: Sequence[dict[str, np.ndarray]] = (),
) -> dict[str, Any]:
    """Quantize the fused graph ``fp32`` into ``out`` following ``recipe``; returns its manifest entry.

    ``calibration`` (feeds from :func:`calibration_feeds`) is needed for static activation scales and when
    the recipe has ``min_input_sqnr_db``; the entry then lists the nodes kept fp32 and the SQNR that decided it.
    """
    import onnx

    graph = onnx.load(str(fp32), load_external_data=False).graph
    patterns = [re.compile(pattern) for pattern in recipe.exclude]
    excluded = [node.name for node in graph.node if any(p.search(node.name) for p in patterns)]
    entry = {**recipe.manifest_entry(), "batch_invariant": recipe.batch_invariant}
    stats: dict[str, ActivationStats] = {}
    if recipe.min_input_sqnr_db is not None or recipe.batch_invariant:
        if not calibration:
            raise ExportError(f"int8 recipe {recipe.name} needs calibration sentences (activation ranges and SQNR)")
        candidates = [node for node in graph.node if node.op_type in recipe.op_types and node.name not in excluded]
        every = 4 if recipe.batch_invariant else 1  # the dynamic recipe: as measured before (48 parity texts)
        stats = activation_stats(fp32, [node.input[0] for node in candidates], calibration, every)
        if recipe.min_input_sqnr_db is not None:
            sqnr = {node.name: stats[node.input[0]].sqnr_db for node in candidates}
            sensitive = [name for name, db in sqnr.items() if db < recipe.min_input_sqnr_db]
            excluded += sensitive
            entry["kept_fp32"] = sensitive
            entry["input_sqnr_db"] = {name: round(db, 1) for name, db in sqnr.items()}
    _quantize_dynamic(fp32, out, recipe, excluded)
    if recipe.batch_invariant:
        entry["static_scales"] = fix_activation_scales(out, stats)
    if recipe.int8_word_table:
        entry[WORD_TABLE] = store_word_table_int8(out)
    return entry


def _quantize_dynamic(fp32: Path, out: Path, recipe: Int8Recipe, excluded: Sequence[str]) -> None:
    """ONNX Runtime's ``quantize_dynamic``: int8 weights, ``DynamicQuantizeLinear`` before each int8 node."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

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
            nodes_to_exclude=list(excluded),
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT, "MatMulConstBOnly": True},
        )
    except Exception as err:
        raise ExportError(f"int8 quantization failed: {err}") from err
    finally:
        root.setLevel(level)


def fix_activation_scales(path: Path, stats: dict[str, ActivationStats]) -> int:
    """Turn the dynamic graph at ``path`` static: each ``DynamicQuantizeLinear`` becomes a ``QuantizeLinear``
    with the (scale, zero point) of its input's calibrated range, as constants under the names the
    dynamic node gave its outputs, so ``QAttention`` and the scale products read them unchanged; then each
    ``MatMulInteger -> Cast -> Mul(scale product)`` becomes one ``MatMulIntegerToFloat``. Returns how many
    activations got a fixed scale.

    ONNX Runtime would fuse that chain itself, but only while the scale product is a ``Mul`` node, and
    with constant scales its constant folding removes the node first: fused here, the GEMM scales its int32
    result in its own output loop (faster than the unfused chain: ``benchmarks/int8_ab.py``).
    """
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(path))
    graph = model.graph
    nodes = list(graph.node)
    dynamic = [node for node in nodes if node.op_type == "DynamicQuantizeLinear"]
    missing = sorted({node.input[0] for node in dynamic} - set(stats))
    if missing:
        raise ExportError(f"no calibrated range for {', '.join(missing)}; cannot fix its int8 scale")
    static = {}
    for node in dynamic:
        value, (quantized, scale, zero) = stats[node.input[0]], node.output
        step, offset = uint8_params(value.low, value.high)
        graph.initializer.extend(
            [
                numpy_helper.from_array(np.array(step, dtype=np.float32), scale),
                numpy_helper.from_array(np.array(offset, dtype=np.uint8), zero),
            ]
        )
        static[id(node)] = helper.make_node("QuantizeLinear", [node.input[0], scale, zero], [quantized], name=node.name)
    fused, dropped = _matmul_integer_to_float(nodes, {node.output[0]: node.output[1] for node in dynamic})
    del graph.node[:]
    graph.node.extend(static.get(id(n), fused.get(id(n), n)) for n in nodes if id(n) not in dropped)
    onnx.save(model, str(path))
    return len(static)


def _matmul_integer_to_float(nodes: Sequence[Any], scale_of: dict[str, str]) -> tuple[dict[int, Any], set[int]]:
    """``MatMulInteger -> Cast -> Mul(a_scale x b_scale)`` chains as ``MatMulIntegerToFloat`` nodes: the
    replacement for each final ``Mul`` (by ``id``), and the ids of the nodes the fusion removes.
    ``scale_of``: quantized activation -> the name of its scale."""
    from onnx import helper

    producer = {output: node for node in nodes for output in node.output}
    readers: dict[str, int] = {}
    for node in nodes:
        for name in node.input:
            readers[name] = readers.get(name, 0) + 1
    fused: dict[int, Any] = {}
    dropped: set[int] = set()
    for mul in (node for node in nodes if node.op_type == "Mul" and len(node.input) == 2):
        parents = [producer.get(name) for name in mul.input]
        cast = next((p for p in parents if p is not None and p.op_type == "Cast"), None)
        scales = next((p for p in parents if p is not None and p.op_type == "Mul"), None)
        matmul = producer.get(cast.input[0]) if cast is not None else None
        if cast is None or scales is None or matmul is None or matmul.op_type != "MatMulInteger":
            continue
        if any(readers.get(n.output[0], 0) != 1 for n in (cast, scales, matmul)):
            continue
        a, b, *zeros = matmul.input
        if a not in scale_of or scale_of[a] not in scales.input:
            continue
        b_scale = next(name for name in scales.input if name != scale_of[a])
        inputs = [a, b, scale_of[a], b_scale, *(zeros + ["", ""])[:2]]
        fused[id(mul)] = helper.make_node(
            "MatMulIntegerToFloat", inputs, list(mul.output), name=matmul.name, domain="com.microsoft"
        )
        dropped |= {id(cast), id(scales), id(matmul)}
    return fused, dropped


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
