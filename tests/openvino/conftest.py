"""Bundles with OpenVINO variants, exported once per session.

``tiny_ov_bundle`` has both engines (fp32 and int8 each), for engine selection; the MiniLM and DMetaSoul
stand-in bundles have only the OpenVINO variants (``--engine openvino``), which skips ONNX Runtime's
fusion and quantization and keeps the session shorter.
"""

from __future__ import annotations

from pathlib import Path

import pytest


def _export(model_dir: Path, out: Path, engines: tuple[str, ...]) -> Path:
    from embedrt.export import ExportSettings, export_bundle

    export_bundle(model_dir, out, ExportSettings(engines=engines))
    return out


@pytest.fixture(scope="session")
def tiny_ov_bundle(tiny_model_dir, tmp_path_factory) -> Path:
    return _export(tiny_model_dir, tmp_path_factory.mktemp("ov_bundles") / "tiny", ("onnxruntime", "openvino"))


@pytest.fixture(scope="session")
def minilm_ov_bundle(minilm_model_dir, tmp_path_factory) -> Path:
    return _export(minilm_model_dir, tmp_path_factory.mktemp("ov_bundles") / "minilm", ("openvino",))


@pytest.fixture(scope="session")
def dmetasoul_ov_bundle(dmetasoul_model_dir, tmp_path_factory) -> Path:
    return _export(dmetasoul_model_dir, tmp_path_factory.mktemp("ov_bundles") / "dmetasoul", ("openvino",))
