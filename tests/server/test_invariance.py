"""One text, one vector through the server: the default (auto) variant is batch-invariant, so a cached
vector equals a freshly computed one, and two servers fed different traffic agree on every text."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np

from embedrt import Encoder
from embedrt.export.validate import cosine_rows
from tests.helpers import TEST_TEXTS

TEXTS = [text for text in TEST_TEXTS if text.strip()]
PROBE = "花呗怎么还款"


def _embed(url: str, texts: list[str]) -> np.ndarray:
    body = {"input": texts, "model": "m", "encoding_format": "float"}
    data = httpx.post(url + "/v1/embeddings", json=body, timeout=60).json()["data"]
    return np.asarray([item["embedding"] for item in data], dtype=np.float32)


def _busy(url: str, seed: int) -> np.ndarray:
    """``PROBE`` sent among concurrent requests of other texts (the batcher merges them); its vector."""
    rng = np.random.default_rng(seed)
    requests = [[TEXTS[i] for i in rng.choice(len(TEXTS), size=int(rng.integers(1, 6)))] for _ in range(12)]
    requests[5] = [*requests[5], PROBE]
    with ThreadPoolExecutor(max_workers=12) as pool:
        answers = list(pool.map(lambda texts: _embed(url, texts), requests))
    return answers[5][-1]


def test_cached_fresh_and_differently_loaded_servers_agree(start_server, tiny_bundle):
    flags = ("--threads", "1", "--max-wait-ms", "20")
    quiet = start_server(tiny_bundle, *flags)
    busy = start_server(tiny_bundle, *flags, "--cache-size", "0")
    first = _embed(quiet.url, [PROBE])[0]  # computed alone, then cached
    cached = _busy(quiet.url, seed=1)  # served from the cache among other traffic
    fresh = _busy(busy.url, seed=2)  # computed inside a batch of different texts
    offline = Encoder.load(tiny_bundle).encode(PROBE)
    vectors = np.stack([first, cached, fresh])
    cos = cosine_rows(vectors, np.broadcast_to(offline, vectors.shape))
    assert cos.min() >= 0.999999, f"first / cached / other server vs offline: {cos}"
