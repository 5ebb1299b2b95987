"""Load the source model and read its pipeline into one typed description, at the boundary."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from embedrt.bundle import Pooling
from embedrt.errors import ExportError
from embedrt.extras import missing_extra

DEFAULT_SOURCE = "DMetaSoul/sbert-chinese-qmc-domain-v1"
#: sentence-transformers pooling modes and what embedrt calls them; other modes are refused.
POOLING_MODES = {"mean": Pooling.MEAN, "cls": Pooling.CLS, "max": Pooling.MAX}
SUPPORTED_MODEL_TYPES = ("bert",)


@dataclass(frozen=True)
class SourceModel:
    """A loaded sentence-transformers model and the facts about it the bundle records."""

    model: Any  # sentence_transformers.SentenceTransformer
    source: str
    pooling: Pooling
    normalize: bool
    max_seq_length: int
    dim: int
    do_lower_case: bool
    num_layers: int
    hidden_size: int
    num_heads: int
    prompts: dict[str, str] = field(default_factory=dict)
    default_prompt_name: str | None = None
    similarity_fn_name: str = "cosine"
    #: What was assumed rather than read from the model's files, said during the export.
    notes: tuple[str, ...] = ()

    @property
    def transformer(self) -> Any:
        """The Hugging Face ``PreTrainedModel`` inside the first module."""
        return self.model[0].auto_model

    def bundle_tokenizer(self) -> Any:
        """A copy of the model's fast tokenizer set up as the bundle ships it: truncating, never padding."""
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_str(self.model.tokenizer.backend_tokenizer.to_str())
        tokenizer.no_padding()
        tokenizer.enable_truncation(max_length=self.max_seq_length)
        return tokenizer

    @property
    def architecture(self) -> dict[str, Any]:
        return {
            "model_type": self.transformer.config.model_type,
            "num_layers": self.num_layers,
            "hidden_size": self.hidden_size,
            "num_heads": self.num_heads,
            "intermediate_size": self.transformer.config.intermediate_size,
            "vocab_size": self.transformer.config.vocab_size,
            "parameters": sum(p.numel() for p in self.transformer.parameters()),
        }


def _hub_reachable(timeout: float = 3.0) -> bool:
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    parsed = urlparse(endpoint)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((parsed.hostname or "huggingface.co", port), timeout=timeout):
            return True
    except OSError:
        return False


def resolve_source(source: str) -> Path:
    """A local model directory for ``source``: the directory itself, or a hub snapshot (cached or fetched)."""
    path = Path(source).expanduser()
    if path.is_dir():
        if not (path / "modules.json").is_file() and not (path / "config.json").is_file():
            raise ExportError(
                f"{path} is not a sentence-transformers model directory (no modules.json or config.json); "
                "pass the directory that SentenceTransformer.save() wrote"
            )
        return path
    if path.exists() or source.startswith((".", "/", "~")) or source.count("/") != 1:
        raise ExportError(f"{source} is neither a model directory nor a hub id like 'owner/name'")
    try:
        from huggingface_hub import snapshot_download
    except ImportError as err:
        raise missing_extra("huggingface_hub", "exporting a hub model") from err
    try:
        return Path(snapshot_download(source, local_files_only=True))
    except Exception:  # not cached: fall through to the network, checked quickly first
        pass
    if os.environ.get("HF_HUB_OFFLINE") == "1" or not _hub_reachable():
        raise ExportError(
            f"cannot download {source!r}: the model hub is not reachable from here; download the model "
            "elsewhere (SentenceTransformer(id).save(dir)) and pass that local directory instead"
        )
    try:
        return Path(snapshot_download(source))
    except Exception as err:
        raise ExportError(
            f"downloading {source!r} failed ({str(err).splitlines()[0]}); check the id, or pass a local "
            "sentence-transformers directory"
        ) from err


def _pooling_of(module: Any) -> Pooling:
    mode = module.pooling_mode
    if not isinstance(mode, str) or mode not in POOLING_MODES:
        raise ExportError(f"pooling mode {mode!r} is not supported; embedrt supports: {', '.join(POOLING_MODES)}")
    return POOLING_MODES[mode]


