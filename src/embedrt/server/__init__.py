"""``embedrt serve``: an OpenAI- and TEI-compatible embedding server with dynamic batching.

Modules: ``settings`` (flags and ``EMBEDRT_*`` variables), ``routes`` (every route, one table),
``schemas`` (the wire dialects: request field tables that parse bodies and write their JSON Schema),
``openapi`` (``/openapi.json`` from those tables),
``batcher`` (dynamic batching on one engine thread), ``errors`` (error kind -> HTTP status, in one
place), ``metrics`` (Prometheus), ``app`` (the ASGI application), ``http`` (uvicorn's protocol with
read deadlines and a connection cap), ``serve`` (uvicorn, SIGTERM drain).
Importing this package loads nothing heavy; the ``server`` extra is needed only to run it.
"""

from __future__ import annotations

import importlib.util

from embedrt.extras import missing_extra

SERVER_PACKAGES = ("uvicorn", "httptools", "orjson", "prometheus_client")


def require_server_extra() -> None:
    """Raise :class:`~embedrt.errors.MissingExtraError` naming the ``server`` extra if a package is absent."""
    for package in SERVER_PACKAGES:
        if importlib.util.find_spec(package) is None:
            raise missing_extra(package, "embedrt serve")
