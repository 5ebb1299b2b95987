"""One engine in one process: load it, embed the workload, time it, print one JSON line.

Run by ``compare_cpu.py`` with whichever Python has the engine installed (embedrt's environment for
``embedrt-*``, ``ov-direct-*`` and ``st-torch``, the peers' virtual environment for the sentence-transformers
ONNX backend, fastembed and CTranslate2). Every engine goes through the same ``measure`` function, so they
are timed alike: cold start (process start to first embedding), best of N passes, batch-1 latency after warm-up.

    python engines.py measure ENGINE --work DIR --texts FILE [--threads 2] [--batch-size 32] [--rounds 2]
    python engines.py prepare-st-onnx MODEL_DIR      (peers venv: writes O2 and qint8 ONNX models)
    python engines.py prepare-ov-int8 --work DIR      (NNCF's default int8 recipe on the bundle's fp32 IR)
    python engines.py prepare-ct2 MODEL_DIR OUT       (peers venv: CTranslate2 conversion, int8_float32)
    python engines.py cpu-facts                        (OpenVINO's version and whether the CPU has native bf16)
    python engines.py gemm-peak [--threads 2]          (ONNX Runtime's fp32 and int8 GEMM speed here)

Only ``embedrt-*``, ``ov-direct-*`` and ``prepare-ov-int8`` import embedrt: the peers' venv has none.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from harness import peers
from harness.timing import Encode, batch1_ms, best_pass_s, peak_rss_mb, percentiles_ms

STARTED = time.time()  # as close to process start as Python gets; the parent also records its spawn time

#: embedrt rows: engine name -> (precision, engine) for ``Encoder.load``.
EMBEDRT_ROWS = {
    "embedrt-fp32": ("fp32", "onnxruntime"),
    "embedrt-int8": ("int8", "onnxruntime"),
    "embedrt-ov-fp32": ("fp32", "openvino"),
    "embedrt-ov-bf16": ("bf16", "openvino"),
    "embedrt-ov-int8": ("int8", "openvino"),
}
#: OpenVINO used directly: engine name -> (IR under the work dir, INFERENCE_PRECISION_HINT).
OV_DIRECT = {
    "ov-direct-fp32": ("bundle/openvino/model.xml", "f32"),
    "ov-direct-bf16": ("bundle/openvino/model.xml", "bf16"),
    "ov-direct-int8": ("ov_direct/model_int8.xml", "f32"),
}


def ov_direct(
    name: str, work: Path, threads: int, extra: dict | None = None, edit: Callable[[Any], object] | None = None
) -> Encode:
    """``peers.ov_direct`` on the IR of row ``name`` under ``work``, with the bundle's tokenizer."""
    ir, hint = OV_DIRECT[name]
    return peers.ov_direct(work / ir, work / "bundle" / "tokenizer.json", threads, hint, extra, edit)


def _embedrt(name: str, work: Path, threads: int) -> Encode:
    from embedrt import Encoder

    precision, engine = EMBEDRT_ROWS[name]
    encoder = Encoder.load(work / "bundle", precision=precision, engine=engine, threads=threads)
    return lambda texts, batch_size: encoder.encode(list(texts), batch_size=batch_size)


#: Every other engine: name -> how to start it on the artefacts under the work dir.
PEERS: dict[str, Callable[[Path, int], Encode]] = {
    "st-torch": lambda work, threads: peers.st_torch(work / "model", threads),
    "st-onnx-o2": lambda work, threads: peers.st_onnx(work / "peer_model", peers.ST_ONNX_FILES["st-onnx-o2"], threads),
    "st-onnx-qint8": lambda work, threads: peers.st_onnx(
        work / "peer_model", peers.ST_ONNX_FILES["st-onnx-qint8"], threads
    ),
    "fastembed": lambda work, threads: peers.fastembed_encoder(work / "fastembed", threads),
    "ctranslate2-int8": lambda work, threads: peers.ctranslate2_encoder(
        work / "ct2", work / "bundle" / "tokenizer.json", threads
    ),
}


def load_engine(name: str, work: Path, threads: int) -> Encode:
    """Start ``name`` on the artefacts under ``work`` (see compare_cpu.py) and return its encode."""
    if name in EMBEDRT_ROWS:
        return _embedrt(name, work, threads)
    if name in OV_DIRECT:
        return ov_direct(name, work, threads)
    if name in PEERS:
        return PEERS[name](work, threads)
    raise SystemExit(f"engines.py: unknown engine {name!r}")


