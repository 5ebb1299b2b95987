"""The public runtime entry point: ``Encoder.load(bundle).encode(texts)``."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from tokenizers import Encoding

from embedrt.bundle import Bundle, Manifest
from embedrt.errors import InputError, InputTypeError
from embedrt.runtime.backends.base import Backend
from embedrt.runtime.backends.select import Choice, choose, open_backend
from embedrt.runtime.batching import pad_batch, plan_batches
from embedrt.runtime.cache import EmbeddingCache
from embedrt.runtime.pooling import l2_normalize, pool
from embedrt.runtime.tokenizer import TextTokenizer


def validate_texts(texts: str | Iterable[str]) -> list[str]:
    """The caller's texts as a list of ``str``; a non-string item raises naming its index."""
    if isinstance(texts, str):
        return [texts]
    if isinstance(texts, (bytes, dict)) or not isinstance(texts, Iterable):
        raise InputTypeError(f"texts must be a string or a list of strings, got {type(texts).__name__}")
    items = list(texts)
    for index, item in enumerate(items):
        if not isinstance(item, str):
            raise InputTypeError(f"texts[{index}] is {type(item).__name__}, expected str")
    return items


@dataclass(frozen=True)
class EncodedBatch:
    """One padded batch ready for an engine, and where its rows go in the caller's order."""

    positions: np.ndarray
    inputs: dict[str, np.ndarray]


