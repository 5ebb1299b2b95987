"""``embedrt bench --device D``: how close ``encode`` comes to the engine on a device, and its first requests.

For each precision (on ``cuda``: fp16 and fp32 where the bundle has them), in a fresh process:

- per batch size, the engine alone (inputs already on the device, output left there, through the backend's
  ``resident`` call; on the CPU the padded NumPy batches) against ``Encoder.encode`` end to end on the same
  texts, best of ``rounds`` passes each;
- batch-1 ``encode`` latency over ``latency_texts`` distinct texts right after load (the first pass: what a
  service's first traffic sees, after the load-time warm-up) and over the same texts again (warm);
- the load time, and what the load-time warm-up ran.

The report carries the machine it came from (CPU, GPU name, driver and CUDA version from ``nvidia-smi``,
ONNX Runtime's version and providers). The same code runs with ``--device cpu``, which the tests use.
Runtime-only: never imports torch.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from embedrt.errors import EmbedrtError, InputError
from embedrt.tools.bench import load_workload, machine_facts, percentile, run_worker

#: Batch sizes measured per device when none are given.
DEVICE_BATCH_SIZES = {"cpu": (32,), "cuda": (32, 128, 512, 2048), "tensorrt": (32, 128)}
#: Precisions measured per device when none are given (those the bundle has).
DEVICE_PRECISIONS = {"cpu": ("fp32",), "cuda": ("fp16", "fp32"), "tensorrt": ("fp16",)}
#: Distinct texts of the first-pass and warm batch-1 latencies.
LATENCY_TEXTS = 300


@dataclass(frozen=True)
class DeviceBenchSettings:
    device: str
    batch_sizes: tuple[int, ...]
    rounds: int = 3
    latency_texts: int = LATENCY_TEXTS

    def __post_init__(self) -> None:
        if not self.batch_sizes or min(self.batch_sizes) < 1:
            raise InputError(f"batch sizes must be >= 1, got {self.batch_sizes}")
        if self.rounds < 1 or self.latency_texts < 1:
            raise InputError("rounds and latency texts must be >= 1")


def distinct_texts(texts: Sequence[str], count: int) -> list[str]:
    """``count`` distinct texts: the workload's own first, then pairs of them joined (new lengths too)."""
    unique = list(dict.fromkeys(texts))
    found = unique[:count]
    seen = set(found)
    step = 1
    while len(found) < count and unique and step <= len(unique):
        for i, text in enumerate(unique):
            joined = f"{text}，{unique[(i + step) % len(unique)]}"
            if joined not in seen:
                seen.add(joined)
                found.append(joined)
            if len(found) == count:
                break
        step += 1
    return found


def _best(run: Callable[[], None], rounds: int) -> float:
    """Seconds of the fastest of ``rounds`` calls of ``run`` after one untimed call."""
    run()
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - started)
    return best


def _engine_alone(encoder: Any, texts: Sequence[str], batch_size: int, rounds: int) -> tuple[float, str]:
    """Seconds for the engine alone over ``texts`` in padded batches, and where its inputs lived."""
    batches = encoder.batches(encoder.tokenize(list(texts)), batch_size)
    resident = getattr(encoder.backend, "resident", None)
    if resident is not None:  # IO binding: inputs copied to the device once, output left there
        calls = [resident(batch.inputs) for batch in batches]
        where = f"{encoder.device} (IO binding, inputs resident, output left on the device)"
    else:
        calls = [lambda inputs=batch.inputs: encoder.backend.run(inputs) for batch in batches]
        where = "host NumPy batches, padded beforehand"

    def run_all() -> None:
        for call in calls:
            call()

    return _best(run_all, rounds), where


def _encode_all(encoder: Any, texts: Sequence[str], batch_size: int) -> Callable[[], None]:
    def run() -> None:
        encoder.encode(list(texts), batch_size=batch_size)

    return run


def _latencies(encoder: Any, texts: Sequence[str]) -> dict[str, float]:
    taken = []
    for text in texts:
        started = time.perf_counter()
        encoder.encode([text])
        taken.append((time.perf_counter() - started) * 1e3)
    taken.sort()
    return {"p50_ms": percentile(taken, 50), "p99_ms": percentile(taken, 99), "max_ms": taken[-1]}


