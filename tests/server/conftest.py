"""Real `embedrt serve` processes on 127.0.0.1, started once per session where possible.

Every wait here is bounded: a server that does not become healthy within ``START_TIMEOUT`` fails the
test with its log, and every started process is stopped (SIGTERM, then SIGKILL) at teardown.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.helpers import API_KEY

START_TIMEOUT = 90.0
STOP_TIMEOUT = 30.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServerProcess:
    """One `embedrt serve` subprocess; its log goes to a file the failure message shows."""

    def __init__(self, bundle: Path, log_dir: Path, *flags: str, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_dir / f"serve-{self.port}.log"
        command = [sys.executable, "-m", "embedrt.cli", "serve", str(bundle), "--port", str(self.port), *flags]
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            command, stdout=self._log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_healthy(self) -> ServerProcess:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"server exited with {self.proc.returncode} before becoming healthy:\n{self.log()}")
            try:
                if httpx.get(self.url + "/health", timeout=2.0).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        pytest.fail(f"server not healthy after {START_TIMEOUT} s:\n{self.log()}")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(STOP_TIMEOUT)
        self._log.close()
        return self.proc.returncode


@pytest.fixture(scope="session")
def start_server(tmp_path_factory) -> Iterator:
    """``start_server(bundle, *flags)`` -> a healthy :class:`ServerProcess`, stopped at session end."""
    log_dir = tmp_path_factory.mktemp("serve_logs")
    started: list[ServerProcess] = []

    def start(bundle: Path, *flags: str, env: dict[str, str] | None = None, wait: bool = True) -> ServerProcess:
        server = ServerProcess(bundle, log_dir, *flags, env=env)
        started.append(server)
        return server.wait_healthy() if wait else server

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="session")
def fp32_server(start_server, tiny_bundle) -> ServerProcess:
    """The main test server: fp32 (batch-invariant), an API key, small limits, one engine thread."""
    return start_server(
        tiny_bundle,
        "--precision",
        "fp32",
        "--threads",
        "1",
        "--max-wait-ms",
        "5",
        "--max-client-batch-size",
        "16",
        "--max-input-chars",
        "1000",
        env={"EMBEDRT_API_KEY": API_KEY},
    )


@pytest.fixture(scope="session")
def offline(tiny_bundle):
    """What the server must reproduce: the offline encoder of the same bundle."""
    from embedrt import Encoder

    return Encoder.load(tiny_bundle, precision="fp32", threads=1)


@pytest.fixture
def auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {API_KEY}"}
