"""The variant table: what every list of engines, precisions, devices and files is derived from.

The derived values are pinned to what they were before the table existed (no behaviour change), the
names are spelled in the table only, a message about a missing variant suggests an export that builds
it, and a row added to the table's source reaches export planning, engine choice and ``embedrt info``.
"""

from __future__ import annotations

import ast
import json
import shlex
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import embedrt
from embedrt.bundle import Bundle, Manifest, Pooling, Variant
from embedrt.errors import BundleError, ExportError
from embedrt.extras import EXTRAS
from embedrt.runtime import devices
from embedrt.runtime.backends.select import ENGINE_PACKAGES, TRT_VARIANT, choose, cpu_choices
from embedrt.variants import (
    DEVICES,
    ENGINE_TABLE,
    ENGINES,
    EXPORTABLE,
    PRECISIONS,
    RUN_PRECISIONS,
    STORED_PRECISION,
    VARIANT_TABLE,
    recipe_batch_invariant,
    split_variant_name,
    variant_name,
)

SRC = Path(embedrt.__file__).parent


def test_derived_values_are_those_spelled_before_the_table():
    from embedrt.export.pipeline import ENGINE_PRECISIONS, FILES, ExportSettings

    assert (ENGINES, PRECISIONS, EXPORTABLE) == (("onnxruntime", "openvino"), ("fp32", "int8", "fp16"), PRECISIONS)
    assert (RUN_PRECISIONS, STORED_PRECISION, DEVICES) == (("fp32", "int8", "fp16", "bf16"), {"bf16": "fp32"}, DEVICES)
    assert DEVICES == ("cpu", "cuda", "tensorrt")
    assert devices.DEVICE_PRECISIONS == {"cpu": RUN_PRECISIONS, "cuda": ("fp32", "fp16"), "tensorrt": ("fp16",)}
    assert devices.CPU_ENGINES == {
        "int8": ("openvino", "onnxruntime"),
        "fp32": ("onnxruntime", "openvino"),
        "bf16": ("openvino",),
        "fp16": ("onnxruntime",),
    }
    assert ENGINE_PACKAGES == {"onnxruntime": "onnxruntime", "openvino": "openvino"}
    assert ENGINE_PRECISIONS == {"onnxruntime": ("fp32", "int8", "fp16"), "openvino": ("fp32", "int8")}
    assert FILES == {
        "fp32": "model.onnx",
        "int8": "model_int8.onnx",
        "fp16": "model_fp16.onnx",
        "fp16-trt": "model_fp16_trt.onnx",
        "openvino-fp32": "openvino/model.xml",
        "openvino-int8": "openvino/model_int8.xml",
    }
    assert VARIANT_TABLE["openvino-int8"].data_files() == ("openvino/model_int8.bin",)
    assert TRT_VARIANT == "fp16-trt"
    both = ExportSettings(precisions=("fp16", "int8"), engines=("onnxruntime", "openvino"))
    assert set(both.variants) == set(FILES)
    assert ExportSettings(precisions=("int8",), engines=("openvino",)).variants == ["openvino-fp32", "openvino-int8"]


def test_every_row_is_whole():
    for name, kind in VARIANT_TABLE.items():
        assert kind.engine in ENGINE_TABLE, name
        assert kind.extra in EXTRAS, name
        assert set(kind.devices) <= set(DEVICES) and kind.devices, name
        assert name == variant_name(kind.engine, kind.precision) or kind.exported_with, name
        assert split_variant_name(name) == (kind.engine, kind.precision)
    for device, wanted in devices.AUTO_PRECISION.items():
        assert set(wanted) <= set(devices.DEVICE_PRECISIONS[device]), device
    assert {engine for preferred in devices.CPU_PREFERENCE.values() for engine in preferred} <= set(ENGINES)


def test_old_manifests_read_as_before():
    assert split_variant_name("openvino-bf16") == ("openvino", "bf16")  # a report label, not a row
    assert split_variant_name("int4") == ("onnxruntime", "int4")  # a newer bundle's variant: the naming rule
    assert not recipe_batch_invariant("int8", {})  # written before static scales: dynamic
    assert not recipe_batch_invariant("int8", {"activations": "dynamic"})
    assert recipe_batch_invariant("int8", {"activations": "static"})
    assert recipe_batch_invariant("openvino-int8", {}) and recipe_batch_invariant("int4", {})


