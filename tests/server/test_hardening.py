"""Hostile traffic against a real `embedrt serve`: bounded bodies however they arrive, no 5xx on any input,
stalled clients cut off, a cap on connections. Property-based where the input space is large."""

from __future__ import annotations

import socket
import threading
import time

import httpx
import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.helpers import API_KEY

AUTH = {"Authorization": f"Bearer {API_KEY}"}
EMBEDDING_ROUTES = ("/v1/embeddings", "/embed", "/similarity")
ROUTES = (*EMBEDDING_ROUTES, "/embeddings", "/", "/invocations", "/tokenize", "/health", "/ping", "/info",
          "/v1/models", "/metrics", "/openapi.json")  # fmt: skip


def rss_mb(pid: int) -> float:
    for line in open(f"/proc/{pid}/status").read().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


@pytest.fixture(scope="module")
def guarded(start_server, tiny_bundle):
    """A server with a short read timeout, so stalled clients are cut off quickly."""
    return start_server(tiny_bundle, "--precision", "fp32", "--read-timeout-s", "1", env={"EMBEDRT_API_KEY": API_KEY})


@pytest.fixture(scope="module")
def http(guarded):
    with httpx.Client(base_url=guarded.url, headers=AUTH, timeout=30) as client:
        yield client


# ------------------------------------------------------------------------------------------ the named cases
def deep(levels: int) -> bytes:
    return b'{"input": ' + b"[" * levels + b"]" * levels + b"}"


@pytest.mark.parametrize("route", EMBEDDING_ROUTES)
@pytest.mark.parametrize(
    "body, message",
    [
        (deep(100_000), "not valid JSON"),  # once a RecursionError and a 500
        (b'{"input": "a", "dimensions": ' + b"7" * 5000 + b"}", "not valid JSON|'dimensions'"),  # int digit limit
        (b'{"inputs": ' + b"1" * 5000 + b"}", "not valid JSON"),
        (b"\xff\xfe not utf-8", "not valid JSON"),
        (b'{"input": NaN}', "not valid JSON"),
    ],
    ids=["100k-deep", "5000-digit-dimensions", "5000-digit-inputs", "not-utf8", "nan"],
)
def test_hostile_json_is_a_one_line_422(http, route, body, message):
    import re

    response = http.post(route, content=body, headers={"content-type": "application/json"})
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    text = error["message"] if isinstance(error, dict) else error
    assert "\n" not in text and re.search(message, text), text


@pytest.mark.parametrize(
    "route, body, where",
    [
        ("/v1/embeddings", b'{"input": ["ok", "bad \\ud800 here"]}', "'input[1]' is not valid Unicode"),
        ("/embed", b'{"inputs": ["\\udfff"]}', "'inputs[0]' is not valid Unicode"),
        (
            "/similarity",
            b'{"inputs": {"source_sentence": "a", "sentences": ["b", "\\ud800"]}}',
            "'inputs.sentences[1]'",
        ),
        ("/tokenize", b'{"inputs": "\\ud83d"}', "'inputs[0]' is not valid Unicode"),
    ],
)
def test_a_lone_surrogate_is_a_422_naming_the_input(http, route, body, where):
    response = http.post(route, content=body)
    assert response.status_code == 422, response.text
    assert where in response.text


def test_a_huge_chunked_body_is_refused_as_it_arrives_and_memory_stays_flat(guarded):
    """400 MB sent chunked (no Content-Length): 413 once 2 MB have arrived; the server does not grow."""
    before = rss_mb(guarded.proc.pid)
    sock = socket.create_connection(("127.0.0.1", guarded.port), timeout=30)
    head = f"POST /embed HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {API_KEY}\r\nTransfer-Encoding: chunked\r\n\r\n"
    chunk = b"%x\r\n" % (1 << 20) + b"[" * (1 << 20) + b"\r\n"
    sent = [0]

    def upload():
        try:
            sock.sendall(head.encode())
            while sent[0] < 400 << 20:
                sock.sendall(chunk)
                sent[0] += 1 << 20
        except OSError:  # the server answered and closed: what we want
            pass

    thread = threading.Thread(target=upload, daemon=True)
    thread.start()
    reply = b""
    while True:
        data = sock.recv(65536)
        if not data:
            break
        reply += data
    thread.join(30)
    sock.close()
    assert reply.startswith(b"HTTP/1.1 413"), reply[:200]
    assert b"--payload-limit" in reply and b"connection: close" in reply.lower()
    assert sent[0] < 400 << 20  # the upload was cut off long before its end
    assert rss_mb(guarded.proc.pid) - before < 64


