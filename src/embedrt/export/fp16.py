"""fp16 variants for GPUs, in the two flavours the two GPU engines can take.

- ``fp16``: the fused graph (``Attention``, ``SkipLayerNormalization``, ... from ``com.microsoft``)
  for ONNX Runtime's CUDA provider.
- ``fp16-trt``: the plain, unfused export, strongly typed in fp16, for TensorRT: its ONNX parser
  cannot read ``com.microsoft`` ops, and TensorRT 11 has no FP16 builder flag, so the fp16 must
  already be in the graph (a ``STRONGLY_TYPED`` network takes the types as written).

Both keep fp32 inputs and outputs (``keep_io_types``) so the runtime feeds and reads them like the
fp32 graph; pooling then sums the fp32 output on the host. Ops where fp16 is known to overflow or
lose too much stay fp32 (see ``Fp16Flavour.fp32_ops``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from embedrt.bundle import Parity
from embedrt.errors import ExportError
from embedrt.extras import missing_extra

#: What fills masked attention scores. transformers writes ``finfo(float32).min`` (-3.4e38): in fp16
#: that is -inf, and ``0 * -inf`` is NaN. -1e4 (the original BERT value) is finite in fp16 and still
#: makes ``exp`` underflow to exactly 0 after the max is subtracted.
MASK_VALUE = -1.0e4
#: Sentences the ONNX reference evaluator embeds for the ``fp16-trt`` parity (it runs in NumPy: slow).
REFERENCE_SENTENCES = 16


@dataclass(frozen=True)
class Fp16Flavour:
    """One fp16 conversion: which graph it starts from and which ops stay fp32."""

    name: str
    source_graph: str
    #: LayerNorm (a variance over 384-1024 values overflows fp16's 65504) and Softmax (sums of
    #: exponentials) stay fp32. In the fused graph LayerNorm lives inside the SkipLayerNorm and
    #: EmbedLayerNorm ops, which therefore stay fp32 too, residual sums included. Softmax lives inside
    #: ``Attention``, whose CUDA kernels keep the softmax max and sum in float registers whatever the
    #: tensor type (onnxruntime contrib_ops/cuda/bert/attention_softmax.h), so Attention runs fp16.
    fp32_ops: tuple[str, ...]
    parity_method: str

    def manifest_entry(self, replaced_masks: int) -> dict[str, Any]:
        return {
            "flavour": self.name,
            "source_graph": self.source_graph,
            "keep_io_types": True,
            "fp32_ops": list(self.fp32_ops),
            "mask_value": MASK_VALUE,
            "mask_constants_replaced": replaced_masks,
            "parity_method": self.parity_method,
        }


CUDA_FLAVOUR = Fp16Flavour(
    name="fused-ort-cuda",
    source_graph="fused (com.microsoft Attention, SkipLayerNormalization, BiasGelu)",
    fp32_ops=("EmbedLayerNormalization", "SkipLayerNormalization", "LayerNormalization"),
    parity_method=(
        "onnxruntime CPUExecutionProvider: ops without an fp16 CPU kernel run in fp32 between inserted "
        "casts, so this checks the conversion, not CUDA arithmetic"
    ),
)
TRT_FLAVOUR = Fp16Flavour(
    name="plain-strongly-typed-tensorrt",
    source_graph="plain ONNX export, no com.microsoft ops",
    fp32_ops=("LayerNormalization", "Softmax"),
    parity_method=(
        "onnx.reference.ReferenceEvaluator: every tensor rounded to fp16 as written in the graph, "
        "MatMul in NumPy (fp16 operands, wider accumulation, like tensor cores)"
    ),
)


def _replace_mask_constants(model: Any) -> int:
    """Set float constants below fp16's range (the attention-mask fill) to :data:`MASK_VALUE`."""
    from onnx import numpy_helper

    fp16_lowest = float(np.finfo(np.float16).min)

    def fix(tensor: Any) -> bool:
        if tensor.data_type != 1:  # FLOAT
            return False
        values = numpy_helper.to_array(tensor)
        if values.size != 1 or float(values.reshape(-1)[0]) >= fp16_lowest:
            return False
        tensor.CopyFrom(numpy_helper.from_array(np.full(values.shape, MASK_VALUE, np.float32), tensor.name))
        return True

    replaced = sum(fix(init) for init in model.graph.initializer)
    for node in model.graph.node:
        if node.op_type == "Constant":
            replaced += sum(fix(attr.t) for attr in node.attribute if attr.name == "value")
    return replaced


