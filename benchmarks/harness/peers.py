"""What embedrt is compared with, each behind the same ``encode(texts, batch_size)``.

OpenVINO used directly (the loop a user writes), sentence-transformers on PyTorch and on its ONNX backend,
fastembed, CTranslate2. The module imports no engine and nothing of embedrt at import time, so the peers'
venv (which has no embedrt) loads it; each function imports what it runs.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from harness.timing import Encode

#: sentence-transformers' ONNX backend: row -> model file under the peers' model folder.
ST_ONNX_FILES = {"st-onnx-o2": "onnx/model_O2.onnx", "st-onnx-qint8": "onnx/model_qint8_avx512_vnni.onnx"}
#: CTranslate2: converted (and run) with this compute type.
CT2_COMPUTE_TYPE = "int8_float32"


def ort_options(threads: int) -> Any:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return options


def import_openvino() -> Any:
    """``openvino`` imported with its telemetry blocked (embedrt's helper; the first import decides)."""
    from embedrt.runtime.backends.openvino import no_telemetry

    with no_telemetry():
        import openvino
    return openvino


def mean_pool(hidden: Any, mask: Any) -> Any:
    """Mean of the token vectors where ``mask`` is 1 (what the stand-in's Pooling module does), in NumPy."""
    import numpy as np

    weights = mask[:, :, None].astype(np.float32)
    return (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)


def padded(batch: list) -> dict[str, Any]:
    """``input_ids``, ``attention_mask``, ``token_type_ids`` of a batch of encodings, padded to its longest."""
    import numpy as np

    width = max(len(encoding.ids) for encoding in batch)
    ids = np.zeros((len(batch), width), dtype=np.int64)
    mask = np.zeros_like(ids)
    types = np.zeros_like(ids)
    for row, encoding in enumerate(batch):
        n = len(encoding.ids)
        ids[row, :n] = encoding.ids
        mask[row, :n] = 1
        types[row, :n] = encoding.type_ids
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}


def length_sorted(tokenizer: Any, infer: Callable[[list], Any]) -> Encode:
    """The usual hand-written loop: tokenize, sort by token length, ``infer`` each batch, restore the order.

    ``infer`` takes a batch of ``tokenizers`` encodings and returns their pooled vectors.
    """
    import numpy as np

    def encode(texts: Sequence[str], batch_size: int) -> Any:
        encodings = tokenizer.encode_batch(list(texts))
        order = sorted(range(len(encodings)), key=lambda i: len(encodings[i].ids))
        out = None
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            pooled = infer([encodings[i] for i in chunk])
            if out is None:
                out = np.empty((len(encodings), pooled.shape[1]), dtype=np.float32)
            out[chunk] = pooled
        return out

    return encode


def _head_input(port: Any) -> Any:
    """The input, before any Transpose/Reshape, that an attention input is split into heads from."""
    node = port.get_source_output().get_node()
    while node.get_type_name() in ("Transpose", "Reshape"):
        port = node.input(0)
        node = port.get_source_output().get_node()
    return port


def pad_attention_keys(model: Any, extra: int = 15) -> None:
    """Give every ``ScaledDotProductAttention`` in ``model`` ``extra`` more keys that get no weight (tried for
    issue 20: OpenVINO's fused attention, batch-invariant).

    The fused softmax sums a row's keys in 16-wide vectors and the last ``width % 16`` one by one: with 15
    more keys every real key is in the vector part at any padded width, so a row is bit-identical alone and
    in any batch. Keys and values get zeros on the sequence axis of the ``[batch, seq, hidden]`` tensor they
    are split into heads from (after their FakeQuantize: a constant Pad keeps the int8 product), the mask its
    lowest value on the key axis; the queries, so the output, keep their length.
    """
    import numpy as np
    from openvino import opset13 as ops

    attentions = [node for node in model.get_ordered_ops() if node.get_type_name() == "ScaledDotProductAttention"]
    if not attentions or any(node.get_input_size() < 4 for node in attentions):
        raise SystemExit("pad_attention_keys: the IR has no ScaledDotProductAttention with a mask")
    lowest = np.float32(np.finfo(np.float32).min)
    edits = [
        (_head_input(node.input(port)), np.array([0, extra, 0]), np.float32(0))
        for node in attentions
        for port in (1, 2)
    ]
    edits += [(node.input(3), np.array([0, 0, 0, extra]), lowest) for node in attentions]
    padded: dict[Any, Any] = {}
    for port, end, value in edits:
        source = port.get_source_output()
        if source not in padded:
            padded[source] = ops.pad(source, np.zeros_like(end), end, "constant", value).output(0)
        port.replace_source_output(padded[source])
    model.validate_nodes_and_infer_types()


