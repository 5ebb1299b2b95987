"""uvicorn's httptools protocol with the limits a public server needs and uvicorn does not have.

- Read deadlines: a client must send a request's head within ``read_timeout_s`` of its first byte
  (or of connecting), and then its body within ``read_timeout_s`` more; otherwise it gets ``408`` and the
  socket is closed. Stock uvicorn arms no timer before the first complete head, so a client that sends
  half a request line holds its socket (and a file descriptor) forever. Idle kept-alive connections
  are still closed by uvicorn's own ``timeout_keep_alive``.
- A connection cap: beyond ``max_connections`` open connections, a new one is answered ``503`` and closed
  at once. uvicorn's ``limit_concurrency`` is not that: it answers only once a head is complete, and
  counts idle and stalled connections against every later request, health probes included.

The body size limit lives in the application (:mod:`embedrt.server.app`), which reads the body in
chunks; uvicorn's flow control stops reading the socket while the application is not reading.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


def _response(status: bytes, text: bytes) -> bytes:
    """A whole plain-text response that closes the connection."""
    head = b"HTTP/1.1 %s\r\ncontent-type: text/plain\r\ncontent-length: %d\r\nconnection: close\r\n\r\n"
    return head % (status, len(text)) + text


TIMED_OUT = _response(b"408 Request Timeout", b"the request was not received in time; send it whole")
FULL = _response(b"503 Service Unavailable", b"the server has as many connections as it takes; retry shortly")


class Guarded(HttpToolsProtocol):
    """The protocol; :func:`guarded_protocol` makes a subclass carrying the limits and the counters."""

    read_timeout_s: float = 5.0
    max_connections: int | None = None
    on_refused: Callable[[], None] = staticmethod(lambda: None)
    on_timeout: Callable[[], None] = staticmethod(lambda: None)
    _deadline: asyncio.TimerHandle | None = None

    def _arm(self) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(self.read_timeout_s, self._expired)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expired(self) -> None:
        self._deadline = None
        if self.transport is None or self.transport.is_closing():
            return
        self.on_timeout()
        if self.cycle is None or not self.cycle.response_started:
            self.transport.write(TIMED_OUT)
        self.transport.close()

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        if self.max_connections is not None and len(self.connections) > self.max_connections:
            self.on_refused()
            transport.write(FULL)
            transport.close()
            return
        self._arm()  # the first request's head

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._deadline is None:  # a later request on a kept-alive connection: time its head too
            self._arm()

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        self._arm()  # now the body

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._disarm()


def guarded_protocol(
    read_timeout_s: float,
    max_connections: int | None,
    on_refused: Callable[[], None],
    on_timeout: Callable[[], None],
) -> type[Guarded]:
    """A :class:`Guarded` subclass with these limits, for ``uvicorn.Config(http=...)``."""
    return type(
        "GuardedHttpTools",
        (Guarded,),
        {
            "read_timeout_s": read_timeout_s,
            "max_connections": max_connections,
            "on_refused": staticmethod(on_refused),
            "on_timeout": staticmethod(on_timeout),
        },
    )
