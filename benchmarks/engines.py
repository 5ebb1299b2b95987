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
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

try:
    from embedrt.tools.bench import percentile
except ImportError:  # the peers' venv runs this file without embedrt installed: take it from the checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    from embedrt.tools.bench import percentile

STARTED = time.time()  # as close to process start as Python gets; the parent also records its spawn time

Encode = Callable[[Sequence[str], int], object]

ST_ONNX_FILES = {"st-onnx-o2": "onnx/model_O2.onnx", "st-onnx-qint8": "onnx/model_qint8_avx512_vnni.onnx"}
#: embedrt rows: engine name -> (precision, engine) for ``Encoder.load``.
EMBEDRT_ROWS = {
    "embedrt-fp32": ("fp32", "onnxruntime"),
    "embedrt-int8": ("int8", "onnxruntime"),
    "embedrt-ov-fp32": ("fp32", "openvino"),
    "embedrt-ov-bf16": ("bf16", "openvino"),
    "embedrt-ov-int8": ("int8", "openvino"),
}
#: OpenVINO used directly: engine name -> (IR under the work dir, INFERENCE_PRECISION_HINT, extra config).
#: The peers keep OpenVINO's other defaults (its fused attention among them), as a user's code would.
OV_DIRECT: dict[str, tuple[str, str, dict[str, object]]] = {
    "ov-direct-fp32": ("bundle/openvino/model.xml", "f32", {}),
    "ov-direct-bf16": ("bundle/openvino/model.xml", "bf16", {}),
    "ov-direct-int8": ("ov_direct/model_int8.xml", "f32", {}),
}
#: What ``ov-direct-int8`` calibrates on: the first texts of embedrt's built-in calibration set.
OV_DIRECT_CALIBRATION_TEXTS = 600
#: CTranslate2: converted (and run) with this compute type; the model lives in ``CT2_DIR`` under the work dir.
CT2_COMPUTE_TYPE = "int8_float32"
CT2_DIR = "ct2"


def _ort_options(threads: int):
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return options


def _mean_pool(hidden, mask):
    """Mean of the token vectors where ``mask`` is 1 (what the stand-in's Pooling module does), in NumPy."""
    import numpy as np

    weights = mask[:, :, None].astype(np.float32)
    return (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)


def _length_sorted(tokenizer, infer: Callable[[list], object]) -> Encode:
    """The usual hand-written loop: tokenize, sort by token length, ``infer`` each batch, restore the order.

    ``infer`` takes a batch of ``tokenizers`` encodings and returns their pooled vectors.
    """
    import numpy as np

    def encode(texts: Sequence[str], batch_size: int):
        encodings = tokenizer.encode_batch(list(texts))
        order = sorted(range(len(encodings)), key=lambda i: len(encodings[i].ids))
        out = None
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            pooled = infer([encodings[i] for i in chunk])
            if out is None:
                out = np.empty((len(encodings), pooled.shape[1]), dtype=np.float32)
            out[chunk] = pooled
        return out

    return encode


def _padded(batch: list):
    """``input_ids``, ``attention_mask``, ``token_type_ids`` of a batch of encodings, padded to its longest."""
    import numpy as np

    width = max(len(encoding.ids) for encoding in batch)
    ids = np.zeros((len(batch), width), dtype=np.int64)
    mask = np.zeros_like(ids)
    types = np.zeros_like(ids)
    for row, encoding in enumerate(batch):
        n = len(encoding.ids)
        ids[row, :n] = encoding.ids
        mask[row, :n] = 1
        types[row, :n] = encoding.type_ids
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}


def import_openvino():
    """``openvino`` imported with its telemetry blocked (embedrt's helper; the first import decides)."""
    from embedrt.runtime.backends.openvino import no_telemetry

    with no_telemetry():
        import openvino
    return openvino


