"""OpenVINO IR variants: the plain ONNX export as an fp32 IR, and a static int8 IR quantized with NNCF.

- ``openvino-fp32``: ``ov.convert_model`` of the plain (unfused) ONNX, saved with ``compress_to_fp16=False``
  (``ov.save_model`` would otherwise store fp16 weights, which is not fp32 parity). At run time it computes
  in f32, or in bf16 on CPUs with native bf16.
- ``openvino-int8``: ``nncf.quantize(model_type=TRANSFORMER)``: int8 weights and fixed, calibrated int8
  activation scales (SmoothQuant on the MatMuls, mixed preset), the embedding tables stored int8 per row,
  and the MatMuls whose inputs have outliers kept fp32 (:class:`StaticInt8Recipe`).
  Fixed scales make a text's vector independent of its batch-mates' ranges, unlike dynamic int8.
  Calibration: one unpadded batch-1 feed per text (padding never enters the statistics), from a built-in
  set of Chinese and English texts (``data/calibration.txt``; calibrating on one language costs the other
  accuracy) or the caller's file.

OpenVINO and NNCF are imported with their telemetry blocked (:func:`~embedrt.runtime.backends.openvino.no_telemetry`).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from embedrt.errors import ExportError, InputError
from embedrt.extras import missing_extra
from embedrt.files import detect_format, read_lines
from embedrt.runtime.backends.openvino import import_openvino, no_telemetry


@dataclass(frozen=True)
class StaticInt8Recipe:
    """How NNCF quantizes; what it was is written into the manifest.

    ``min_input_sqnr_db``: as for ONNX Runtime's int8 (:class:`embedrt.export.quantize.Int8Recipe`), the
    fp32 graph first runs on the calibration texts and each weight MatMul's input is quantized to 8 bits
    with one scale; MatMuls whose input keeps less signal-to-noise than this stay fp32, their weights
    stored as fp16 to keep the file small. In BERTs these are the FFN down-projections whose GELU outputs
    carry channel outliers (all-MiniLM-L6-v2: layers 0-2); a model without such outliers is all int8.
    """

    name: str = "nncf-static-sqnr23"
    preset: str = "mixed"  # symmetric weights, asymmetric activations
    #: Regular expressions of MatMul names that stay fp32 whatever their SQNR.
    ignored: tuple[str, ...] = ()
    min_input_sqnr_db: float | None = 23.0
    fast_bias_correction: bool = True

    def manifest_entry(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "model_type": "transformer",
            "preset": self.preset,
            "ignored": list(self.ignored),
            "min_input_sqnr_db": self.min_input_sqnr_db,
            "fast_bias_correction": self.fast_bias_correction,
        }


#: Measured on all-MiniLM-L6-v2 against PyTorch on the export's 48 parity sentences (cosine mean / min):
#: NNCF's TRANSFORMER defaults 0.978 / 0.747 (fails the export's 0.99 gate); all six FFN down-projections
#: fp32 0.9970 / 0.983; the three below 23 dB fp32 (this recipe) 0.9964 / 0.980, fp16-stored weights
#: changing nothing. Tried and dropped: ``nncf.compress_weights`` (int8 weight-only) on the kept
#: projections brought the loss back (0.977 / 0.58), and ``save_model(compress_to_fp16=True)`` leaves a
#: quantized IR as it is.
DEFAULT_STATIC_INT8 = StaticInt8Recipe()


def builtin_calibration() -> list[str]:
    """320 Chinese and 320 English texts written for embedrt (FAQ, dialogue, queries, reviews, news), interleaved."""
    text = resources.files("embedrt").joinpath("data/calibration.txt").read_text(encoding="utf-8")
    return [line for line in text.splitlines() if line.strip()]


def read_calibration(path: str) -> list[str]:
    """Calibration texts from ``path``: one text a line, or JSONL with a ``text`` field (``.jsonl``/``.json``)."""
    lines = read_lines(path)
    if detect_format(path, ("jsonl",)) != "jsonl":
        texts = [line for line in lines if line.strip()]
    else:
        texts = []
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise InputError(f"{path}:{number}: not valid JSON ({err.msg} at column {err.colno})") from err
            if not isinstance(record, dict) or not isinstance(record.get("text"), str):
                raise InputError(f'{path}:{number}: expected a JSON object with a "text" string')
            texts.append(record["text"])
    if len(texts) < 8:
        raise InputError(f"{path} has {len(texts)} texts; calibration needs at least 8 (a few hundred is better)")
    return texts


def import_nncf() -> Any:
    try:
        with no_telemetry():
            import nncf
    except ImportError as err:
        raise missing_extra("nncf", "static int8 for OpenVINO (--engine openvino)") from err
    return nncf


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """NNCF draws progress bars and logs at INFO: the export prints its own progress."""
    logger = logging.getLogger("nncf")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            yield
    finally:
        logger.setLevel(level)


def convert_fp32(plain_onnx: Path, xml: Path) -> Any:
    """Convert the plain ONNX export to an fp32 IR at ``xml`` (+ ``.bin``); returns the ``ov.Model``."""
    ov = import_openvino("exporting OpenVINO variants (--engine openvino)")
    xml.parent.mkdir(parents=True, exist_ok=True)
    try:
        model = ov.convert_model(str(plain_onnx))
        ov.save_model(model, str(xml), compress_to_fp16=False)
    except (RuntimeError, OSError) as err:
        raise ExportError(f"OpenVINO could not convert {plain_onnx.name}: {str(err).splitlines()[0]}") from err
    return model


def sensitive_matmuls(
    plain_onnx: Path, feeds: Sequence[dict[str, np.ndarray]], recipe: StaticInt8Recipe
) -> tuple[list[str], dict[str, float]]:
    """MatMuls (with a weight) to keep fp32: below the recipe's input SQNR, or matching ``ignored``; and the SQNR."""
    import onnx

    from embedrt.export.quantize import input_sqnr

    graph = onnx.load(str(plain_onnx), load_external_data=False).graph
    weights = {initializer.name for initializer in graph.initializer}
    nodes = [node for node in graph.node if node.op_type == "MatMul" and node.input[1] in weights]
    patterns = [re.compile(pattern) for pattern in recipe.ignored]
    kept = [node.name for node in nodes if any(p.search(node.name) for p in patterns)]
    sqnr: dict[str, float] = {}
    if recipe.min_input_sqnr_db is not None:
        sqnr = input_sqnr(plain_onnx, nodes, feeds)
        kept += [name for name, db in sqnr.items() if db < recipe.min_input_sqnr_db and name not in kept]
    return kept, sqnr


