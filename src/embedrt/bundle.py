"""The on-disk bundle: the one contract between the export stage and the runtime.

A bundle is a directory holding ONNX graphs, ``tokenizer.json`` and ``embedrt.json`` (the manifest).
This module uses only the standard library so that both sides, and tools that merely inspect a
bundle, can read it without any heavy dependency.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shlex
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from embedrt.errors import BundleError
from embedrt.files import atomic_write
from embedrt.variants import DEFAULT_ENGINE, VARIANT_TABLE, export_flags, recipe_batch_invariant

FORMAT_VERSION = 1
MANIFEST_NAME = "embedrt.json"
#: Held (``flock``) while a tool reads, changes and rewrites the manifest of an existing bundle.
LOCK_NAME = ".embedrt.lock"
TOKENIZER_NAME = "tokenizer.json"


class Pooling(str, Enum):
    """How token embeddings become one sentence embedding."""

    MEAN = "mean"
    CLS = "cls"
    MAX = "max"


@dataclass(frozen=True)
class Parity:
    """Cosine similarity of a variant's embeddings to the PyTorch reference, over ``n`` sentences."""

    min_cos: float
    mean_cos: float
    n: int


@dataclass(frozen=True)
class Variant:
    """One runnable graph of the model at one precision, for one engine."""

    file: str
    sha256: str
    fused_attention: bool
    parity: Parity | None = None
    # Free-form facts about how the variant was made (quantization recipe, fp16 flavour, ...).
    recipe: dict[str, Any] = field(default_factory=dict)
    #: The engine that runs ``file``: ONNX graphs run on ONNX Runtime, ``.xml`` IRs on OpenVINO.
    engine: str = DEFAULT_ENGINE
    #: Files ``file`` needs beside it (an IR's ``.bin`` weights), relative path -> sha256.
    data_files: dict[str, str] = field(default_factory=dict)
    #: A text's vector is the same alone and in any batch (``auto`` picks only such variants); absent from
    #: older manifests, where :func:`recipe_batch_invariant` derives it.
    batch_invariant: bool = True

    @property
    def pooled_output(self) -> str | None:
        """The graph output holding the mean-pooled embeddings (``recipe["device_pooling"]``, for GPUs), if any."""
        entry = self.recipe.get("device_pooling")
        return str(entry["output"]) if isinstance(entry, dict) and entry.get("output") else None