def _ov_direct(name: str, work: Path, threads: int) -> Encode:
    """OpenVINO the way a user writes it: the bundle's tokenizer.json, ``compiled(feed)[0]``, NumPy pooling."""
    from tokenizers import Tokenizer

    ov = import_openvino()
    ir, hint, extra = OV_DIRECT[name]
    if not (work / ir).is_file():
        raise SystemExit(f"engines.py: no IR at {work / ir} (compare_cpu.py prepares it)")
    core = ov.Core()
    if hint == "bf16" and "BF16" not in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
        raise SystemExit("engines.py: this CPU has no native bf16 (AVX512_BF16 or AMX)")
    config = {
        "INFERENCE_NUM_THREADS": threads,
        "PERFORMANCE_HINT": "LATENCY",
        "NUM_STREAMS": 1,
        "INFERENCE_PRECISION_HINT": hint,
        **extra,
    }
    compiled = core.compile_model(str(work / ir), "CPU", config)
    tokenizer = Tokenizer.from_file(str(work / "bundle" / "tokenizer.json"))

    def infer(batch: list):
        feed = _padded(batch)
        return _mean_pool(compiled(feed)[0], feed["attention_mask"])

    return _length_sorted(tokenizer, infer)


def _ctranslate2(work: Path, threads: int) -> Encode:
    """CTranslate2's Encoder on the converted stand-in: token ids in, ``last_hidden_state`` mean-pooled in NumPy."""
    import ctranslate2
    import numpy as np
    from tokenizers import Tokenizer

    model_dir = work / CT2_DIR
    if not (model_dir / "model.bin").is_file():
        raise SystemExit(f"engines.py: no CTranslate2 model at {model_dir} (ctranslate2 missing in the peers venv?)")
    encoder = ctranslate2.Encoder(str(model_dir), device="cpu", intra_threads=threads, compute_type=CT2_COMPUTE_TYPE)
    tokenizer = Tokenizer.from_file(str(work / "bundle" / "tokenizer.json"))

    def infer(batch: list):
        output = encoder.forward_batch([encoding.ids for encoding in batch])
        hidden = np.asarray(output.last_hidden_state)  # [batch, longest, hidden], padded by CTranslate2
        lengths = np.array([len(encoding.ids) for encoding in batch])
        mask = np.arange(hidden.shape[1])[None, :] < lengths[:, None]
        return _mean_pool(hidden, mask)

    return _length_sorted(tokenizer, infer)


def load_engine(name: str, work: Path, threads: int) -> Encode:
    """Start ``name`` on the artefacts under ``work`` (see compare_cpu.py) and return its encode."""
    if name in EMBEDRT_ROWS:
        from embedrt import Encoder

        precision, engine = EMBEDRT_ROWS[name]
        encoder = Encoder.load(work / "bundle", precision=precision, engine=engine, threads=threads)
        return lambda texts, batch_size: encoder.encode(list(texts), batch_size=batch_size)
    if name in OV_DIRECT:
        return _ov_direct(name, work, threads)
    if name == "ctranslate2-int8":
        return _ctranslate2(work, threads)
    if name == "st-torch":
        import torch
        from sentence_transformers import SentenceTransformer

        torch.set_num_threads(threads)
        model = SentenceTransformer(str(work / "model"), device="cpu")
        return lambda texts, batch_size: model.encode(list(texts), batch_size=batch_size, convert_to_numpy=True)
    if name in ST_ONNX_FILES:
        from sentence_transformers import SentenceTransformer

        model = SentenceTransformer(
            str(work / "peer_model"),
            device="cpu",
            backend="onnx",
            model_kwargs={
                "file_name": ST_ONNX_FILES[name],
                "provider": "CPUExecutionProvider",
                "session_options": _ort_options(threads),
            },
        )
        return lambda texts, batch_size: model.encode(list(texts), batch_size=batch_size, convert_to_numpy=True)
    if name == "fastembed":
        import numpy as np
        from fastembed import TextEmbedding
        from fastembed.common.model_description import ModelSource, PoolingType

        model_id = "embedrt-bench/standin-fused-fp32"
        config = json.loads((work / "fastembed" / "config.json").read_text())
        TextEmbedding.add_custom_model(
            model=model_id,
            pooling=PoolingType.MEAN,
            normalization=False,
            sources=ModelSource(hf=model_id),
            dim=config["hidden_size"],
            model_file="model.onnx",
        )
        model = TextEmbedding(
            model_id, specific_model_path=str(work / "fastembed"), threads=threads, providers=["CPUExecutionProvider"]
        )
        return lambda texts, batch_size: np.stack(list(model.embed(list(texts), batch_size=batch_size)))
    raise SystemExit(f"engines.py: unknown engine {name!r}")


