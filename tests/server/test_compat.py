"""Drop-in: the client libraries people already use, unchanged, pointed at `embedrt serve`: openai (with
and without /v1), langchain-openai, litellm (OpenAI and Hugging Face providers), haystack's OpenAI
embedders, huggingface_hub's InferenceClient, TEI's routes by hand.

Each client gets the vectors offline ``Encoder.encode`` gives for the same variant (cosine >= 0.9999),
unit length from the OpenAI routes. The tiny test model has no Normalize module, so unit length there
is the server's doing, as OpenAI's and TEI's OpenAI routes do. Then schemathesis drives every route
from ``/openapi.json``: no 5xx, and every answer as the document says.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.helpers import TEST_TEXTS

#: The variant the compatibility server runs: the default, as a user starts it (a batch-invariant int8, so a
#: text's vector does not depend on its batch-mates and equals offline encode's). Flags here would pin another.
VARIANT: tuple[str, ...] = ()
#: Non-empty texts, Chinese and English, one over the tiny model's 64 tokens (cut: --auto-truncate).
TEXTS = [text for text in TEST_TEXTS if text]
MIN_COSINE = 0.9999


@pytest.fixture(scope="module")
def server(start_server, tiny_bundle):
    return start_server(tiny_bundle, *VARIANT, "--served-model-name", "tiny-embedder")


@pytest.fixture(scope="module")
def reference(tiny_bundle):
    """Offline ``encode`` of the variant the server runs."""
    from embedrt import Encoder

    precision = VARIANT[VARIANT.index("--precision") + 1] if "--precision" in VARIANT else "auto"
    encoder = Encoder.load(tiny_bundle, precision=precision, threads=1)

    def encode(texts: list[str]) -> np.ndarray:
        return encoder.encode(texts, normalize=True)

    return encode


def assert_same(got, texts: list[str], reference) -> None:
    got = np.asarray(got, dtype=np.float32)
    expected = reference(texts)
    assert got.shape == expected.shape
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    cosines = np.sum(got * expected, axis=1) / np.linalg.norm(got, axis=1) / np.linalg.norm(expected, axis=1)
    assert cosines.min() >= MIN_COSINE, cosines


# ------------------------------------------------------------------------------------------ OpenAI clients
@pytest.mark.parametrize("path", ["/v1", ""], ids=["with-v1", "without-v1"])
@pytest.mark.parametrize("encoding_format", ["default", "float"])
def test_openai_client(server, reference, path, encoding_format):
    """The client asks for base64 by default and decodes it; "float" asks for JSON numbers."""
    import openai

    client = openai.OpenAI(base_url=server.url + path, api_key="unused", max_retries=0, timeout=60)
    chosen = {} if encoding_format == "default" else {"encoding_format": encoding_format}
    response = client.embeddings.create(input=TEXTS, model="tiny-embedder", **chosen)
    assert_same([item.embedding for item in response.data], TEXTS, reference)
    assert response.model == "tiny-embedder" and response.usage.prompt_tokens > 0
    same = client.embeddings.create(input=TEXTS[0], model="x", dimensions=32)  # the model's own size is fine
    assert_same([same.data[0].embedding], TEXTS[:1], reference)
    with pytest.raises(openai.UnprocessableEntityError, match="not Matryoshka-trained"):
        client.embeddings.create(input=TEXTS[0], model="x", dimensions=16)


def test_openai_client_sends_2048_inputs(server, reference):
    import openai

    client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=120)
    texts = [f"{TEXTS[i % len(TEXTS)][:30]} {i}" for i in range(2048)]  # OpenAI's limit; 8 engine pieces
    response = client.embeddings.create(input=texts, model="m")
    assert [item.index for item in response.data] == list(range(2048))
    assert_same([item.embedding for item in response.data], texts, reference)


def test_langchain_openai_embeddings(server, reference):
    from langchain_openai import OpenAIEmbeddings

    embeddings = OpenAIEmbeddings(
        model="tiny-embedder", base_url=server.url + "/v1", api_key="unused", check_embedding_ctx_length=False
    )
    assert_same(embeddings.embed_documents(TEXTS), TEXTS, reference)
    assert_same([embeddings.embed_query(TEXTS[0])], TEXTS[:1], reference)


def _tiktoken_files() -> Path | None:
    """litellm ships tiktoken's cl100k_base file: with it langchain's default path runs offline."""
    spec = importlib.util.find_spec("litellm")
    if spec is None or not spec.submodule_search_locations:
        return None
    found = Path(next(iter(spec.submodule_search_locations))) / "litellm_core_utils" / "tokenizers"
    return found if found.is_dir() else None


def test_langchain_default_token_ids_get_a_clear_422(server, monkeypatch):
    """Its default (check_embedding_ctx_length=True) sends tiktoken ids: refused, naming the setting."""
    import openai
    from langchain_openai import OpenAIEmbeddings

    files = _tiktoken_files()
    assert files is not None, "litellm (test extra) ships the tiktoken file this test needs offline"
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(files))
    embeddings = OpenAIEmbeddings(model="text-embedding-3-small", base_url=server.url + "/v1", api_key="unused")
    with pytest.raises(openai.UnprocessableEntityError, match="check_embedding_ctx_length=False"):
        embeddings.embed_documents(TEXTS[:2])


def test_litellm_openai_provider(server, reference, monkeypatch):
    monkeypatch.setenv("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm

    response = litellm.embedding(model="openai/tiny-embedder", api_base=server.url + "/v1", api_key="unused",
                                 input=TEXTS)  # fmt: skip
    assert_same([item["embedding"] for item in response.data], TEXTS, reference)


def test_haystack_openai_embedders(server, reference, monkeypatch):
    monkeypatch.setenv("HAYSTACK_TELEMETRY_ENABLED", "False")  # no phoning home from the tests
    from haystack import Document
    from haystack.components.embedders import OpenAIDocumentEmbedder, OpenAITextEmbedder
    from haystack.utils import Secret

    key, url = Secret.from_token("unused"), server.url + "/v1"
    text = OpenAITextEmbedder(api_key=key, api_base_url=url, model="tiny-embedder").run(TEXTS[0])
    assert_same([text["embedding"]], TEXTS[:1], reference)
    documents = OpenAIDocumentEmbedder(api_key=key, api_base_url=url, model="tiny-embedder", progress_bar=False)
    embedded = documents.run([Document(content=t) for t in TEXTS])["documents"]
    assert_same([document.embedding for document in embedded], TEXTS, reference)


# ------------------------------------------------------------------------------------------ TEI clients
def test_huggingface_hub_inference_client(server, reference, monkeypatch):
    from huggingface_hub import InferenceClient, constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # tests/conftest.py keeps the hub away; this is no hub

    client = InferenceClient(model=server.url, timeout=60)  # POST / as TEI serves an embedding model
    assert_same(client.feature_extraction(TEXTS[0]), TEXTS[:1], reference)
    assert_same(client.feature_extraction(TEXTS[1], truncate=True, normalize=True), TEXTS[1:2], reference)


def test_litellm_huggingface_provider(server, reference, monkeypatch):
    """litellm's TEI path posts {"inputs": [...]} to the base URL; input_type spares it a hub lookup."""
    monkeypatch.setenv("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm

    response = litellm.embedding(model="huggingface/tiny", api_base=server.url, api_key="unused", input=TEXTS,
                                 input_type="feature-extraction")  # fmt: skip
    assert_same([item["embedding"] for item in response.data], TEXTS, reference)


@pytest.mark.parametrize("path", ["/", "/invocations", "/embed"])
def test_tei_routes_and_headers(server, reference, path):
    response = httpx.post(server.url + path, json={"inputs": TEXTS}, timeout=60)
    assert response.status_code == 200, response.text
    assert_same(response.json(), TEXTS, reference)
    for header in ("x-compute-type", "x-compute-time", "x-tokenization-time", "x-queue-time", "x-inference-time",
                   "x-total-time", "x-compute-characters", "x-compute-tokens"):  # fmt: skip
        assert header in response.headers, header
    assert int(response.headers["x-compute-characters"]) == sum(len(text) for text in TEXTS)
    assert int(response.headers["x-compute-tokens"]) > len(TEXTS)


def test_health_info_and_served_name(server):
    for path in ("/", "/health", "/ping"):
        assert httpx.get(server.url + path, timeout=30).json() == {"status": "ok"}
    info = httpx.get(server.url + "/info", timeout=30).json()
    assert info["model_id"] == "tiny-embedder" and info["auto_truncate"] is True
    assert info["max_input_chars"] == 250 * info["max_input_length"]  # TEI's rule


def test_auto_truncate_cuts_before_tokenizing_and_can_be_turned_off(server, start_server, tiny_bundle):
    huge = "花呗 money " * 150_000  # 1,500,000 characters, within the 2 MB payload: cut, never refused
    for path, body in (("/v1/embeddings", {"input": [huge]}), ("/embed", {"inputs": huge}),
                       ("/similarity", {"inputs": {"source_sentence": huge, "sentences": ["花呗"]}})):  # fmt: skip
        response = httpx.post(server.url + path, json=body, timeout=60)
        assert response.status_code == 200, response.text
    strict = start_server(tiny_bundle, *VARIANT, "--auto-truncate", "false")
    long = "这是一个非常长的句子，" * 40
    refused = httpx.post(strict.url + "/embeddings", json={"input": ["ok", long]}, timeout=60)
    assert refused.status_code == 422 and "'input[1]'" in refused.json()["error"]["message"]
    body = {"inputs": {"source_sentence": "a", "sentences": ["b", long]}}
    refused = httpx.post(strict.url + "/similarity", json=body, timeout=60)
    assert refused.status_code == 422 and "'inputs.sentences[1]'" in refused.json()["error"]
    allowed = httpx.post(strict.url + "/similarity", json={**body, "parameters": {"truncate": True}}, timeout=60)
    assert allowed.status_code == 200, allowed.text


def test_access_log_switch(start_server, tiny_bundle):
    logged = start_server(tiny_bundle, *VARIANT, "--access-log")
    httpx.post(logged.url + "/embed", json={"inputs": "a"}, timeout=60)
    assert '"POST /embed HTTP/1.1" 200' in logged.log()


# ------------------------------------------------------------------------------------------ schemathesis
def test_openapi_is_served_where_tei_serves_it(server):
    ours = httpx.get(server.url + "/openapi.json", timeout=30)
    assert ours.status_code == 200 and ours.json()["openapi"].startswith("3.1")
    assert httpx.get(server.url + "/api-doc/openapi.json", timeout=30).json() == ours.json()
    paths = ours.json()["paths"]
    assert {"/", "/embed", "/invocations", "/embeddings", "/v1/embeddings", "/similarity"} <= set(paths)


def test_schemathesis_finds_no_5xx_and_nothing_outside_the_document(server, tmp_path):
    """Every phase (examples, coverage, fuzzing), valid and invalid data, every check schemathesis has."""
    command = [sys.executable, "-m", "schemathesis.cli", "run", server.url + "/openapi.json", "--checks", "all",
               "--mode", "all", "--max-examples", "50", "--seed", "19", "--workers", "1",
               "--generation-database", "none", "--request-timeout", "60"]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
    assert "No issues found" in done.stdout, done.stdout[-3000:]
