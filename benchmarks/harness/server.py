"""`embedrt serve` in a subprocess, for the scenarios that measure the server.

:class:`Floor` runs :mod:`harness.echo` instead: the same client's round trip with no server work at all.

:class:`Server` picks a free port, starts the real CLI (from this checkout, or from another tree of
sources such as :func:`source_of` a git ref), waits for ``/health``, and stops it with SIGTERM.
:func:`cpu_seconds` and :func:`rss_mb` read the process's CPU time and memory from ``/proc``.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tarfile
import time
from io import BytesIO
from pathlib import Path

from harness.workload import REPO

START_TIMEOUT_S = 180.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` (``/proc/PID/stat`` utime + stime)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    """Resident memory of process ``pid`` now (``/proc/PID/status`` VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def source_of(ref: str, work: Path) -> tuple[Path, str]:
    """``src/`` of git ``ref``, extracted once under ``work`` with ``git archive`` (no worktree is made)."""
    commit = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short", ref], capture_output=True, text=True, check=True
    ).stdout.strip()
    target = work / f"src-{commit}"
    if not (target / "src" / "embedrt").is_dir():
        archive = subprocess.run(["git", "-C", str(REPO), "archive", commit, "src"], capture_output=True, check=True)
        with tarfile.open(fileobj=BytesIO(archive.stdout)) as tar:
            tar.extractall(target, filter="data")
    return target / "src", commit


class Connection:
    """One keep-alive HTTP/1.1 connection on a raw socket: send prepared bytes, read one response."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buffer = b""

    def exchange(self, request: bytes) -> tuple[int, bytes]:
        self.sock.sendall(request)
        while b"\r\n\r\n" not in self.buffer:
            self.buffer += self._recv()
        head, _, rest = self.buffer.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        length = next(int(line.split(b":", 1)[1]) for line in lines if line.lower().startswith(b"content-length:"))
        while len(rest) < length:
            rest += self._recv()
        self.buffer = rest[length:]
        return int(lines[0].split(b" ", 2)[1]), rest[:length]

    def timed(self, request: bytes) -> tuple[float, bool]:
        """Milliseconds one exchange took, and whether it answered 200 with a body."""
        began = time.perf_counter()
        status, body = self.exchange(request)
        return (time.perf_counter() - began) * 1000, status == 200 and bool(body)

    def _recv(self) -> bytes:
        chunk = self.sock.recv(1 << 20)
        if not chunk:
            raise ConnectionError("the server closed the connection")
        return chunk

    def close(self) -> None:
        self.sock.close()


def post_bytes(path: str, raw: bytes) -> bytes:
    """An HTTP/1.1 POST of a JSON body, ready to send."""
    head = (
        f"POST {path} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\nContent-Length: {len(raw)}\r\n\r\n"
    )
    return head.encode() + raw


class Server:
    """`embedrt serve BUNDLE *flags` in a subprocess, healthy before use; stop it with :meth:`stop`.

    ``src``: run the embedrt under this folder (``PYTHONPATH``) instead of the installed one. ``log``: the
    server's output, appended (default: discarded). ``env``: changes to the environment (None removes).
    ``entry``: the command that takes ``serve BUNDLE --port N ...`` (default: ``python -m embedrt.cli``).
    """

    def __init__(
        self,
        bundle: Path,
        flags: list[str] | None = None,
        log: Path | None = None,
        src: Path | None = None,
        env: dict[str, str | None] | None = None,
        entry: list[str] | None = None,
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        environ = {**os.environ, **({"PYTHONPATH": str(src)} if src else {})}
        for name, value in (env or {}).items():
            if value is None:
                environ.pop(name, None)
            else:
                environ[name] = value
        entry = entry or [sys.executable, "-m", "embedrt.cli"]
        command = [*entry, "serve", str(bundle), "--port", str(self.port), *(flags or [])]
        out = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115 - the child holds it; closed below
        self.proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=environ)
        if log:
            out.close()
        self._wait_healthy()

    def _wait_healthy(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"server exited with {self.proc.returncode}; see {self.log or 'its output'}")
            if self.get("/health")[0] == 200:
                return
            time.sleep(0.2)
        self.stop()
        raise SystemExit(f"server not healthy after {START_TIMEOUT_S:.0f} s; see {self.log or 'its output'}")

    def open(self) -> Connection:
        """A keep-alive connection to this server."""
        return Connection(self.port)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def get(self, path: str) -> tuple[int, bytes]:
        """GET ``path`` on a fresh connection: status and body, ``(0, b"")`` when the server does not answer."""
        try:
            connection = Connection(self.port)
        except OSError:
            return 0, b""
        try:
            return connection.exchange(f"GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n".encode())
        except OSError:
            return 0, b""
        finally:
            connection.close()

    def cache_hits(self) -> float | None:
        """``embedrt_cache_hits_total`` from ``/metrics`` (None when the server has no cache)."""
        lines = self.get("/metrics")[1].decode().splitlines()
        hits = [line for line in lines if line.startswith("embedrt_cache_hits_total ")]
        return float(hits[0].split()[1]) if hits else None

    def stop(self) -> int:
        """SIGTERM, then SIGKILL after 60 s; the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(60)
        return self.proc.returncode

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Floor:
    """:mod:`harness.echo` in a subprocess answering ``size`` bytes; :meth:`open` a connection, :meth:`stop` it."""

    def __init__(self, size: int) -> None:
        self.port = free_port()
        command = [sys.executable, str(Path(__file__).with_name("echo.py")), str(self.port), str(size)]
        self.proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)

    def open(self) -> Connection:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            try:
                return Connection(self.port)
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"the echo floor did not start (exit {self.proc.poll()})") from None
                time.sleep(0.1)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)
