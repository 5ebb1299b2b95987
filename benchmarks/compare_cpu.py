"""embedrt against its CPU peers, side by side, on the full-size DMetaSoul stand-in.

Every engine runs in its own process (PyTorch and ONNX Runtime in one process slow each other
down), engines are alternated in each repeat, and each keeps its best repeat. Writes
``results/cpu.json``, ``results/cpu.md`` and ``results/cpu.png``.

    python benchmarks/compare_cpu.py                  # ~10-15 minutes on 2 cores (first run: + ~3-5 min to prepare)
    python benchmarks/compare_cpu.py --engines embedrt-ov-int8,ov-direct-int8,st-onnx-qint8 --repeats 1

Peers that need other package versions run in the virtual environment made by
``benchmarks/setup_peers.sh``; an engine whose environment is missing is skipped with a note.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DEFAULT_DATA = REPO.parent / "shared" / "data" / "sts_zh_dev.tsv"
DEFAULT_VOCAB = REPO.parent / "shared" / "data" / "bert-base-chinese-vocab.txt"
DEFAULT_PEERS = Path.home() / ".venvs" / "embedrt-peers" / "bin" / "python"

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
#: Variants the cached bundle must have; an older cache without the OpenVINO ones is exported again.
BUNDLE_VARIANTS = ("fp32", "int8", "openvino-fp32", "openvino-int8")


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def load_texts(data: Path | None, limit: int) -> tuple[list[str], str]:
    """Sentences of a ``s1<TAB>s2<TAB>score`` file (both columns), or embedrt's built-in workload."""
    if data is not None and data.is_file():
        texts = []
        for line in data.read_text(encoding="utf-8").splitlines():
            parts = line.split("\t")
            texts.extend(part for part in parts[:2] if part.strip())
        return texts[:limit], f"{data.name} (both columns, first {min(limit, len(texts))} sentences)"
    from embedrt.tools.bench import builtin_workload

    return builtin_workload(limit), "embedrt's built-in Chinese workload"


def prepare(work: Path, peers_python: Path | None, engines: list[str], rebuild: bool) -> None:
    """Stand-in model, embedrt bundle, and the peers' artefacts under ``work`` (kept between runs)."""
    if rebuild and work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    model = work / "model"
    if not (model / "modules.json").is_file():
        from embedrt.export.standin import DMETASOUL_STUDENT, build_standin

        say("building the DMetaSoul stand-in (4 x 768, vocab 21128, seeded weights)")
        vocab = DEFAULT_VOCAB if DEFAULT_VOCAB.is_file() else None
        built = build_standin(work / "standin", DMETASOUL_STUDENT, vocab_file=vocab)
        shutil.rmtree(model, ignore_errors=True)
        shutil.move(str(built), model)
    bundle = work / "bundle"
    if not _bundle_complete(bundle):
        from embedrt.export import export_bundle
        from embedrt.export.pipeline import ExportSettings

        say("exporting the embedrt bundle (ONNX Runtime fp32 + int8, OpenVINO fp32 IR + static int8)")
        for derived in ("fastembed", "ov_direct"):  # made from the bundle: redo them from the new one
            shutil.rmtree(work / derived, ignore_errors=True)
        settings = ExportSettings(engines=("onnxruntime", "openvino"), force=True)
        export_bundle(str(model), bundle, settings, progress=say)
    if "fastembed" in engines and not (work / "fastembed" / "model.onnx").is_file():
        target = work / "fastembed"
        target.mkdir(exist_ok=True)
        shutil.copy(bundle / "model.onnx", target / "model.onnx")
        for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"):
            if (model / name).is_file():
                shutil.copy(model / name, target / name)
    peer_model = work / "peer_model"
    wants_st_onnx = any(e.startswith("st-onnx") for e in engines)
    if wants_st_onnx and peers_python and not (peer_model / "onnx" / "model_qint8_avx512_vnni.onnx").is_file():
        say("exporting sentence-transformers' own O2 and qint8 ONNX models (peers venv)")
        shutil.rmtree(peer_model, ignore_errors=True)
        shutil.copytree(model, peer_model)
        subprocess.run(
            [str(peers_python), str(HERE / "engines.py"), "prepare-st-onnx", str(peer_model)],
            check=True,
            stdout=subprocess.DEVNULL,
        )
    if "ov-direct-int8" in engines and not (work / "ov_direct" / "model_int8.xml").is_file():
        say("quantizing the bundle's fp32 IR with NNCF's default TRANSFORMER recipe (ov-direct-int8)")
        _run_quietly([sys.executable, str(HERE / "engines.py"), "prepare-ov-int8", "--work", str(work)])
    ct2 = work / "ct2"
    if "ctranslate2-int8" in engines and peers_python and not (ct2 / "model.bin").is_file():
        say("converting the stand-in with CTranslate2's TransformersConverter, int8_float32 (peers venv)")
        shutil.rmtree(ct2, ignore_errors=True)
        try:
            _run_quietly([str(peers_python), str(HERE / "engines.py"), "prepare-ct2", str(model), str(ct2)])
        except subprocess.CalledProcessError:
            say("CTranslate2 conversion failed: ctranslate2-int8 will be skipped (is it in the peers venv?)")
            shutil.rmtree(ct2, ignore_errors=True)


