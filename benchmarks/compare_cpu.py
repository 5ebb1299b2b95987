"""embedrt against its CPU peers, side by side, on the full-size DMetaSoul stand-in.

Every engine runs in its own process (PyTorch and ONNX Runtime in one process slow each other
down), engines are alternated in each repeat, and each keeps its best repeat. Writes
``results/cpu.json``, ``results/cpu.md`` and ``results/cpu.png``.

    python benchmarks/compare_cpu.py                  # ~10-15 minutes on 2 cores (first run: + ~3-5 min to prepare)
    python benchmarks/compare_cpu.py --engines embedrt-ov-int8,ov-direct-int8,st-onnx-qint8 --repeats 1
    python benchmarks/compare_cpu.py --quick          # smoke run: 64 texts, one pass

Peers that need other package versions run in the virtual environment made by
``benchmarks/setup_peers.sh``; an engine whose environment is missing is skipped with a note.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from harness import artifacts, report, workload
from harness.workload import say

HERE = Path(__file__).resolve().parent
DEFAULT_PEERS = Path.home() / ".venvs" / "embedrt-peers" / "bin" / "python"
MODEL = "DMetaSoul student stand-in: 4 layers x 768, 12 heads, vocab 21128, seeded weights"

#: engine -> (label, which Python runs it)
ENGINES = {
    "st-torch": ("sentence-transformers, PyTorch fp32", "main"),
    "st-onnx-o2": ("sentence-transformers ONNX backend, O2", "peers"),
    "st-onnx-qint8": ("sentence-transformers ONNX backend, qint8 avx512_vnni", "peers"),
    "fastembed": ("fastembed, embedrt's fused fp32 ONNX", "peers"),
    "ctranslate2-int8": ("CTranslate2 int8_float32", "peers"),
    "ov-direct-fp32": ("OpenVINO used directly, fp32 IR (hint f32)", "main"),
    "ov-direct-bf16": ("OpenVINO used directly, fp32 IR (hint bf16)", "main"),
    "ov-direct-int8": ("OpenVINO used directly, NNCF default int8", "main"),
    "embedrt-fp32": ("embedrt fp32 (ONNX Runtime, fused)", "main"),
    "embedrt-int8": ("embedrt int8 (ONNX Runtime, static)", "main"),
    "embedrt-ov-fp32": ("embedrt OpenVINO fp32", "main"),
    "embedrt-ov-bf16": ("embedrt OpenVINO bf16", "main"),
    "embedrt-ov-int8": ("embedrt OpenVINO int8 (static)", "main"),
}
#: Engines that need a CPU with native bf16 (AVX512_BF16 or AMX); skipped with a note elsewhere.
BF16_ENGINES = ("ov-direct-bf16", "embedrt-ov-bf16")
#: Engines that read the bundle's OpenVINO variants (the bundle is exported with both engines).
OPENVINO_ENGINES = tuple(e for e in ENGINES if e.startswith(("ov-direct-", "embedrt-ov-")))

#: The issue's targets: label -> (engine, peer, figure, ">=" or "<=", bound), as the ratio engine / peer.
_TPUT, _P50, _COLD = "sentences_per_s", "latency_p50_ms", "cold_start_s"
TARGETS = {
    "int8 / st qint8 throughput (>= 1.2)": ("embedrt-int8", "st-onnx-qint8", _TPUT, ">=", 1.2),
    "int8 / st qint8 batch-1 p50 (<= 0.8)": ("embedrt-int8", "st-onnx-qint8", _P50, "<=", 0.8),
    "fp32 / st O2 throughput (>= 1.05)": ("embedrt-fp32", "st-onnx-o2", _TPUT, ">=", 1.05),
    "int8 / st PyTorch throughput (>= 3.5)": ("embedrt-int8", "st-torch", _TPUT, ">=", 3.5),
    "int8 cold start / st PyTorch (<= 0.33)": ("embedrt-int8", "st-torch", _COLD, "<=", 0.33),
    "ov int8 / ov-direct int8 throughput (>= 0.95, aim 1.1)": ("embedrt-ov-int8", "ov-direct-int8", _TPUT, ">=", 0.95),
    "ov int8 / ov-direct int8 batch-1 p50 (<= 1.0)": ("embedrt-ov-int8", "ov-direct-int8", _P50, "<=", 1.0),
    "ov int8 / st qint8 throughput (>= 1.3)": ("embedrt-ov-int8", "st-onnx-qint8", _TPUT, ">=", 1.3),
    "ov bf16 / ov-direct bf16 throughput (>= 0.95)": ("embedrt-ov-bf16", "ov-direct-bf16", _TPUT, ">=", 0.95),
}


def prepare(work: Path, peers_python: Path | None, engines: list[str]) -> None:
    """Stand-in model, embedrt bundle, and the peers' artefacts under ``work`` (kept between runs)."""
    standin = artifacts.Standin(work)
    standin.ensure_bundle()
    if "fastembed" in engines:
        standin.ensure_fastembed()
    if peers_python and any(e.startswith("st-onnx") for e in engines):
        standin.ensure_st_onnx(peers_python)
    if "ov-direct-int8" in engines:
        standin.ensure_ov_direct_int8()
    if peers_python and "ctranslate2-int8" in engines:
        standin.ensure_ct2(peers_python)