def _peak_rss_mb() -> float:
    """Peak resident memory: ``VmHWM`` (``ru_maxrss`` survives exec and reports the parent's peak)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1e3
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3


def measure(encode: Encode, texts: Sequence[str], batch_size: int, rounds: int, latency_calls: int) -> dict:
    """The same timing for every engine; ``first_embedding_at`` is wall-clock for the cold start."""
    encode(texts[:1], 1)
    first_embedding_at = time.time()
    encode(texts[: 4 * batch_size], batch_size)  # warm-up: thread pools, allocator, kernel choices
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        encode(texts, batch_size)
        best = min(best, time.perf_counter() - start)
    step = max(1, len(texts) // latency_calls)
    singles = list(texts[::step])[:latency_calls]
    for text in singles[:20]:
        encode([text], 1)
    latencies = []
    for text in singles:
        start = time.perf_counter()
        encode([text], 1)
        latencies.append((time.perf_counter() - start) * 1e3)
    return {
        "first_embedding_at": first_embedding_at,
        "import_started_at": STARTED,
        "seconds": best,
        "sentences": len(texts),
        "sentences_per_s": len(texts) / best,
        "latency_p50_ms": percentile(sorted(latencies), 50),
        "latency_p95_ms": percentile(sorted(latencies), 95),
        "latency_p99_ms": percentile(sorted(latencies), 99),
        "peak_rss_mb": _peak_rss_mb(),
    }


#: GEMM rows tried by ``gemm-peak``: ~8, ~32 and ~128 short sentences. MLAS is fastest at different
#: sizes for fp32 and int8 (cache effects), so the ceiling takes each kernel's best.
GEMM_ROWS = (128, 512, 2048)


def gemm_peak(threads: int, hidden: int = 768, inner: int = 3072) -> dict:
    """ONNX Runtime's fp32 ``MatMul`` and int8 ``DynamicQuantizeMatMul`` speed on FFN-sized GEMMs.

    The two kernels that carry a BERT's FLOPs; their best speed over ``GEMM_ROWS`` bounds fp32 and
    int8 throughput from above.
    """
    import numpy as np
    import onnxruntime
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    graphs = {
        "fp32": (
            [helper.make_node("MatMul", ["x", "w"], ["y"])],
            [numpy_helper.from_array(rng.standard_normal((hidden, inner), dtype=np.float32), "w")],
        ),
        "int8": (
            [helper.make_node("DynamicQuantizeMatMul", ["x", "w", "scale", "zero"], ["y"], domain="com.microsoft")],
            [
                numpy_helper.from_array(rng.integers(-127, 128, (hidden, inner), dtype=np.int8), "w"),
                numpy_helper.from_array(np.full(inner, 0.01, dtype=np.float32), "scale"),
                numpy_helper.from_array(np.zeros(inner, dtype=np.int8), "zero"),
            ],
        ),
    }
    peaks = {}
    for name, (nodes, weights) in graphs.items():
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
        session = onnxruntime.InferenceSession(
            model.SerializeToString(), _ort_options(threads), providers=["CPUExecutionProvider"]
        )
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


def prepare_st_onnx(model_dir: Path) -> None:
    """Write sentence-transformers' own O2-optimized and avx512_vnni-quantized ONNX models into ``model_dir``."""
    from sentence_transformers import (
        SentenceTransformer,
        export_dynamic_quantized_onnx_model,
        export_optimized_onnx_model,
    )

    model = SentenceTransformer(str(model_dir), device="cpu", backend="onnx")
    model.save(str(model_dir))
    export_optimized_onnx_model(model, "O2", str(model_dir))
    export_dynamic_quantized_onnx_model(model, "avx512_vnni", str(model_dir))
    for file in ST_ONNX_FILES.values():
        if not (model_dir / file).is_file():
            raise SystemExit(f"engines.py: sentence-transformers did not write {model_dir / file}")


