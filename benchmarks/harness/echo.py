"""The floor of a served request: a server that answers each HTTP request at once with a fixed body.

    python benchmarks/harness/echo.py PORT SIZE

A bare uvloop protocol (no HTTP framework, no application): it reads a request's head and its
Content-Length bytes of body, then writes one ``200`` response of SIZE bytes in one send. What a
client waits for from it is the loopback, the kernel and the client's own work: the part of a served
request's latency that no server can remove. :class:`harness.server.Floor` runs it for ``latency.py``.
"""

from __future__ import annotations

import asyncio
import sys


class Echo(asyncio.Protocol):
    def __init__(self, answer: bytes) -> None:
        self.answer = answer
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            head, found, rest = self.buffer.partition(b"\r\n\r\n")
            if not found:
                return
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            if len(rest) < length:
                return
            self.buffer = rest[length:]
            if self.transport is not None:
                self.transport.write(self.answer)


def main(port: int, size: int) -> None:
    import uvloop

    body = b"[" + b"0" * max(0, size - 2) + b"]"
    answer = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n" % len(body) + body

    async def serve() -> None:
        server = await asyncio.get_running_loop().create_server(lambda: Echo(answer), "127.0.0.1", port)
        await server.serve_forever()

    uvloop.run(serve())


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]))