def engines_script(*args: str) -> list[str]:
    return [sys.executable, str(HERE / "engines.py"), *args]


def cpu_facts() -> dict:
    """OpenVINO's version and native bf16, asked in a child so that no OpenVINO threads live in this process."""
    done = subprocess.run(engines_script("cpu-facts"), capture_output=True, text=True, check=False)
    if done.returncode != 0:
        return {"openvino": None, "native_bf16": False}
    return json.loads(done.stdout.strip().splitlines()[-1])


def run_engine(engine: str, python: Path, work: Path, texts_file: Path, args: argparse.Namespace) -> dict:
    """One process, one engine; cold start measured from just before the process is spawned."""
    command = [str(python), str(HERE / "engines.py"), "measure", engine, "--work", str(work)]
    command += ["--texts", str(texts_file), "--threads", str(args.threads)]
    command += ["--batch-size", str(args.batch_size), "--rounds", str(args.rounds)]
    env = {**os.environ, **artifacts.QUIET_ENV}
    started = time.time()
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=1200)
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return {"engine": engine, "error": tail}
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["cold_start_s"] = result["first_embedding_at"] - started
    return result


def gemm_ceiling(work: Path, texts: list[str], threads: int) -> dict:
    """How fast fp32 and int8 could go here: ONNX Runtime's GEMM speed over the workload's FLOPs.

    Run in its own process like the engines. The FLOPs are those of the real tokens (no padding), so
    the ceilings are upper bounds that no engine can pass with these kernels.
    """
    from embedrt.tools.bench import describe_workload

    done = subprocess.run(engines_script("gemm-peak", "--threads", str(threads)), capture_output=True, text=True)
    done.check_returncode()
    peaks = json.loads(done.stdout.strip().splitlines()[-1])
    flops = describe_workload(str(work / "bundle"), texts, None)["gflop_per_text"] * 1e9
    return {
        **{key: round(value, 1) for key, value in peaks.items()},
        "gflop_per_sentence": round(flops / 1e9, 3),
        "fp32_ceiling_sentences_per_s": round(peaks["fp32_gop_s"] * 1e9 / flops, 1),
        "int8_ceiling_sentences_per_s": round(peaks["int8_gop_s"] * 1e9 / flops, 1),
    }


def best_of(runs: list[dict]) -> dict:
    """Each figure at its best over the repeats (noise on a shared machine only ever slows things down)."""
    ok = [r for r in runs if "error" not in r]
    if not ok:
        return runs[-1]
    best = dict(max(ok, key=lambda r: r["sentences_per_s"]))
    for key in ("latency_p50_ms", "latency_p95_ms", "latency_p99_ms", "cold_start_s", "peak_rss_mb"):
        best[key] = min(r[key] for r in ok)
    best["repeats"] = len(ok)
    return best