def convert_fp16(source: Path, out: Path, flavour: Fp16Flavour) -> dict[str, Any]:
    """Write ``source`` (an fp32 ONNX) as fp16 to ``out`` following ``flavour``; return its recipe.

    Uses ONNX Runtime's converter through ``OnnxModel`` so that symbolic shape inference types the
    ``com.microsoft`` ops (plain ``onnx`` shape inference leaves them untyped and the fused graph then
    fails to load with mixed float/float16 inputs), and sorts the result topologically (the converter
    appends its casts at the end, which the ONNX reference evaluator and strict parsers reject).
    """
    try:
        import onnx
        from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST
        from onnxruntime.transformers.onnx_model import OnnxModel
    except ImportError as err:
        raise missing_extra(("onnx", "onnxruntime"), "the fp16 export") from err

    model = onnx.load(str(source))
    replaced = _replace_mask_constants(model)
    wrapped = OnnxModel(model)
    try:
        wrapped.convert_float_to_float16(
            use_symbolic_shape_infer=True,
            keep_io_types=True,
            op_block_list=[*DEFAULT_OP_BLOCK_LIST, *flavour.fp32_ops],
        )
        wrapped.topological_sort()
    except Exception as err:  # the converter raises bare exceptions from shape inference
        raise ExportError(f"fp16 conversion ({flavour.name}) of {source.name} failed: {err}") from err
    wrapped.save_model_to_file(str(out))
    return flavour.manifest_entry(replaced)


def measure_reference_parity(
    bundle_dir: Path,
    graph: Path,
    sentences: Sequence[str],
    reference: np.ndarray,
    limit: int = REFERENCE_SENTENCES,
) -> Parity:
    """Cosine to ``reference`` of ``graph`` run by ONNX's reference evaluator, one sentence at a time.

    The evaluator computes each node in NumPy with the tensor types the graph declares, so an fp16
    graph is evaluated in fp16, which no CPU execution provider guarantees. It is slow: only the
    first ``limit`` sentences are used.
    """
    from onnx.reference import ReferenceEvaluator

    from embedrt.bundle import Bundle
    from embedrt.export.validate import cosine_rows
    from embedrt.runtime.batching import pad_batch
    from embedrt.runtime.pooling import pool
    from embedrt.runtime.tokenizer import TextTokenizer

    manifest = Bundle.open(bundle_dir).manifest
    texts = list(sentences)[:limit]
    tokenizer = TextTokenizer(bundle_dir / manifest.tokenizer, manifest.max_seq_length, manifest.do_lower_case)
    evaluator = ReferenceEvaluator(str(graph))
    declared = set(evaluator.input_names)
    rows = []
    for encoding in tokenizer.encode(texts):
        batch = pad_batch([encoding], with_token_types=True)
        (hidden,) = evaluator.run(None, {name: value for name, value in batch.items() if name in declared})
        hidden = np.asarray(hidden)
        if not np.isfinite(hidden).all():
            raise ExportError(f"{graph.name} produced inf/NaN in fp16 on {len(encoding.ids)} tokens")
        rows.append(pool(hidden, batch["attention_mask"], manifest.pooling)[0])
    cos = cosine_rows(np.stack(rows), reference[: len(texts)])
    return Parity(min_cos=float(cos.min()), mean_cos=float(cos.mean()), n=len(texts))
