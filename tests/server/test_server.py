"""The real server over loopback: official OpenAI client and raw HTTP, vectors equal offline, every error."""

from __future__ import annotations

import base64
import re

import httpx
import numpy as np
import openai
import pytest

from tests.helpers import API_KEY, TEST_TEXTS

TEXTS = [text for text in TEST_TEXTS if text and len(text) <= 1000][:16]  # OpenAI and TEI refuse ""
LONG = "这是一个非常长的句子，" * 40  # 440 characters: over the tiny model's 64 tokens
SHORT = [text for text in TEXTS if text != LONG]


def client(server, **kwargs) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key=API_KEY, max_retries=0, timeout=60, **kwargs)


# ------------------------------------------------------------------------------------------ OpenAI API
def test_openai_client_default_base64_equals_offline(fp32_server, offline):
    response = client(fp32_server).embeddings.create(input=TEXTS, model="anything")
    got = np.array([item.embedding for item in response.data], dtype=np.float32)
    np.testing.assert_allclose(got, offline.encode(TEXTS, normalize=True), atol=1e-5)  # unit length, as OpenAI
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    assert [item.index for item in response.data] == list(range(len(TEXTS)))
    tokens = sum(len(encoding.ids) for encoding in offline.tokenize(TEXTS))
    assert response.usage.prompt_tokens == tokens == response.usage.total_tokens
    assert response.object == "list" and response.model


def test_openai_client_float_and_single_string(fp32_server, offline):
    response = client(fp32_server).embeddings.create(input="花呗怎么还款", model="m", encoding_format="float")
    assert len(response.data) == 1
    np.testing.assert_allclose(response.data[0].embedding, offline.encode("花呗怎么还款", normalize=True), atol=1e-5)


def test_raw_base64_is_little_endian_float32(fp32_server, offline, auth):
    body = {"input": ["今天天气不错！", "   "], "model": "m", "encoding_format": "base64"}
    data = httpx.post(fp32_server.url + "/v1/embeddings", json=body, headers=auth, timeout=30).json()
    got = np.stack([np.frombuffer(base64.b64decode(item["embedding"]), dtype="<f4") for item in data["data"]])
    np.testing.assert_allclose(got, offline.encode(["今天天气不错！", "   "], normalize=True), atol=1e-5)
    assert data["data"][0]["object"] == "embedding"


def test_openai_client_errors_are_typed(fp32_server):
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=fp32_server.url + "/v1", api_key="wrong", max_retries=0).embeddings.create(
            input="x", model="m"
        )
    with pytest.raises(openai.UnprocessableEntityError) as caught:  # OpenAI takes 2,048 inputs, TEI's routes fewer
        client(fp32_server).embeddings.create(input=["x"] * 2049, model="m")
    assert "2048" in caught.value.message and "max-openai-batch-size" in caught.value.message
    with pytest.raises(openai.BadRequestError) as empty:
        client(fp32_server).embeddings.create(input=["x", ""], model="m")
    assert "'input[1]' is an empty string" in empty.value.message


def test_models_lists_the_served_model(fp32_server):
    models = client(fp32_server).models.list()
    assert len(models.data) == 1 and models.data[0].id


# ------------------------------------------------------------------------------------------ TEI API
def test_tei_embed_normalizes_by_default(fp32_server, offline, auth):
    got = httpx.post(fp32_server.url + "/embed", json={"inputs": SHORT}, headers=auth, timeout=30).json()
    np.testing.assert_allclose(np.array(got, dtype=np.float32), offline.encode(SHORT, normalize=True), atol=1e-5)
    raw = httpx.post(
        fp32_server.url + "/embed", json={"inputs": "花呗", "normalize": False}, headers=auth, timeout=30
    ).json()
    assert len(raw) == 1
    np.testing.assert_allclose(raw[0], offline.encode("花呗", normalize=False), atol=1e-5)


def test_tei_truncate(fp32_server, offline, auth):
    body = {"inputs": ["短", LONG], "truncate": False}
    refused = httpx.post(fp32_server.url + "/embed", json=body, headers=auth, timeout=30)
    assert refused.status_code == 422 and refused.json()["error_type"] == "Validation"  # as TEI
    assert "inputs[1]" in refused.json()["error"] and "truncate" in refused.json()["error"]
    for body in ({"inputs": ["短", LONG], "normalize": False}, {"inputs": ["短", LONG], "truncate": True}):
        got = httpx.post(fp32_server.url + "/embed", json=body, headers=auth, timeout=30).json()  # --auto-truncate
        expected = offline.encode(["短", LONG], normalize=body.get("normalize", True))
        np.testing.assert_allclose(np.array(got, dtype=np.float32), expected, atol=1e-5)