def _quiet_transformers() -> None:
    """Silence per-weight progress bars and load reports; the export prints its own progress."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def _check_pooling_flag(source: str, pooling: str | None, plain: bool) -> None:
    """``--pooling`` names a known mode, and is given for a plain Hugging Face model (which records none)."""
    if pooling is not None and pooling not in POOLING_MODES:
        raise ExportError(f"--pooling {pooling!r} is not one of: {', '.join(POOLING_MODES)}")
    if plain and pooling is None:
        raise ExportError(
            f"{source} has no modules.json (a plain Hugging Face model), so how it turns token embeddings into "
            f"one sentence embedding is not recorded; pass --pooling {'|'.join(POOLING_MODES)} as the model "
            "was trained (its model card says; sentence-transformers would silently assume mean)"
        )


def _checked_transformer(model: Any, source: str, max_seq_length: int | None) -> Any:
    """The transformer's Hugging Face config, once its type, ``--max-seq-length`` and tokenizer are checked;
    applies ``max_seq_length`` to ``model``."""
    first: Any = model[0]  # the Transformer module; typed loosely, like the Hugging Face config it holds
    config: Any = first.auto_model.config
    if config.model_type not in SUPPORTED_MODEL_TYPES:
        raise ExportError(
            f"{source}: model type {config.model_type!r} is not supported (embedrt exports: "
            f"{', '.join(SUPPORTED_MODEL_TYPES)})"
        )
    if max_seq_length is not None:
        if not 1 <= max_seq_length <= config.max_position_embeddings:
            raise ExportError(
                f"--max-seq-length {max_seq_length} is outside 1..{config.max_position_embeddings} "
                "(the model's position embeddings)"
            )
        model.max_seq_length = max_seq_length
    if not getattr(model.tokenizer, "is_fast", False):
        raise ExportError(f"{source}: the tokenizer has no fast (Rust) version; embedrt needs tokenizer.json")
    return config


def load_source(source: str, max_seq_length: int | None = None, pooling: str | None = None) -> SourceModel:
    """Load a sentence-transformers model on the CPU with eager attention (what fuses in ONNX).

    The source is found first (a wrong path fails in milliseconds, before torch is imported). A plain
    Hugging Face model (no ``modules.json``) does not say how it pools, so ``pooling`` must name it.
    """
    directory = resolve_source(source)
    plain = not (directory / "modules.json").is_file()
    _check_pooling_flag(source, pooling, plain)
    model = _sentence_transformer(directory)
    if plain and len(model) > 1:  # sentence-transformers built Transformer, Pooling(mean): pool as asked
        pooling_module: Any = model[1]
        pooling_module.pooling_mode = pooling
    pooled, normalize = _pipeline_of(model, source)
    if pooling is not None and not plain and pooled.value != pooling:
        raise ExportError(
            f"--pooling {pooling} contradicts {source}'s modules.json ({pooled.value}); drop --pooling, which is "
            "only for plain Hugging Face models"
        )

    config = _checked_transformer(model, source, max_seq_length)
    length = int(model.max_seq_length or config.max_position_embeddings)
    notes: tuple[str, ...] = ()
    if plain:
        notes = (
            f"{source} has no modules.json: pooling {pooling} (from --pooling), no normalization, max_seq_length "
            f"{length} (from its tokenizer and config; --max-seq-length changes it)",
        )
    return SourceModel(
        model=model,
        source=source,
        pooling=pooled,
        normalize=normalize,
        max_seq_length=length,
        dim=int(model.get_embedding_dimension() or config.hidden_size),
        do_lower_case=bool(getattr(model[0], "do_lower_case", False)),
        num_layers=int(config.num_hidden_layers),
        hidden_size=int(config.hidden_size),
        num_heads=int(config.num_attention_heads),
        notes=notes,
        **_prompt_facts(model),
    )


def _prompt_facts(model: Any) -> dict[str, Any]:
    """Prompts, default prompt and similarity function from ``config_sentence_transformers.json``."""
    prompts = {str(name): str(text) for name, text in (getattr(model, "prompts", None) or {}).items()}
    default = getattr(model, "default_prompt_name", None)
    return {
        "prompts": prompts,
        "default_prompt_name": str(default) if default in prompts else None,
        "similarity_fn_name": str(getattr(model, "similarity_fn_name", None) or "cosine"),
    }


def _sentence_transformer(directory: Path) -> Any:
    """``SentenceTransformer(directory)`` on the CPU, eager attention, nothing downloaded; errors in one line."""
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError as err:
        raise missing_extra("sentence-transformers", "embedrt export") from err
    _quiet_transformers()
    try:
        model = SentenceTransformer(
            str(directory), device="cpu", model_kwargs={"attn_implementation": "eager"}, local_files_only=True
        )
    except Exception as err:
        raise ExportError(f"sentence-transformers could not load {directory}: {str(err).splitlines()[0]}") from err
    model.eval()
    return model


def _pipeline_of(model: Any, source: str) -> tuple[Pooling, bool]:
    """The pooling and whether a Normalize module follows, from the modules after the Transformer."""
    names = [type(module).__name__ for module in model]
    if not names or names[0] != "Transformer" or not hasattr(model[0], "auto_model"):
        raise ExportError(f"{source}: expected a Transformer first module, found {names}")
    pooling: Pooling | None = None
    normalize = False
    for module, name in zip(list(model)[1:], names[1:], strict=True):
        if name == "Pooling":
            pooling = _pooling_of(module)
            if getattr(module, "include_prompt", True) is False:
                raise ExportError(
                    f"{source}: its Pooling leaves prompt tokens out (include_prompt=false), which embedrt does "
                    "not reproduce; it pools every token"
                )
        elif name == "Normalize":
            normalize = True
        else:
            raise ExportError(
                f"{source}: module {name} is not supported (embedrt runs Transformer, Pooling, Normalize)"
            )
    if pooling is None:
        raise ExportError(f"{source}: no Pooling module; embedrt needs one to make sentence embeddings")
    return pooling, normalize