def measure_device(bundle: str, precision: str, texts: Sequence[str], settings: DeviceBenchSettings) -> dict[str, Any]:
    """Load ``bundle`` on the device in this process and measure it (call in a fresh process)."""
    from embedrt import Encoder

    started = time.perf_counter()
    encoder = Encoder.load(bundle, precision=precision, device=settings.device)
    load_s = time.perf_counter() - started
    singles = distinct_texts(texts, settings.latency_texts)
    first = _latencies(encoder, singles)  # the first time each of these texts (and most widths) is seen
    warm = _latencies(encoder, singles)
    rows = []
    for batch_size in settings.batch_sizes:
        engine_s, where = _engine_alone(encoder, texts, batch_size, settings.rounds)
        encode_s = _best(_encode_all(encoder, texts, batch_size), settings.rounds)
        rows.append(
            {
                "batch_size": batch_size,
                "engine_sent_per_s": len(texts) / engine_s,
                "encode_sent_per_s": len(texts) / encode_s,
                "encode_over_engine": engine_s / encode_s,
                "engine_inputs": where,
            }
        )
    warmed = encoder.warmed
    graphs = _graph_latencies(bundle, precision, singles) if settings.device == "cuda" else None
    return {
        "precision": encoder.precision,
        "backend": encoder.backend.name,
        "pools_on_device": bool(getattr(encoder.backend, "pools_on_device", False)),
        "load_s": load_s,
        "warm_up": {"shapes": len(warmed), "seconds": sum(s for _, _, s in warmed)},
        "latency_texts": len(singles),
        "first_pass": first,
        "warm": warm,
        "first_over_warm_p99": first["p99_ms"] / warm["p99_ms"],
        "batches": rows,
        "cuda_graphs": graphs,
    }


def _graph_latencies(bundle: str, precision: str, singles: Sequence[str]) -> dict[str, Any]:
    """Batch-1 latency again with ``cuda_graphs=True`` (one text at each width replays a captured graph)."""
    from embedrt import Encoder

    started = time.perf_counter()
    encoder = Encoder.load(bundle, precision=precision, device="cuda", cuda_graphs=True)
    load_s = time.perf_counter() - started
    if not encoder.cuda_graphs:
        return {"on": False, "why_off": getattr(encoder.backend, "graphs_off", ""), "load_s": load_s}
    return {
        "on": True,
        "load_s": load_s,
        "graphs": len(encoder.graphed),
        "capture_s": sum(s for _, _, s in encoder.graphed),
        "first_pass": _latencies(encoder, singles),
        "warm": _latencies(encoder, singles),
    }


def gpu_facts() -> dict[str, Any]:
    """GPU name, driver and CUDA version from ``nvidia-smi``, ONNX Runtime's version and providers."""
    facts: dict[str, Any] = {}
    try:
        import onnxruntime

        facts["onnxruntime"] = onnxruntime.__version__
        facts["providers"] = onnxruntime.get_available_providers()
    except ImportError:
        facts["onnxruntime"] = "not installed"
    smi = shutil.which("nvidia-smi")
    if smi is None:
        facts["gpu"] = "none (no nvidia-smi)"
        return facts
    try:
        query = [smi, "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"]
        rows = subprocess.run(query, capture_output=True, text=True, timeout=30).stdout.strip().splitlines()
        header = subprocess.run([smi], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError) as err:
        facts["gpu"] = f"nvidia-smi failed: {err}"
        return facts
    facts["gpus"] = [row.strip() for row in rows]
    facts["gpu"] = rows[0].split(",")[0].strip() if rows else "none listed"
    facts["driver"] = rows[0].split(",")[1].strip() if rows and "," in rows[0] else "?"
    cuda = header.split("CUDA Version:", 1)[1].split()[0] if "CUDA Version:" in header else "?"
    facts["cuda_driver_api"] = cuda.strip("|")
    return facts