def measure(encode: Encode, texts: Sequence[str], batch_size: int, rounds: int, latency_calls: int) -> dict:
    """The same timing for every engine; ``first_embedding_at`` is wall-clock for the cold start."""
    encode(texts[:1], 1)
    first_embedding_at = time.time()
    encode(texts[: 4 * batch_size], batch_size)  # warm-up: thread pools, allocator, kernel choices
    best = best_pass_s(encode, texts, batch_size, rounds)
    step = max(1, len(texts) // latency_calls)
    singles = list(texts[::step])[:latency_calls]
    latency = percentiles_ms(batch1_ms(encode, singles, warmup=20))
    return {
        "first_embedding_at": first_embedding_at,
        "import_started_at": STARTED,
        "seconds": best,
        "sentences": len(texts),
        "sentences_per_s": len(texts) / best,
        **{f"latency_{q}_ms": value for q, value in latency.items()},
        "peak_rss_mb": peak_rss_mb(),
    }


#: GEMM rows tried by ``gemm-peak``: ~8, ~32 and ~128 short sentences. MLAS is fastest at different
#: sizes for fp32 and int8 (cache effects), so the ceiling takes each kernel's best.
GEMM_ROWS = (128, 512, 2048)


def _gemm_session(name: str, threads: int, hidden: int, inner: int, rng: object) -> object:
    """An ONNX Runtime session of one FFN-sized GEMM: fp32 ``MatMul`` or int8 ``DynamicQuantizeMatMul``."""
    import numpy as np
    import onnxruntime
    from onnx import TensorProto, helper, numpy_helper

    if name == "fp32":
        nodes = [helper.make_node("MatMul", ["x", "w"], ["y"])]
        weights = [numpy_helper.from_array(rng.standard_normal((hidden, inner), dtype=np.float32), "w")]
    else:
        nodes = [helper.make_node("DynamicQuantizeMatMul", ["x", "w", "scale", "zero"], ["y"], domain="com.microsoft")]
        weights = [
            numpy_helper.from_array(rng.integers(-127, 128, (hidden, inner), dtype=np.int8), "w"),
            numpy_helper.from_array(np.full(inner, 0.01, dtype=np.float32), "scale"),
            numpy_helper.from_array(np.zeros(inner, dtype=np.int8), "zero"),
        ]
    graph = helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["rows", hidden])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        weights,
    )
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = 9  # onnx 1.23 writes IR 14, newer than ONNX Runtime 1.31 loads
    options = peers.ort_options(threads)
    return onnxruntime.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def gemm_peak(threads: int, hidden: int = 768, inner: int = 3072) -> dict:
    """ONNX Runtime's fp32 ``MatMul`` and int8 ``DynamicQuantizeMatMul`` speed on FFN-sized GEMMs.

    The two kernels that carry a BERT's FLOPs; their best speed over ``GEMM_ROWS`` bounds fp32 and
    int8 throughput from above.
    """
    import numpy as np

    rng = np.random.default_rng(0)
    peaks: dict[str, float] = {}
    for name in ("fp32", "int8"):
        session = _gemm_session(name, threads, hidden, inner, rng)
        for rows in GEMM_ROWS:
            x = rng.standard_normal((rows, hidden), dtype=np.float32)
            calls = max(3, 20480 // rows)
            for _ in range(3):
                session.run(None, {"x": x})
            best = float("inf")
            for _ in range(5):
                start = time.perf_counter()
                for _ in range(calls):
                    session.run(None, {"x": x})
                best = min(best, (time.perf_counter() - start) / calls)
            speed = 2 * rows * hidden * inner / best / 1e9
            peaks[f"{name}_gop_s"] = max(peaks.get(f"{name}_gop_s", 0.0), speed)
            peaks[f"{name}_gop_s_at_{rows}_rows"] = speed
    return peaks


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    m = sub.add_parser("measure")
    m.add_argument("engine")
    m.add_argument("--work", type=Path, required=True)
    m.add_argument("--texts", type=Path, required=True)
    m.add_argument("--threads", type=int, default=2)
    m.add_argument("--batch-size", type=int, default=32)
    m.add_argument("--rounds", type=int, default=2)
    m.add_argument("--latency-calls", type=int, default=200)
    sub.add_parser("prepare-st-onnx").add_argument("model_dir", type=Path)
    sub.add_parser("prepare-ov-int8").add_argument("--work", type=Path, required=True)
    c = sub.add_parser("prepare-ct2")
    c.add_argument("model_dir", type=Path)
    c.add_argument("out", type=Path)
    sub.add_parser("cpu-facts")
    sub.add_parser("gemm-peak").add_argument("--threads", type=int, default=2)
    return parser


def _prepare_ov_int8(work: Path) -> None:
    from harness.artifacts import quantize_ov_direct

    quantize_ov_direct(work / "bundle", work / OV_DIRECT["ov-direct-int8"][0])


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "gemm-peak":
        print(json.dumps(gemm_peak(args.threads)))
    elif args.command == "prepare-st-onnx":
        peers.prepare_st_onnx(args.model_dir)
    elif args.command == "prepare-ov-int8":
        _prepare_ov_int8(args.work)
    elif args.command == "prepare-ct2":
        peers.prepare_ct2(args.model_dir, args.out)
    elif args.command == "cpu-facts":
        print(json.dumps(peers.openvino_facts()))
    else:
        texts = args.texts.read_text(encoding="utf-8").splitlines()
        encode = load_engine(args.engine, args.work, args.threads)
        report = measure(encode, texts, args.batch_size, args.rounds, args.latency_calls)
        print(json.dumps({"engine": args.engine, **report}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
