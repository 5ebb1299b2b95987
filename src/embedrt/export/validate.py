"""Check each variant against the PyTorch reference on real sentences; report what was measured."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from embedrt.bundle import Parity
from embedrt.errors import EmbedrtWarning, ParityError
from embedrt.variants import DEFAULT_ENGINE


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of two ``(n, dim)`` arrays (float64 for an honest 1e-5)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return (a * b).sum(axis=1) / np.maximum(norms, 1e-30)


def reference_embeddings(model: Any, sentences: Sequence[str], batch_size: int = 8) -> np.ndarray:
    """What ``SentenceTransformer.encode`` gives: the numbers the bundle must reproduce."""
    return model.encode(list(sentences), batch_size=batch_size, convert_to_numpy=True, show_progress_bar=False)


def measure_parity(
    bundle_dir: Path,
    precision: str,
    sentences: Sequence[str],
    reference: np.ndarray,
    engine: str = DEFAULT_ENGINE,
    batch_invariant: bool = True,
) -> Parity:
    """Embed ``sentences`` through the runtime exactly as users will, and compare to ``reference``.

    ``batch_invariant=False`` only for a variant that is not (the dynamic int8 recipe, built for benchmarks).
    """
    from embedrt import Encoder  # the public runtime: parity is measured on what users run

    with warnings.catch_warnings():  # fp16 on this CPU is emulated: fine for measuring, said to users only
        warnings.simplefilter("ignore", EmbedrtWarning)
        encoder = Encoder.load(bundle_dir, precision=precision, engine=engine, batch_invariant=batch_invariant)
    cos = cosine_rows(encoder.encode(list(sentences)), reference)
    return Parity(min_cos=float(cos.min()), mean_cos=float(cos.mean()), n=len(sentences))


def check_parity(precision: str, parity: Parity, min_cos: float | None, mean_cos: float | None) -> None:
    """Raise :class:`ParityError` if ``parity`` misses a threshold (``None`` skips that check)."""
    if min_cos is not None and parity.min_cos < min_cos:
        raise ParityError(
            f"{precision} parity failed: min cosine to PyTorch {parity.min_cos:.6f} < {min_cos} over "
            f"{parity.n} sentences; the export is wrong, not just imprecise (override with the threshold flag "
            "only if you know why)"
        )
    if mean_cos is not None and parity.mean_cos < mean_cos:
        raise ParityError(
            f"{precision} parity failed: mean cosine to PyTorch {parity.mean_cos:.6f} < {mean_cos} over "
            f"{parity.n} sentences; this model loses too much in {precision}, ship fp32 or lower the "
            "threshold knowingly"
        )
