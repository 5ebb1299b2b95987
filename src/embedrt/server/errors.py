"""Every HTTP error of the server, and the one table that maps each kind to a status code.

As text-embeddings-inference's router gives them (``router/src/http/server.rs``): validation 422 (a
wrong field, too many inputs, an over-long input without truncation), empty 400 (no inputs, an empty
string), a body over the payload limit 413, unauthorised 401, overloaded 429, not ready 503; and
embedrt's own: deadline passed 504, engine failure 500. Routes raise :class:`ServerError` (or let an
embedrt error escape); :func:`render_error` renders it as OpenAI's ``{"error": {...}}`` on the OpenAI
routes and as TEI's ``{"error", "error_type"}`` elsewhere.
"""

from __future__ import annotations

from enum import Enum

import orjson

from embedrt.errors import BackendError, EmbedrtError, InputError
from embedrt.server.routes import Dialect, dialect


class ErrorKind(str, Enum):
    """Why a request failed; the value is the ``reason`` label of the failure metric."""

    VALIDATION = "validation"
    EMPTY = "empty"
    TOO_LARGE = "too_large"
    UNAUTHORIZED = "unauthorized"
    OVERLOADED = "overloaded"
    NOT_FOUND = "not_found"
    METHOD = "method_not_allowed"
    UNAVAILABLE = "unavailable"
    DEADLINE = "deadline"
    BACKEND = "backend"


#: The one mapping from error kind to (HTTP status, OpenAI error type, TEI error type).
STATUS: dict[ErrorKind, tuple[int, str, str]] = {
    ErrorKind.VALIDATION: (422, "invalid_request_error", "Validation"),
    ErrorKind.EMPTY: (400, "invalid_request_error", "Empty"),
    ErrorKind.TOO_LARGE: (413, "invalid_request_error", "Validation"),
    ErrorKind.UNAUTHORIZED: (401, "authentication_error", "Unauthorized"),
    ErrorKind.OVERLOADED: (429, "rate_limit_error", "Overloaded"),
    ErrorKind.NOT_FOUND: (404, "invalid_request_error", "NotFound"),
    ErrorKind.METHOD: (405, "invalid_request_error", "MethodNotAllowed"),
    ErrorKind.UNAVAILABLE: (503, "server_error", "Unhealthy"),
    ErrorKind.DEADLINE: (504, "server_error", "Overloaded"),
    ErrorKind.BACKEND: (500, "server_error", "Backend"),
}

#: Seconds a 429 or 504 tells the client to wait (``Retry-After``).
RETRY_AFTER_S = 1


class ServerError(EmbedrtError):
    """A request the server refuses or cannot serve; ``param`` names the offending field.

    ``close`` asks for the connection to be closed after the answer (the body was not read to its end).
    """

    def __init__(self, kind: ErrorKind, message: str, param: str | None = None, close: bool = False) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.param = param
        self.close = close


def classify(err: BaseException) -> tuple[ErrorKind, str, str | None]:
    """Kind, message and field of any exception a route can raise."""
    from embedrt.server.batcher import DeadlineExceeded

    if isinstance(err, ServerError):
        return err.kind, err.message, err.param
    if isinstance(err, DeadlineExceeded):
        return ErrorKind.DEADLINE, str(err), None
    if isinstance(err, InputError):
        return ErrorKind.VALIDATION, str(err), None
    if isinstance(err, BackendError):
        return ErrorKind.BACKEND, f"the engine failed on this request's batch: {err}", None
    return ErrorKind.BACKEND, f"internal error ({type(err).__name__}); see the server log", None


def render_error(kind: ErrorKind, message: str, path: str, param: str | None = None) -> tuple[int, list, bytes]:
    """Status, extra headers and JSON body for ``kind``, in the dialect of the endpoint at ``path``."""
    status, openai_type, tei_type = STATUS[kind]
    if dialect(path) is Dialect.OPENAI:
        body: dict = {"error": {"message": message, "type": openai_type, "param": param, "code": kind.value}}
    else:
        body = {"error": message, "error_type": tei_type}
    headers: list[tuple[bytes, bytes]] = []
    if kind in (ErrorKind.OVERLOADED, ErrorKind.DEADLINE):
        headers.append((b"retry-after", str(RETRY_AFTER_S).encode()))
    if kind is ErrorKind.UNAUTHORIZED:
        headers.append((b"www-authenticate", b"Bearer"))
    return status, headers, orjson.dumps(body)