def _worker(job: dict[str, Any]) -> dict[str, Any]:
    settings = DeviceBenchSettings(**{**job["settings"], "batch_sizes": tuple(job["settings"]["batch_sizes"])})
    return measure_device(job["bundle"], job["precision"], load_workload(job["data"]), settings)


def _bench_precision(bundle: str, precision: str, data: str | None, settings: DeviceBenchSettings) -> dict[str, Any]:
    """One precision measured in a new process, so its load, warm-up and first pass are real."""
    job = {"bundle": bundle, "precision": precision, "data": data, "settings": asdict(settings)}
    return run_worker("embedrt.tools.device_bench", job, f"{precision} on {settings.device}", tokenizer_threads=True)


def device_precisions(bundle: str, device: str, precisions: Sequence[str] | None) -> list[str]:
    """The precisions to measure: those asked for (each must load), else the device's list that the bundle has."""
    from embedrt.bundle import Bundle
    from embedrt.runtime.backends.select import choose

    opened = Bundle.open(bundle)
    if precisions:
        for precision in precisions:
            choose(opened, precision, "auto", device)  # raises saying why it cannot run there
        return list(precisions)
    wanted = [p for p in DEVICE_PRECISIONS[device] if p in opened.manifest.variants or device == "tensorrt"]
    if not wanted:
        raise InputError(f"bundle {bundle} has none of {', '.join(DEVICE_PRECISIONS[device])} for {device}")
    return wanted


def run_device_bench(
    bundle: str,
    precisions: Sequence[str] | None,
    data: str | None,
    settings: DeviceBenchSettings,
    on_result: Callable[[str, dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Every precision's figures on ``settings.device``, with the machine and workload; JSON-ready."""
    texts = load_workload(data)
    chosen = device_precisions(bundle, settings.device, precisions)
    results = {}
    for precision in chosen:
        results[precision] = _bench_precision(bundle, precision, data, settings)
        if on_result is not None:
            on_result(precision, results[precision])
    return {
        "bundle": bundle,
        "device": settings.device,
        "machine": {**machine_facts(), **gpu_facts()},
        "workload": {"source": data or "built-in Chinese workload", "texts": len(texts)},
        "settings": asdict(settings),
        "results": results,
    }


def format_rows(precision: str, result: dict[str, Any]) -> list[str]:
    """Lines of the text report for one precision."""
    first, warm = result["first_pass"], result["warm"]
    lines = [
        f"{precision} on {result['backend']} (pooling on the device: {'yes' if result['pools_on_device'] else 'no'}), "
        f"load {result['load_s']:.2f} s incl. warm-up of {result['warm_up']['shapes']} shapes "
        f"({result['warm_up']['seconds']:.2f} s)",
        f"  batch-1 over {result['latency_texts']} distinct texts: first pass p50 {first['p50_ms']:.2f} / p99 "
        f"{first['p99_ms']:.2f} ms, again p50 {warm['p50_ms']:.2f} / p99 {warm['p99_ms']:.2f} ms "
        f"(first/warm p99 {result['first_over_warm_p99']:.2f}x)",
    ]
    graphs = result.get("cuda_graphs")
    if graphs and graphs["on"]:
        lines.append(
            f"  with CUDA graphs ({graphs['graphs']} captured in {graphs['capture_s']:.2f} s): batch-1 first pass p50 "
            f"{graphs['first_pass']['p50_ms']:.2f} / p99 {graphs['first_pass']['p99_ms']:.2f} ms, again p50 "
            f"{graphs['warm']['p50_ms']:.2f} / p99 {graphs['warm']['p99_ms']:.2f} ms"
        )
    elif graphs:
        lines.append(f"  CUDA graphs off: {graphs['why_off']}")
    for row in result["batches"]:
        lines.append(
            f"  batch {row['batch_size']:5d}: engine alone {row['engine_sent_per_s']:9.0f} sent/s, encode "
            f"{row['encode_sent_per_s']:9.0f} sent/s ({row['encode_over_engine']:.2f}x the engine)"
        )
    return lines


if __name__ == "__main__":
    try:
        print(json.dumps(_worker(json.loads(sys.argv[1]))))
    except EmbedrtError as err:
        print(json.dumps({"error": str(err)}))
