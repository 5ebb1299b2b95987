"""Every HTTP error of the server, and the one table that maps each kind to a status code.

Like text-embeddings-inference: validation 422, too large 413, unauthorised 401, overloaded 429,
not ready 503, engine failure 500. Routes raise :class:`ServerError` (or let an embedrt error
escape); :func:`install_error_handlers` renders it as OpenAI's ``{"error": {...}}`` under ``/v1``
and as TEI's ``{"error", "error_type"}`` elsewhere, and counts it in the failure metric.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from enum import Enum

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from embedrt.errors import BackendError, EmbedrtError, InputError

log = logging.getLogger("embedrt.server")


class ErrorKind(str, Enum):
    """Why a request failed; the value is the ``reason`` label of the failure metric."""

    VALIDATION = "validation"
    TOO_LARGE = "too_large"
    UNAUTHORIZED = "unauthorized"
    OVERLOADED = "overloaded"
    NOT_FOUND = "not_found"
    METHOD = "method_not_allowed"
    UNAVAILABLE = "unavailable"
    BACKEND = "backend"


#: The one mapping from error kind to (HTTP status, OpenAI error type, TEI error type).
STATUS: dict[ErrorKind, tuple[int, str, str]] = {
    ErrorKind.VALIDATION: (422, "invalid_request_error", "Validation"),
    ErrorKind.TOO_LARGE: (413, "invalid_request_error", "Validation"),
    ErrorKind.UNAUTHORIZED: (401, "authentication_error", "Unauthorized"),
    ErrorKind.OVERLOADED: (429, "rate_limit_error", "Overloaded"),
    ErrorKind.NOT_FOUND: (404, "invalid_request_error", "NotFound"),
    ErrorKind.METHOD: (405, "invalid_request_error", "MethodNotAllowed"),
    ErrorKind.UNAVAILABLE: (503, "server_error", "Unhealthy"),
    ErrorKind.BACKEND: (500, "server_error", "Backend"),
}

#: Seconds a 429 tells the client to wait (``Retry-After``).
RETRY_AFTER_S = 1


class ServerError(EmbedrtError):
    """A request the server refuses or cannot serve; ``param`` names the offending field."""

    def __init__(self, kind: ErrorKind, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.param = param


def error_response(kind: ErrorKind, message: str, path: str, param: str | None = None) -> JSONResponse:
    """The JSON error body and status for ``kind``, in the dialect of the endpoint at ``path``."""
    status, openai_type, tei_type = STATUS[kind]
    if path.startswith("/v1/"):
        body: dict = {"error": {"message": message, "type": openai_type, "param": param, "code": kind.value}}
    else:
        body = {"error": message, "error_type": tei_type}
    headers = {"Retry-After": str(RETRY_AFTER_S)} if kind is ErrorKind.OVERLOADED else None
    if kind is ErrorKind.UNAUTHORIZED:
        headers = {"WWW-Authenticate": "Bearer"}
    return JSONResponse(body, status_code=status, headers=headers)


def classify(err: BaseException) -> tuple[ErrorKind, str, str | None]:
    """Kind, message and field of any exception a route can raise."""
    if isinstance(err, ServerError):
        return err.kind, err.message, err.param
    if isinstance(err, InputError):
        return ErrorKind.VALIDATION, str(err), None
    if isinstance(err, BackendError):
        return ErrorKind.BACKEND, f"the engine failed on this request's batch: {err}", None
    if isinstance(err, RequestValidationError):
        first = err.errors()[0] if err.errors() else {}
        where = ".".join(str(part) for part in first.get("loc", ()) if part != "body")
        return ErrorKind.VALIDATION, f"{where or 'body'}: {first.get('msg', 'invalid request')}", where or None
    if isinstance(err, StarletteHTTPException):
        kind = {404: ErrorKind.NOT_FOUND, 405: ErrorKind.METHOD}.get(err.status_code, ErrorKind.VALIDATION)
        return kind, str(err.detail), None
    return ErrorKind.BACKEND, f"internal error ({type(err).__name__}); see the server log", None


def install_error_handlers(app: FastAPI, on_failure: Callable[[ErrorKind], None]) -> None:
    """Route every exception through :data:`STATUS`; ``on_failure(kind)`` counts it."""

    async def handle(request: Request, err: Exception) -> JSONResponse:
        kind, message, param = classify(err)
        if kind is ErrorKind.BACKEND:
            log.error("request %s %s failed", request.method, request.url.path, exc_info=err)
        on_failure(kind)
        return error_response(kind, message, request.url.path, param)

    for exc_type in (ServerError, EmbedrtError, RequestValidationError, StarletteHTTPException, Exception):
        app.add_exception_handler(exc_type, handle)