def ov_direct(
    ir: Path,
    tokenizer_json: Path,
    threads: int,
    hint: str = "f32",
    extra: dict | None = None,
    edit: Callable[[Any], object] | None = None,
) -> Encode:
    """OpenVINO the way a user writes it: the bundle's tokenizer.json, ``compiled(feed)[0]``, NumPy pooling.

    The defaults keep OpenVINO's other settings (its fused attention among them), as a user's code would.
    ``edit`` changes the ``ov.Model`` before it is compiled (:func:`pad_attention_keys`).
    """
    from tokenizers import Tokenizer

    ov = import_openvino()
    if not ir.is_file():
        raise SystemExit(f"no IR at {ir} (compare_cpu.py prepares it)")
    core = ov.Core()
    if hint == "bf16" and "BF16" not in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
        raise SystemExit("this CPU has no native bf16 (AVX512_BF16 or AMX)")
    config = {
        "INFERENCE_NUM_THREADS": threads,
        "PERFORMANCE_HINT": "LATENCY",
        "NUM_STREAMS": 1,
        "INFERENCE_PRECISION_HINT": hint,
        **(extra or {}),
    }
    model = core.read_model(str(ir))
    if edit is not None:
        edit(model)
    compiled = core.compile_model(model, "CPU", config)

    def infer(batch: list) -> Any:
        feed = padded(batch)
        return mean_pool(compiled(feed)[0], feed["attention_mask"])

    return length_sorted(Tokenizer.from_file(str(tokenizer_json)), infer)


def ctranslate2_encoder(model_dir: Path, tokenizer_json: Path, threads: int) -> Encode:
    """CTranslate2's Encoder: token ids in, ``last_hidden_state`` (padded by CTranslate2) mean-pooled in NumPy."""
    import ctranslate2
    import numpy as np
    from tokenizers import Tokenizer

    if not (model_dir / "model.bin").is_file():
        raise SystemExit(f"no CTranslate2 model at {model_dir} (ctranslate2 missing in the peers venv?)")
    encoder = ctranslate2.Encoder(str(model_dir), device="cpu", intra_threads=threads, compute_type=CT2_COMPUTE_TYPE)

    def infer(batch: list) -> Any:
        output = encoder.forward_batch([encoding.ids for encoding in batch])
        hidden = np.asarray(output.last_hidden_state)
        lengths = np.array([len(encoding.ids) for encoding in batch])
        mask = np.arange(hidden.shape[1])[None, :] < lengths[:, None]
        return mean_pool(hidden, mask)

    return length_sorted(Tokenizer.from_file(str(tokenizer_json)), infer)


def st_torch(model_dir: Path, threads: int) -> Encode:
    """sentence-transformers on PyTorch, fp32."""
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(threads)
    model = SentenceTransformer(str(model_dir), device="cpu")
    return lambda texts, batch_size: model.encode(list(texts), batch_size=batch_size, convert_to_numpy=True)


def st_onnx(model_dir: Path, file_name: str, threads: int) -> Encode:
    """sentence-transformers' ONNX backend on one of its own exported models."""
    from sentence_transformers import SentenceTransformer

    kwargs = {"file_name": file_name, "provider": "CPUExecutionProvider", "session_options": ort_options(threads)}
    model = SentenceTransformer(str(model_dir), device="cpu", backend="onnx", model_kwargs=kwargs)
    return lambda texts, batch_size: model.encode(list(texts), batch_size=batch_size, convert_to_numpy=True)


def fastembed_encoder(model_dir: Path, threads: int) -> Encode:
    """fastembed on a custom (offline) model folder with mean pooling, no normalization."""
    import numpy as np
    from fastembed import TextEmbedding
    from fastembed.common.model_description import ModelSource, PoolingType

    model_id = "embedrt-bench/standin-fused-fp32"
    config = json.loads((model_dir / "config.json").read_text())
    TextEmbedding.add_custom_model(
        model=model_id,
        pooling=PoolingType.MEAN,
        normalization=False,
        sources=ModelSource(hf=model_id),
        dim=config["hidden_size"],
        model_file="model.onnx",
    )
    model = TextEmbedding(
        model_id, specific_model_path=str(model_dir), threads=threads, providers=["CPUExecutionProvider"]
    )
    return lambda texts, batch_size: np.stack(list(model.embed(list(texts), batch_size=batch_size)))


def prepare_st_onnx(model_dir: Path) -> None:
    """Write sentence-transformers' own O2-optimized and avx512_vnni-quantized ONNX models into ``model_dir``."""
    from sentence_transformers import (
        SentenceTransformer,
        export_dynamic_quantized_onnx_model,
        export_optimized_onnx_model,
    )

    model = SentenceTransformer(str(model_dir), device="cpu", backend="onnx")
    model.save(str(model_dir))
    export_optimized_onnx_model(model, "O2", str(model_dir))
    export_dynamic_quantized_onnx_model(model, "avx512_vnni", str(model_dir))
    for file in ST_ONNX_FILES.values():
        if not (model_dir / file).is_file():
            raise SystemExit(f"sentence-transformers did not write {model_dir / file}")


def prepare_ct2(model_dir: Path, out: Path) -> None:
    """Convert the stand-in's BertModel (the sentence-transformers directory's root) with CTranslate2's converter.

    Needs transformers < 5 (the peers' venv). The stand-in has no pooler; ``BertModel.from_pretrained``
    adds a randomly initialized one, which the converter requires and the mean pooling never reads.
    """
    from ctranslate2.converters import TransformersConverter

    TransformersConverter(str(model_dir)).convert(str(out), quantization=CT2_COMPUTE_TYPE, force=True)


def openvino_facts() -> dict:
    """OpenVINO's version and whether its CPU plugin computes bf16 natively here (``BF16`` capability)."""
    try:
        ov = import_openvino()
    except ImportError:
        return {"openvino": None, "native_bf16": False}
    capabilities = list(ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
    return {"openvino": ov.__version__, "native_bf16": "BF16" in capabilities, "capabilities": capabilities}
