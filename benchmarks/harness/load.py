"""Load generators that drive a running server: keep-alive client threads on raw sockets, an asyncio
raw-socket client that costs the machine little CPU, and an httpx asyncio client (as the OpenAI client)."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from typing import Any

from harness.server import Connection
from harness.timing import percentile


def drive_threads(port: int, requests: list[bytes], clients: int) -> tuple[list[float], int, float]:
    """Send ``requests`` from ``clients`` threads (one connection each): latencies ms, errors, wall seconds."""
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()

    def client(share: list[bytes]) -> None:
        connection = Connection(port)
        mine, failed = [], 0
        try:
            for request in share:
                took, ok = connection.timed(request)
                mine.append(took)
                failed += not ok
        finally:
            connection.close()
            with lock:
                latencies.extend(mine)
                errors[0] += failed

    threads = [threading.Thread(target=client, args=(requests[i::clients],)) for i in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return latencies, errors[0], time.perf_counter() - started


async def _response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """One HTTP/1.1 response, by Content-Length or chunked."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status, length, chunked = int(lines[0].split(b" ", 2)[1]), None, False
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
        elif name.strip().lower() == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
    if length is not None:
        return status, await reader.readexactly(length)
    body = bytearray()
    while chunked:
        size = int((await reader.readuntil(b"\r\n")).strip().split(b";")[0], 16)
        if size == 0:
            await reader.readuntil(b"\r\n")
            break
        body += await reader.readexactly(size)
        await reader.readexactly(2)
    return status, bytes(body)


async def _raw_client(port: int, bodies: list[dict], latencies: list[float], errors: list) -> None:
    """One keep-alive connection sending OpenAI ``/v1/embeddings`` bodies one after another."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for body in bodies:
            raw = json.dumps(body, ensure_ascii=False).encode()
            head = f"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Length: {len(raw)}\r\n\r\n"
            started = time.perf_counter()
            writer.write(head.encode() + raw)
            status, answer = await _response(reader)
            latencies.append((time.perf_counter() - started) * 1000)
            if status != 200 or answer.count(b'"object":"embedding"') != len(body["input"]):
                errors.append((status, answer[:120]))
    finally:
        writer.close()


def drive_raw(port: int, plan: list[list[dict]]) -> dict:
    """One asyncio client per item of ``plan`` (its request bodies): wall seconds, p50/p99 ms, errors."""
    latencies: list[float] = []
    errors: list = []

    async def everyone() -> None:
        await asyncio.gather(*(_raw_client(port, bodies, latencies, errors) for bodies in plan))

    started = time.perf_counter()
    asyncio.run(everyone())
    wall = time.perf_counter() - started
    latencies.sort()
    return {
        "wall_s": wall,
        "p50_ms": percentile(latencies, 50),
        "p99_ms": percentile(latencies, 99),
        "errors": len(errors),
    }


def throughput_row(requests: int, sentences: int, wall: float, latencies_s: list[float], errors: int) -> dict[str, Any]:
    """The row ``serve_bench.py`` reports for one level (latencies in seconds)."""
    ms = sorted(latency * 1000 for latency in latencies_s)
    return {
        "requests": requests,
        "sentences": sentences,
        "errors": errors,
        "seconds": round(wall, 3),
        "requests_per_s": round(requests / wall, 1),
        "sentences_per_s": round(sentences / wall, 1),
        "p50_ms": round(percentile(ms, 50), 1),
        "p99_ms": round(percentile(ms, 99), 1),
    }


async def _drive_httpx(url: str, plan: list[list[str]], concurrency: int, timeout_s: float) -> dict:
    import httpx

    queue = list(reversed(plan))
    latencies: list[float] = []
    errors = 0

    async def client(http: httpx.AsyncClient) -> None:
        nonlocal errors
        while queue:
            texts = queue.pop()
            body = {"input": texts, "model": "bench", "encoding_format": "base64"}
            start = time.perf_counter()
            response = await http.post("/v1/embeddings", json=body)
            latencies.append(time.perf_counter() - start)
            if response.status_code != 200 or len(response.json()["data"]) != len(texts):
                errors += 1

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=timeout_s) as http:
        start = time.perf_counter()
        await asyncio.wait_for(asyncio.gather(*(client(http) for _ in range(concurrency))), timeout_s)
        wall = time.perf_counter() - start
    return throughput_row(len(plan), sum(len(texts) for texts in plan), wall, latencies, errors)


def drive_httpx(url: str, plan: list[list[str]], concurrency: int, timeout_s: float = 120.0) -> dict:
    """Send ``plan`` (the texts of one OpenAI base64 request per item) from ``concurrency`` httpx clients."""
    return asyncio.run(_drive_httpx(url, plan, concurrency, timeout_s))