def test_stalled_clients_are_cut_off_while_others_are_served(guarded, http):
    """300 connections that send half a request line and stop: closed after the read timeout (1 s here)."""
    stalled = []
    for _ in range(300):
        sock = socket.create_connection(("127.0.0.1", guarded.port), timeout=30)
        sock.sendall(b"POST /v1/embeddings HT")
        stalled.append(sock)
    silent = [socket.create_connection(("127.0.0.1", guarded.port), timeout=30) for _ in range(20)]
    assert http.get("/health").status_code == 200
    served = http.post("/embed", json={"inputs": ["still served"]})
    assert served.status_code == 200
    for sock in stalled + silent:
        answer = b""
        while chunk := sock.recv(4096):  # returns b"" once the server has closed it
            answer += chunk
        assert answer.startswith(b"HTTP/1.1 408") or answer == b"", answer[:80]
        sock.close()
    assert http.get("/health").status_code == 200
    import re

    timeouts = re.search(r"^embedrt_read_timeouts_total ([0-9.]+)$", http.get("/metrics").text, re.M)
    assert timeouts and float(timeouts.group(1)) >= 320


def test_a_slow_but_steady_body_is_still_accepted(guarded):
    """The body deadline counts from the head: a client sending its body in pieces within it is served."""
    body = b'{"inputs": ["slow but steady"]}'
    sock = socket.create_connection(("127.0.0.1", guarded.port), timeout=30)
    head = f"POST /embed HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {API_KEY}\r\nContent-Length: {len(body)}\r\n\r\n"
    sock.sendall(head.encode())
    for start in range(0, len(body), 8):
        sock.sendall(body[start : start + 8])
        time.sleep(0.1)
    reply = sock.recv(65536)
    sock.close()
    assert reply.startswith(b"HTTP/1.1 200"), reply[:200]


def test_connections_beyond_the_cap_get_503(start_server, tiny_bundle):
    server = start_server(tiny_bundle, "--precision", "fp32", "--max-connections", "8", "--read-timeout-s", "20")
    held = [socket.create_connection(("127.0.0.1", server.port), timeout=30) for _ in range(8)]
    extra = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    reply = extra.recv(4096)
    assert reply.startswith(b"HTTP/1.1 503") and b"connection: close" in reply.lower(), reply
    assert extra.recv(4096) == b""  # and closed
    for sock in held:
        sock.close()
    server.wait_healthy()  # once the held sockets' closing has reached it, it accepts again
    assert "embedrt_connections_refused_total" in httpx.get(server.url + "/metrics", timeout=5).text


# ------------------------------------------------------------------------------------------ properties
JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**400), max_value=10**400)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5),
    max_leaves=30,
)
FIELDS = ("input", "inputs", "encoding_format", "model", "dimensions", "normalize", "truncate", "truncation_direction")
#: Bodies shaped like requests, with any values: they pass parsing and exercise validation.
REQUEST_LIKE = st.dictionaries(st.sampled_from(FIELDS), JSON, max_size=5) | st.fixed_dictionaries(
    {"inputs": st.fixed_dictionaries({"source_sentence": JSON, "sentences": JSON})}
)
CONTENT_TYPES = st.sampled_from(["application/json", "text/plain", "application/x-www-form-urlencoded", "", "a/b; x=y"])
FAST = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


def _no_5xx(http, method: str, route: str, content: bytes, content_type: str) -> httpx.Response:
    headers = {"content-type": content_type} if content_type else {}
    response = http.request(method, route, content=content, headers=headers)  # raises if the connection drops
    assert response.status_code < 500, (route, content[:200], response.text[:300])
    if response.status_code >= 400:
        assert "\n" not in response.text.strip()
    return response


@pytest.mark.parametrize("route", EMBEDDING_ROUTES)
@settings(FAST, max_examples=2000)
@given(body=JSON | REQUEST_LIKE, content_type=CONTENT_TYPES)
@example(body={"input": "a" * 10_000}, content_type="application/json")
@example(body={"inputs": [["nested"]]}, content_type="application/json")
def test_any_json_body_gets_a_4xx_or_an_answer_never_a_5xx(http, route, body, content_type):
    import json

    _no_5xx(http, "POST", route, json.dumps(body).encode(), content_type)


@settings(FAST, max_examples=500)
@given(
    route=st.sampled_from(ROUTES),
    method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"]),
    content=st.binary(max_size=300),
    content_type=CONTENT_TYPES,
)
def test_any_bytes_any_method_any_route(http, route, method, content, content_type):
    _no_5xx(http, method, route, content, content_type)


@settings(FAST, max_examples=150)
@given(texts=st.lists(st.text(min_size=1, max_size=60).filter(lambda t: not any(0xD800 <= ord(c) <= 0xDFFF for c in t)),
                      min_size=1, max_size=8))  # fmt: skip
def test_valid_inputs_give_what_offline_encode_gives(http, offline, texts):
    body = httpx.Request("POST", "/", json={"inputs": texts, "truncate": True}).content
    response = _no_5xx(http, "POST", "/embed", body, "")
    assert response.status_code == 200, response.text
    np.testing.assert_allclose(np.array(response.json(), dtype=np.float32), offline.encode(texts, normalize=True),
                               atol=1e-5)  # fmt: skip