class Encoder:
    """Embeds texts with a bundle, giving what ``SentenceTransformer.encode`` gives for the source model."""

    def __init__(
        self,
        bundle: Bundle,
        choice: Choice,
        backend: Backend,
        tokenizer: TextTokenizer,
        cache: EmbeddingCache | None = None,
    ) -> None:
        self.bundle = bundle
        self.manifest: Manifest = bundle.manifest
        #: The precision the engine computes in (``int8``, ``bf16``, ...), the engine, and the variant read.
        self.precision = choice.precision
        self.engine = choice.engine
        self.variant = choice.variant
        self.backend = backend
        self.tokenizer = tokenizer
        #: Vectors of texts seen before (``Encoder.load(cache_size=N)``); ``None`` when off.
        self.cache = cache

    @classmethod
    def load(
        cls,
        bundle: str | os.PathLike[str],
        precision: str = "auto",
        device: str = "cpu",
        threads: int | None = None,
        verify: bool = True,
        cache_size: int = 0,
        engine: str = "auto",
        spin: bool = True,
        batch_invariant: bool = True,
    ) -> Encoder:
        """Open a bundle and start its engine.

        ``precision="auto"`` takes int8 on CPU and fp16 on CUDA when the bundle has them, else fp32;
        ``"bf16"`` runs OpenVINO's fp32 IR in bfloat16 on CPUs with native bf16. ``engine="auto"`` picks,
        for the precision, the first of the engines :data:`embedrt.runtime.devices.CPU_ENGINES` lists that
        the bundle has a variant for and that is installed; ``"onnxruntime"`` or ``"openvino"`` insist.
        ``threads`` defaults to the CPUs this process may use (its affinity, capped by a container's
        CPU quota). ``verify`` checks the graph's sha256. ``cache_size`` > 0 keeps that many embeddings
        of texts already seen and returns them without running the model (see :mod:`embedrt.runtime.cache`).
        ``spin``: ONNX Runtime's threads busy-wait between operators (ONNX Runtime's default; a little faster
        for back-to-back batches, CPU burnt while idle or sharing cores); the server turns it off.
        ``batch_invariant``: a text's vector does not depend on its batch-mates. Variants that cannot promise
        it (ONNX Runtime's dynamic int8 in bundles exported before static scales) are never chosen: ``auto``
        falls back to the next one with a warning, ``precision="int8"`` is an error. OpenVINO int8 runs
        attention unfused. ``False`` is the explicit way to ask for faster batch-dependent kernels: OpenVINO's
        fused attention, about 7% faster for one text (Zen 4), whose vectors then move by up to ~3e-4 cosine
        with the padded width of their batch, and an old bundle's dynamic int8 (docs/openvino.md).
        """
        if threads is not None and threads < 1:
            raise InputError(f"threads must be >= 1, got {threads}")
        if cache_size < 0:
            raise InputError(f"cache_size must be >= 0 (0 turns the cache off), got {cache_size}")
        opened = Bundle.open(bundle)
        choice = choose(opened, precision, engine, device, batch_invariant)
        manifest = opened.manifest
        tokenizer = TextTokenizer(opened.tokenizer_path, manifest.max_seq_length, manifest.do_lower_case)
        backend = open_backend(
            opened, choice, device, threads, verify=verify, spin=spin, batch_invariant=batch_invariant
        )
        cache = EmbeddingCache(cache_size, manifest.dim, manifest.max_seq_length) if cache_size else None
        return cls(opened, choice, backend, tokenizer, cache)

    @property
    def dim(self) -> int:
        return self.manifest.dim

    @property
    def max_seq_length(self) -> int:
        return self.manifest.max_seq_length

    def tokenize(self, texts: Sequence[str]) -> list[Encoding]:
        """Token ids for validated strings, truncated like the reference."""
        return self.tokenizer.encode(texts)

    def batches(
        self, encodings: Sequence[Encoding], batch_size: int = 32, max_batch_tokens: int | None = None
    ) -> list[EncodedBatch]:
        """Length-sorted padded batches; each remembers the positions of its rows."""
        lengths = [len(encoding.ids) for encoding in encodings]
        return self.pack(encodings, plan_batches(lengths, batch_size, max_batch_tokens))

    def pack(self, encodings: Sequence[Encoding], plan: Sequence[np.ndarray]) -> list[EncodedBatch]:
        """Padded engine inputs for each group of positions in ``plan`` (from a planner in :mod:`.batching`)."""
        with_types = "token_type_ids" in self.backend.input_names
        return [EncodedBatch(positions, pad_batch([encodings[i] for i in positions], with_types)) for positions in plan]

    def run_batch(self, batch: EncodedBatch, normalize: bool | None = None) -> np.ndarray:
        """Sentence embeddings ``(rows, dim)`` for one batch, in the batch's row order."""
        hidden = self.backend.run(batch.inputs)
        embeddings = pool(hidden, batch.inputs["attention_mask"], self.manifest.pooling)
        if self.manifest.normalize if normalize is None else normalize:
            embeddings = l2_normalize(embeddings)
        return embeddings.astype(np.float32, copy=False)

    def encode(
        self,
        texts: str | Iterable[str],
        batch_size: int = 32,
        normalize: bool | None = None,
        show_progress_bar: bool | None = None,
        max_batch_tokens: int | None = None,
    ) -> np.ndarray:
        """Embed texts as float32 ``(len(texts), dim)``; a single string gives ``(dim,)``.

        ``normalize=None`` follows the bundle (the source model's Normalize module). Texts are
        batched by token length and returned in the caller's order.
        """
        single = isinstance(texts, str)
        items = validate_texts(texts)
        if batch_size < 1:
            raise InputError(f"batch_size must be >= 1, got {batch_size}")
        normalized = self.manifest.normalize if normalize is None else normalize
        output = np.empty((len(items), self.dim), dtype=np.float32)
        encodings = self.tokenize(items) if items else []
        todo = list(range(len(items)))
        keys: list[tuple[bool, bytes]] = []
        if self.cache is not None and encodings:
            keys, todo = self.cache.fill([encoding.ids for encoding in encodings], normalized, output)
        if todo:
            progress = None
            if show_progress_bar:
                from tqdm.auto import tqdm

                progress = tqdm(total=len(todo), desc="Embedding", unit="text")
            for batch in self.batches([encodings[i] for i in todo], batch_size, max_batch_tokens):
                rows = [todo[position] for position in batch.positions]
                vectors = self.run_batch(batch, normalized)
                output[rows] = vectors
                if self.cache is not None:
                    self.cache.put_many([keys[row] for row in rows], vectors)
                if progress is not None:
                    progress.update(len(rows))
            if progress is not None:
                progress.close()
        return output[0] if single else output

    def __repr__(self) -> str:
        return (
            f"Encoder(bundle={str(self.bundle.root)!r}, precision={self.precision!r}, "
            f"engine={self.backend.name!r}, dim={self.dim})"
        )
