"""`embedrt serve` on the oldest Python embedrt claims (``requires-python``), driven from the test Python.

    python tests/e2e/serve_on_oldest_python.py --python .venv-oldest/bin/python

Run by ``make test`` (``make test-oldest``). The test environment builds a seeded tiny model and exports
it (that needs torch, which the oldest Python's environment does not have: it holds only the runtime and
the server, as a deployment would); the oldest Python serves it; the answers must equal what the
runtime computes here. Exit status 0 when they do, 1 with the server's log otherwise.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

START_TIMEOUT_S = 120


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--python", required=True, help="the oldest Python's interpreter, with embedrt[cpu,server]")
    args = parser.parse_args()
    version = subprocess.run([args.python, "--version"], capture_output=True, text=True, check=True).stdout.strip()

    from embedrt import Encoder
    from embedrt.export import ExportSettings, export_bundle
    from embedrt.export.standin import TINY, build_standin

    with tempfile.TemporaryDirectory() as work:
        bundle = Path(work) / "bundle"
        # ONNX Runtime only: the oldest Python's venv has no OpenVINO.
        settings = ExportSettings(precisions=("fp32",), engines=("onnxruntime",))
        export_bundle(build_standin(Path(work) / "model", TINY), bundle, settings)
        port = free_port()
        log_path = Path(work) / "serve.log"
        with open(log_path, "wb") as log:
            server = subprocess.Popen(
                [args.python, "-m", "embedrt.cli", "serve", str(bundle), "--port", str(port), "--max-wait-ms", "20"],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONPATH": ""},
            )
        url = f"http://127.0.0.1:{port}"
        try:
            started = time.monotonic()
            while time.monotonic() - started < START_TIMEOUT_S:
                if server.poll() is not None:
                    raise RuntimeError(f"the server exited with {server.returncode}")
                try:
                    if httpx.get(url + "/health", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.2)
            else:
                raise RuntimeError(f"no healthy server after {START_TIMEOUT_S} s")
            ready = time.monotonic() - started
            texts = ["花呗怎么还款", "hello world", "   "]  # OpenAI and TEI refuse "", so does the server
            offline = Encoder.load(bundle, precision="fp32").encode(texts, normalize=True)  # OpenAI: unit vectors
            openai = httpx.post(url + "/v1/embeddings", json={"input": texts}, timeout=60).json()
            got = np.array([item["embedding"] for item in openai["data"]], dtype=np.float32)
            np.testing.assert_allclose(got, offline, atol=1e-5)
            # Concurrent requests wait for batch-mates: the path that failed on Python 3.10 before.
            with httpx.Client(base_url=url, timeout=60) as client:
                answers = [client.post("/embed", json={"inputs": [text]}) for text in texts]
            assert all(answer.status_code == 200 for answer in answers)
            server.send_signal(signal.SIGTERM)
            code = server.wait(60)
            assert code == 0, f"exit status {code} after SIGTERM"
        except (RuntimeError, AssertionError, httpx.HTTPError) as err:
            server.kill()
            print(f"{version}: embedrt serve failed: {err}\n{log_path.read_text(errors='replace')}", file=sys.stderr)
            return 1
    print(f"{version}: embedrt serve started in {ready:.1f} s, answered OpenAI and TEI requests equal to offline")
    return 0


if __name__ == "__main__":
    sys.exit(main())