def _quoted_strings(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {node.value for node in ast.walk(tree) if isinstance(node, ast.Constant) and isinstance(node.value, str)}


def test_variant_names_are_spelled_in_the_table_only():
    """A name that is not a bare precision (``openvino-int8``, ``fp16-trt``) is a literal in variants.py only."""
    labels = {variant_name(engine, precision) for engine in ENGINES for precision in RUN_PRECISIONS}
    names = (set(VARIANT_TABLE) | labels) - set(RUN_PRECISIONS)
    assert {"openvino-int8", "openvino-bf16", "fp16-trt"} <= names
    spelled = {
        f"{path.relative_to(SRC)}: {literal}"
        for path in SRC.rglob("*.py")
        if path.name != "variants.py"
        for literal in _quoted_strings(path) & names
    }
    assert spelled == set()


def _bundle(root: Path, variants: tuple[str, ...], source: str = "my models/MiniLM") -> Bundle:
    """A bundle whose manifest lists ``variants`` (choosing and messages read only the manifest)."""
    entries = {
        name: Variant(
            file=VARIANT_TABLE[name].file, sha256="0" * 64, fused_attention=False, engine=VARIANT_TABLE[name].engine
        )
        for name in variants
    }
    return Bundle(root, Manifest(source, 32, 64, Pooling.MEAN, False, entries))


def _suggested_export(message: str) -> list[str]:
    """The command between the message's backticks; the message has exactly one pair."""
    assert message.count("`") == 2, message
    command = message.split("`")[1]
    assert command.startswith("embedrt export "), message
    return shlex.split(command)[1:]


def _variants_built_by(argv: list[str]) -> list[str]:
    """What ``embedrt export`` with ``argv`` would build: its real parser, then the export's plan."""
    from embedrt.cli import build_parser
    from embedrt.export.pipeline import ExportSettings

    args = build_parser().parse_args(argv)
    assert args.force
    return ExportSettings(precisions=args.precision, engines=args.engine).variants


@pytest.mark.parametrize(
    ("has", "ask", "wanted"),
    [
        (("fp32", "int8"), ("int8", "openvino"), "openvino-int8"),  # issue 21's int8@openvino
        (("fp32", "int8", "fp16", "fp16-trt"), ("int8", "openvino"), "openvino-int8"),
        (("fp32", "openvino-fp32"), ("int8", "onnxruntime"), "int8"),
        (("openvino-fp32", "openvino-int8"), ("fp32", "onnxruntime"), "fp32"),
        (("fp32", "int8"), ("bf16", "openvino"), "openvino-fp32"),
    ],
)
def test_a_missing_variant_suggests_an_export_that_builds_it_and_keeps_the_rest(tmp_path, has, ask, wanted):
    bundle = _bundle(tmp_path / "my bundle", has)
    with pytest.raises(BundleError) as caught:
        choose(bundle, *ask)
    message = str(caught.value)
    assert f"has no {wanted!r} variant" in message and "\n" not in message
    argv = _suggested_export(message)
    assert argv[1:4] == ["my models/MiniLM", "-o", str(bundle.root)]
    assert set(_variants_built_by(argv)) >= {wanted, *has}


def test_a_missing_engine_in_a_report_suggests_an_export_that_adds_it(tmp_path):
    bundle = _bundle(tmp_path, ("fp32", "int8", "fp16", "fp16-trt"))
    with pytest.raises(BundleError, match="has no openvino variant") as caught:
        cpu_choices(bundle, None, ["openvino"])
    built = _variants_built_by(_suggested_export(str(caught.value)))
    assert set(built) >= {"openvino-fp32", "openvino-int8", "fp16", "fp16-trt"}


def test_the_tensorrt_graph_missing_suggests_an_export_that_adds_it(tmp_path):
    from embedrt.runtime.backends.tensorrt import open_tensorrt_backend
    from embedrt.tools.build_engine import build_engine

    bundle = _bundle(tmp_path, ("fp32", "int8", "openvino-fp32", "openvino-int8"))
    (tmp_path / "embedrt.json").write_text(bundle.manifest.to_json(), encoding="utf-8")
    with pytest.raises(BundleError) as caught:
        build_engine(tmp_path)
    built = _variants_built_by(_suggested_export(str(caught.value)))
    assert set(built) >= {"fp16-trt", "openvino-int8", "int8"}
    with pytest.raises(BundleError) as caught:
        open_tensorrt_backend(bundle, "fp16")
    message = str(caught.value)
    assert message.count("`") == 4 and message.endswith(f"`embedrt build-engine {tmp_path}`")
    assert "fp16-trt" in _variants_built_by(_suggested_export(message.rsplit(", then", 1)[0]))


def test_a_precision_no_asked_engine_exports_names_the_engines_that_do():
    from embedrt.export.pipeline import ExportSettings

    with pytest.raises(
        ExportError, match=r"fp16 variants are exported for onnxruntime only.*--engine openvino,onnxruntime$"
    ):
        ExportSettings(precisions=("fp16",), engines=("openvino",))
    assert "fp16" in ExportSettings(precisions=("fp16",), engines=("openvino", "onnxruntime")).variants


#: Run in a fresh interpreter: the table's source with one engine row and one variant row added, loaded as
#: embedrt.variants before anything reads it, exactly as if the rows were written into the file.
_NEW_ROW_SCRIPT = textwrap.dedent(
    """
    import contextlib, importlib.util, io, json, sys
    from pathlib import Path

    import embedrt

    path = Path(embedrt.__file__).parent / "variants.py"
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    engine_at = next(i for i, line in enumerate(lines) if line.startswith("        Engine(OPENVINO"))
    lines.insert(engine_at + 1, '        Engine("fake", package="json", graph="blob", export_packages=("json",)),\\n')
    kind_at = next(i for i, line in enumerate(lines) if 'VariantKind("openvino-int8"' in line)
    lines.insert(kind_at + 1, '        VariantKind("fake-fp32", "fake", "fp32", "fake/model.blob", ("cpu",)),\\n')
    spec = importlib.util.spec_from_loader("embedrt.variants", loader=None)
    module = importlib.util.module_from_spec(spec)
    module.__file__ = str(path)
    sys.modules["embedrt.variants"] = module
    exec(compile("".join(lines), str(path), "exec"), module.__dict__)

    from embedrt.bundle import Bundle
    from embedrt.cli import main
    from embedrt.export.pipeline import ExportSettings, default_engines
    from embedrt.runtime.backends.select import choose, cpu_choices

    bundle = Bundle.open(sys.argv[1])
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        main(["info", sys.argv[1]])
    try:
        choose(Bundle.open(sys.argv[2]), "fp32", "fake")
        missing = ""
    except Exception as err:
        missing = str(err)
    print(json.dumps({
        "planned": ExportSettings(precisions=("fp32",), engines=("onnxruntime", "fake")).variants,
        "default_engines": list(default_engines()),
        "chosen": list(vars(choose(bundle, "fp32", "fake")).values()),
        "report": [c.label for c in cpu_choices(bundle, ["fp32"], None)],
        "info": out.getvalue(),
        "missing": missing,
    }))
    """
)


def test_a_new_row_reaches_export_planning_engine_choice_and_info(tmp_path):
    """Adding an engine is its rows here plus its backend (select.open_backend) and its export step."""
    manifest = {
        "format_version": 1,
        "source": "src",
        "dim": 4,
        "max_seq_length": 8,
        "pooling": "mean",
        "normalize": True,
        "variants": {
            "fp32": {"file": "model.onnx", "sha256": "0", "fused_attention": True},
            "fake-fp32": {"file": "fake/model.blob", "sha256": "0", "fused_attention": False, "engine": "fake"},
        },
    }
    with_fake, without = tmp_path / "with", tmp_path / "without"
    with_fake.mkdir()
    (with_fake / "embedrt.json").write_text(json.dumps(manifest), encoding="utf-8")
    del manifest["variants"]["fake-fp32"]
    without.mkdir()
    (without / "embedrt.json").write_text(json.dumps(manifest), encoding="utf-8")
    done = subprocess.run(
        [sys.executable, "-c", _NEW_ROW_SCRIPT, str(with_fake), str(without)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout.splitlines()[-1])
    assert found["planned"] == ["fp32", "fake-fp32"]
    assert "fake" in found["default_engines"]
    assert found["chosen"] == ["fake", "fp32", "fake-fp32"]
    assert found["report"] == ["fp32", "fake-fp32"]
    assert "fake-fp32" in found["info"] and "fake blob" in found["info"]
    assert "--engine onnxruntime,fake" in found["missing"] and found["missing"].count("`") == 2