# ------------------------------------------------------------------------------------------ errors
def post(server, path, auth, headers=None, **kwargs) -> httpx.Response:
    return httpx.post(server.url + path, headers={**auth, **(headers or {})}, timeout=30, **kwargs)


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer nope"}, {"Authorization": API_KEY}])
def test_wrong_or_missing_key_is_401(fp32_server, headers):
    for path, body in (("/v1/embeddings", {"input": "x"}), ("/embed", {"inputs": "x"})):
        response = httpx.post(fp32_server.url + path, json=body, headers=headers, timeout=30)
        assert response.status_code == 401, response.text
    assert httpx.get(fp32_server.url + "/metrics", headers=headers, timeout=30).status_code == 401
    assert httpx.get(fp32_server.url + "/health", timeout=30).status_code == 200  # load balancers need no key


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/v1/embeddings", {"model": "m"}, "input"),
        ("/v1/embeddings", {"input": 5}, "input"),
        ("/v1/embeddings", {"input": [1, 2, 3]}, r"token ids.*check_embedding_ctx_length=False"),
        ("/v1/embeddings", {"input": [[1, 2], [3]]}, r"token ids.*check_embedding_ctx_length=False"),
        ("/v1/embeddings", {"input": ["a", None]}, r"input\[1\]"),
        ("/v1/embeddings", {"input": "a", "encoding_format": "hex"}, "encoding_format"),
        ("/v1/embeddings", {"input": "a", "model": 3}, "model"),
        ("/v1/embeddings", {"input": "a", "dimensions": 7}, "'dimensions' must be 32.*not Matryoshka-trained"),
        ("/embed", {"inputs": "a", "dimensions": 64}, "'dimensions' must be 32.*not Matryoshka-trained"),
        ("/embed", {"inputs": {"a": 1}}, "inputs"),
        ("/embed", {"inputs": "a", "normalize": "yes"}, "normalize"),
        ("/embed", {"inputs": "a", "truncate": 1}, "truncate"),
        ("/embed", [1, 2], "JSON object"),
    ],
)
def test_wrong_types_are_422_naming_the_field(fp32_server, auth, path, body, field):
    response = post(fp32_server, path, auth, json=body)
    assert response.status_code == 422, response.text
    data = response.json()
    message = data["error"]["message"] if path.startswith("/v1/") else data["error"]
    assert re.search(field, message), message
    if path.startswith("/v1/"):
        assert data["error"]["type"] == "invalid_request_error"


@pytest.mark.parametrize("path", ["/v1/embeddings", "/embed"])
def test_malformed_json_is_422(fp32_server, auth, path):
    for content in (b"{", b"\xff\xfe", b"", b"null"):
        response = post(fp32_server, path, auth, content=content, headers={"content-type": "application/json"})
        assert response.status_code == 422, (content, response.text)
        assert "JSON" in response.text


@pytest.mark.parametrize(
    ("path", "body", "where"),
    [
        ("/v1/embeddings", {"input": []}, "'input' is an empty list"),
        ("/embeddings", {"input": ["a", ""]}, "'input[1]' is an empty string"),
        ("/embed", {"inputs": ""}, "'inputs[0]' is an empty string"),
        ("/similarity", {"inputs": {"source_sentence": "a", "sentences": ["b", ""]}}, "'inputs.sentences[1]' is an"),
        ("/similarity", {"inputs": {"source_sentence": "", "sentences": ["b"]}}, "'inputs.source_sentence' is an"),
    ],
)
def test_empty_inputs_are_400_naming_the_input(fp32_server, auth, path, body, where):
    response = post(fp32_server, path, auth, json=body)
    assert response.status_code == 400, response.text
    assert where in response.text


def test_limits_as_tei(fp32_server, auth):
    too_many = post(fp32_server, "/embed", auth, json={"inputs": ["a"] * 17})
    assert too_many.status_code == 422 and "batch size 17 > maximum allowed batch size 16" in too_many.text
    too_long = post(fp32_server, "/embed", auth, json={"inputs": ["ok", "x" * 1001], "truncate": False})
    assert too_long.status_code == 422 and "inputs[1]" in too_long.json()["error"]
    assert "max-input-chars" in too_long.json()["error"]
    cut = post(fp32_server, "/embed", auth, json={"inputs": ["ok", "x" * 100_000]})  # cut to 1,000, not refused
    assert cut.status_code == 200, cut.text
    huge = post(fp32_server, "/embed", auth, content=b"[" + b" " * 2_000_000 + b"]")
    assert huge.status_code == 413


def test_unknown_route_and_method(fp32_server, auth):
    assert httpx.get(fp32_server.url + "/nope", headers=auth, timeout=30).status_code == 404
    assert httpx.get(fp32_server.url + "/v1/embeddings", headers=auth, timeout=30).status_code == 405


# ------------------------------------------------------------------------------------------ health, info, metrics
def test_info_shows_manifest_and_limits_without_the_key(fp32_server, auth, offline):
    info = httpx.get(fp32_server.url + "/info", headers=auth, timeout=30).json()
    assert info["dim"] == offline.dim and info["model_dtype"] == "fp32"
    assert info["max_client_batch_size"] == 16 and info["limits"]["max_input_chars"] == 1000
    assert info["manifest"]["dim"] == offline.dim and info["max_input_length"] == offline.max_seq_length
    assert API_KEY not in httpx.get(fp32_server.url + "/info", headers=auth, timeout=30).text


def test_metrics_text(fp32_server, auth):
    post(fp32_server, "/embed", auth, json={"inputs": ["花呗", "借呗"]})
    post(fp32_server, "/embed", auth, json={"inputs": 5})
    text = httpx.get(fp32_server.url + "/metrics", headers=auth, timeout=30).text
    for name in (
        "embedrt_request_duration_seconds_bucket",
        "embedrt_queue_duration_seconds_count",
        "embedrt_inference_duration_seconds_count",
        "embedrt_batch_size_bucket",
        "embedrt_batch_tokens_bucket",
        "embedrt_requests_in_flight",
        "embedrt_tokenize_duration_seconds_count",
        "embedrt_batch_requests_count",
        "embedrt_cache_hits_total",
        "embedrt_cache_misses_total",
        "embedrt_deadline_expired_total",
        "embedrt_connections_refused_total",
        "embedrt_read_timeouts_total",
    ):
        assert name in text, name
    assert re.search(r'embedrt_request_failures_total\{reason="validation"\} [1-9]', text)
    assert re.search(r'embedrt_requests_total\{endpoint="/embed",status="200"\} [1-9]', text)
    assert re.search(r"embedrt_texts_total [1-9]", text)
