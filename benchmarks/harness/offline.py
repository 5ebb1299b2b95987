"""``Encoder.encode`` in a process of its own, the offline side of the server scenarios.

Run as a script (``python benchmarks/harness/offline.py MODE ...``), by :func:`command`, with the embedrt
the parent chose (``PYTHONPATH``); it imports nothing of the harness.

- ``pipe BUNDLE``: prints the variant as JSON, then for each JSON text on stdin the ms one
  ``encode([text])`` took, timed inside (``latency.py``'s engine alone);
- ``plan BUNDLE PRECISION THREADS PLAN``: the requests of a JSON ``[warm-up, plan]`` file (lists of texts)
  one after another; prints the wall seconds and each request's seconds (``serve_bench.py``'s offline row);
- ``cpu BUNDLE on|off TEXTS``: one ``encode(texts, batch_size=32)`` of a JSON list of texts, fp32, spinning
  on or off; prints its ``time.process_time`` (``serve_cpu.py``'s offline rows).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve()


def command(mode: str, *args: object) -> list[str]:
    """The command line that runs ``mode`` in a fresh interpreter."""
    return [sys.executable, str(HERE), mode, *map(str, args)]


def pipe(bundle: str) -> None:
    from embedrt import Encoder

    encoder = Encoder.load(bundle)
    print(json.dumps({"variant": encoder.variant}), flush=True)
    for line in sys.stdin:
        text = json.loads(line)
        began = time.perf_counter()
        encoder.encode([text])
        print((time.perf_counter() - began) * 1000, flush=True)


def plan(bundle: str, precision: str, threads: str, plan_file: str) -> None:
    from embedrt import Encoder

    warm, requests = json.loads(Path(plan_file).read_text(encoding="utf-8"))
    encoder = Encoder.load(bundle, precision=precision, threads=int(threads))
    for texts in warm:
        encoder.encode(texts)
    latencies = []
    start = time.perf_counter()
    for texts in requests:
        began = time.perf_counter()
        encoder.encode(texts)
        latencies.append(time.perf_counter() - began)
    print(json.dumps({"wall": time.perf_counter() - start, "latencies": latencies}))


def cpu(bundle: str, spin: str, texts_file: str) -> None:
    from embedrt import Encoder

    texts = json.loads(Path(texts_file).read_text(encoding="utf-8"))
    encoder = Encoder.load(bundle, precision="fp32", spin=spin == "on")
    encoder.encode(texts[:64], batch_size=32)
    start = time.process_time()
    encoder.encode(texts, batch_size=32)
    print(json.dumps({"cpu_s": time.process_time() - start}))


MODES = {"pipe": pipe, "plan": plan, "cpu": cpu}

if __name__ == "__main__":
    MODES[sys.argv[1]](*sys.argv[2:])