def prepare_ov_int8(work: Path) -> None:
    """``ov-direct-int8``: NNCF's default TRANSFORMER recipe on the bundle's fp32 IR, as a user would run it.

    600 texts of embedrt's built-in calibration set, each one unpadded batch-1 feed tokenized with the
    bundle's tokenizer.json; every calibration text used (``subset_size``); saved like embedrt's IR.
    """
    from tokenizers import Tokenizer

    from embedrt.export.openvino import builtin_calibration
    from embedrt.export.quantize import unpadded_feeds
    from embedrt.runtime.backends.openvino import no_telemetry

    ov = import_openvino()
    with no_telemetry():
        import nncf

    tokenizer = Tokenizer.from_file(str(work / "bundle" / "tokenizer.json"))
    texts = builtin_calibration()[:OV_DIRECT_CALIBRATION_TEXTS]
    feeds = unpadded_feeds(tokenizer, texts)
    core = ov.Core()
    model = core.read_model(str(work / OV_DIRECT["ov-direct-fp32"][0]))
    quantized = nncf.quantize(model, nncf.Dataset(feeds), model_type=nncf.ModelType.TRANSFORMER, subset_size=len(feeds))
    target = work / OV_DIRECT["ov-direct-int8"][0]
    target.parent.mkdir(parents=True, exist_ok=True)
    ov.save_model(quantized, str(target), compress_to_fp16=False)
    recipe = {
        "recipe": "nncf.quantize(model_type=TRANSFORMER, subset_size=len(feeds)), otherwise NNCF's defaults",
        "calibration": f"embedrt.export.openvino.builtin_calibration()[:{len(texts)}], unpadded batch-1 feeds",
        "nncf": nncf.__version__,
        "openvino": ov.__version__,
    }
    (target.parent / "recipe.json").write_text(json.dumps(recipe, indent=2) + "\n", encoding="utf-8")


def prepare_ct2(model_dir: Path, out: Path) -> None:
    """Convert the stand-in's BertModel (the sentence-transformers directory's root) with CTranslate2's converter.

    Needs transformers < 5 (the peers' venv). The stand-in has no pooler; ``BertModel.from_pretrained``
    adds a randomly initialized one, which the converter requires and the mean pooling here never reads.
    """
    from ctranslate2.converters import TransformersConverter

    TransformersConverter(str(model_dir)).convert(str(out), quantization=CT2_COMPUTE_TYPE, force=True)


def cpu_facts() -> dict:
    """OpenVINO's version and whether its CPU plugin computes bf16 natively here (``BF16`` capability)."""
    try:
        ov = import_openvino()
    except ImportError:
        return {"openvino": None, "native_bf16": False}
    capabilities = list(ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
    return {"openvino": ov.__version__, "native_bf16": "BF16" in capabilities, "capabilities": capabilities}


def main(argv: Sequence[str] | None = None) -> int:
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
    p = sub.add_parser("prepare-st-onnx")
    p.add_argument("model_dir", type=Path)
    o = sub.add_parser("prepare-ov-int8")
    o.add_argument("--work", type=Path, required=True)
    c = sub.add_parser("prepare-ct2")
    c.add_argument("model_dir", type=Path)
    c.add_argument("out", type=Path)
    sub.add_parser("cpu-facts")
    g = sub.add_parser("gemm-peak")
    g.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    if args.command == "gemm-peak":
        print(json.dumps(gemm_peak(args.threads)))
        return 0
    if args.command == "prepare-st-onnx":
        prepare_st_onnx(args.model_dir)
        return 0
    if args.command == "prepare-ov-int8":
        prepare_ov_int8(args.work)
        return 0
    if args.command == "prepare-ct2":
        prepare_ct2(args.model_dir, args.out)
        return 0
    if args.command == "cpu-facts":
        print(json.dumps(cpu_facts()))
        return 0
    texts = args.texts.read_text(encoding="utf-8").splitlines()
    encode = load_engine(args.engine, args.work, args.threads)
    report = measure(encode, texts, args.batch_size, args.rounds, args.latency_calls)
    print(json.dumps({"engine": args.engine, **report}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
