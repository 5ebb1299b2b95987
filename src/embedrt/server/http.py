"""uvicorn's httptools protocol with the limits a public server needs and uvicorn does not have.

- Read deadlines: a client must send a request's head within ``read_timeout_s`` of its first byte
  (or of connecting), and then its body within ``read_timeout_s`` more; otherwise it gets ``408`` and the
  socket is closed. Stock uvicorn arms no timer before the first complete head, so a client that sends
  half a request line holds its socket (and a file descriptor) forever. Idle kept-alive connections
  are still closed by uvicorn's own ``timeout_keep_alive``.
- A connection cap: beyond ``max_connections`` open connections, a new one is answered ``503`` and closed
  at once. uvicorn's ``limit_concurrency`` is not that: it answers only once a head is complete, and
  counts idle and stalled connections against every later request, health probes included.

- A lingering close: when a response ends a connection whose request body is still arriving (a 413
  for a body over ``--payload-limit``), closing at once would make the kernel answer the unread data
  with a reset that can destroy the response before the client reads it. The write side is shut
  instead, and what still arrives is discarded unread for up to :data:`LINGER_S` or :data:`LINGER_BYTES`,
  whichever comes first (time for the client to read the answer), then the socket closes.

- One send per response: uvicorn writes a response's head and its body with two ``write`` calls, which
  on an idle socket are two ``send`` system calls and two wake-ups of the client, the first for a head
  it cannot use without the body. What a request cycle writes is gathered and sent once, when the
  response is complete (or, for a streamed one, at the end of the event loop step that wrote it).

The body size limit lives in the application (:mod:`embedrt.server.app`), which reads the body in
chunks; uvicorn's flow control stops reading the socket while the application is not reading.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, cast

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


def _response(status: bytes, text: bytes) -> bytes:
    """A whole plain-text response that closes the connection."""
    head = b"HTTP/1.1 %s\r\ncontent-type: text/plain\r\ncontent-length: %d\r\nconnection: close\r\n\r\n"
    return head % (status, len(text)) + text


#: Seconds a closing connection keeps discarding what its client still sends (nginx lingers 5 s by default).
LINGER_S = 2.0
#: Bytes a closing connection discards at most, so a client that keeps uploading is cut off soon.
LINGER_BYTES = 1 << 20

TIMED_OUT = _response(b"408 Request Timeout", b"the request was not received in time; send it whole")
FULL = _response(b"503 Service Unavailable", b"the server has as many connections as it takes; retry shortly")


class _LingeringTransport:
    """The connection's transport as uvicorn's request cycles see it: writes gathered into one send,
    ``close()`` lingers when it must."""

    def __init__(self, transport: Any, protocol: Guarded, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._protocol = protocol
        self._loop = loop
        self._pending: list[bytes] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)

    def write(self, data: bytes) -> None:
        """Queue ``data``; :meth:`flush` sends it with what follows it in this event loop step."""
        if not self._pending:
            self._loop.call_soon(self.flush)  # a streamed response's parts still leave step by step
        self._pending.append(data)

    def flush(self) -> None:
        """Send everything queued, in one write."""
        if not self._pending:
            return
        data = self._pending[0] if len(self._pending) == 1 else b"".join(self._pending)
        self._pending = []
        if not self._transport.is_closing():
            self._transport.write(data)

    def close(self) -> None:
        self.flush()
        self._protocol.close_lingering()


class Guarded(HttpToolsProtocol):
    """The protocol; :func:`guarded_protocol` makes a subclass carrying the limits and the counters."""

    read_timeout_s: float = 5.0
    max_connections: int | None = None
    on_refused: Callable[[], None] = staticmethod(lambda: None)
    on_timeout: Callable[[], None] = staticmethod(lambda: None)
    _deadline: asyncio.TimerHandle | None = None
    _lingering = False
    _discarded = 0

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
        self._raw = transport
        self._gathered = _LingeringTransport(transport, self, self.loop)
        self.transport = cast(asyncio.Transport, self._gathered)  # what request cycles write to and close
        if self.max_connections is not None and len(self.connections) > self.max_connections:
            self.on_refused()
            transport.write(FULL)
            transport.close()
            return
        self._arm()  # the first request's head

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def close_lingering(self) -> None:
        """Close, or, while the client is still sending a body, shut writing and drain it before closing."""
        raw = self._raw
        still_sending = self.cycle is not None and self.cycle.more_body
        if self._lingering or not still_sending or raw.is_closing() or not raw.can_write_eof():
            raw.close()
            return
        self._lingering = True
        self._disarm()
        raw.write_eof()  # the response is whole; the client sees the end of it
        raw.resume_reading()
        self.loop.call_later(LINGER_S, raw.close)

    def data_received(self, data: bytes) -> None:
        if self._lingering:  # the request was answered and the connection is closing: discard, unread
            self._discarded += len(data)
            if self._discarded > LINGER_BYTES:
                self._raw.close()
            return
        super().data_received(data)

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

    def on_response_complete(self) -> None:
        self._gathered.flush()  # the whole response in one send, before the next pipelined request starts
        super().on_response_complete()


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
