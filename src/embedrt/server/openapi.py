"""``/openapi.json``: the API as OpenAPI 3.1, written from the route table and the request field tables.

Nothing here is typed twice: paths and methods come from :data:`~embedrt.server.routes.ROUTES`,
request bodies from the same :class:`~embedrt.server.schemas.Body` tables that parse them (with this
server's limits: texts per request, the model's dimension), error statuses from the one table in
:mod:`embedrt.server.errors`. The tests drive the running server with schemathesis from this document.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from embedrt._version import __version__
from embedrt.server.errors import STATUS, ErrorKind
from embedrt.server.routes import ROUTES, Dialect, Route
from embedrt.server.schemas import OPENAI_ERROR, REQUESTS, RESPONSES, TEI_ERROR, Limits

#: The refusals an embedding request can meet, beyond its own body's.
_EMBEDDING_ERRORS = (
    ErrorKind.EMPTY,
    ErrorKind.VALIDATION,
    ErrorKind.TOO_LARGE,
    ErrorKind.OVERLOADED,
    ErrorKind.DEADLINE,
    ErrorKind.BACKEND,
)
_BODY_ERRORS = (ErrorKind.EMPTY, ErrorKind.VALIDATION, ErrorKind.TOO_LARGE, ErrorKind.BACKEND)


def _errors(route: Route, auth: bool) -> list[ErrorKind]:
    kinds: list[ErrorKind] = []
    if route.embedding:
        kinds += _EMBEDDING_ERRORS
    elif route.request is not None:
        kinds += _BODY_ERRORS
    if route.handler == "health":
        kinds.append(ErrorKind.UNAVAILABLE)
    if auth and route.private:
        kinds.append(ErrorKind.UNAUTHORIZED)
    return kinds


def _operation(route: Route, limits: Limits, auth: bool) -> dict[str, Any]:
    error = OPENAI_ERROR if route.dialect is Dialect.OPENAI else TEI_ERROR
    media = "text/plain" if route.response == "metrics" else "application/json"
    responses: dict[str, Any] = {
        "200": {"description": "OK", "content": {media: {"schema": RESPONSES[route.response]}}}
    }
    for kind in _errors(route, auth):
        status = str(STATUS[kind][0])
        responses.setdefault(status, {"description": kind.value, "content": {"application/json": {"schema": error}}})
    operation: dict[str, Any] = {
        "summary": route.summary,
        "operationId": f"{route.handler}_{route.method.lower()}{route.path.replace('/', '_').replace('.', '_')}",
        "responses": responses,
    }
    if route.request is not None:
        body = REQUESTS[route.request]
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{body.name}"}}},
        }
    if auth and route.private:
        operation["security"] = [{"bearer": []}]
    return operation


def document(limits: Callable[[Route], Limits], model: str, auth: bool) -> dict[str, Any]:
    """The OpenAPI document of a server whose routes take ``limits(route)``, serving ``model``."""
    paths: dict[str, dict[str, Any]] = {}
    schemas: dict[str, Any] = {}
    for route in ROUTES:
        route_limits = limits(route)
        paths.setdefault(route.path, {})[route.method.lower()] = _operation(route, route_limits, auth)
        if route.request is not None:
            body = REQUESTS[route.request]
            schemas.setdefault(body.name, body.schema(route_limits))
    doc: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": "embedrt",
            "version": __version__,
            "description": f"OpenAI- and text-embeddings-inference-compatible embeddings of {model}",
            "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"},
        },
        "paths": paths,
        "components": {"schemas": schemas},
    }
    if auth:
        doc["components"]["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
    return doc
