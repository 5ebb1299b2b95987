"""What ``Encoder.encode`` returns, for the arguments ``SentenceTransformer.encode`` takes.

sentence-transformers users pass ``normalize_embeddings``, ``convert_to_numpy``, ``truncate_dim``,
``precision`` and friends. Each is honoured here the way sentence-transformers does it, or refused
with an error saying what to do; none is silently ignored. The runtime has no torch, so it returns
NumPy arrays only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from embedrt.errors import InputError
from embedrt.runtime.pooling import l2_normalize

#: ``precision=`` values ``encode`` returns (sentence-transformers' ``quantize_embeddings`` names).
#: int8 and uint8 are left out: sentence-transformers takes their ranges from the batch itself, so a text's
#: vector would depend on its batch-mates.
OUTPUT_PRECISIONS = ("float32", "binary", "ubinary")
NO_TORCH = (
    "embedrt's runtime has no torch, so encode returns NumPy arrays only; "
    "wrap the result yourself: torch.from_numpy(encoder.encode(texts))"
)


@dataclass(frozen=True)
class OutputOptions:
    """Checked output arguments: truncate to ``truncate_dim``, then L2-normalize, then quantize."""

    truncate_dim: int | None = None
    normalize_after_truncation: bool = False
    precision: str = "float32"


def output_options(
    dim: int,
    normalize_embeddings: bool,
    convert_to_numpy: bool,
    convert_to_tensor: bool,
    output_value: str | None,
    precision: str,
    truncate_dim: int | None,
) -> OutputOptions:
    """Check sentence-transformers' output arguments; raise :class:`InputError` for what cannot be given."""
    if convert_to_tensor or not convert_to_numpy:
        raise InputError(NO_TORCH)
    if output_value != "sentence_embedding":
        raise InputError(
            f"output_value={output_value!r} is not supported: embedrt returns sentence embeddings only "
            "(output_value='sentence_embedding'); token embeddings stay inside the engine"
        )
    if precision not in OUTPUT_PRECISIONS:
        raise InputError(
            f"precision={precision!r} is not supported by encode (it returns: {', '.join(OUTPUT_PRECISIONS)}; "
            "int8/uint8 would take their ranges from the batch). To run the model itself in int8, fp32 or bf16, "
            "use Encoder.load(bundle, precision=...)"
        )
    if truncate_dim is not None and not 1 <= truncate_dim <= dim:
        raise InputError(f"truncate_dim must be between 1 and the model's dimension {dim}, got {truncate_dim}")
    if truncate_dim == dim:
        truncate_dim = None
    return OutputOptions(truncate_dim, normalize_embeddings and truncate_dim is not None, precision)


def finish(embeddings: np.ndarray, options: OutputOptions) -> np.ndarray:
    """Apply ``options`` to float32 ``(n, dim)`` embeddings, in sentence-transformers' order."""
    if options.truncate_dim is not None:
        embeddings = np.ascontiguousarray(embeddings[:, : options.truncate_dim])
        if options.normalize_after_truncation:
            embeddings = l2_normalize(embeddings).astype(np.float32, copy=False)
    if options.precision == "float32":
        return embeddings
    bits = np.packbits(embeddings > 0, axis=-1)  # sentence-transformers' ubinary: sign bits, 8 to a byte
    return bits if options.precision == "ubinary" else (bits.astype(np.int16) - 128).astype(np.int8)
