"""`embedrt.ray.serve` on a local Ray cluster of two nodes: replicas on both, offline's vectors, clean shutdown.

The two nodes (a head and a worker node, one CPU each, small object stores) are started and stopped by
this test through ``ray.cluster_utils.Cluster``, which runs the same processes as ``ray start`` and stops
exactly those it started.
"""

from __future__ import annotations

import socket

import httpx
import numpy as np
import openai
import pytest
from ray.cluster_utils import Cluster

import ray  # the `ray` extra (ray[data,serve]): a missing extra fails here rather than skipping
from embedrt import Encoder, InputError
from embedrt.ray import SERVE_NAME, build_app, serve
from ray import serve as ray_serve
from tests.helpers import SHORT_TEXTS

TEXTS = [text for text in SHORT_TEXTS if text][:8]
NODE = {"num_cpus": 1, "object_store_memory": 80 * 1024 * 1024, "include_dashboard": False}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def two_nodes():
    if ray.is_initialized():
        ray.shutdown()
    cluster = Cluster(initialize_head=True, head_node_args=NODE)
    cluster.add_node(**{**NODE, "resources": {"second_node": 1}})
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False, configure_logging=False)
    yield cluster
    try:
        ray_serve.shutdown()
    finally:
        ray.shutdown()
        cluster.shutdown()


def replica_nodes() -> set[str]:
    """Node ids of the live replicas of the embedrt deployment (from the GCS actor table)."""
    table = ray._private.state.state.actor_table(None)
    return {
        actor["Address"]["NodeID"]
        for actor in table.values()
        if actor["State"] == "ALIVE" and f"ServeReplica:{SERVE_NAME}:{SERVE_NAME}" in actor.get("ActorClassName", "")
    }


def test_replicas_on_both_nodes_answer_offline_vectors(two_nodes, tiny_bundle):
    url = serve([str(tiny_bundle)], port=free_port(), min_replicas=2, precision="fp32", max_wait_ms=5)
    assert len(replica_nodes()) == 2  # one CPU per node, one per replica: one replica on each node
    offline = Encoder.load(tiny_bundle, precision="fp32", threads=1)
    client = openai.OpenAI(base_url=url + "/v1", api_key="-", max_retries=0, timeout=60)
    for _ in range(4):
        response = client.embeddings.create(input=TEXTS, model="tiny", encoding_format="float")
        got = np.array([item.embedding for item in response.data], dtype=np.float32)
        np.testing.assert_allclose(got, offline.encode(TEXTS, normalize=True), atol=1e-5)
    bad = httpx.post(url + "/v1/embeddings", json={"input": [1.5]}, timeout=30)  # same validation as embedrt serve
    assert bad.status_code == 422 and "input" in bad.json()["error"]["message"]
    tei = httpx.post(url + "/embed", json={"inputs": TEXTS[:2]}, timeout=30)
    assert tei.status_code == 200 and "x-compute-tokens" in tei.headers
    ray_serve.delete(SERVE_NAME)
    assert replica_nodes() == set()


def test_build_app_takes_serve_config_args(tiny_bundle):
    assert build_app({"bundles": [str(tiny_bundle)], "max_replicas": 3, "precision": "fp32"}) is not None
    assert build_app({"bundles": str(tiny_bundle), "max_replicas": "3", "max_wait_ms": "5"}) is not None  # serve run
    with pytest.raises(InputError, match="bundles"):
        build_app({"bundles": []})
    with pytest.raises(InputError, match="ServerSettings"):
        build_app({"bundles": [str(tiny_bundle)], "no_such_option": 1})