def _bundle_complete(bundle: Path) -> bool:
    """Whether the cached bundle has every variant the engines read (older caches lack OpenVINO's, or have
    the dynamic ONNX Runtime int8 that the runtime no longer opens by default: no ``batch_invariant``)."""
    manifest = bundle / "embedrt.json"
    if not manifest.is_file():
        return False
    variants = json.loads(manifest.read_text(encoding="utf-8")).get("variants", {})
    return all(variants.get(name, {}).get("batch_invariant") is True for name in BUNDLE_VARIANTS)


def _run_quietly(command: list[str]) -> None:
    """Run a preparation step; its output (progress bars, warnings) is shown only when it fails."""
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        say("\n".join((done.stdout + done.stderr).strip().splitlines()[-30:]))
        raise subprocess.CalledProcessError(done.returncode, command)


def cpu_facts() -> dict:
    """OpenVINO's version and native bf16, asked in a child so that no OpenVINO threads live in this process."""
    done = subprocess.run(
        [sys.executable, str(HERE / "engines.py"), "cpu-facts"], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        return {"openvino": None, "native_bf16": False}
    return json.loads(done.stdout.strip().splitlines()[-1])


def run_engine(engine: str, python: Path, work: Path, texts_file: Path, args: argparse.Namespace) -> dict:
    """One process, one engine; cold start measured from just before the process is spawned."""
    command = [
        str(python),
        str(HERE / "engines.py"),
        "measure",
        engine,
        "--work",
        str(work),
        "--texts",
        str(texts_file),
        "--threads",
        str(args.threads),
        "--batch-size",
        str(args.batch_size),
        "--rounds",
        str(args.rounds),
    ]
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    started = time.time()
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=1200)
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return {"engine": engine, "error": tail}
    report = json.loads(done.stdout.strip().splitlines()[-1])
    report["cold_start_s"] = report["first_embedding_at"] - started
    return report


def gemm_ceiling(work: Path, texts: list[str], threads: int) -> dict:
    """How fast fp32 and int8 could go here: ONNX Runtime's GEMM speed over the workload's FLOPs.

    Run in its own process like the engines. The FLOPs are those of the real tokens (no padding), so
    the ceilings are upper bounds that no engine can pass with these kernels.
    """
    from embedrt.tools.bench import describe_workload

    done = subprocess.run(
        [sys.executable, str(HERE / "engines.py"), "gemm-peak", "--threads", str(threads)],
        capture_output=True,
        text=True,
        check=True,
    )
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


