"""One text, one vector on a bundle with both engines: what ``auto`` picks and each int8 variant embed a text
the same alone and inside random batches padded to random widths (the ONNX Runtime-only cases:
tests/runtime/test_batch_invariance.py)."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings

from embedrt import Encoder
from tests.runtime.test_batch_invariance import _check, batches


@pytest.fixture(scope="module", params=["auto", "int8-onnxruntime", "int8-openvino", "fp32-openvino"])
def both_engines_encoder(request, tiny_ov_bundle) -> Encoder:
    """A bundle with both engines' variants (tiny model): auto (OpenVINO int8), each int8, OpenVINO fp32."""
    precision, _, engine = request.param.partition("-")
    return Encoder.load(tiny_ov_bundle, precision=precision, engine=engine or "auto", threads=1)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=batches)
def test_every_engine_alone_vs_random_batches(both_engines_encoder, case):
    _check(both_engines_encoder, case)


def test_every_variant_of_both_engines_is_marked_invariant(tiny_ov_bundle):
    variants = json.loads((tiny_ov_bundle / "embedrt.json").read_text())["variants"]
    assert {name: variant["batch_invariant"] for name, variant in variants.items()} == dict.fromkeys(variants, True)
