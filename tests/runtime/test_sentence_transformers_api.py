"""What a sentence-transformers user reaches for: encode's arguments, prompts, dimension and similarity.

Every output is compared with live ``SentenceTransformer.encode`` on the same arguments, on a seeded tiny
model whose ``config_sentence_transformers.json`` defines prompts and a default prompt.
"""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from embedrt import Encoder
from embedrt.errors import EmbedrtWarning, InputError
from tests.helpers import assert_one_line_error, run_cli

PROMPTS = {"query": "查询：", "document": "", "passage": "文档: "}
TEXTS = ["花呗怎么还款", "今天天气不错！", "混合 English 和中文 text 123", "", "短"]


@pytest.fixture(scope="module")
def prompts_model_dir(tmp_path_factory):
    from embedrt.export.standin import TINY, build_standin

    model_dir = build_standin(tmp_path_factory.mktemp("prompts_model"), replace(TINY, seed=3))
    config_path = model_dir / "config_sentence_transformers.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config.update(prompts=PROMPTS, default_prompt_name="query")
    config_path.write_text(json.dumps(config, ensure_ascii=False), encoding="utf-8")
    return model_dir


@pytest.fixture(scope="module")
def prompts_bundle(prompts_model_dir, tmp_path_factory):
    from embedrt.export import ExportSettings, export_bundle

    out = tmp_path_factory.mktemp("prompts_bundle") / "bundle"
    export_bundle(str(prompts_model_dir), out, ExportSettings(precisions=("fp32",)))
    return out


@pytest.fixture(scope="module")
def encoder(prompts_bundle):
    return Encoder.load(prompts_bundle, precision="fp32")


@pytest.fixture(scope="module")
def st_model(prompts_model_dir):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(prompts_model_dir), device="cpu")


def _assert_same_vectors(ours: np.ndarray, theirs: np.ndarray, min_cos: float) -> None:
    assert ours.shape == theirs.shape and ours.dtype == theirs.dtype
    a, b = ours.astype(np.float64), theirs.astype(np.float64)
    cos = (a * b).sum(-1) / np.maximum(np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1), 1e-30)
    assert cos.min() >= min_cos, cos
    assert np.allclose(np.linalg.norm(a, axis=-1), np.linalg.norm(b, axis=-1), rtol=1e-4, atol=1e-6)


def test_prompts_are_carried_into_the_manifest(prompts_bundle, encoder):
    data = json.loads((prompts_bundle / "embedrt.json").read_text(encoding="utf-8"))
    assert data["prompts"] == PROMPTS and data["default_prompt_name"] == "query"
    assert data["similarity_fn_name"] == "cosine"
    assert encoder.prompts == PROMPTS and encoder.default_prompt_name == "query"


@pytest.mark.parametrize(
    "kwargs",
    [
        {},  # the default prompt ("query") applies, as in sentence-transformers
        {"prompt_name": "passage"},
        {"prompt_name": "document"},  # an empty prompt: no prefix
        {"prompt": "任意前缀 "},
        {"normalize_embeddings": True},
        {"normalize_embeddings": False},
        {"truncate_dim": 8},
        {"truncate_dim": 8, "normalize_embeddings": True},
        {"convert_to_numpy": True, "batch_size": 2},
    ],
    ids=repr,
)
def test_encode_equals_sentence_transformers(encoder, st_model, kwargs):
    parity = encoder.manifest.variants["fp32"].parity  # what the export measured; the fp32 gate is 0.99999
    ours = encoder.encode(TEXTS, **kwargs)
    theirs = st_model.encode(TEXTS, **kwargs)
    _assert_same_vectors(ours, theirs, min(parity.min_cos, 0.99999))
    single = encoder.encode(TEXTS[0], **kwargs)
    _assert_same_vectors(single[None, :], st_model.encode(TEXTS[0], **kwargs)[None, :], 0.99999)


@pytest.mark.parametrize("method", ["encode_query", "encode_document"])
@pytest.mark.parametrize("kwargs", [{}, {"prompt_name": "query"}, {"prompt": "y: "}], ids=repr)
def test_query_and_document_methods_equal_sentence_transformers(encoder, st_model, method, kwargs):
    ours, theirs = getattr(encoder, method)(TEXTS, **kwargs), getattr(st_model, method)(TEXTS, **kwargs)
    _assert_same_vectors(ours, theirs, 0.99999)


@pytest.mark.parametrize("precision", ["binary", "ubinary"])
def test_binary_precisions_equal_sentence_transformers(encoder, st_model, precision):
    ours, theirs = encoder.encode(TEXTS, precision=precision), st_model.encode(TEXTS, precision=precision)
    assert ours.dtype == theirs.dtype and ours.shape == theirs.shape
    differing = np.unpackbits(ours.view(np.uint8) ^ theirs.view(np.uint8)).sum()
    assert differing <= 2, differing  # a sign bit may flip on a value within float error of zero


