"""Trace the transformer to plain ONNX with dynamic batch and sequence axes."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from embedrt.errors import ExportError

INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
OUTPUT_NAME = "last_hidden_state"
#: Opset 17 has LayerNormalization as one op, which ONNX Runtime's fusions and TensorRT both take.
OPSET = 17


def export_transformer(transformer: Any, path: Path, opset: int = OPSET) -> Path:
    """Write ``transformer`` (a ``BertModel`` with eager attention) as ONNX to ``path``.

    Inputs go by keyword through a wrapper: transformers 5 takes other arguments positionally.
    The TorchScript exporter (``dynamo=False``) writes the attention pattern ONNX Runtime fuses.
    """
    import torch

    class _ByKeyword(torch.nn.Module):
        def __init__(self, model: Any) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            out = self.model(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
            return out.last_hidden_state

    wrapper = _ByKeyword(transformer).eval()
    example = (
        torch.tensor([[2, 5, 6, 3], [2, 7, 3, 0]], dtype=torch.long),  # ids inside every vocabulary
        torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]], dtype=torch.long),
        torch.zeros((2, 4), dtype=torch.long),
    )
    axes = {0: "batch", 1: "sequence"}
    try:
        with torch.no_grad(), warnings.catch_warnings():
            # Tracer warnings about Python control flow on shapes: benign for BERT's static graph.
            warnings.simplefilter("ignore")
            torch.onnx.export(
                wrapper,
                example,
                str(path),
                input_names=list(INPUT_NAMES),
                output_names=[OUTPUT_NAME],
                dynamic_axes={name: axes for name in (*INPUT_NAMES, OUTPUT_NAME)},
                opset_version=opset,
                do_constant_folding=True,
                dynamo=False,
            )
    except Exception as err:
        raise ExportError(f"torch.onnx.export failed: {str(err).splitlines()[0]}") from err
    return path
