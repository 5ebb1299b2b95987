"""Pair files for the eval tests, built from the export's own sentences (all in the tiny vocabulary)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from embedrt.export.sentences import PARITY_SENTENCES


def make_pairs(n: int = 40, seed: int = 0) -> list[tuple[str, str, float]]:
    """Seeded pairs with repeated sentences (so de-duplication matters) and tied scores 0..5."""
    rng = np.random.default_rng(seed)
    sentences = [text for text in PARITY_SENTENCES if not any(ch in text for ch in "\t\r\n")]
    return [
        (sentences[rng.integers(len(sentences))], sentences[rng.integers(len(sentences))], float(rng.integers(0, 6)))
        for _ in range(n)
    ]


@pytest.fixture(scope="session")
def pairs() -> list[tuple[str, str, float]]:
    return make_pairs()


@pytest.fixture
def pairs_tsv(tmp_path, pairs) -> Path:
    path = tmp_path / "csts_dev.tsv"
    path.write_text("".join(f"{a}\t{b}\t{score:g}\n" for a, b, score in pairs), encoding="utf-8")
    return path
