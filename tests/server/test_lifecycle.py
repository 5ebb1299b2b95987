"""Overload (429), graceful SIGTERM, int8 serving and start-up errors, each with its own server process."""

from __future__ import annotations

import re
import signal
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest

from embedrt import Encoder
from tests.helpers import TEST_TEXTS, assert_one_line_error, run_cli

IN_FLIGHT_TIMEOUT = 30.0


def wait_in_flight(server, count: int) -> None:
    """Block until the server reports ``count`` embedding requests in flight (bounded)."""
    deadline = time.monotonic() + IN_FLIGHT_TIMEOUT
    while time.monotonic() < deadline:
        text = httpx.get(server.url + "/metrics", timeout=10).text
        match = re.search(r"^embedrt_requests_in_flight (\S+)$", text, re.MULTILINE)
        if match and float(match.group(1)) >= count:
            return
        time.sleep(0.02)
    pytest.fail(f"never saw {count} request(s) in flight:\n{server.log()}")


def test_over_the_limit_is_429_at_once_and_others_are_still_served(start_server, tiny_bundle, offline):
    # One request may be in flight; a 3 s batching window keeps the first one there while we knock.
    server = start_server(
        tiny_bundle, "--precision", "fp32", "--threads", "1", "--max-concurrent-requests", "1", "--max-wait-ms", "3000"
    )
    with ThreadPoolExecutor(1) as pool:
        body = {"inputs": ["花呗怎么还款"], "normalize": False}
        slow = pool.submit(httpx.post, server.url + "/embed", json=body, timeout=60)
        wait_in_flight(server, 1)
        refused = httpx.post(server.url + "/v1/embeddings", json={"input": "借呗"}, timeout=60)
        assert not slow.done()  # answered while the first request was still waiting for its batch
        assert refused.status_code == 429, refused.text
        assert refused.headers["retry-after"] == "1"
        assert refused.json()["error"]["type"] == "rate_limit_error"
        first = slow.result(timeout=60)
    assert first.status_code == 200
    np.testing.assert_allclose(first.json(), offline.encode(["花呗怎么还款"]), atol=1e-5)
    again = httpx.post(server.url + "/v1/embeddings", json={"input": "借呗", "encoding_format": "float"}, timeout=60)
    assert again.status_code == 200
    np.testing.assert_allclose(again.json()["data"][0]["embedding"], offline.encode("借呗", normalize=True), atol=1e-5)
    metrics = httpx.get(server.url + "/metrics", timeout=10).text
    assert re.search(r'embedrt_request_failures_total\{reason="overloaded"\} 1\.0', metrics)


def test_sigterm_finishes_the_request_in_flight_and_exits_0(start_server, tiny_bundle, offline):
    server = start_server(tiny_bundle, "--precision", "fp32", "--threads", "1", "--max-wait-ms", "1500")
    texts = ["今天天气不错！", "短"]
    with ThreadPoolExecutor(1) as pool:
        body = {"input": texts, "model": "m", "encoding_format": "float"}
        pending = pool.submit(httpx.post, server.url + "/v1/embeddings", json=body, timeout=60)
        wait_in_flight(server, 1)
        server.proc.send_signal(signal.SIGTERM)
        response = pending.result(timeout=60)
    assert response.status_code == 200, response.text
    got = np.array([item["embedding"] for item in response.json()["data"]], dtype=np.float32)
    np.testing.assert_allclose(got, offline.encode(texts, normalize=True), atol=1e-5)  # OpenAI: unit vectors
    assert server.proc.wait(timeout=30) == 0, server.log()
    assert "Traceback" not in server.log()
    with pytest.raises(httpx.ConnectError):
        httpx.get(server.url + "/health", timeout=5)


def test_int8_server_is_close_to_offline_whatever_the_batch_mates(start_server, tiny_bundle):
    """Dynamic int8 picks activation scales per batch, so only a cosine bound holds (fp32 is exact)."""

    server = start_server(tiny_bundle, "--precision", "int8", "--threads", "1", "--max-wait-ms", "20")
    offline_int8 = Encoder.load(tiny_bundle, precision="int8", threads=1)
    texts = [text for text in TEST_TEXTS if text]  # "" is refused (400), as OpenAI and TEI do
    requests = [[text] for text in texts] + [texts[:5], texts[3:]]
    with ThreadPoolExecutor(8) as pool:
        bodies = [{"inputs": texts, "truncate": True, "normalize": True} for texts in requests]
        responses = list(pool.map(lambda b: httpx.post(server.url + "/embed", json=b, timeout=60), bodies))
    assert httpx.get(server.url + "/info", timeout=10).json()["model_dtype"] == "int8"
    for texts, response in zip(requests, responses, strict=True):
        assert response.status_code == 200, response.text
        got = np.array(response.json(), dtype=np.float32)
        want = offline_int8.encode(texts, normalize=True)
        cosine = (got * want).sum(axis=1)
        assert cosine.min() >= 0.995, (texts, cosine)  # tiny random model; 0.999 on the full-size stand-in


def test_startup_errors_are_one_line(tiny_bundle, tmp_path):
    assert_one_line_error(run_cli("serve", tmp_path / "missing"), "does not exist")
    port_env = {"EMBEDRT_PORT": "http"}
    assert_one_line_error(run_cli("serve", tiny_bundle, env=port_env), "EMBEDRT_PORT: expected a whole number")
    assert_one_line_error(run_cli("serve", tiny_bundle, "--max-wait-ms", "-1"), "--max-wait-ms: expected a number")
    assert_one_line_error(run_cli("serve", tiny_bundle, "--precision", "int4"), "--precision: unknown precision 'int4'")
    assert_one_line_error(run_cli("serve", env={"EMBEDRT_BUNDLE": ""}), "no bundle given")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        assert_one_line_error(run_cli("serve", tiny_bundle, "--port", port), f"cannot listen on 127.0.0.1:{port}")
