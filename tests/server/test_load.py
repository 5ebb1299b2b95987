"""A bounded loopback load test: 64 concurrent clients, mixed batch sizes, zero errors, exact vectors."""

from __future__ import annotations

import asyncio
import random
import re

import httpx
import numpy as np

from embedrt.export.sentences import PARITY_SENTENCES
from tests.helpers import API_KEY

CLIENTS = 64
REQUESTS_PER_CLIENT = 5
DEADLINE_S = 300.0  # a bound, not a performance assertion


def test_64_concurrent_clients_get_exactly_their_offline_vectors(fp32_server, offline):
    pool = [text for text in PARITY_SENTENCES if text and len(text) <= 1000]  # OpenAI and TEI refuse ""
    rng = random.Random(0)
    plan = [[rng.sample(pool, rng.randint(1, 8)) for _ in range(REQUESTS_PER_CLIENT)] for _ in range(CLIENTS)]
    headers = {"Authorization": f"Bearer {API_KEY}"}

    async def one_client(http: httpx.AsyncClient, requests: list[list[str]]) -> list[tuple[list[str], httpx.Response]]:
        results = []
        for texts in requests:
            body = {"input": texts, "model": "m", "encoding_format": "float"}
            results.append((texts, await http.post("/v1/embeddings", json=body, headers=headers)))
        return results

    async def main():
        limits = httpx.Limits(max_connections=CLIENTS, max_keepalive_connections=CLIENTS)
        async with httpx.AsyncClient(base_url=fp32_server.url, limits=limits, timeout=120) as http:
            before = (await http.get("/metrics", headers=headers)).text
            work = asyncio.gather(*(one_client(http, requests) for requests in plan))
            results = await asyncio.wait_for(work, DEADLINE_S)
            after = (await http.get("/metrics", headers=headers)).text
        return before, results, after

    before, results, after = asyncio.run(main())
    responses = [pair for client in results for pair in client]
    assert len(responses) == CLIENTS * REQUESTS_PER_CLIENT
    errors = [(r.status_code, r.text[:200]) for _, r in responses if r.status_code != 200]
    assert not errors, errors[:5]
    for texts, response in responses:
        got = np.array([item["embedding"] for item in response.json()["data"]], dtype=np.float32)
        np.testing.assert_allclose(got, offline.encode(texts, normalize=True), atol=1e-5)  # OpenAI: unit length

    def cycles(text: str) -> float:
        match = re.search(r"^embedrt_batch_requests_count (\S+)$", text, re.MULTILINE)
        return float(match.group(1)) if match else 0.0

    # Dynamic batching happened: 320 requests from 64 concurrent clients took fewer engine cycles.
    assert cycles(after) - cycles(before) < len(responses)
