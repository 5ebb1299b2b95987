"""The FastAPI application: routes for OpenAI and TEI clients, health, info and metrics.

Routes stay thin: authorize, admit (or 429), parse and check limits, tokenize, hand to the
:class:`~embedrt.server.batcher.DynamicBatcher`, render. Errors go to :mod:`embedrt.server.errors`.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, Request, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from embedrt.runtime.encoder import Encoder
from embedrt.server.batcher import DynamicBatcher
from embedrt.server.errors import ErrorKind, ServerError, install_error_handlers
from embedrt.server.metrics import Metrics
from embedrt.server.schemas import openai_body, parse_json_object, parse_openai, parse_tei, tei_body
from embedrt.server.settings import ServerSettings

log = logging.getLogger("embedrt.server")

EMBEDDING_ROUTES = ("/v1/embeddings", "/embed")
JSON = "application/json"
#: Responses with more floats than this are serialized on a helper thread, not the event loop.
INLINE_RENDER_FLOATS = 32 * 1024
WARM_UP_TEXTS = ("warm up", "预热" * 40, "a b c d e f g h i j k l m n o p q r s t u v w x y z")


def model_name(encoder: Encoder) -> str:
    """The id clients see: the hub id the bundle was exported from, else the bundle directory's name."""
    source = encoder.manifest.source
    return encoder.bundle.root.resolve().name if not source or Path(source).is_absolute() else source


class _ObserveRequests:
    """ASGI middleware: duration and status of every embedding request, including refused ones."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or path not in EMBEDDING_ROUTES:
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def observe_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, observe_send)
        finally:
            self.metrics.request_duration.labels(path).observe(time.perf_counter() - start)
            self.metrics.requests.labels(path, str(status)).inc()


def create_app(encoder: Encoder, settings: ServerSettings) -> FastAPI:
    """An application serving ``encoder`` within ``settings``' limits; the batcher lives in its lifespan."""
    metrics = Metrics()
    batcher = DynamicBatcher(
        encoder,
        max_batch_tokens=settings.max_batch_tokens,
        max_wait_s=settings.max_wait_s,
        max_batch_requests=settings.max_batch_requests,
        metrics=metrics,
    )
    name = model_name(encoder)
    state = {"ready": False, "in_flight": 0}
    # Bytes a valid request can need: every text at the character limit, JSON-escaped (\uXXXX is 6 bytes).
    max_body = settings.max_client_batch_size * (settings.max_input_chars * 6 + 8) + 64 * 1024

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await batcher.start()
        for text in WARM_UP_TEXTS:  # first runs allocate ORT buffers; pay for that before the first client
            await batcher.embed(await batcher.tokenize([text] * 4), normalize=False)
        state["ready"] = True
        log.info("embedrt: serving %s (%s, %s), dim %d", name, encoder.precision, encoder.backend.name, encoder.dim)
        try:
            yield
        finally:
            state["ready"] = False
            await batcher.stop()

    app = FastAPI(title="embedrt", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.batcher = batcher
    app.state.metrics = metrics
    install_error_handlers(app, lambda kind: metrics.failures.labels(kind.value).inc())
    app.add_middleware(_ObserveRequests, metrics=metrics)

    def authorize(request: Request) -> None:
        if settings.api_key is None:
            return
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), settings.api_key.encode()):
            what = "wrong API key" if header else "missing 'Authorization: Bearer KEY' header"
            raise ServerError(ErrorKind.UNAUTHORIZED, f"{what}: this server was started with --api-key")

    @asynccontextmanager
    async def admitted() -> AsyncIterator[None]:
        if state["in_flight"] >= settings.max_concurrent_requests:
            raise ServerError(
                ErrorKind.OVERLOADED,
                f"the server is at its limit of {settings.max_concurrent_requests} concurrent requests "
                "(--max-concurrent-requests); retry after the Retry-After seconds",
            )
        state["in_flight"] += 1
        metrics.in_flight.inc()
        try:
            yield
        finally:
            state["in_flight"] -= 1
            metrics.in_flight.dec()

    async def read_json(request: Request) -> dict:
        length = request.headers.get("content-length", "")
        if length.isdigit() and int(length) > max_body:
            raise ServerError(
                ErrorKind.TOO_LARGE,
                f"the request body has {length} bytes; requests within --max-client-batch-size and "
                f"--max-input-chars are at most {max_body}",
                "body",
            )
        return parse_json_object(await request.body())

    async def render(make_body: Callable[..., bytes], *args: Any) -> Response:
        vectors = args[0]
        body = make_body(*args) if vectors.size <= INLINE_RENDER_FLOATS else await asyncio.to_thread(make_body, *args)
        return Response(body, media_type=JSON)

    def account(vectors: np.ndarray, tokens: int) -> None:
        metrics.texts.inc(len(vectors))
        metrics.tokens.inc(tokens)

    @app.post("/v1/embeddings")
    async def openai_embeddings(request: Request) -> Response:
        authorize(request)
        async with admitted():
            query = parse_openai(await read_json(request), settings, encoder.dim)
            encodings = await batcher.tokenize(query.texts)
            vectors = await batcher.embed(encodings, normalize=encoder.manifest.normalize)
            tokens = sum(len(encoding.ids) for encoding in encodings)
            account(vectors, tokens)
            return await render(openai_body, vectors, query.encoding_format, name, tokens)

    @app.post("/embed")
    async def tei_embed(request: Request) -> Response:
        authorize(request)
        async with admitted():
            query = parse_tei(await read_json(request), settings)
            encodings = await batcher.tokenize(query.texts)
            if not query.truncate:
                for index, encoding in enumerate(encodings):
                    if encoding.overflowing:
                        raise ServerError(
                            ErrorKind.TOO_LARGE,
                            f"'inputs[{index}]' is longer than this model's {encoder.max_seq_length} tokens; "
                            'send "truncate": true to embed its first tokens, or shorten it',
                            "inputs",
                        )
            vectors = await batcher.embed(encodings, normalize=query.normalize)
            account(vectors, sum(len(encoding.ids) for encoding in encodings))
            return await render(tei_body, vectors)

    @app.get("/health")
    async def health() -> Response:
        if not (state["ready"] and batcher.healthy):
            raise ServerError(
                ErrorKind.UNAVAILABLE, "the model is not loaded and warmed yet, or the server is stopping"
            )
        return Response(b'{"status":"ok"}', media_type=JSON)

    @app.get("/info")
    async def info(request: Request) -> Response:
        authorize(request)
        body = {
            "model_id": name,
            "model_dtype": encoder.precision,
            "engine": encoder.backend.name,
            "dim": encoder.dim,
            "max_input_length": encoder.max_seq_length,
            "max_client_batch_size": settings.max_client_batch_size,
            "max_batch_tokens": settings.max_batch_tokens,
            "max_concurrent_requests": settings.max_concurrent_requests,
            "limits": settings.public(),
            "manifest": json.loads(encoder.manifest.to_json()),
        }
        return Response(json.dumps(body, ensure_ascii=False).encode(), media_type=JSON)

    @app.get("/v1/models")
    async def models(request: Request) -> Response:
        authorize(request)
        data = [{"id": name, "object": "model", "created": 0, "owned_by": "embedrt"}]
        return Response(json.dumps({"object": "list", "data": data}).encode(), media_type=JSON)

    @app.get("/metrics")
    async def prometheus(request: Request) -> Response:
        authorize(request)
        return Response(metrics.render(), media_type=metrics.content_type)

    return app