def test_dimension_and_similarity_equal_sentence_transformers(encoder, st_model):
    from sentence_transformers import SimilarityFunction

    assert encoder.get_sentence_embedding_dimension() == st_model.get_embedding_dimension() == 32
    a, b = st_model.encode(TEXTS[:3]), st_model.encode(TEXTS[2:])
    assert encoder.similarity_fn_name == "cosine"
    expected = st_model.similarity(a, b).numpy()
    got = encoder.similarity(a, b)
    assert got.shape == (3, 3) and got.dtype == np.float32
    np.testing.assert_allclose(got, expected, atol=1e-6)
    np.testing.assert_allclose(encoder.similarity(a[0], b), expected[:1], atol=1e-6)
    from embedrt.runtime.similarity import similarity

    for name in ("dot", "euclidean", "manhattan"):
        reference = SimilarityFunction.to_similarity_fn(name)(a, b).numpy()
        np.testing.assert_allclose(similarity(a, b, name), reference, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"prompt_name": "nope"}, r"unknown prompt_name 'nope' .*'query', 'document', 'passage'"),
        ({"convert_to_tensor": True}, r"no torch.*torch.from_numpy"),
        ({"convert_to_numpy": False}, r"no torch"),
        ({"output_value": "token_embeddings"}, r"sentence embeddings only"),
        ({"output_value": None}, r"sentence embeddings only"),
        ({"precision": "int8"}, r"precision='int8' is not supported.*Encoder.load"),
        ({"truncate_dim": 0}, r"truncate_dim must be between 1 and .* 32"),
        ({"truncate_dim": 33}, r"truncate_dim must be between 1 and .* 32"),
        ({"device": "cuda"}, r"runs on 'cpu'.*Encoder.load\(bundle, device='cuda'\)"),
        ({"normalize": False, "normalize_embeddings": True}, r"contradict"),
    ],
)
def test_what_cannot_be_honoured_is_refused(encoder, kwargs, pattern):
    with pytest.raises(InputError, match=pattern):
        encoder.encode(TEXTS, **kwargs)


def test_prompt_wins_over_prompt_name_with_a_warning(encoder):
    with pytest.warns(EmbedrtWarning, match="using prompt"):
        both = encoder.encode(TEXTS, prompt="x: ", prompt_name="passage")
    np.testing.assert_array_equal(both, encoder.encode(TEXTS, prompt="x: "))
    assert encoder.encode(TEXTS, device="cpu").shape == (len(TEXTS), 32)


def test_bundles_older_than_prompts_open_without_them(tiny_bundle, copy_bundle):
    bundle = copy_bundle(tiny_bundle)
    data = json.loads((bundle / "embedrt.json").read_text(encoding="utf-8"))
    for key in ("prompts", "default_prompt_name", "similarity_fn_name"):
        data.pop(key, None)
    (bundle / "embedrt.json").write_text(json.dumps(data), encoding="utf-8")
    old = Encoder.load(bundle, precision="fp32")
    manifest = old.manifest
    assert (manifest.prompts, manifest.default_prompt_name, manifest.similarity_fn_name) == ({}, None, "cosine")
    with pytest.raises(InputError, match="its source model defines none"):
        old.encode("x", prompt_name="query")
    np.testing.assert_array_equal(old.encode(TEXTS), Encoder.load(tiny_bundle, precision="fp32").encode(TEXTS))


def test_encode_command_takes_prompts_and_prints_exact_float32(prompts_bundle, encoder, tmp_path):
    result = run_cli("encode", prompts_bundle, *TEXTS[:2], "--precision", "fp32", "--prompt-name", "passage")
    assert result.returncode == 0, result.stderr
    rows = np.array([json.loads(line) for line in result.stdout.splitlines()], dtype=np.float32)
    np.testing.assert_array_equal(rows, encoder.encode(TEXTS[:2], prompt_name="passage"))
    default = run_cli("encode", prompts_bundle, TEXTS[0], "--precision", "fp32")
    np.testing.assert_array_equal(np.array(json.loads(default.stdout), np.float32), encoder.encode(TEXTS[0]))
    assert_one_line_error(
        run_cli("encode", prompts_bundle, "x", "--prompt-name", "nope"), r"unknown prompt_name 'nope'.*'passage'"
    )
    empty = tmp_path / "empty.txt"
    empty.write_text("", encoding="utf-8")
    assert_one_line_error(run_cli("encode", prompts_bundle, "--input", empty), r"empty\.txt has no lines")


def test_embed_file_takes_prompts(prompts_bundle, encoder, tmp_path):
    source = tmp_path / "in.txt"
    source.write_text("\n".join(TEXTS[:3]) + "\n", encoding="utf-8")
    out = tmp_path / "out.npy"
    result = run_cli("embed-file", prompts_bundle, source, "-o", out, "--precision", "fp32", "--prompt-name", "passage")
    assert result.returncode == 0, result.stderr
    np.testing.assert_array_equal(np.load(out), encoder.encode(TEXTS[:3], prompt_name="passage"))
    bad = run_cli("embed-file", prompts_bundle, source, "-o", tmp_path / "bad.npy", "--prompt-name", "nope")
    assert_one_line_error(bad, r"unknown prompt_name 'nope'")
    assert not (tmp_path / "bad.npy").exists()