@dataclass(frozen=True)
class Manifest:
    """Everything the runtime needs to reproduce the sentence-transformers pipeline."""

    source: str
    dim: int
    max_seq_length: int
    pooling: Pooling
    normalize: bool
    variants: dict[str, Variant]
    do_lower_case: bool = False
    tokenizer: str = TOKENIZER_NAME
    format_version: int = FORMAT_VERSION
    architecture: dict[str, Any] = field(default_factory=dict)
    engines: list[dict[str, Any]] = field(default_factory=list)
    embedrt_version: str = ""
    #: The source model's prompts (``config_sentence_transformers.json``): name -> text put before each input.
    prompts: dict[str, str] = field(default_factory=dict)
    #: The prompt ``encode`` uses when the caller names none (``None``: no prompt).
    default_prompt_name: str | None = None
    #: How ``Encoder.similarity`` scores two embeddings: cosine, dot, euclidean or manhattan (as the source).
    similarity_fn_name: str = "cosine"

    def to_json(self) -> str:
        data = asdict(self)
        data["pooling"] = self.pooling.value
        ordered = {"format_version": data.pop("format_version"), **data}
        return json.dumps(ordered, indent=2, ensure_ascii=False) + "\n"

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = MANIFEST_NAME) -> Manifest:
        version = data.get("format_version")
        if version != FORMAT_VERSION:
            raise BundleError(
                f"{where}: format_version {version!r} is not supported by this embedrt "
                f"(it reads version {FORMAT_VERSION}); re-export the bundle with this embedrt version "
                "or install the embedrt version that wrote it"
            )
        try:
            variants = {
                name: Variant(
                    file=v["file"],
                    sha256=v["sha256"],
                    fused_attention=bool(v.get("fused_attention", False)),
                    parity=Parity(**v["parity"]) if v.get("parity") else None,
                    recipe=dict(v.get("recipe") or {}),
                    engine=str(v.get("engine") or DEFAULT_ENGINE),
                    data_files={str(k): str(h) for k, h in (v.get("data_files") or {}).items()},
                    batch_invariant=bool(
                        v["batch_invariant"]
                        if "batch_invariant" in v
                        else recipe_batch_invariant(name, dict(v.get("recipe") or {}))
                    ),
                )
                for name, v in data["variants"].items()
            }
            return cls(
                source=str(data["source"]),
                dim=int(data["dim"]),
                max_seq_length=int(data["max_seq_length"]),
                pooling=Pooling(data["pooling"]),
                normalize=bool(data["normalize"]),
                variants=variants,
                do_lower_case=bool(data.get("do_lower_case", False)),
                tokenizer=str(data.get("tokenizer", TOKENIZER_NAME)),
                format_version=version,
                architecture=dict(data.get("architecture") or {}),
                engines=list(data.get("engines") or []),
                embedrt_version=str(data.get("embedrt_version", "")),
                **_prompt_fields(data),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise BundleError(
                f"{where} is malformed ({type(err).__name__}: {err}); re-export the bundle with `embedrt export`"
            ) from err


#: Similarity functions a manifest may name (those of sentence-transformers' ``SimilarityFunction``).
SIMILARITY_FUNCTIONS = ("cosine", "dot", "euclidean", "manhattan")


def _prompt_fields(data: dict[str, Any]) -> dict[str, Any]:
    """Prompts, default prompt and similarity function of a manifest; bundles older than them get the defaults."""
    prompts = data.get("prompts") or {}
    if not isinstance(prompts, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in prompts.items()):
        raise ValueError("prompts must map names to strings")
    default = data.get("default_prompt_name")
    if default is not None and default not in prompts:
        raise ValueError(f"default_prompt_name {default!r} is not one of the prompts ({', '.join(prompts)})")
    similarity = str(data.get("similarity_fn_name") or "cosine")
    if similarity not in SIMILARITY_FUNCTIONS:
        raise ValueError(f"similarity_fn_name {similarity!r} is not one of {', '.join(SIMILARITY_FUNCTIONS)}")
    return {"prompts": dict(prompts), "default_prompt_name": default, "similarity_fn_name": similarity}


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in chunks so large graphs do not sit in memory twice."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


class Bundle:
    """A bundle directory with its parsed manifest."""

    def __init__(self, root: Path, manifest: Manifest) -> None:
        self.root = root
        self.manifest = manifest

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> Bundle:
        """Read and check a bundle's manifest; raise :class:`BundleError` saying what to do."""
        root = Path(path)
        if not root.exists():
            raise BundleError(f"bundle {root} does not exist; create it with `embedrt export SOURCE -o {root}`")
        if not root.is_dir():
            raise BundleError(f"bundle {root} is not a directory; pass the directory `embedrt export` wrote")
        manifest_path = root / MANIFEST_NAME
        if not manifest_path.is_file():
            if any(root.iterdir()):
                raise BundleError(
                    f"{root} is not an embedrt bundle (it has no {MANIFEST_NAME}); pass the directory "
                    "`embedrt export` wrote, or export into a new one: `embedrt export SOURCE -o NEW_DIR`"
                )
            raise BundleError(
                f"{root} is an empty directory, not an embedrt bundle; create one there with "
                f"`embedrt export SOURCE -o {root}`"
            )
        try:
            data = json.loads(manifest_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise BundleError(
                f"{manifest_path} is not valid JSON ({err}); the bundle is corrupt, re-export it with "
                "`embedrt export --force`"
            ) from err
        if not isinstance(data, dict):
            raise BundleError(f"{manifest_path} is not a JSON object; re-export the bundle")
        manifest = Manifest.from_dict(data, where=str(manifest_path))
        if not manifest.variants:
            raise BundleError(f"{manifest_path} lists no variants; re-export the bundle")
        return cls(root, manifest)

    @property
    def tokenizer_path(self) -> Path:
        path = self.root / self.manifest.tokenizer
        if not path.is_file():
            raise BundleError(f"{path} is missing from the bundle; re-export it with `embedrt export --force`")
        return path

    def variant(self, name: str) -> Variant:
        try:
            return self.manifest.variants[name]
        except KeyError:
            raise self.missing_variant(name) from None

    def missing_variant(self, name: str) -> BundleError:
        """The error for a variant this bundle lacks: what it has, and the export that adds the other."""
        have = ", ".join(sorted(self.manifest.variants))
        add = f"add it: `{self.export_command([name])}`" if name in VARIANT_TABLE else "no embedrt export builds it"
        return BundleError(f"bundle {self.root} has no {name!r} variant (it has: {have}); run one of those, or {add}")

    def export_command(self, add: Iterable[str] = ()) -> str:
        """The ``embedrt export`` that rebuilds this bundle from its source with its variants and those in ``add``."""
        names = [name for name in (*self.manifest.variants, *add) if name in VARIANT_TABLE]
        source, root = shlex.quote(self.manifest.source), shlex.quote(str(self.root))
        return f"embedrt export {source} -o {root} {export_flags(names)} --force"

    def variant_path(self, name: str, verify: bool = True) -> Path:
        """Path to a variant's graph; it and its data files are checked against the manifest's sha256."""
        variant = self.variant(name)
        for relative, expected in {variant.file: variant.sha256, **variant.data_files}.items():
            path = self.root / relative
            if not path.is_file():
                raise BundleError(f"{path} is missing from the bundle; re-export it with `embedrt export --force`")
            if verify:
                actual = sha256_file(path)
                if actual != expected:
                    raise BundleError(
                        f"{path} has sha256 {actual[:12]}..., the manifest expects {expected[:12]}...: the "
                        "file is corrupt or was replaced; re-export the bundle with `embedrt export --force`"
                    )
        return self.root / variant.file


def write_manifest(root: Path, manifest: Manifest) -> Path:
    """Write ``embedrt.json`` atomically: readers see the old manifest or the new one, never half."""
    path = root / MANIFEST_NAME
    with atomic_write(path, "w", encoding="utf-8") as handle:
        handle.write(manifest.to_json())
    return path


@contextlib.contextmanager
def _locked(root: Path) -> Iterator[None]:
    """An exclusive ``flock`` on the bundle's lock file (no locking where ``fcntl`` does not exist)."""
    try:
        import fcntl
    except ImportError:  # Windows: one writer at a time is the caller's business
        yield
        return
    with open(root / LOCK_NAME, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def update_manifest(root: Path, change: Callable[[Manifest], Manifest]) -> Manifest:
    """Re-read the manifest, apply ``change`` and write the result, all under the bundle's lock.

    Tools that add to an existing bundle (``embedrt build-engine``) call this at the end of their
    work, so two of them running at once both keep what they added.
    """
    with _locked(root):
        manifest = change(Bundle.open(root).manifest)
        write_manifest(root, manifest)
    return manifest
