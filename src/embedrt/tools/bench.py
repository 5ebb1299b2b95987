"""``embedrt bench``: how fast a bundle runs on this machine, measured the way users run it.

Each precision is measured in its own fresh process (``python -m embedrt.tools.bench``), so cold start is
real (new process to first embedding), peak RSS belongs to that precision alone, and engines never
share a thread pool. Throughput is the best of ``rounds`` full passes of ``Encoder.encode`` over the
workload after a warm-up; latency is batch-1 ``encode`` calls after their own warm-up.
Runtime-only: this module never imports torch.
"""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from embedrt.errors import BackendError, EmbedrtError, InputError

if TYPE_CHECKING:
    from embedrt.runtime.backends.select import Choice
    from embedrt.runtime.encoder import Encoder

#: Texts in the built-in workload: the bundled Chinese sentences repeated in a fixed shuffled order.
BUILTIN_SIZE = 1024
#: Batch-1 calls timed for the latency percentiles (after ``LATENCY_WARMUP`` untimed ones).
LATENCY_SAMPLES = 200
LATENCY_WARMUP = 20
#: How long one precision's worker may take before the bench gives up on it.
WORKER_TIMEOUT_S = 1800


@dataclass(frozen=True)
class BenchSettings:
    """What to measure; the same for every precision of one run."""

    batch_size: int = 32
    threads: int | None = None
    rounds: int = 3
    max_batch_tokens: int | None = None
    latency_samples: int = LATENCY_SAMPLES

    def __post_init__(self) -> None:
        for name in ("batch_size", "rounds", "latency_samples"):
            if getattr(self, name) < 1:
                raise InputError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("threads", "max_batch_tokens"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise InputError(f"{name} must be >= 1 or unset, got {value}")


@dataclass(frozen=True)
class BenchResult:
    """One engine and precision's figures. Latencies in milliseconds, cold start in seconds, RSS in MB."""

    label: str  # "int8" (ONNX Runtime), "openvino-int8", "openvino-bf16", ...
    precision: str
    engine: str
    threads: int
    sentences_per_s: float
    tokens_per_s: float
    gflops_per_s: float
    latency_p50_ms: float
    latency_p95_ms: float
    latency_p99_ms: float
    cold_start_s: float
    peak_rss_mb: float | None
    #: A text's vector is the same alone and in any batch (the manifest's ``batch_invariant``).
    batch_invariant: bool = True
    #: Engine instances ``encode`` ran the batches on (``Encoder.load(streams=...)``), and the throughput of the
    #: same batches run one after another on the single-stream engine (None when streams is 1).
    streams: int = 1
    one_stream_sentences_per_s: float | None = None


def builtin_workload(size: int = BUILTIN_SIZE) -> list[str]:
    """A realistic Chinese workload: queries, dialogue, reviews and news lines (mean ~19 tokens)."""
    text = resources.files("embedrt").joinpath("data/bench_zh.txt").read_text(encoding="utf-8")
    lines = [line for line in text.splitlines() if line.strip()]
    # A fixed stride permutation, so every run sees the same order without touching global RNG state.
    stride = 37  # coprime with the line count, so one cycle visits every line once
    if len(lines) % stride == 0:
        stride = 1
    return [lines[(i * stride) % len(lines)] for i in range(size)]


def flops_per_sentence(architecture: dict[str, Any], tokens: int) -> float:
    """Multiply-adds x2 of a BERT encoder on one unpadded sentence of ``tokens`` tokens.

    Per layer: the Q/K/V and output projections (4 h^2 per token), the FFN (2 h i per token) and the
    attention scores and weighted sum (2 L h per token). Embeddings, LayerNorm and GELU are ignored.
    """
    layers = int(architecture.get("num_layers") or 0)
    hidden = int(architecture.get("hidden_size") or 0)
    inner = int(architecture.get("intermediate_size") or 4 * hidden)
    per_layer = 2 * tokens * (4 * hidden * hidden + 2 * hidden * inner) + 4 * tokens * tokens * hidden
    return float(layers * per_layer)


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of already sorted values: the smallest value with at least ``q``% at or below it.

    The p95 of 100 samples is the 95th smallest, of 200 the 190th. Every embedrt figure uses this one.
    """
    if not sorted_values:
        raise ValueError("percentile of no values")
    rank = math.ceil(q / 100 * len(sorted_values) - 1e-9)  # the epsilon keeps 0.95 * 100 from rounding up to 96
    return sorted_values[min(len(sorted_values), max(1, rank)) - 1]


def _peak_rss_mb() -> float | None:
    """This process's peak resident memory.

    Linux: ``VmHWM``, because ``ru_maxrss`` survives exec and so reports a large parent's peak.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1e3  # kB
    except OSError:
        pass  # not Linux: fall back to getrusage below
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1e6 if sys.platform == "darwin" else peak / 1e3  # bytes on macOS, KiB elsewhere


def measure(
    bundle: str,
    precision: str,
    engine: str,
    texts: Sequence[str],
    settings: BenchSettings,
    batch_invariant: bool = True,
) -> dict[str, Any]:
    """Load ``bundle`` in this process and measure it; call in a fresh process for a true cold start.
    ``batch_invariant=False`` only to measure a variant that is not (an older bundle's dynamic int8)."""
    from embedrt import Encoder

    encoder = Encoder.load(
        bundle, precision=precision, engine=engine, threads=settings.threads, batch_invariant=batch_invariant
    )
    encoder.encode(texts[0])
    first_embedding_at = time.time()

    lengths = [len(encoding.ids) for encoding in encoder.tokenize(list(texts))]
    flops = sum(flops_per_sentence(encoder.manifest.architecture, n) for n in lengths)
    warmup = list(texts[: max(4 * settings.batch_size, 64)])
    encoder.encode(warmup, batch_size=settings.batch_size, max_batch_tokens=settings.max_batch_tokens)
    best = float("inf")
    for _ in range(settings.rounds):
        start = time.perf_counter()
        encoder.encode(texts, batch_size=settings.batch_size, max_batch_tokens=settings.max_batch_tokens)
        best = min(best, time.perf_counter() - start)

    one_stream = _one_stream_seconds(encoder, texts, settings) if encoder.streams > 1 else None
    latencies = _batch1_latencies_ms(encoder, texts, settings)
    return {
        "precision": encoder.precision,
        "engine": encoder.engine,
        "threads": getattr(getattr(encoder.backend, "settings", None), "threads", settings.threads or 0),
        "first_embedding_at": first_embedding_at,
        "seconds": best,
        "sentences": len(texts),
        "tokens": sum(lengths),
        "flops": flops,
        "latency_p50_ms": percentile(latencies, 50),
        "latency_p95_ms": percentile(latencies, 95),
        "latency_p99_ms": percentile(latencies, 99),
        "peak_rss_mb": _peak_rss_mb(),
        "streams": encoder.streams,
        "one_stream_seconds": one_stream,
    }


def _one_stream_seconds(encoder: Encoder, texts: Sequence[str], settings: BenchSettings) -> float:
    """The same batches on the single-stream engine, one after another, best of the rounds (for comparison)."""
    best = float("inf")
    for _ in range(settings.rounds):
        start = time.perf_counter()
        for batch in encoder.batches(encoder.tokenize(list(texts)), settings.batch_size, settings.max_batch_tokens):
            encoder.run_batch(batch)
        best = min(best, time.perf_counter() - start)
    return best


def _batch1_latencies_ms(encoder: Encoder, texts: Sequence[str], settings: BenchSettings) -> list[float]:
    """Sorted milliseconds of one-text calls over evenly spaced texts, after a few warm-up calls."""
    step = max(1, len(texts) // settings.latency_samples)
    singles = list(texts[::step])[: settings.latency_samples]
    for text in singles[:LATENCY_WARMUP]:
        encoder.encode([text])
    latencies = []
    for text in singles:
        start = time.perf_counter()
        encoder.encode([text])
        latencies.append((time.perf_counter() - start) * 1e3)
    return sorted(latencies)


def run_worker(module: str, job: dict[str, Any], label: str, tokenizer_threads: bool) -> dict[str, Any]:
    """``python -m MODULE JOB`` in a new process (a true cold start), its last stdout line read as the report.

    ``tokenizer_threads``: the tokenizer's own thread pool on or off (``TOKENIZERS_PARALLELISM``, unless set).
    """
    default = "true" if tokenizer_threads else "false"
    try:
        done = subprocess.run(
            [sys.executable, "-m", module, json.dumps(job)],
            capture_output=True,
            text=True,
            timeout=WORKER_TIMEOUT_S,
            env={**os.environ, "TOKENIZERS_PARALLELISM": os.environ.get("TOKENIZERS_PARALLELISM", default)},
        )
    except subprocess.TimeoutExpired as err:
        raise BackendError(
            f"benchmarking {label} took over {WORKER_TIMEOUT_S} s; use a smaller --data file or fewer --rounds"
        ) from err
    try:
        report: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError) as err:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise BackendError(f"the {label} benchmark process failed (exit {done.returncode}): {tail}") from err
    if "error" in report:
        raise BackendError(f"benchmarking {label}: {report['error']}")
    return report


def bench_choice(
    bundle: str, choice: Choice, data: str | None, settings: BenchSettings, batch_invariant: bool = True
) -> BenchResult:
    """Measure one engine and precision of ``bundle`` in a new process (``data=None``: the built-in workload)."""
    label = choice.label
    job = {
        "bundle": bundle,
        "precision": choice.precision,
        "engine": choice.engine,
        "batch_invariant": batch_invariant,
        "data": data,
        "settings": asdict(settings),
    }
    started = time.time()
    report = run_worker("embedrt.tools.bench", job, label, tokenizer_threads=False)
    seconds = report["seconds"]
    return BenchResult(
        label=label,
        precision=report["precision"],
        engine=report["engine"],
        threads=report["threads"],
        sentences_per_s=report["sentences"] / seconds,
        tokens_per_s=report["tokens"] / seconds,
        gflops_per_s=report["flops"] / seconds / 1e9,
        latency_p50_ms=report["latency_p50_ms"],
        latency_p95_ms=report["latency_p95_ms"],
        latency_p99_ms=report["latency_p99_ms"],
        cold_start_s=report["first_embedding_at"] - started,
        peak_rss_mb=report["peak_rss_mb"],
        batch_invariant=batch_invariant,
        streams=report.get("streams", 1),
        one_stream_sentences_per_s=report["sentences"] / report["one_stream_seconds"]
        if report.get("one_stream_seconds")
        else None,
    )


#: CPU flags with native int8 dot products: VNNI (AVX-512 or AVX) and AMX.
NATIVE_INT8_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")
#: CPU flags with native bf16 dot products, which OpenVINO's bf16 needs.
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
#: Instruction sets that decide the engines' GEMM speed.
ISA_FLAGS = ("avx2", "avx512f", *NATIVE_INT8_FLAGS, *NATIVE_BF16_FLAGS)


def machine_facts() -> dict[str, Any]:
    """What the figures depend on: CPU, its int8- and bf16-relevant instruction sets, usable cores, engines."""
    from embedrt.runtime.threads import default_threads

    cpu = platform.processor() or platform.machine()
    isa = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                isa = " ".join(flag for flag in ISA_FLAGS if flag in flags) or "no avx2"
                break
    except OSError:
        pass  # not Linux: keep platform's answer
    from importlib.metadata import PackageNotFoundError, version

    from embedrt.variants import ENGINE_TABLE

    engines = {}
    for package in (engine.package for engine in ENGINE_TABLE.values()):
        try:
            engines[package] = version(package)
        except PackageNotFoundError:
            engines[package] = "not installed"
    return {
        "cpu": cpu,
        "isa": isa,
        "usable_cores": default_threads(),
        "python": platform.python_version(),
        **engines,
    }


def load_workload(data: str | None) -> list[str]:
    """The non-empty lines of ``data`` (the shared line reader), or the built-in workload when ``None``."""
    if data is None:
        return builtin_workload()
    from embedrt.files import read_lines

    texts = [text for text in read_lines(data) if text.strip()]
    if not texts:
        raise InputError(f"{data} has no non-empty lines to benchmark with")
    return texts


def describe_workload(bundle: str, texts: Sequence[str], data: str | None) -> dict[str, Any]:
    """Token lengths and FLOPs per text of ``texts`` under ``bundle``'s tokenizer and architecture."""
    from embedrt.bundle import Bundle
    from embedrt.runtime.tokenizer import TextTokenizer

    opened = Bundle.open(bundle)
    manifest = opened.manifest
    tokenizer = TextTokenizer(opened.tokenizer_path, manifest.max_seq_length, manifest.do_lower_case)
    lengths = sorted(tokenizer.count_tokens(texts))
    flops = sum(flops_per_sentence(manifest.architecture, n) for n in lengths)
    return {
        "source": data or "built-in Chinese workload",
        "texts": len(texts),
        "mean_tokens": round(sum(lengths) / len(lengths), 1),
        "p95_tokens": percentile(lengths, 95),
        "max_tokens": lengths[-1],
        "gflop_per_text": round(flops / len(lengths) / 1e9, 3),
    }


def table_header() -> str:
    """The header line of :func:`format_table`."""
    return (
        f"{'variant':14s} {'sent/s':>8s} {'tokens/s':>9s} {'GFLOP/s':>8s} {'p50 ms':>7s} {'p95 ms':>7s} "
        f"{'p99 ms':>7s} {'cold s':>7s} {'RSS MB':>7s}  batch-invariant  streams"
    )


def table_row(r: BenchResult) -> str:
    """One engine and precision's line of :func:`format_table`."""
    rss = f"{r.peak_rss_mb:7.0f}" if r.peak_rss_mb is not None else f"{'-':>7s}"
    return (
        f"{r.label:14s} {r.sentences_per_s:8.1f} {r.tokens_per_s:9.0f} {r.gflops_per_s:8.1f} "
        f"{r.latency_p50_ms:7.2f} {r.latency_p95_ms:7.2f} {r.latency_p99_ms:7.2f} {r.cold_start_s:7.2f} {rss}  "
        + ("yes" if r.batch_invariant else "no (vectors move with batch-mates)")
        + f"  {r.streams}"
        + (f" (1 stream: {r.one_stream_sentences_per_s:.1f} sent/s)" if r.one_stream_sentences_per_s else "")
    )


def format_table(results: Sequence[BenchResult]) -> str:
    """A fixed-width table, one row per engine and precision."""
    return "\n".join([table_header(), *(table_row(r) for r in results)])


def fastest(results: Sequence[BenchResult]) -> str:
    """One line naming the fastest row by throughput and by batch-1 latency."""
    if not results:
        return ""
    by_throughput = max(results, key=lambda r: r.sentences_per_s)
    by_latency = min(results, key=lambda r: r.latency_p50_ms)
    line = f"fastest   {by_throughput.label} ({by_throughput.sentences_per_s:.0f} sent/s)"
    if len(results) > 1:
        runner_up = sorted(results, key=lambda r: r.sentences_per_s)[-2]
        line += f", {by_throughput.sentences_per_s / runner_up.sentences_per_s:.2f}x the next ({runner_up.label})"
    return line + f"; lowest batch-1 p50: {by_latency.label} ({by_latency.latency_p50_ms:.2f} ms)"


def run_bench(
    bundle: str,
    precisions: Sequence[str] | None,
    data: str | None,
    settings: BenchSettings,
    engines: Sequence[str] | None = None,
    on_start: Callable[[dict[str, Any]], None] | None = None,
    on_result: Callable[[BenchResult], None] | None = None,
) -> dict[str, Any]:
    """Benchmark each engine and precision of ``bundle`` (default: every one this CPU runs); a JSON-ready report.

    ``on_start`` gets the report without results before the first measurement, ``on_result`` each row
    as it finishes (a row takes a minute or more), so a caller can print them as they come.
    """
    from embedrt.bundle import Bundle
    from embedrt.runtime.backends.select import cpu_choices

    opened = Bundle.open(bundle)
    chosen = cpu_choices(opened, precisions, engines)
    texts = load_workload(data)
    report: dict[str, Any] = {
        "bundle": str(opened.root),
        "machine": machine_facts(),
        "workload": describe_workload(str(opened.root), texts, data),
        "settings": asdict(settings),
        "variants": [choice.label for choice in chosen],
    }
    if on_start is not None:
        on_start(report)
    if data is not None:
        # The worker reads the same cleaned texts from a private copy (stdin files cannot be re-read).
        handle = tempfile.NamedTemporaryFile("w", encoding="utf-8", suffix=".txt", delete=False)
        with handle:
            handle.write("\n".join(texts) + "\n")
        worker_data: str | None = handle.name
    else:
        worker_data = None
    results = []
    try:
        for choice in chosen:
            results.append(
                bench_choice(
                    str(opened.root), choice, worker_data, settings, opened.variant(choice.variant).batch_invariant
                )
            )
            if on_result is not None:
                on_result(results[-1])
    finally:
        if worker_data is not None:
            Path(worker_data).unlink(missing_ok=True)
    del report["variants"]
    return {**report, "results": {r.label: asdict(r) for r in results}, "fastest": fastest(results)}


def int8_note(isa: str, precisions: Sequence[str]) -> str | None:
    """What to expect from int8 on a CPU without native int8 dot products (VNNI or AMX), else None."""
    if "int8" not in precisions or isa == "unknown" or set(NATIVE_INT8_FLAGS) & set(isa.split()):
        return None
    return (
        "note      this CPU has no VNNI/AMX int8 instructions: int8 gains much less over fp32 here than the "
        "README's figures (measured with AVX-512 VNNI) show; compare the rows above"
    )


def _worker_main(argv: Sequence[str]) -> int:
    """Entry of the per-precision process: measure, print one JSON line (errors too)."""
    job = json.loads(argv[0])
    try:
        texts = load_workload(job["data"])
        settings = BenchSettings(**job["settings"])
        invariant = job.get("batch_invariant", True)
        report = measure(job["bundle"], job["precision"], job["engine"], texts, settings, invariant)
    except EmbedrtError as err:
        report = {"error": str(err)}
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(_worker_main(sys.argv[1:]))
