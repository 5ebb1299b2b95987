"""Prompts on the server: TEI's ``prompt_name``, ``--default-prompt-name`` and the bundle's default prompt.

Every route gives what offline ``encode`` gives for the same text and prompt, so a bundle whose source
model sets a default prompt answers the same vectors served and offline.
"""

from __future__ import annotations

import json

import httpx
import numpy as np
import pytest

from tests.helpers import TEST_TEXTS

TEXTS = [text for text in TEST_TEXTS if text and len(text) <= 200][:4]
PROMPTS = {"query": "为这个句子生成表示以用于检索相关文章：", "passage": "passage: "}


@pytest.fixture(scope="module")
def prompts_bundle(tiny_bundle, tmp_path_factory):
    """The tiny bundle with prompts and a default prompt in its manifest, as export writes them."""
    import shutil

    bundle = tmp_path_factory.mktemp("prompts") / "tiny_prompts"
    shutil.copytree(tiny_bundle, bundle)
    manifest = json.loads((bundle / "embedrt.json").read_text(encoding="utf-8"))
    manifest.update(prompts=PROMPTS, default_prompt_name="query")
    (bundle / "embedrt.json").write_text(json.dumps(manifest, ensure_ascii=False), encoding="utf-8")
    return bundle


@pytest.fixture(scope="module")
def offline(prompts_bundle):
    from embedrt import Encoder

    return Encoder.load(prompts_bundle, precision="fp32", threads=1)


@pytest.fixture(scope="module")
def server(start_server, prompts_bundle):
    return start_server(prompts_bundle, "--precision", "fp32", "--threads", "1", "--cache-size", "0")


def _embed(server, **body):
    response = httpx.post(server.url + "/embed", json=body, timeout=60)
    assert response.status_code == 200, response.text
    return np.array(response.json(), dtype=np.float32)


def test_default_prompt_applies_as_offline(server, offline):
    expected = offline.encode(TEXTS, normalize_embeddings=True)  # the bundle's default prompt, "query"
    np.testing.assert_allclose(_embed(server, inputs=TEXTS), expected, atol=1e-5)
    response = httpx.post(server.url + "/v1/embeddings", json={"input": TEXTS}, timeout=60)
    got = np.array([item["embedding"] for item in response.json()["data"]], dtype=np.float32)
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_prompt_name_per_request(server, offline):
    expected = offline.encode(TEXTS, prompt_name="passage", normalize_embeddings=True)
    np.testing.assert_allclose(_embed(server, inputs=TEXTS, prompt_name="passage"), expected, atol=1e-5)
    assert not np.allclose(expected, offline.encode(TEXTS, normalize_embeddings=True), atol=1e-3)
    body = {"inputs": {"source_sentence": TEXTS[0], "sentences": TEXTS[1:]}, "parameters": {"prompt_name": "passage"}}
    scores = httpx.post(server.url + "/similarity", json=body, timeout=60).json()
    np.testing.assert_allclose(scores, expected[1:] @ expected[0], atol=1e-4)
    tokens = httpx.post(server.url + "/tokenize", json={"inputs": "好", "prompt_name": "passage"}, timeout=60).json()
    assert "".join(token["text"] for token in tokens[0] if not token["special"]).replace(" ", "") == "passage:好"


def test_unknown_prompt_name_is_422_naming_the_prompts(server):
    response = httpx.post(server.url + "/embed", json={"inputs": "好", "prompt_name": "nope"}, timeout=60)
    assert response.status_code == 422
    assert "'query'" in response.json()["error"] and "'passage'" in response.json()["error"]
    document = httpx.get(server.url + "/openapi.json", timeout=60).json()
    assert '"query"' in json.dumps(document) and '"passage"' in json.dumps(document)


def test_default_prompt_name_flag(start_server, prompts_bundle, offline):
    server = start_server(prompts_bundle, "--precision", "fp32", "--threads", "1", "--default-prompt-name", "passage")
    expected = offline.encode(TEXTS, prompt_name="passage", normalize_embeddings=True)
    np.testing.assert_allclose(_embed(server, inputs=TEXTS), expected, atol=1e-5)


def test_unknown_default_prompt_name_stops_the_server(start_server, prompts_bundle):
    server = start_server(prompts_bundle, "--default-prompt-name", "nope", wait=False)
    assert server.proc.wait(90) != 0
    assert "unknown prompt_name 'nope'" in server.log()