def ratios(results: dict[str, dict]) -> dict[str, float]:
    """The issue's targets as measured ratios (only those whose engines ran)."""

    def get(engine: str, key: str) -> float | None:
        row = results.get(engine, {})
        return row.get(key) if "error" not in row else None

    out = {}
    for label, (a, b, key, _, _) in TARGETS.items():
        x, y = get(a, key), get(b, key)
        if x is not None and y:
            out[label] = round(x / y, 2)
    return out


def target_met(label: str, value: float) -> bool:
    _, _, _, sense, bound = TARGETS[label]
    return value >= bound if sense == ">=" else value <= bound


def fastest_embedrt(results: dict[str, dict]) -> dict | None:
    """The embedrt row with the highest throughput and the one with the lowest batch-1 p50."""
    rows = {e: r for e, r in results.items() if e.startswith("embedrt-") and "error" not in r}
    if not rows:
        return None
    throughput = max(rows, key=lambda e: rows[e]["sentences_per_s"])
    latency = min(rows, key=lambda e: rows[e]["latency_p50_ms"])
    return {
        "throughput": throughput,
        "sentences_per_s": round(rows[throughput]["sentences_per_s"], 1),
        "latency": latency,
        "latency_p50_ms": round(rows[latency]["latency_p50_ms"], 2),
    }


