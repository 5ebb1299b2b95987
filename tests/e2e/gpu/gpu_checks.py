"""The steps of ``tests/e2e/gpu/check_on_gpu.sh``, runnable without pytest: one subcommand a step.

    python tests/e2e/gpu/gpu_checks.py versions
    python tests/e2e/gpu/gpu_checks.py export --out BUNDLE [--data DIR] [--tiny]
    python tests/e2e/gpu/gpu_checks.py cuda --bundle BUNDLE [--data DIR]
    python tests/e2e/gpu/gpu_checks.py no-torch --bundle BUNDLE [--skip-preload]
    python tests/e2e/gpu/gpu_checks.py pip-layout --into DIR
    python tests/e2e/gpu/gpu_checks.py pooling --bundle BUNDLE [--data DIR]
    python tests/e2e/gpu/gpu_checks.py graphs --bundle BUNDLE [--data DIR]
    python tests/e2e/gpu/gpu_checks.py serve --bundle BUNDLE [--data DIR]
    python tests/e2e/gpu/gpu_checks.py bench --bundle BUNDLE --json-out FILE [--data DIR]

Each prints what it measured and exits 0 when its check holds, 1 when not. ``--data`` is a folder
holding ``bert-base-chinese-vocab.txt`` and ``sts_zh_dev.tsv`` (the project's ../shared/data); without
it the tiny stand-in and the tests' own sentences are used.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any


def _version(module: str) -> str:
    try:
        return str(getattr(importlib.import_module(module), "__version__", "?"))
    except Exception as err:  # a broken install is a finding to print, not a reason to stop
        return f"absent ({type(err).__name__})"


def versions(_: argparse.Namespace) -> bool:
    print("python", sys.version.split()[0], sys.executable)
    for module in ("numpy", "tokenizers", "onnx", "torch", "transformers", "sentence_transformers", "pytest"):
        print(f"{module} {_version(module)}")
    for module in ("tensorrt", "cuda.bindings"):
        print(f"{module} {_version(module)}")
    import onnxruntime

    from embedrt.runtime.backends import cuda_arch

    print("onnxruntime", onnxruntime.__version__, onnxruntime.__file__)
    print("providers", onnxruntime.get_available_providers())
    print("has preload_dlls", hasattr(onnxruntime, "preload_dlls"))
    library = Path(onnxruntime.__file__).parent / "capi" / cuda_arch.CUDA_PROVIDER_LIBRARY
    started = time.perf_counter()
    archs = cuda_arch.library_archs(library) if library.is_file() else None
    print(f"CUDA kernels in {library.name}: {archs} (read in {time.perf_counter() - started:.3f} s)")
    gpu = cuda_arch.compute_capability(0)
    print("GPU 0 from libcuda:", gpu)
    if archs is None or gpu is None:
        print("RESULT: SKIP kernel check (no CUDA provider library or no GPU)")
        return True
    fits = archs.runs_on(gpu[1], gpu[2])
    print(f"RESULT: {'PASS' if fits else 'FAIL'} onnxruntime-gpu has kernels for compute capability {gpu[1]}.{gpu[2]}")
    return fits


def _texts(data: Path | None, count: int) -> list[str]:
    table = data / "sts_zh_dev.tsv" if data else None
    if table is not None and table.is_file():
        lines = table.read_text(encoding="utf-8").splitlines()
        texts = list(dict.fromkeys(part for line in lines for part in line.split("\t")[:2] if part.strip()))
        return texts[:count]
    from embedrt.export.sentences import PARITY_SENTENCES

    return [t for t in PARITY_SENTENCES if t.strip()][:count]


def export(args: argparse.Namespace) -> bool:
    import tempfile

    from embedrt.bundle import Bundle
    from embedrt.export import ExportSettings, export_bundle
    from embedrt.export.standin import DMETASOUL_STUDENT, TINY, build_standin

    vocab = args.data / "bert-base-chinese-vocab.txt" if args.data else None
    full = not args.tiny and vocab is not None and vocab.is_file()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as work:
        if full:
            print("model: full-size DMetaSoul stand-in (4 x 768) with the real bert-base-chinese vocabulary")
            model = build_standin(Path(work) / "model", DMETASOUL_STUDENT, vocab_file=vocab)
        else:
            from tests.helpers import TEST_TEXTS

            from embedrt.export.sentences import PARITY_SENTENCES

            print("model: tiny stand-in (2 x 32), synthetic vocabulary")
            chars = "".join(sorted({ch for text in (*PARITY_SENTENCES, *TEST_TEXTS) for ch in text}))
            model = build_standin(Path(work) / "model", TINY, extra_chars=chars)
        settings = ExportSettings(precisions=("fp32", "fp16"), force=True)
        export_bundle(str(model), args.out, settings, progress=lambda message: print("  export:", message))
    manifest = Bundle.open(args.out).manifest
    print(f"exported in {time.perf_counter() - started:.0f} s to {args.out}")
    for name, variant in manifest.variants.items():
        parity = asdict(variant.parity) if variant.parity is not None else None
        print(f"  {name}: {variant.file} parity {parity} recipe {json.dumps(variant.recipe, default=str)[:300]}")
    print("RESULT: PASS export fp32 + fp16")
    return True


def _each_precision(precisions: tuple[str, ...], check: Callable[[str], bool], claim: str) -> bool:
    """``check`` each precision (an exception is that precision's FAIL line, and the others still run), then one
    RESULT line for ``claim``."""
    ok = True
    for precision in precisions:
        try:
            fits = check(precision)
        except Exception as err:  # report and go on to the other precision
            print(f"FAIL {precision}: {type(err).__name__}: {err}")
            fits = False
        ok = ok and fits
    print(f"RESULT: {'PASS' if ok else 'FAIL'} {claim}")
    return ok


def _cuda_precision(bundle: Path, precision: str, texts: list[str], reference: Any) -> bool:
    import numpy as np

    from embedrt import Encoder
    from embedrt.export.validate import cosine_rows

    encoder = Encoder.load(bundle, precision=precision, device="cuda")
    together = encoder.encode(texts, batch_size=64)
    alone = np.stack([encoder.encode(text) for text in texts[:16]])
    to_cpu = cosine_rows(together, reference)
    invariance = cosine_rows(alone, together[:16]).min()
    started = time.perf_counter()
    encoder.encode(texts, batch_size=128)
    rate = len(texts) / (time.perf_counter() - started)
    fits = bool(to_cpu.min() >= 0.999 and invariance >= 0.9999 and encoder.backend.name == "onnxruntime-cuda")
    pooled = getattr(encoder.backend, "pools_on_device", False)
    print(
        f"{'PASS' if fits else 'FAIL'} {precision} on {encoder.backend.name} (pooling on the device: {pooled}, "
        f"{len(encoder.warmed)} shapes warmed at load in {sum(s for _, _, s in encoder.warmed):.2f} s): "
        f"n={len(texts)} cos to CPU fp32 "
        f"min {to_cpu.min():.7f} mean {to_cpu.mean():.7f}; alone vs batch min {invariance:.7f}; "
        f"encode batch 128: {rate:.0f} sent/s (one pass, warm, not a benchmark)"
    )
    return fits


def cuda(args: argparse.Namespace) -> bool:
    from embedrt import Encoder

    texts = _texts(args.data, 256)
    reference = Encoder.load(args.bundle, precision="fp32", device="cpu").encode(texts, batch_size=32)
    return _each_precision(
        ("fp16", "fp32"),
        lambda precision: _cuda_precision(args.bundle, precision, texts, reference),
        "CUDA parity and batch invariance",
    )


def no_torch(args: argparse.Namespace) -> bool:
    """In this process torch cannot be imported; the CUDA provider must start anyway."""
    sys.modules["torch"] = None  # type: ignore[assignment]
    import onnxruntime

    from embedrt import Encoder
    from embedrt.runtime.backends import ort_cuda

    if args.skip_preload:  # to show what the call is for: as if embedrt had not called it
        ort_cuda._PRELOADED[id(onnxruntime)] = "(skipped on purpose by --skip-preload)"
    try:
        encoder = Encoder.load(args.bundle, precision="fp16", device="cuda")
        shape = encoder.encode(["花呗怎么还款", "今天天气不错"]).shape
    except Exception as err:
        print(f"could not start: {type(err).__name__}: {err}")
        started = False
    else:
        print(f"backend {encoder.backend.name}, output {shape}")
        started = True
    print("preload_dlls said:", ort_cuda._PRELOADED.get(id(onnxruntime), "(not called)") or "nothing")
    maps = Path("/proc/self/maps").read_text(errors="replace").splitlines()
    loaded = sorted({line.split()[-1] for line in maps if "libcudart" in line or "libcudnn.so" in line})
    print("CUDA libraries loaded from:", loaded or "none")
    print("torch imported:", sys.modules.get("torch") is not None)
    note = " (preload skipped)" if args.skip_preload else ""
    print(f"RESULT: {'PASS' if started else 'FAIL'} CUDA provider without torch{note}")
    return started


def _pooling_precision(bundle: Path, precision: str, texts: list[str]) -> bool:
    import numpy as np

    from embedrt import Encoder
    from embedrt.export.validate import cosine_rows
    from embedrt.runtime.pooling import pool

    encoder = Encoder.load(bundle, precision=precision, device="cuda")
    if not getattr(encoder.backend, "pools_on_device", False):
        print(f"FAIL {precision}: the CUDA backend does not pool on the device (no sentence_embedding output?)")
        return False
    worst, largest = 1.0, 0.0
    for batch in encoder.batches(encoder.tokenize(texts), 64):
        on_device = encoder.backend.run_pooled(batch.inputs)
        on_host = pool(encoder.backend.run(batch.inputs), batch.inputs["attention_mask"], encoder.manifest.pooling)
        worst = min(worst, float(cosine_rows(on_device, on_host).min()))
        largest = max(largest, float(np.abs(on_device - on_host).max()))
    fits = worst >= 1 - 1e-6
    print(
        f"{'PASS' if fits else 'FAIL'} {precision}: device pooling vs NumPy pooling of the same output, "
        f"n={len(texts)}, min cos {worst:.9f}, max |diff| {largest:.2e} (buckets: {encoder.bucket_widths})"
    )
    return fits


def pooling(args: argparse.Namespace) -> bool:
    """Mean pooling in the graph, on the GPU, against NumPy pooling of the same run's token embeddings."""
    texts = _texts(args.data, 256)
    return _each_precision(
        ("fp32", "fp16"),
        lambda precision: _pooling_precision(args.bundle, precision, texts),
        "device pooling equals NumPy pooling to 1e-6 cosine",
    )


def _batch1_ms(encoder: Any, texts: list[str]) -> tuple[float, float]:
    taken = []
    for text in texts:
        started = time.perf_counter()
        encoder.encode(text)
        taken.append((time.perf_counter() - started) * 1e3)
    taken.sort()
    return taken[len(taken) // 2], taken[min(len(taken) - 1, int(len(taken) * 0.99))]


def _graphs_precision(bundle: Path, precision: str, texts: list[str]) -> bool:
    import numpy as np

    from embedrt import Encoder
    from embedrt.export.validate import cosine_rows

    plain = Encoder.load(bundle, precision=precision, device="cuda")
    started = time.perf_counter()
    graphed = Encoder.load(bundle, precision=precision, device="cuda", cuda_graphs=True)
    load_s = time.perf_counter() - started
    if not graphed.cuda_graphs:
        print(f"FAIL {precision}: CUDA graphs off: {graphed.backend.graphs_off}")
        return False
    singles = [*texts[:64], "长" * (graphed.max_seq_length + 10)]  # up to the widest bucket
    alone = np.stack([graphed.encode(text) for text in singles])
    reference = np.stack([plain.encode(text) for text in singles])
    worst = float(cosine_rows(alone, reference).min())
    largest = float(np.abs(alone - reference).max())
    again = np.stack([graphed.encode(text) for text in singles[:8]])
    replayed = bool(np.array_equal(again, alone[:8]))
    first = _batch1_ms(graphed, texts), _batch1_ms(plain, texts)
    warm = _batch1_ms(graphed, texts), _batch1_ms(plain, texts)
    fits = worst >= 1 - 1e-6 and replayed
    print(
        f"{'PASS' if fits else 'FAIL'} {precision}: {len(graphed.graphed)} graphs captured in "
        f"{sum(s for _, _, s in graphed.graphed):.2f} s (load {load_s:.2f} s); one text alone, graph vs normal "
        f"session, n={len(singles)}: min cos {worst:.9f}, max |diff| {largest:.2e}; replays repeat: {replayed}"
    )
    print(
        f"  batch-1 over {len(texts)} texts, graphs / no graphs: first pass p50 {first[0][0]:.3f} / "
        f"{first[1][0]:.3f} ms, p99 {first[0][1]:.3f} / {first[1][1]:.3f} ms; again p50 {warm[0][0]:.3f} / "
        f"{warm[1][0]:.3f} ms, p99 {warm[0][1]:.3f} / {warm[1][1]:.3f} ms"
    )
    return fits


def graphs(args: argparse.Namespace) -> bool:
    """CUDA graphs of one text at each bucket width: accepted, same vectors as without, and their batch-1 latency."""
    texts = _texts(args.data, 300)
    return _each_precision(
        ("fp16", "fp32"),
        lambda precision: _graphs_precision(args.bundle, precision, texts),
        "CUDA graphs give the normal session's vectors",
    )


async def _drive(encoder: Any, requests: list[list[str]], clients: int, max_batch_tokens: int) -> tuple[Any, ...]:
    """Requests sent by ``clients`` concurrent clients through the server's batcher (no HTTP)."""
    import asyncio

    from embedrt.server.batcher import DynamicBatcher

    batcher = DynamicBatcher(encoder, max_batch_tokens=max_batch_tokens)
    await batcher.start()
    todo = list(enumerate(requests))
    results: list[Any] = [None] * len(requests)

    async def client() -> None:
        while todo:
            index, texts = todo.pop()
            results[index] = await batcher.embed(await batcher.tokenize(texts), normalize=True)

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    took = time.perf_counter() - started
    await batcher.stop()
    samples = batcher.metrics.batch_size.collect()[0].samples
    runs = int(next(sample.value for sample in samples if sample.name.endswith("_count")))
    return results, took, batcher.cycles, runs


def serve(args: argparse.Namespace) -> bool:
    """The server's batcher on CUDA: its runs padded ahead on the helper thread or not, a run costed as on a GPU or
    as on the CPU when planning a cycle: encode's vectors every time, sent/s as figures."""
    import asyncio

    import numpy as np

    from embedrt import Encoder
    from embedrt.export.validate import cosine_rows

    texts = _texts(args.data, 3000)
    requests = [texts[i : i + 1 + i % 8] for i in range(0, len(texts), 5)]
    sent = sum(len(r) for r in requests)
    try:
        encoder = Encoder.load(args.bundle, precision="fp16", device="cuda")
    except Exception as err:  # one line for the summary
        print(f"RESULT: FAIL the batcher on CUDA: {type(err).__name__}: {err}")
        return False
    reference = encoder.encode(texts)
    where = {text: i for i, text in enumerate(texts)}
    ok = True
    gpu_cost = encoder.run_cost_tokens
    rounds = [("warm-up round", True, gpu_cost), ("off", False, gpu_cost), ("on", True, gpu_cost), ("on", True, 16)]
    for budget in (2048, 16384):
        for overlap, padded_ahead, run_cost in rounds:  # the first round meets the runs' new shapes
            encoder.overlap = padded_ahead  # Encoder.packed: a cycle's runs padded on the helper thread, or not
            encoder.run_cost_tokens = run_cost  # what a run costs when the batcher plans a cycle (16: the CPU's)
            results, took, cycles, runs = asyncio.run(_drive(encoder, requests, 64, budget))
            got = np.concatenate(results)
            expected = reference[[where[text] for texts_ in requests for text in texts_]]
            worst = float(cosine_rows(got, expected).min())
            ok = ok and worst >= 0.9999
            print(
                f"{'PASS' if worst >= 0.9999 else 'FAIL'} fp16 --max-batch-tokens {budget}, overlap {overlap}, run "
                f"cost {run_cost:g} tokens: "
                f"{len(requests)} requests ({sent} texts) from 64 clients in {took:.2f} s = {sent / took:.0f} sent/s, "
                f"{cycles} cycles of {runs / cycles:.1f} runs (only a cycle's later runs overlap); min cos to encode "
                f"{worst:.7f}"
            )
    print(f"RESULT: {'PASS' if ok else 'FAIL'} the batcher on CUDA gives encode's vectors (sent/s are figures)")
    return ok


def bench(args: argparse.Namespace) -> bool:
    """`embedrt bench --device cuda` on the STS sentences (or the built-in workload); JSON to --json-out."""
    import tempfile

    from embedrt.tools.device_bench import DeviceBenchSettings, format_rows, run_device_bench

    data = None
    if args.data is not None and (args.data / "sts_zh_dev.tsv").is_file():
        handle = tempfile.NamedTemporaryFile("w", encoding="utf-8", suffix=".txt", delete=False)
        with handle:
            handle.write("\n".join(_texts(args.data, 100_000)) + "\n")
        data = handle.name
    settings = DeviceBenchSettings(device="cuda", batch_sizes=tuple(args.batch_sizes), rounds=args.rounds)

    def show(precision: str, result: dict[str, Any]) -> None:
        print("\n".join(format_rows(precision, result)), flush=True)

    try:
        report = run_device_bench(str(args.bundle), None, data, settings, show)
    except Exception as err:  # one line for the summary
        print(f"RESULT: FAIL bench --device cuda: {type(err).__name__}: {err}")
        return False
    args.json_out.write_text(json.dumps(report, ensure_ascii=False, indent=1), encoding="utf-8")
    machine = report["machine"]
    print(
        f"machine: {machine.get('gpu')}, driver {machine.get('driver')}, CUDA {machine.get('cuda_driver_api')}, "
        f"onnxruntime {machine.get('onnxruntime')}, {machine.get('cpu')} x{machine.get('usable_cores')}; "
        f"workload {report['workload']}"
    )
    print(f"RESULT: PASS bench --device cuda written to {args.json_out} (figures, not a check)")
    return True


def pip_layout(args: argparse.Namespace) -> bool:
    """Make ``DIR`` look like one site-packages holding onnxruntime and pip's ``nvidia`` packages (symlinks).

    ``preload_dlls()`` looks for CUDA in ``nvidia/`` beside the onnxruntime package, as a pip install
    lays them out. Unpacked elsewhere (../shared/gpu/unpack.sh puts it in /tmp/site), onnxruntime
    would not find them there; this rebuilds the layout a user's ``pip install`` gives.
    """
    import importlib.util

    import onnxruntime

    package = Path(onnxruntime.__file__).parent
    spec = importlib.util.find_spec("nvidia")
    places = [Path(p) for p in (spec.submodule_search_locations or [])] if spec else []
    if not places:
        print('RESULT: FAIL no nvidia packages installed (pip install "onnxruntime-gpu[cuda,cudnn]")')
        return False
    if (package.parent / "nvidia").is_dir():
        print(f"RESULT: PASS onnxruntime already sits beside nvidia/ in {package.parent}")
        return True
    (args.into / "nvidia").mkdir(parents=True, exist_ok=True)
    (args.into / "onnxruntime").symlink_to(package, target_is_directory=True)
    for place in places:
        for child in place.iterdir():
            link = args.into / "nvidia" / child.name
            if not link.exists():
                link.symlink_to(child, target_is_directory=child.is_dir())
    print(f"RESULT: PASS {args.into}: onnxruntime from {package.parent}, nvidia/ from {', '.join(map(str, places))}")
    return True


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("versions").set_defaults(run=versions)
    step = commands.add_parser("export")
    step.add_argument("--out", type=Path, required=True)
    step.add_argument("--data", type=Path)
    step.add_argument("--tiny", action="store_true")
    step.set_defaults(run=export)
    step = commands.add_parser("cuda")
    step.add_argument("--bundle", type=Path, required=True)
    step.add_argument("--data", type=Path)
    step.set_defaults(run=cuda)
    step = commands.add_parser("no-torch")
    step.add_argument("--bundle", type=Path, required=True)
    step.add_argument("--skip-preload", action="store_true")
    step.set_defaults(run=no_torch)
    step = commands.add_parser("pooling")
    step.add_argument("--bundle", type=Path, required=True)
    step.add_argument("--data", type=Path)
    step.set_defaults(run=pooling)
    step = commands.add_parser("graphs")
    step.add_argument("--bundle", type=Path, required=True)
    step.add_argument("--data", type=Path)
    step.set_defaults(run=graphs)
    step = commands.add_parser("serve")
    step.add_argument("--bundle", type=Path, required=True)
    step.add_argument("--data", type=Path)
    step.set_defaults(run=serve)
    step = commands.add_parser("bench")
    step.add_argument("--bundle", type=Path, required=True)
    step.add_argument("--data", type=Path)
    step.add_argument("--json-out", type=Path, required=True)
    step.add_argument("--batch-sizes", type=int, nargs="+", default=[32, 128, 512, 2048])
    step.add_argument("--rounds", type=int, default=3)
    step.set_defaults(run=bench)
    step = commands.add_parser("pip-layout")
    step.add_argument("--into", type=Path, required=True)
    step.set_defaults(run=pip_layout)
    args = parser.parse_args()
    return 0 if args.run(args) else 1


if __name__ == "__main__":
    sys.exit(main())