def _fp16_weights(model: Any, names: Sequence[str]) -> None:
    """Store the fp32 weight constants of the MatMuls ``names`` as fp16 (+ Convert): half the bytes, same numbers."""
    ov = import_openvino()
    from openvino import opset13 as ops

    wanted = set(names)
    for node in model.get_ordered_ops():
        if node.get_type_name() != "MatMul" or node.get_friendly_name() not in wanted:
            continue
        for port in node.inputs():
            producer = port.get_source_output().get_node()
            if producer.get_type_name() == "Constant" and producer.get_element_type() == ov.Type.f32:
                half = ops.convert(ops.constant(producer.get_data().astype(np.float16)), ov.Type.f32)
                port.replace_source_output(half.output(0))


def quantize_static_int8(
    model: Any,
    plain_onnx: Path,
    xml: Path,
    feeds: Sequence[dict[str, np.ndarray]],
    recipe: StaticInt8Recipe = DEFAULT_STATIC_INT8,
) -> dict[str, Any]:
    """Quantize the fp32 ``ov.Model`` with NNCF on ``feeds`` and save it to ``xml``; returns the recipe entry.

    ``plain_onnx`` is the graph ``model`` was converted from: the SQNR of each MatMul's input is measured
    on it (OpenVINO keeps the ONNX node names).
    """
    ov = import_openvino("exporting OpenVINO variants (--engine openvino)")
    nncf = import_nncf()
    kept, sqnr = sensitive_matmuls(plain_onnx, feeds, recipe)
    names = {port.get_any_name() for port in model.inputs}
    dataset = nncf.Dataset([{name: value for name, value in feed.items() if name in names} for feed in feeds])
    options: dict[str, Any] = {
        "model_type": nncf.ModelType.TRANSFORMER,
        "preset": nncf.QuantizationPreset(recipe.preset),
        "subset_size": len(feeds),  # NNCF would otherwise use only the first 300
        "fast_bias_correction": recipe.fast_bias_correction,
    }
    if kept:
        options["ignored_scope"] = nncf.IgnoredScope(names=kept, validate=False)
    try:
        with _quiet():
            quantized = nncf.quantize(model, dataset, **options)
        _fp16_weights(quantized, kept)
        ov.save_model(quantized, str(xml), compress_to_fp16=False)
    except (RuntimeError, ValueError, OSError) as err:
        raise ExportError(f"NNCF could not quantize the OpenVINO model: {str(err).splitlines()[0]}") from err
    return {
        **recipe.manifest_entry(),
        "kept_fp32": kept,
        "input_sqnr_db": {name: round(db, 1) for name, db in sqnr.items()},
        "nncf": nncf.__version__,
        "openvino": ov.__version__,
    }
