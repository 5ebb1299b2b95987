"""Every route of ``embedrt serve``, in one table: the dispatcher, ``/openapi.json`` and ``serve --help`` read it.

Standard library only, so ``embedrt serve --help`` lists the routes without the ``server`` extra. The
paths and their meaning follow text-embeddings-inference's router (``router/src/http/server.rs``):
an embedding model is also served at ``POST /`` and ``POST /invocations`` (SageMaker), ``GET /`` and
``GET /ping`` are health, and the OpenAI route answers at ``/embeddings`` as well as ``/v1/embeddings``.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class Dialect(str, Enum):
    """Whose error shape a route answers with."""

    OPENAI = "openai"  # {"error": {"message", "type", "param", "code"}}
    TEI = "tei"  # {"error", "error_type"}


@dataclass(frozen=True)
class Route:
    """One method on one path: the handler's name on :class:`~embedrt.server.app.EmbeddingServer` and its docs."""

    method: str
    path: str
    handler: str
    summary: str
    #: Name of the request body in :data:`embedrt.server.schemas.REQUESTS` (None: no body).
    request: str | None = None
    #: Name of the 200 body in :data:`embedrt.server.schemas.RESPONSES`.
    response: str = "object"
    dialect: Dialect = Dialect.TEI
    #: Needs the API key when the server has one.
    private: bool = True
    #: Passes admission (--max-concurrent-requests), sends timing headers, counted by the request metrics.
    embedding: bool = False


def _openai(path: str, summary: str) -> Route:
    return Route("POST", path, "openai_embeddings", summary, "openai", "openai", Dialect.OPENAI, embedding=True)


def _embed(path: str, summary: str) -> Route:
    return Route("POST", path, "tei_embed", summary, "embed", "embed", embedding=True)


ROUTES: tuple[Route, ...] = (
    _openai("/v1/embeddings", "OpenAI embeddings: unit-length vectors"),
    _openai("/embeddings", "the same, for clients whose base URL has no /v1"),
    _embed("/embed", "TEI embed: normalize, truncate, truncation_direction, dimensions"),
    _embed("/", "TEI's route for an embedding model: /embed"),
    _embed("/invocations", "SageMaker's route: /embed"),
    Route(
        "POST",
        "/similarity",
        "similarity",
        "TEI similarity: cosine of source_sentence with each of sentences",
        "similarity",
        "similarity",
        embedding=True,
    ),
    Route("POST", "/tokenize", "tokenize", "TEI tokenize: the tokens the model sees", "tokenize", "tokenize"),
    Route(
        "GET", "/health", "health", "200 once warmed up, 503 before or while stopping", response="health", private=False
    ),
    Route("GET", "/", "health", "health, as TEI answers it", response="health", private=False),
    Route("GET", "/ping", "health", "health, as SageMaker asks for it", response="health", private=False),
    Route(
        "GET",
        "/info",
        "info",
        "the served model, its limits and manifest; every served model under models",
        response="info",
    ),
    Route(
        "GET",
        "/v1/models",
        "list_models",
        "OpenAI's model list: the served models",
        response="models",
        dialect=Dialect.OPENAI,
    ),  # fmt: skip
    Route("GET", "/metrics", "prometheus", "Prometheus text", response="metrics"),
    Route("GET", "/openapi.json", "openapi", "this API as an OpenAPI 3.1 document", private=False),
    Route("GET", "/api-doc/openapi.json", "openapi", "the same, where TEI serves its own", private=False),
)


def dialect(path: str) -> Dialect:
    """The error dialect of ``path``: OpenAI's for its routes (and any path under ``/v1/``), else TEI's."""
    for route in ROUTES:
        if route.path == path:
            return route.dialect
    return Dialect.OPENAI if path.startswith("/v1/") else Dialect.TEI


def describe() -> str:
    """One line a route, for ``embedrt serve --help``."""
    return "\n".join(f"  {route.method:<5}{route.path:<22}{route.summary}" for route in ROUTES)
