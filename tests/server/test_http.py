"""The protocol's write path: what one request cycle writes leaves in one send, and close() sends it first."""

from __future__ import annotations

import asyncio

from embedrt.server.http import _LingeringTransport


class RecordingTransport:
    """A transport that remembers each write (each would be one ``send``) and whether it was closed."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True


class ClosingProtocol:
    def __init__(self, raw: RecordingTransport) -> None:
        self.raw = raw

    def close_lingering(self) -> None:
        self.raw.close()


def test_head_and_body_written_in_one_step_leave_in_one_write():
    loop = asyncio.new_event_loop()
    try:
        raw = RecordingTransport()
        gathered = _LingeringTransport(raw, ClosingProtocol(raw), loop)  # type: ignore[arg-type]
        gathered.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
        gathered.write(b"[]")
        assert raw.writes == []  # nothing sent until the step ends or the response is complete
        loop.run_until_complete(asyncio.sleep(0))  # the end of the step flushes
        assert raw.writes == [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n[]"]
        gathered.flush()  # nothing queued: nothing sent
        assert len(raw.writes) == 1
    finally:
        loop.close()


def test_close_sends_what_is_queued_before_closing():
    loop = asyncio.new_event_loop()
    try:
        raw = RecordingTransport()
        gathered = _LingeringTransport(raw, ClosingProtocol(raw), loop)  # type: ignore[arg-type]
        gathered.write(b"HTTP/1.1 408 Request Timeout\r\n\r\n")
        gathered.close()
        assert raw.writes == [b"HTTP/1.1 408 Request Timeout\r\n\r\n"] and raw.closed
    finally:
        loop.close()
