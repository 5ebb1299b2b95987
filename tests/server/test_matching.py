"""What latency-critical matching services use: the result cache, deadlines, TEI's /similarity and
/tokenize, left truncation, and requests split over the per-request limit (per-stage metrics: test_server)."""

from __future__ import annotations

import re

import httpx
import numpy as np
import pytest

from tests.helpers import API_KEY, TEST_TEXTS

TEXTS = [text for text in TEST_TEXTS if len(text) <= 1000 and text.strip()]


def post(server, path, body, auth, **headers):
    return httpx.post(server.url + path, json=body, headers={**auth, **headers}, timeout=60)


def metric(server, auth, name: str) -> float:
    text = httpx.get(server.url + "/metrics", headers=auth, timeout=30).text
    found = re.search(rf"^{name} ([0-9.e+]+)$", text, re.M)
    return float(found.group(1)) if found else 0.0


def test_a_repeated_request_is_answered_from_the_cache_bit_for_bit(fp32_server, auth):
    texts = [f"cache test {i} {'abcdefgh'[i]}" for i in range(5)]  # distinct tokens in the tiny vocabulary
    hits = metric(fp32_server, auth, "embedrt_cache_hits_total")
    first = post(fp32_server, "/embed", {"inputs": texts}, auth)
    again = post(fp32_server, "/embed", {"inputs": texts}, auth)
    assert first.status_code == again.status_code == 200
    assert again.content == first.content  # the very same floats
    assert metric(fp32_server, auth, "embedrt_cache_hits_total") == hits + len(texts)
    cache = httpx.get(fp32_server.url + "/info", headers=auth, timeout=30).json()["cache"]
    assert cache["size"] == 10_000 and cache["entries"] >= len(texts) and cache["bound_bytes"] > 0


def test_similarity_equals_offline_cosines(fp32_server, offline, auth):
    source, sentences = TEXTS[0], TEXTS[1:]
    body = {"inputs": {"source_sentence": source, "sentences": sentences}, "truncate": True}
    response = post(fp32_server, "/similarity", body, auth)
    assert response.status_code == 200, response.text
    vectors = offline.encode([source, *sentences], normalize=True)
    np.testing.assert_allclose(response.json(), vectors[1:] @ vectors[0], atol=1e-4)
    bad = post(fp32_server, "/similarity", {"inputs": {"source_sentence": "a", "sentences": "b"}}, auth)
    assert bad.status_code == 422 and "'inputs.sentences' must be a list" in bad.json()["error"]


def test_tokenize_like_tei(fp32_server, offline, auth):
    response = post(fp32_server, "/tokenize", {"inputs": "hello 花呗"}, auth)
    assert response.status_code == 200, response.text
    (tokens,) = response.json()
    encoding = offline.tokenize(["hello 花呗"])[0]
    assert [token["id"] for token in tokens] == encoding.ids
    assert tokens[0] == {"id": encoding.ids[0], "text": "[CLS]", "special": True, "start": None, "stop": None}
    assert tokens[-1]["text"] == "[SEP]" and tokens[-1]["special"]
    for token, (start, stop) in zip(tokens[1:-1], encoding.offsets[1:-1], strict=True):
        assert (token["start"], token["stop"], token["text"]) == (start, stop, "hello 花呗"[start:stop])
        assert not token["special"]
    plain = post(fp32_server, "/tokenize", {"inputs": ["a", "b"], "add_special_tokens": False}, auth).json()
    assert [[token["text"] for token in row] for row in plain] == [["a"], ["b"]]


def test_left_truncation_keeps_the_end(fp32_server, offline, auth):
    long = " ".join(f"w{i % 10}" for i in range(200)) + " the end matters"
    body = {"inputs": [long], "truncate": True, "truncation_direction": "Left", "normalize": False}
    response = post(fp32_server, "/embed", body, auth)
    assert response.status_code == 200, response.text
    encodings = offline.tokenizer.encode([long], "left")
    assert encodings[0].tokens[-4:-1] == offline.tokenize(["matters"])[0].tokens[-4:-1]  # the end, not the start
    expected = offline.run_batch(offline.pack(encodings, [np.arange(1)])[0], normalize=False)
    np.testing.assert_allclose(response.json(), expected, atol=1e-5)
    right = post(fp32_server, "/embed", {**body, "truncation_direction": "Right"}, auth).json()
    assert not np.allclose(right, response.json())
    wrong = post(fp32_server, "/embed", {**body, "truncation_direction": "middle"}, auth)
    assert wrong.status_code == 422 and "'Right' or 'Left'" in wrong.json()["error"]


def test_deadline_header_is_checked(fp32_server, auth):
    bad = post(fp32_server, "/embed", {"inputs": "a"}, auth, **{"X-Request-Timeout-Ms": "soon"})
    assert bad.status_code == 422 and "X-Request-Timeout-Ms must be a whole number" in bad.json()["error"]
    ok = post(fp32_server, "/embed", {"inputs": "a"}, auth, **{"X-Request-Timeout-Ms": "60000"})
    assert ok.status_code == 200


@pytest.fixture(scope="module")
def splitting_server(start_server, tiny_bundle):
    return start_server(
        tiny_bundle,
        "--precision",
        "fp32",
        "--max-client-batch-size",
        "4",
        "--split-client-batches",
        "--cache-size",
        "0",
    )


def test_a_request_over_the_batch_limit_is_split_when_asked(splitting_server, fp32_server, offline):
    auth = {"Authorization": f"Bearer {API_KEY}"}
    response = httpx.post(splitting_server.url + "/embed", json={"inputs": TEXTS[:9], "truncate": True}, timeout=60)
    assert response.status_code == 200, response.text
    np.testing.assert_allclose(response.json(), offline.encode(TEXTS[:9], normalize=True), atol=1e-5)
    info = httpx.get(splitting_server.url + "/info", timeout=30).json()
    assert info["limits"]["split_client_batches"] is True and info["cache"] is None
    refused = post(fp32_server, "/embed", {"inputs": ["a"] * 17}, auth)  # the main server refuses instead
    assert refused.status_code == 422


def test_the_log_names_the_threads_and_limits(splitting_server):
    log = splitting_server.log()
    assert re.search(r"engine onnxruntime fp32 on \d+ threads \(", log), log
    assert re.search(r"at most \d+ connections, 5 s to send a request", log), log