def table(results: dict[str, dict]) -> list[str]:
    lines = [
        "| engine | what runs | sentences/s | batch-1 p50 ms | p95 ms | p99 ms | new process to first embedding s "
        "| peak RSS MB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for engine, row in results.items():
        label = f"`{engine}` | {ENGINES[engine][0]}"
        if "error" in row:
            lines.append(f"| {label} | skipped: {row['error']} | | | | | |")
            continue
        lines.append(
            f"| {label} | {row['sentences_per_s']:.0f} | {row['latency_p50_ms']:.2f} | {row['latency_p95_ms']:.2f} "
            f"| {row['latency_p99_ms']:.2f} | {row['cold_start_s']:.2f} | {row['peak_rss_mb']:.0f} |"
        )
    return lines


def ceiling_lines(ceiling: dict, machine: dict, torch_row: dict) -> list[str]:
    versus = (
        f" ({ceiling['int8_ceiling_sentences_per_s'] / torch_row['sentences_per_s']:.1f}x the PyTorch row)"
        if "sentences_per_s" in torch_row
        else ""
    )
    return [
        "",
        f"Ceiling on this CPU ({machine['isa']}): ONNX Runtime runs FFN-sized GEMMs at up to "
        f"{ceiling['fp32_gop_s']:.0f} GFLOP/s in fp32 and {ceiling['int8_gop_s']:.0f} GOP/s in int8 "
        f"({ceiling['int8_gop_s'] / ceiling['fp32_gop_s']:.2f}x); at {ceiling['gflop_per_sentence']:.2f} GFLOP "
        f"per sentence no engine using these kernels passes {ceiling['fp32_ceiling_sentences_per_s']:.0f} "
        f"sentences/s in fp32 or {ceiling['int8_ceiling_sentences_per_s']:.0f} in int8{versus}.",
    ]


def markdown(result: dict) -> str:
    machine, work = result["machine"], result["workload"]
    lines = [
        f"Machine: {machine['cpu']} ({machine.get('isa', '?')}), {machine['threads']} threads, {machine['date']}. "
        f"OpenVINO {machine.get('openvino') or 'not installed'}, native bf16: "
        f"{'yes' if machine.get('native_bf16') else 'no'}. "
        f"Workload: {work['source']}, {work['texts']} texts, batch {work['batch_size']}; "
        f"best of {result['repeats']} alternated processes x {result['rounds']} passes.",
        "",
        *table(result["results"]),
    ]
    fastest = result.get("fastest_embedrt")
    if fastest:
        lines += ["", fastest_line(fastest) + "."]
    if result["ratios"]:
        lines += ["", "| target | measured | met |", "|---|---|---|"]
        lines += [f"| {k} | {v} | {'yes' if target_met(k, v) else 'no'} |" for k, v in result["ratios"].items()]
    if result.get("ceiling"):
        lines += ceiling_lines(result["ceiling"], machine, result["results"].get("st-torch", {}))
    return "\n".join(lines) + "\n"


def fastest_line(fastest: dict) -> str:
    return (
        f"Fastest embedrt row: `{fastest['throughput']}` ({fastest['sentences_per_s']:.0f} sentences/s); "
        f"lowest batch-1 p50: `{fastest['latency']}` ({fastest['latency_p50_ms']:.2f} ms)"
    )


def chart(result: dict, path: Path) -> None:
    """Throughput and batch-1 p50 per engine, embedrt's rows in red (needs matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        say("matplotlib is not installed: no chart written")
        return
    rows = [(e, ENGINES[e][0], r) for e, r in result["results"].items() if "error" not in r]
    labels = [label for _, label, _ in rows]
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 0.45 * len(rows) + 1.6), sharey=True)
    colors = ["#d62728" if engine.startswith("embedrt-") else "#7f7f7f" for engine, _, _ in rows]
    left.barh(labels, [r["sentences_per_s"] for _, _, r in rows], color=colors)
    left.set_xlabel("sentences/s (higher is better)")
    right.barh(labels, [r["latency_p50_ms"] for _, _, r in rows], color=colors)
    right.set_xlabel("batch-1 latency p50, ms (lower is better)")
    left.invert_yaxis()
    machine = result["machine"]
    fig.suptitle(f"{machine['cpu']}, {machine['threads']} threads: {result['workload']['source']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="embedrt against CPU peers, side by side.")
    parser.add_argument("--work", type=Path, default=None, help="artefact cache (default: benchmarks/.cache)")
    parser.add_argument("--data", type=Path, default=workload.sts_file(), help="s1<TAB>s2<TAB>score file (STS-B zh)")
    parser.add_argument("--limit", type=int, default=1000, help="sentences in the workload (default 1000)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2, help="timed passes per process (default 2)")
    parser.add_argument("--repeats", type=int, default=2, help="alternated processes per engine (default 2)")
    parser.add_argument("--engines", default=",".join(ENGINES), help="comma-separated subset of: " + ", ".join(ENGINES))
    parser.add_argument("--peers-python", type=Path, default=DEFAULT_PEERS, help="Python of setup_peers.sh's venv")
    parser.add_argument("--out", type=Path, default=report.RESULTS)
    parser.add_argument("--rebuild", action="store_true", help="rebuild the cached model and bundles")
    parser.add_argument("--prepare-only", action="store_true", help=argparse.SUPPRESS)
    report.add_quick(parser)
    args = parser.parse_args()
    report.quick(args, limit=64, rounds=1, repeats=1)
    args.engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    unknown = [e for e in args.engines if e not in ENGINES]
    if unknown:
        parser.error(f"unknown engines {unknown}; choose from {', '.join(ENGINES)}")
    return args


def runnable(engines: list[str], peers_python: Path | None, openvino: dict, where: Path) -> dict[str, str]:
    """Why each engine that cannot run here is skipped (missing venv, OpenVINO, or native bf16)."""
    skipped = {}
    for engine in engines:
        if ENGINES[engine][1] == "peers" and peers_python is None:
            skipped[engine] = f"no peers venv at {where} (setup_peers.sh)"
        elif engine in OPENVINO_ENGINES and not openvino.get("openvino"):
            skipped[engine] = "OpenVINO is not installed (pip install -e '.[openvino]')"
        elif engine in BF16_ENGINES and not openvino.get("native_bf16"):
            skipped[engine] = "this CPU has no native bf16 (AVX512_BF16 or AMX); emulated bf16 is many times slower"
    return skipped


def run_rounds(
    engines: list[str], peers_python: Path | None, work: Path, texts_file: Path, args: argparse.Namespace
) -> dict:
    """Every engine ``--repeats`` times, in an order rotated each repeat."""
    from harness.timing import rotate

    runs: dict[str, list[dict]] = {e: [] for e in engines}
    for repeat in range(args.repeats):
        for engine in rotate(engines, repeat):
            python = Path(sys.executable) if ENGINES[engine][1] == "main" else peers_python
            result = run_engine(engine, python, work, texts_file, args)
            runs[engine].append(result)
            step = f"[{repeat + 1}/{args.repeats}] {engine}"
            if "error" in result:
                say(f"{step}: skipped ({result['error']})")
            else:
                say(
                    f"{step}: {result['sentences_per_s']:.1f} sent/s, "
                    f"p50 {result['latency_p50_ms']:.2f} ms, cold {result['cold_start_s']:.2f} s"
                )
    return runs


def assemble(
    args: argparse.Namespace, openvino: dict, source: str, texts: list[str], runs: dict, skipped: dict, ceiling: dict
) -> dict:
    from embedrt.tools.bench import machine_facts

    results = {engine: best_of(found) for engine, found in runs.items()}
    results.update({engine: {"engine": engine, "error": why} for engine, why in skipped.items()})
    results = {e: results[e] for e in ENGINES if e in results}
    facts = machine_facts()
    machine = {key: facts[key] for key in ("cpu", "isa", "usable_cores", "onnxruntime", "python")}
    machine.update(threads=args.threads, date=time.strftime("%Y-%m-%d"))
    machine.update(openvino=openvino.get("openvino") or "not installed", native_bf16=openvino.get("native_bf16"))
    found = ratios(results)
    return {
        "machine": machine,
        "workload": {"source": source, "texts": len(texts), "batch_size": args.batch_size},
        "model": MODEL,
        "rounds": args.rounds,
        "repeats": args.repeats,
        "results": results,
        "ratios": found,
        "targets_met": {label: target_met(label, value) for label, value in found.items()},
        "fastest_embedrt": fastest_embedrt(results),
        "ceiling": ceiling,
        "runs": runs,
    }


def main() -> int:
    args = parse_args()
    work = artifacts.work_dir("dmetasoul", args.work)
    if args.rebuild and not args.prepare_only:
        shutil.rmtree(work)
        work.mkdir(parents=True)
    peers_python = args.peers_python if args.peers_python.is_file() else None
    openvino = cpu_facts()
    skipped = runnable(args.engines, peers_python, openvino, args.peers_python)
    engines = [e for e in args.engines if e not in skipped]
    if args.prepare_only:
        prepare(work, peers_python, engines)
        return 0
    # Prepare in a child: torch and export sessions stay out of this process, whose size would
    # otherwise leak into the engines' peak RSS and whose idle thread pools would share the cores.
    subprocess.run([sys.executable, __file__, *sys.argv[1:], "--work", str(work), "--prepare-only"], check=True)
    found = workload.sentences(args.data, args.limit)
    texts, source = found.texts, found.source
    texts_file = work / "texts.txt"
    texts_file.write_text("\n".join(t.replace("\n", " ") for t in texts) + "\n", encoding="utf-8")
    runs = run_rounds(engines, peers_python, work, texts_file, args)
    say("measuring ONNX Runtime's fp32 and int8 GEMM speed")
    ceiling = gemm_ceiling(work, texts, args.threads)
    result = assemble(args, openvino, source, texts, runs, skipped, ceiling)
    text = markdown(result)
    report.write(args.out, "cpu", result, text)
    chart(result, args.out / "cpu.png")
    print(text)
    if result["fastest_embedrt"]:
        say(fastest_line(result["fastest_embedrt"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
