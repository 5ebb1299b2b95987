"""Serving past one model and one process: several bundles in one server, and ``--workers``."""

from __future__ import annotations

import re
import subprocess
import sys

import httpx
import numpy as np
import openai
import pytest

from tests.conftest import _export
from tests.helpers import TEST_TEXTS
from tests.server.conftest import ServerProcess, free_port

TEXTS = [text for text in TEST_TEXTS if text and len(text) <= 200][:8]


class MultiServer(ServerProcess):
    """`embedrt serve A NAME=B ...`: several bundles given before the flags."""

    def __init__(self, bundles: list[str], log_dir, *flags: str) -> None:  # noqa: D107 - no super(): one Popen
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_dir / f"serve-{self.port}.log"
        command = [sys.executable, "-m", "embedrt.cli", "serve", *bundles, "--port", str(self.port), *flags]
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(command, stdout=self._log, stderr=subprocess.STDOUT)


@pytest.fixture(scope="module")
def normalized_bundle(tiny_normalized_model_dir, tmp_path_factory):
    return _export(tiny_normalized_model_dir, tmp_path_factory.mktemp("bundles") / "tiny_norm")


@pytest.fixture(scope="module")
def two_models(tiny_bundle, normalized_bundle, tmp_path_factory):
    server = MultiServer(
        [str(tiny_bundle), f"qm={normalized_bundle}"],
        tmp_path_factory.mktemp("multi_logs"),
        "--precision",
        "fp32",
        "--threads",
        "2",
    ).wait_healthy()
    yield server
    assert server.stop() == 0, server.log()


def test_two_bundles_each_answer_their_own_vectors(two_models, tiny_bundle, normalized_bundle):
    from embedrt import Encoder

    client = openai.OpenAI(base_url=two_models.url + "/v1", api_key="-", max_retries=0, timeout=60)
    for model, bundle in (("tiny", tiny_bundle), ("qm", normalized_bundle), ("tiny_norm", normalized_bundle)):
        offline = Encoder.load(bundle, precision="fp32", threads=1)
        response = client.embeddings.create(input=TEXTS, model=model, encoding_format="float")
        got = np.array([item.embedding for item in response.data], dtype=np.float32)
        np.testing.assert_allclose(got, offline.encode(TEXTS, normalize=True), atol=1e-5)
        assert response.model == ("qm" if bundle == normalized_bundle else "tiny")
        tei = httpx.post(
            two_models.url + "/embed", json={"inputs": TEXTS, "normalize": False}, headers={"X-Model": model}
        )
        assert tei.status_code == 200, tei.text
        np.testing.assert_allclose(np.array(tei.json()), offline.encode(TEXTS, normalize=False), atol=1e-5)


def test_tei_routes_default_to_the_first_bundle(two_models, tiny_bundle):
    from embedrt import Encoder

    offline = Encoder.load(tiny_bundle, precision="fp32", threads=1)
    got = httpx.post(two_models.url + "/embed", json={"inputs": TEXTS[:2]}, timeout=30).json()
    np.testing.assert_allclose(np.array(got), offline.encode(TEXTS[:2], normalize=True), atol=1e-5)


def test_unknown_model_is_a_404_naming_the_served_ones(two_models):
    response = httpx.post(two_models.url + "/v1/embeddings", json={"input": "x", "model": "gpt"}, timeout=30)
    assert response.status_code == 404
    message = response.json()["error"]["message"]
    assert "'gpt'" in message and "'tiny'" in message and "'qm'" in message
    response = httpx.post(two_models.url + "/embed", json={"inputs": "x"}, headers={"X-Model": "nope"}, timeout=30)
    assert response.status_code == 404 and "'qm'" in response.json()["error"]


def test_models_info_and_metrics_name_each_model(two_models):
    listed = httpx.get(two_models.url + "/v1/models", timeout=30).json()
    assert [model["id"] for model in listed["data"]] == ["tiny", "qm"]
    info = httpx.get(two_models.url + "/info", timeout=30).json()
    assert info["model_id"] == "tiny" and [card["model_id"] for card in info["models"]] == ["tiny", "qm"]
    assert [card["threads"] for card in info["models"]] == [1, 1]  # 2 threads split, not multiplied
    httpx.post(two_models.url + "/embed", json={"inputs": "x"}, headers={"X-Model": "qm"}, timeout=30)
    metrics = httpx.get(two_models.url + "/metrics", timeout=30).text
    assert re.search(r'embedrt_model_requests_total\{endpoint="/embed",model="qm",status="200"\} [1-9]', metrics)
    assert re.search(r'embedrt_model_texts_total\{model="tiny"\} [1-9]', metrics)


def test_workers_share_the_port_serve_and_stop_cleanly(start_server, tiny_bundle):
    from embedrt import Encoder

    server = start_server(tiny_bundle, "--workers", "2", "--threads", "2", "--precision", "fp32")
    offline = Encoder.load(tiny_bundle, precision="fp32", threads=1)
    for _ in range(6):  # new connections: the kernel hands them to either worker
        got = httpx.post(server.url + "/embed", json={"inputs": TEXTS[:3]}, timeout=30)
        assert got.status_code == 200, got.text
        np.testing.assert_allclose(np.array(got.json()), offline.encode(TEXTS[:3], normalize=True), atol=1e-5)
    bad = httpx.post(server.url + "/embed", json={"inputs": 3}, timeout=30)
    assert bad.status_code == 422
    metrics = httpx.get(server.url + "/metrics", timeout=30).text
    assert re.search(r'embedrt_requests_total\{endpoint="/embed",status="200"\} 6\.0', metrics), metrics
    assert httpx.get(server.url + "/info", timeout=30).json()["threads"] == 1
    assert server.stop() == 0, server.log()
    assert "all 2 workers stopped" in server.log()


def test_bad_model_values_are_4xx(two_models):
    wrong_type = httpx.post(two_models.url + "/v1/embeddings", json={"input": "x", "model": 3}, timeout=30)
    assert wrong_type.status_code == 422 and "model" in wrong_type.json()["error"]["message"]
    tokens = httpx.post(two_models.url + "/tokenize", json={"inputs": "x"}, headers={"X-Model": "qm"}, timeout=30)
    assert tokens.status_code == 200


def test_threads_are_split_between_models_never_multiplied():
    from embedrt.server.serve import plan_threads

    assert plan_threads(2, 1) == (1, 2)
    assert plan_threads(2, 2) == (2, 1)
    assert plan_threads(2, 3) == (2, 1)  # 3 models take turns on 2 engine threads of 1 thread
    assert plan_threads(16, 3) == (3, 5)
    for total in range(1, 9):
        for models in range(1, 6):
            lanes, threads = plan_threads(total, models)
            assert lanes * threads <= total


def test_bundle_specs_and_settings(tmp_path):
    from embedrt.cli import build_parser
    from embedrt.server.serve import bundle_spec
    from embedrt.server.settings import resolve_settings

    assert bundle_spec("qa=/models/b") == ("qa", "/models/b")
    assert bundle_spec("/models/b") == (None, "/models/b")
    odd = tmp_path / "a=b"
    odd.mkdir()
    assert bundle_spec(str(odd)) == (None, str(odd))  # an existing directory wins over NAME=
    args = vars(build_parser().parse_args(["serve", "a", "qa=b", "--workers", "2"]))
    settings = resolve_settings(args, environ={})
    assert settings.bundles == ("a", "qa=b") and settings.workers == 2