def write_outputs(report: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "cpu.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    machine, workload = report["machine"], report["workload"]
    lines = [
        f"Machine: {machine['cpu']} ({machine.get('isa', '?')}), {machine['threads']} threads, {machine['date']}. "
        f"OpenVINO {machine.get('openvino') or 'not installed'}, native bf16: "
        f"{'yes' if machine.get('native_bf16') else 'no'}. "
        f"Workload: {workload['source']}, {workload['texts']} texts, batch {workload['batch_size']}; "
        f"best of {report['repeats']} alternated processes x {report['rounds']} passes.",
        "",
        "| engine | what runs | sentences/s | batch-1 p50 ms | p95 ms | p99 ms | new process to first embedding s "
        "| peak RSS MB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for engine, row in report["results"].items():
        label = f"`{engine}` | {ENGINES[engine][0]}"
        if "error" in row:
            lines.append(f"| {label} | skipped: {row['error']} | | | | | |")
            continue
        lines.append(
            f"| {label} | {row['sentences_per_s']:.0f} | {row['latency_p50_ms']:.2f} | {row['latency_p95_ms']:.2f} "
            f"| {row['latency_p99_ms']:.2f} | {row['cold_start_s']:.2f} | {row['peak_rss_mb']:.0f} |"
        )
    fastest = report.get("fastest_embedrt")
    if fastest:
        lines += [
            "",
            f"Fastest embedrt row: `{fastest['throughput']}` ({fastest['sentences_per_s']:.0f} sentences/s); "
            f"lowest batch-1 p50: `{fastest['latency']}` ({fastest['latency_p50_ms']:.2f} ms).",
        ]
    if report["ratios"]:
        lines += ["", "| target | measured | met |", "|---|---|---|"]
        lines += [
            f"| {label} | {value} | {'yes' if target_met(label, value) else 'no'} |"
            for label, value in report["ratios"].items()
        ]
    ceiling = report.get("ceiling")
    if ceiling:
        torch_row = report["results"].get("st-torch", {})
        versus = (
            f" ({ceiling['int8_ceiling_sentences_per_s'] / torch_row['sentences_per_s']:.1f}x the PyTorch row)"
            if "sentences_per_s" in torch_row
            else ""
        )
        lines += [
            "",
            f"Ceiling on this CPU ({machine['isa']}): ONNX Runtime runs FFN-sized GEMMs at up to "
            f"{ceiling['fp32_gop_s']:.0f} GFLOP/s in fp32 and {ceiling['int8_gop_s']:.0f} GOP/s in int8 "
            f"({ceiling['int8_gop_s'] / ceiling['fp32_gop_s']:.2f}x); at {ceiling['gflop_per_sentence']:.2f} GFLOP "
            f"per sentence no engine using these kernels passes {ceiling['fp32_ceiling_sentences_per_s']:.0f} "
            f"sentences/s in fp32 or {ceiling['int8_ceiling_sentences_per_s']:.0f} in int8{versus}.",
        ]
    (out / "cpu.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        say("matplotlib is not installed: no chart written")
        return
    rows = [(e, ENGINES[e][0], r) for e, r in report["results"].items() if "error" not in r]
    labels = [label for _, label, _ in rows]
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 0.45 * len(rows) + 1.6), sharey=True)
    colors = ["#d62728" if engine.startswith("embedrt-") else "#7f7f7f" for engine, _, _ in rows]
    left.barh(labels, [r["sentences_per_s"] for _, _, r in rows], color=colors)
    left.set_xlabel("sentences/s (higher is better)")
    right.barh(labels, [r["latency_p50_ms"] for _, _, r in rows], color=colors)
    right.set_xlabel("batch-1 latency p50, ms (lower is better)")
    left.invert_yaxis()
    fig.suptitle(f"{machine['cpu']}, {machine['threads']} threads: {workload['source']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(out / "cpu.png", dpi=110)
    plt.close(fig)


def main() -> int:
    parser = argparse.ArgumentParser(description="embedrt against CPU peers, side by side.")
    parser.add_argument("--work", type=Path, default=Path.home() / ".cache" / "embedrt-bench", help="artefact cache")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="s1<TAB>s2<TAB>score file (default: STS-B zh)")
    parser.add_argument("--limit", type=int, default=1000, help="sentences in the workload (default 1000)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2, help="timed passes per process (default 2)")
    parser.add_argument("--repeats", type=int, default=2, help="alternated processes per engine (default 2)")
    parser.add_argument("--engines", default=",".join(ENGINES), help="comma-separated subset of: " + ", ".join(ENGINES))
    parser.add_argument("--peers-python", type=Path, default=DEFAULT_PEERS, help="Python of setup_peers.sh's venv")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("--rebuild", action="store_true", help="rebuild the cached model and bundles")
    parser.add_argument("--prepare-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()

    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    unknown = [e for e in engines if e not in ENGINES]
    if unknown:
        parser.error(f"unknown engines {unknown}; choose from {', '.join(ENGINES)}")
    peers_python = args.peers_python if args.peers_python.is_file() else None
    skipped = {}
    if peers_python is None:
        for engine in [e for e in engines if ENGINES[e][1] == "peers"]:
            skipped[engine] = {"engine": engine, "error": f"no peers venv at {args.peers_python} (setup_peers.sh)"}
        engines = [e for e in engines if ENGINES[e][1] != "peers"]

    openvino = cpu_facts()
    if not openvino.get("openvino"):
        for engine in [e for e in engines if e in OPENVINO_ENGINES]:
            skipped[engine] = {"engine": engine, "error": "OpenVINO is not installed (pip install -e '.[openvino]')"}
        engines = [e for e in engines if e not in OPENVINO_ENGINES]
    elif not openvino.get("native_bf16"):
        for engine in [e for e in engines if e in BF16_ENGINES]:
            skipped[engine] = {
                "engine": engine,
                "error": "this CPU has no native bf16 (AVX512_BF16 or AMX); emulated bf16 is many times slower",
            }
        engines = [e for e in engines if e not in BF16_ENGINES]

    work = args.work.expanduser().resolve()
    if args.prepare_only:
        prepare(work, peers_python, engines, args.rebuild)
        return 0
    # Prepare in a child: torch and export sessions stay out of this process, whose size would
    # otherwise leak into the engines' peak RSS and whose idle thread pools would share the cores.
    subprocess.run([sys.executable, __file__, *sys.argv[1:], "--prepare-only"], check=True)
    texts, source = load_texts(args.data, args.limit)
    texts_file = work / "texts.txt"
    texts_file.write_text("\n".join(t.replace("\n", " ") for t in texts) + "\n", encoding="utf-8")

    runs: dict[str, list[dict]] = {e: [] for e in engines}
    for repeat in range(args.repeats):
        shift = repeat % max(1, len(engines))
        order = engines[shift:] + engines[:shift]
        for engine in order:
            python = Path(sys.executable) if ENGINES[engine][1] == "main" else peers_python
            report = run_engine(engine, python, work, texts_file, args)
            runs[engine].append(report)
            if "error" in report:
                say(f"[{repeat + 1}/{args.repeats}] {engine}: skipped ({report['error']})")
            else:
                say(
                    f"[{repeat + 1}/{args.repeats}] {engine}: {report['sentences_per_s']:.1f} sent/s, "
                    f"p50 {report['latency_p50_ms']:.2f} ms, cold {report['cold_start_s']:.2f} s"
                )
    say("measuring ONNX Runtime's fp32 and int8 GEMM speed")
    ceiling = gemm_ceiling(work, texts, args.threads)
    results = {engine: best_of(runs[engine]) for engine in engines}
    results.update(skipped)
    results = {e: results[e] for e in ENGINES if e in results}

    from embedrt.tools.bench import machine_facts

    facts = machine_facts()
    report = {
        "machine": {
            "cpu": facts["cpu"],
            "isa": facts["isa"],
            "threads": args.threads,
            "usable_cores": facts["usable_cores"],
            "onnxruntime": facts["onnxruntime"],
            "openvino": openvino.get("openvino") or "not installed",
            "native_bf16": openvino.get("native_bf16"),
            "python": platform.python_version(),
            "date": time.strftime("%Y-%m-%d"),
        },
        "workload": {"source": source, "texts": len(texts), "batch_size": args.batch_size},
        "model": "DMetaSoul student stand-in: 4 layers x 768, 12 heads, vocab 21128, seeded weights",
        "rounds": args.rounds,
        "repeats": args.repeats,
        "results": results,
        "ratios": ratios(results),
        "targets_met": {label: target_met(label, value) for label, value in ratios(results).items()},
        "fastest_embedrt": fastest_embedrt(results),
        "ceiling": ceiling,
        "runs": runs,
    }
    write_outputs(report, args.out)
    print((args.out / "cpu.md").read_text(encoding="utf-8"))
    if report["fastest_embedrt"]:
        fastest = report["fastest_embedrt"]
        say(
            f"fastest embedrt row: {fastest['throughput']} ({fastest['sentences_per_s']:.0f} sentences/s); "
            f"lowest batch-1 p50: {fastest['latency']} ({fastest['latency_p50_ms']:.2f} ms)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
