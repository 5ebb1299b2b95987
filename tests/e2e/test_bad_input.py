"""Bad input never crashes and never corrupts: typed errors that say what to do."""

import json

import numpy as np
import pytest

from embedrt import BackendError, BundleError, Encoder, InputError, InputTypeError
from embedrt.export.validate import cosine_rows


@pytest.fixture(scope="module")
def encoder(tiny_bundle):
    return Encoder.load(tiny_bundle, precision="fp32")


def test_empty_list_gives_zero_rows(encoder):
    out = encoder.encode([])
    assert out.shape == (0, encoder.dim) and out.dtype == np.float32


@pytest.mark.parametrize("bad", [None, 3, 4.5, b"bytes", ["nested"]])
def test_non_string_item_names_its_index(encoder, bad):
    with pytest.raises(TypeError, match=r"texts\[2\] is"):
        encoder.encode(["a", "b", bad])
    with pytest.raises(InputTypeError):
        encoder.encode(["a", "b", bad])


def test_non_iterable_and_bytes_input(encoder):
    with pytest.raises(TypeError, match="string or a list of strings"):
        encoder.encode(42)
    with pytest.raises(TypeError):
        encoder.encode(b"raw bytes")


def test_single_string_gives_a_vector(encoder):
    vec = encoder.encode("花呗")
    assert vec.shape == (encoder.dim,)
    np.testing.assert_allclose(vec, encoder.encode(["花呗"])[0], atol=1e-6)


def test_tuples_generators_and_arrays_are_accepted(encoder):
    texts = ["花呗", "借呗"]
    expected = encoder.encode(texts)
    np.testing.assert_allclose(encoder.encode(tuple(texts)), expected, atol=1e-6)
    np.testing.assert_allclose(encoder.encode(t for t in texts), expected, atol=1e-6)
    np.testing.assert_allclose(encoder.encode(np.array(texts)), expected, atol=1e-6)


def test_empty_and_whitespace_embed_like_sentence_transformers(encoder, tiny_model_dir, reference_model):
    texts = ["", " ", "\t\n", "\u3000"]
    ours = encoder.encode(texts)
    ref = reference_model(tiny_model_dir).encode(texts, convert_to_numpy=True)
    assert np.isfinite(ours).all()
    assert cosine_rows(ours, ref).min() >= 0.99999


def test_bad_arguments(encoder, tiny_bundle):
    with pytest.raises(InputError, match="batch_size"):
        encoder.encode(["a"], batch_size=0)
    with pytest.raises(BundleError, match="unknown precision 'int4'"):
        Encoder.load(tiny_bundle, precision="int4")
    with pytest.raises(BundleError, match="unknown device"):
        Encoder.load(tiny_bundle, device="tpu")
    with pytest.raises(InputError, match="threads"):
        Encoder.load(tiny_bundle, threads=0)


def test_missing_variant_file(copy_bundle, tiny_bundle):
    bundle = copy_bundle(tiny_bundle)
    (bundle / "model_int8.onnx").unlink()
    with pytest.raises(BundleError, match=r"model_int8.onnx is missing.*embedrt export --force"):
        Encoder.load(bundle, precision="int8")
    Encoder.load(bundle, precision="fp32")  # the other variant still loads


def test_tampered_graph_fails_its_checksum(copy_bundle, tiny_bundle):
    bundle = copy_bundle(tiny_bundle)
    with open(bundle / "model.onnx", "r+b") as handle:
        handle.seek(100)
        handle.write(b"\x00\x01\x02")
    with pytest.raises(BundleError, match="model.onnx has sha256"):
        Encoder.load(bundle, precision="fp32")


def test_corrupt_graph_with_matching_checksum_is_a_backend_error(copy_bundle, tiny_bundle):
    from embedrt.bundle import sha256_file

    bundle = copy_bundle(tiny_bundle)
    (bundle / "model.onnx").write_bytes(b"not an onnx graph")
    manifest = json.loads((bundle / "embedrt.json").read_text())
    manifest["variants"]["fp32"]["sha256"] = sha256_file(bundle / "model.onnx")
    (bundle / "embedrt.json").write_text(json.dumps(manifest))
    with pytest.raises(BackendError, match="could not load .*model.onnx"):
        Encoder.load(bundle, precision="fp32")


def test_corrupt_or_missing_tokenizer(copy_bundle, tiny_bundle):
    bundle = copy_bundle(tiny_bundle)
    (bundle / "tokenizer.json").write_text("{broken")
    with pytest.raises(BundleError, match="tokenizer.json could not be read"):
        Encoder.load(bundle)
    (bundle / "tokenizer.json").unlink()
    with pytest.raises(BundleError, match="tokenizer.json is missing"):
        Encoder.load(bundle)


def test_a_lone_surrogate_is_an_input_error_naming_its_index(tiny_bundle):
    encoder = Encoder.load(tiny_bundle, precision="fp32")
    with pytest.raises(InputError, match=r"texts\[2\] is not valid Unicode: character 3 is '\\ud800'"):
        encoder.encode(["ok", "fine", "bad\ud800"])
