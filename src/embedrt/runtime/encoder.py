"""The public runtime entry point: ``Encoder.load(bundle).encode(texts)``."""

from __future__ import annotations

import contextlib
import os
import threading
import warnings
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
from tokenizers import Encoding

from embedrt.bundle import Bundle, Manifest
from embedrt.errors import EmbedrtWarning, InputError, InputTypeError
from embedrt.runtime.backends.base import Backend, DevicePoolingBackend
from embedrt.runtime.backends.select import Choice, choose, open_backend
from embedrt.runtime.batching import RUN_COST_TOKENS, LengthBuckets, pad_batch, plan_batches
from embedrt.runtime.cache import EmbeddingCache
from embedrt.runtime.outputs import finish, output_options
from embedrt.runtime.overlap import (
    GPU_BATCH_SIZE,
    GPU_MAX_BATCH_TOKENS,
    GPU_RUN_COST_TOKENS,
    OVERLAP_CHUNK,
    bucket_width,
    bucket_widths,
    graph_shapes,
    overlapped,
    warm_shapes,
)
from embedrt.runtime.pooling import l2_normalize, pool
from embedrt.runtime.similarity import similarity
from embedrt.runtime.streams import StreamPool, default_streams, split_threads
from embedrt.runtime.threads import default_threads
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


#: Padded batches as ``encode`` runs them, produced lazily (on a GPU by a helper thread, stopped by ``close()``).
Batches = Generator[EncodedBatch, None, None]
Results = tuple[EncodedBatch, np.ndarray]


def _check_counts(threads: int | None, cache_size: int, streams: int | None) -> None:
    if threads is not None and threads < 1:
        raise InputError(f"threads must be >= 1, got {threads}")
    if cache_size < 0:
        raise InputError(f"cache_size must be >= 0 (0 turns the cache off), got {cache_size}")
    if streams is not None and streams < 1:
        raise InputError(f"streams must be >= 1 (1 turns streams off), got {streams}")


class Encoder:
    """Embeds texts with a bundle, giving what ``SentenceTransformer.encode`` gives for the source model."""

    def __init__(
        self,
        bundle: Bundle,
        choice: Choice,
        backend: Backend,
        tokenizer: TextTokenizer,
        cache: EmbeddingCache | None = None,
        buckets: LengthBuckets | None = None,
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
        #: The device it was loaded for (``Encoder.load(device=...)``).
        self.device = "cpu"
        #: GPU devices: batches padded on a helper thread while the device runs the previous one.
        self.overlap = False
        #: Widths a batch's padding is rounded up to (``device="cuda"``; empty: the batch's own longest text).
        self.bucket_widths: tuple[int, ...] = ()
        #: What ``encode`` uses when the caller gives no ``batch_size`` / ``max_batch_tokens``.
        self.default_batch_size = 32
        self.default_max_batch_tokens: int | None = None
        #: What one more engine run costs in padded tokens when the server plans a cycle (larger on a GPU).
        self.run_cost_tokens: float = RUN_COST_TOKENS
        #: ``(rows, width, seconds)`` of each shape run at load to warm it (``device="cuda"``).
        self.warmed: list[tuple[int, int, float]] = []
        #: ``(rows, width, seconds)`` of each CUDA graph captured last (``Encoder.load(cuda_graphs=True)``).
        self.graphed: list[tuple[int, int, float]] = []
        #: Padded widths by a text's own length (``Encoder.load(buckets=True)``); ``None``: pad to the batch.
        self.buckets = buckets
        #: Engine instances that run batches side by side when a call has several (``Encoder.load(streams=N)``).
        self.streams = 1
        self._open_streams: Callable[[], StreamPool] | None = None
        self._stream_pool: StreamPool | None = None
        self._streams_lock = threading.Lock()

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
        buckets: bool | None = None,
        warmup: bool = False,
        streams: int | None = None,
        cuda_graphs: bool = False,
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
        falls back to the next one with a warning, ``precision="int8"`` is an error. OpenVINO int8 keeps its
        fused attention, made batch-invariant by length buckets (below). ``False`` is the explicit way to ask for
        faster batch-dependent kernels: OpenVINO's fused attention over batch-wide padding, whose vectors then move
        slightly with the padded width of their batch, and an old bundle's dynamic int8 (docs/openvino.md).
        ``buckets``: pad each text to a width set by its own length (:class:`~embedrt.runtime.batching.LengthBuckets`)
        and batch only texts of one width together; a kernel then sees the same width for a text alone or in any
        batch, so OpenVINO int8 keeps its fused attention and stays batch-invariant. ``None`` (the default): on for
        OpenVINO int8 on the CPU when ``batch_invariant`` (faster for one text than attention unfused, as fast in
        throughput: ``benchmarks/results/ov_overhead.md``), off elsewhere; ``False`` there runs attention unfused
        instead, invariant too. ``warmup`` runs every width once at load, so a first request
        does not pay for a new shape (OpenVINO prepares a plan per new width; docs/openvino.md, Length buckets).
        ``streams``: engine instances that run the batches of one ``encode`` call side by side, sharing the
        threads (:mod:`embedrt.runtime.streams`; ``None`` picks from the threads, 1 turns it off); a one-batch
        call runs on the single-stream engine with every thread, and a text's vector is the same on either.
        ``cuda_graphs`` (``device="cuda"`` only; off by default until measured on a GPU): one text at each bucket width
        runs as a captured CUDA graph (:class:`~embedrt.runtime.backends.ort_cuda.GraphRunner`), on the thread that
        loaded the encoder or last called :meth:`adopt_thread`; other shapes and threads run as without. Where ONNX
        Runtime refuses graphs for the bundle, they stay off with an :class:`EmbedrtWarning` saying why.
        """
        _check_counts(threads, cache_size, streams)
        if cuda_graphs and device != "cuda":
            raise InputError(f"cuda_graphs=True needs device='cuda' (ONNX Runtime's CUDA provider), not {device!r}")
        opened = Bundle.open(bundle)
        choice = choose(opened, precision, engine, device, batch_invariant)
        manifest = opened.manifest
        tokenizer = TextTokenizer(opened.tokenizer_path, manifest.max_seq_length, manifest.do_lower_case)
        if buckets is None:
            buckets = batch_invariant and device == "cpu" and choice.engine == "openvino" and choice.precision == "int8"
        # Same width alone or in a batch: attention needs no unfusing to be batch-invariant (see LengthBuckets).
        unfused = batch_invariant and not buckets
        backend = open_backend(opened, choice, device, threads, verify=verify, spin=spin, batch_invariant=unfused)
        cache = EmbeddingCache(cache_size, manifest.dim, manifest.max_seq_length) if cache_size else None
        policy = LengthBuckets(max_length=manifest.max_seq_length) if buckets else None
        encoder = cls(opened, choice, backend, tokenizer, cache, policy)
        encoder.device = device
        if device == "cpu":
            encoder._plan_streams(choice, streams, threads or default_threads(), spin, unfused)
        else:
            encoder._prepare_gpu(cuda_graphs)
        if warmup:
            encoder.warm_up()
        return encoder

    def _plan_streams(self, choice: Choice, streams: int | None, total: int, spin: bool, unfused: bool) -> None:
        """How many stream engines a multi-batch call runs on, and how to open them (on first use)."""
        self.streams = streams or default_streams(total)
        if self.streams < 2:
            return
        opened, count = self.bundle, self.streams

        def open_streams() -> StreamPool:
            if choice.engine == "openvino":  # one compiled model, its streams share the weights
                shared = open_backend(opened, choice, "cpu", total, False, spin, unfused, streams=count)
                return StreamPool([shared] * count)
            shares = split_threads(total, count)
            return StreamPool([open_backend(opened, choice, "cpu", n, False, spin, unfused) for n in shares])

        self._open_streams = open_streams

    def _prepare_gpu(self, cuda_graphs: bool = False) -> None:
        """Overlap, GPU batch defaults, and on CUDA padded-width buckets each run once now (see :mod:`.overlap`),
        then, if asked, their CUDA graphs captured.

        TensorRT gets no buckets: its engine's profile bounds the widths, and a bucket could pass the bound.
        """
        self.overlap = True
        self.default_batch_size, self.default_max_batch_tokens = GPU_BATCH_SIZE, GPU_MAX_BATCH_TOKENS
        self.run_cost_tokens = GPU_RUN_COST_TOKENS
        if self.device == "cuda":
            self.bucket_widths = bucket_widths(self.max_seq_length)
            self.warm_shapes(self.bucket_widths)
            if cuda_graphs:
                self.capture_graphs()

    @property
    def cuda_graphs(self) -> bool:
        """Whether some batches replay CUDA graphs (asked for at load and accepted by ONNX Runtime)."""
        return getattr(self.backend, "graphs", None) is not None

    def capture_graphs(self) -> list[tuple[int, int, float]]:
        """Capture CUDA graphs of :func:`~.overlap.graph_shapes` on the calling thread (see :meth:`adopt_thread`)."""
        enable = getattr(self.backend, "enable_graphs", None)
        if enable is None:
            return []
        self.graphed = enable(graph_shapes(self.bucket_widths))
        return self.graphed

    def adopt_thread(self) -> None:
        """Make the calling thread the one whose batches replay this encoder's CUDA graphs, capturing them again
        here (ONNX Runtime keeps a graph per thread): the server calls it on its engine thread. A no-op without
        graphs."""
        if self.cuda_graphs:
            self.capture_graphs()

    def warm_shapes(self, widths: Sequence[int], rows: Sequence[int] | None = None) -> list[tuple[int, int, float]]:
        """Run each ``rows`` x ``widths`` shape once (default rows: one text and a default batch), so that a
        GPU provider's first-run work on those shapes is done before the first request; what it took is kept
        in :attr:`warmed`."""
        rows = rows if rows is not None else (1, self.default_batch_size)
        took = warm_shapes(self._run_inputs, self.backend.input_names, widths, rows, self.default_max_batch_tokens)
        self.warmed.extend(took)
        return took

    def warm_up(self) -> None:
        """Run one text of every width this encoder pads to (its buckets, else lengths 1, 2, 4, ...), so the
        engine has met each shape before the first request (OpenVINO prepares a plan per new shape)."""
        widths = self.buckets.widths() if self.buckets is not None else [2**k for k in range(10)]
        warm_shapes(self.backend.run, self.backend.input_names, [w for w in widths if w <= self.max_seq_length])

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
        return self.pack(encodings, plan_batches(lengths, batch_size, max_batch_tokens, self.buckets))

    def pack(self, encodings: Sequence[Encoding], plan: Sequence[np.ndarray]) -> list[EncodedBatch]:
        """Padded engine inputs for each group of positions in ``plan`` (from a planner in :mod:`.batching`)."""
        return [self._pack_one(encodings, positions) for positions in plan]

    def packed(self, encodings: Sequence[Encoding], plan: Sequence[np.ndarray]) -> list[EncodedBatch] | Batches:
        """:meth:`pack`; on a GPU, a plan of several runs is padded a run at a time on a helper thread while the
        device runs the run before (:func:`~.overlap.overlapped`), for ``encode`` and the server's cycles alike."""
        if self.overlap and len(plan) > 1:
            return overlapped(plan, lambda positions: self._pack_one(encodings, positions))
        return self.pack(encodings, plan)

    def _pack_one(self, encodings: Sequence[Encoding], positions: np.ndarray) -> EncodedBatch:
        """One padded batch: to its longest text, with :attr:`buckets` to that text's bucket width, and on CUDA
        rounded up to one of :attr:`bucket_widths`."""
        rows = [encodings[i] for i in positions]
        width = max(len(encoding.ids) for encoding in rows)
        if self.buckets is not None:
            width = self.buckets.width(width)
        if self.bucket_widths:
            width = bucket_width(width, self.bucket_widths)
        return EncodedBatch(positions, pad_batch(rows, "token_type_ids" in self.backend.input_names, width))

    def _run_inputs(self, inputs: dict[str, np.ndarray], backend: Backend | None = None) -> np.ndarray:
        """Sentence embeddings, not normalized: pooled by the graph on the device when it can, else in NumPy."""
        backend = backend or self.backend
        if getattr(backend, "pools_on_device", False):  # a DevicePoolingBackend (GPU variants with mean pooling)
            return cast(DevicePoolingBackend, backend).run_pooled(inputs)
        return pool(backend.run(inputs), inputs["attention_mask"], self.manifest.pooling)

    def run_batch(self, batch: EncodedBatch, normalize: bool | None = None) -> np.ndarray:
        """Sentence embeddings ``(rows, dim)`` for one batch, in the batch's row order."""
        return self._vectors(self.backend, batch, normalize)

    def run_batches(self, batches: Sequence[EncodedBatch], normalize: bool | None = None) -> Iterator[np.ndarray]:
        """:meth:`run_batch` for each batch, in order: on the streams when there are several batches and
        :attr:`streams` > 1 (the stream engines start on first use), else one after another."""
        if len(batches) < 2 or self._open_streams is None:
            return (self.run_batch(batch, normalize) for batch in batches)
        with self._streams_lock:  # two threads calling encode at once open one pool
            if self._stream_pool is None:
                self._stream_pool = self._open_streams()
        return self._stream_pool.map(lambda backend, batch: self._vectors(backend, batch, normalize), batches)

    def _vectors(self, backend: Backend, batch: EncodedBatch, normalize: bool | None) -> np.ndarray:
        embeddings = self._run_inputs(batch.inputs, backend)
        if self.manifest.normalize if normalize is None else normalize:
            embeddings = l2_normalize(embeddings)
        return embeddings.astype(np.float32, copy=False)

    def encode(
        self,
        texts: str | Iterable[str],
        batch_size: int | None = None,
        normalize: bool | None = None,
        show_progress_bar: bool | None = None,
        max_batch_tokens: int | None = None,
        *,
        prompt_name: str | None = None,
        prompt: str | None = None,
        normalize_embeddings: bool = False,
        convert_to_numpy: bool = True,
        convert_to_tensor: bool = False,
        output_value: str | None = "sentence_embedding",
        precision: str = "float32",
        truncate_dim: int | None = None,
        device: str | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> np.ndarray:
        """Embed texts as float32 ``(len(texts), dim)``; a single string gives ``(dim,)``.

        ``normalize=None`` follows the bundle (the source model's Normalize module); ``True``/``False``
        overrides it. Texts are batched by token length and returned in the caller's order. ``batch_size`` and
        ``max_batch_tokens`` default to :attr:`default_batch_size` and :attr:`default_max_batch_tokens`: 32 and
        no budget on the CPU, larger on a GPU.

        The keyword arguments after ``*`` are ``SentenceTransformer.encode``'s, with its meaning:
        ``prompt_name`` (one of the bundle's :attr:`prompts`) or ``prompt`` (text) is put before every
        text, and without either the bundle's ``default_prompt_name`` applies; ``normalize_embeddings=True``
        L2-normalizes (``False`` leaves the model's own Normalize in place); ``truncate_dim`` keeps the first
        dimensions (then normalizes, if asked); ``precision`` "binary"/"ubinary" packs sign bits.
        ``convert_to_tensor=True`` or ``convert_to_numpy=False`` (torch tensors), ``output_value`` other
        than "sentence_embedding", int8/uint8 ``precision`` and ``device`` other than the one loaded are
        refused with :class:`InputError`. ``progress`` is called with the number of texts each finished
        batch held (cache hits first).
        """
        single = isinstance(texts, str)
        items = validate_texts(texts)
        if batch_size is None:
            batch_size = self.default_batch_size
            max_batch_tokens = max_batch_tokens if max_batch_tokens is not None else self.default_max_batch_tokens
        if batch_size < 1:
            raise InputError(f"batch_size must be >= 1, got {batch_size}")
        self._check_device(device)
        if normalize_embeddings and normalize is False:
            raise InputError("normalize=False and normalize_embeddings=True contradict each other; pass one")
        options = output_options(
            self.dim, normalize_embeddings, convert_to_numpy, convert_to_tensor, output_value, precision, truncate_dim
        )
        prefix = self.prompt_text(prompt_name, prompt)
        if prefix:
            items = [prefix + item for item in items]
        if normalize_embeddings and options.truncate_dim is None:
            normalize = True
        normalized = self.manifest.normalize if normalize is None else normalize
        output = self._embed(items, batch_size, normalized, bool(show_progress_bar), max_batch_tokens, progress)
        output = finish(output, options)
        return output[0] if single else output

    def _check_device(self, device: str | None) -> None:
        if device is not None and device != self.device:
            raise InputError(
                f"encode(device={device!r}): this encoder runs on {self.device!r}; the device is chosen when "
                f"loading: Encoder.load(bundle, device={device!r})"
            )

    def _embed(
        self,
        items: list[str],
        batch_size: int,
        normalized: bool,
        show_progress_bar: bool,
        max_batch_tokens: int | None,
        progress: Callable[[int], None] | None,
    ) -> np.ndarray:
        """float32 ``(len(items), dim)``: cached vectors, then length-sorted batches through the engine."""
        output = np.empty((len(items), self.dim), dtype=np.float32)
        if self.overlap and self.cache is None and len(items) > OVERLAP_CHUNK:
            todo: list[int] = list(range(len(items)))
            keys: list[tuple[bool, bytes]] = []
            batches: Batches | list[EncodedBatch] = self._chunked_batches(items, batch_size, max_batch_tokens)
        else:
            todo, keys, batches = self._planned_batches(items, batch_size, max_batch_tokens, normalized, output)
            if progress is not None and len(todo) < len(items):
                progress(len(items) - len(todo))
        if not todo:
            return output
        bar = None
        if show_progress_bar:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(todo), desc="Embedding", unit="text")
        with contextlib.closing(self._results(batches, normalized)) as results:  # an error stops a helper thread
            for batch, vectors in results:
                rows = [todo[position] for position in batch.positions]
                output[rows] = vectors
                if self.cache is not None:
                    self.cache.put_many([keys[row] for row in rows], vectors)
                if bar is not None:
                    bar.update(len(rows))
                if progress is not None:
                    progress(len(rows))
        if bar is not None:
            bar.close()
        return output

    def _planned_batches(
        self, items: list[str], batch_size: int, max_batch_tokens: int | None, normalized: bool, output: np.ndarray
    ) -> tuple[list[int], list[tuple[bool, bytes]], Batches | list[EncodedBatch]]:
        """Rows still to run (cache hits written to ``output``), their cache keys, and their batches, planned over
        the whole input; on a GPU each batch is padded on a helper thread while the device runs the one before."""
        encodings = self.tokenize(items) if items else []
        todo = list(range(len(items)))
        keys: list[tuple[bool, bytes]] = []
        if self.cache is not None and encodings:
            keys, todo = self.cache.fill([encoding.ids for encoding in encodings], normalized, output)
        pending = [encodings[i] for i in todo]
        plan = plan_batches([len(encoding.ids) for encoding in pending], batch_size, max_batch_tokens, self.buckets)
        return todo, keys, self.packed(pending, plan)

    def _results(self, batches: Batches | list[EncodedBatch], normalized: bool) -> Generator[Results, None, None]:
        """Each batch with its vectors, in order: batches planned up front run on the streams when there are
        several; a GPU's overlapped batches run one by one as the helper thread pads them."""
        if isinstance(batches, list):
            yield from zip(batches, self.run_batches(batches, normalized), strict=True)
            return
        with contextlib.closing(batches) as ordered:  # closing this generator stops the helper thread
            for batch in ordered:
                yield batch, self.run_batch(batch, normalized)

    def _chunked_batches(self, items: list[str], batch_size: int, max_batch_tokens: int | None) -> Batches:
        """GPU, many texts, no cache: chunks of :data:`OVERLAP_CHUNK` texts, each tokenized, planned and padded on a
        helper thread while the device runs the chunk before (a text's vector does not depend on its batch)."""

        def make(start: int) -> list[EncodedBatch]:
            try:
                encodings = self.tokenize(items[start : start + OVERLAP_CHUNK])
            except InputError:
                self.tokenize(items)  # raises the same error, naming the text's index in the whole input
                raise
            plan = plan_batches(
                [len(encoding.ids) for encoding in encodings], batch_size, max_batch_tokens, self.buckets
            )
            return [
                EncodedBatch(batch.positions + start, batch.inputs)
                for batch in (self._pack_one(encodings, positions) for positions in plan)
            ]

        with contextlib.closing(overlapped(range(0, len(items), OVERLAP_CHUNK), make, ahead=1)) as chunks:
            for chunk in chunks:
                yield from chunk

    def encode_query(self, texts: str | Iterable[str], **kwargs: Any) -> np.ndarray:
        """``encode`` with the bundle's "query" prompt when the caller gives none (as sentence-transformers)."""
        return self.encode(texts, **self._task_prompt(("query",), kwargs))

    def encode_document(self, texts: str | Iterable[str], **kwargs: Any) -> np.ndarray:
        """``encode`` with the first of the "document", "passage", "corpus" prompts the bundle has, as
        ``SentenceTransformer.encode_document`` does, when the caller gives none."""
        return self.encode(texts, **self._task_prompt(("document", "passage", "corpus"), kwargs))

    def _task_prompt(self, names: Sequence[str], kwargs: dict[str, Any]) -> dict[str, Any]:
        if kwargs.get("prompt_name") is None and kwargs.get("prompt") is None:
            found = next((name for name in names if name in self.manifest.prompts), None)
            if found is not None:
                return {**kwargs, "prompt_name": found}
        return kwargs

    @property
    def prompts(self) -> dict[str, str]:
        """The source model's prompts, name -> text (``config_sentence_transformers.json``)."""
        return dict(self.manifest.prompts)

    @property
    def default_prompt_name(self) -> str | None:
        return self.manifest.default_prompt_name

    def prompt_text(self, prompt_name: str | None = None, prompt: str | None = None) -> str:
        """The text put before each input, as sentence-transformers resolves it ("" for none).

        ``prompt`` wins over ``prompt_name`` (with a warning, as sentence-transformers warns); a name the
        bundle does not define raises :class:`InputError` listing those it does; neither given: the
        bundle's default prompt, if it has one.
        """
        if prompt is not None:
            if not isinstance(prompt, str):
                raise InputTypeError(f"prompt must be a string, got {type(prompt).__name__}")
            if prompt_name is not None:
                warnings.warn(
                    f"both prompt and prompt_name={prompt_name!r} given: using prompt, ignoring prompt_name "
                    "(as sentence-transformers does); pass one",
                    EmbedrtWarning,
                    stacklevel=3,
                )
            return prompt
        if prompt_name is None:
            default = self.manifest.default_prompt_name
            return self.manifest.prompts.get(default, "") if default is not None else ""
        if prompt_name not in self.manifest.prompts:
            names = ", ".join(repr(name) for name in self.manifest.prompts)
            have = f"it has: {names}" if names else "its source model defines none"
            raise InputError(
                f"unknown prompt_name {prompt_name!r} (bundle {self.bundle.root}: {have}); "
                "pass one of those, or the text itself as prompt"
            )
        return self.manifest.prompts[prompt_name]

    def get_sentence_embedding_dimension(self) -> int:
        """The size of the vectors ``encode`` returns (sentence-transformers' name for :attr:`dim`)."""
        return self.dim

    get_embedding_dimension = get_sentence_embedding_dimension

    @property
    def similarity_fn_name(self) -> str:
        """The source model's similarity function (cosine unless its config says otherwise)."""
        return self.manifest.similarity_fn_name

    def similarity(self, embeddings1: Any, embeddings2: Any) -> np.ndarray:
        """float32 ``(len(embeddings1), len(embeddings2))`` scores with :attr:`similarity_fn_name`.

        As ``SentenceTransformer.similarity``, but a NumPy array: cosine (the default), dot, or the
        negative euclidean or manhattan distance. One vector ``(dim,)`` counts as one row.
        """
        return similarity(embeddings1, embeddings2, self.manifest.similarity_fn_name)

    def __repr__(self) -> str:
        return (
            f"Encoder(bundle={str(self.bundle.root)!r}, precision={self.precision!r}, "
            f"engine={self.backend.name!r}, dim={self.dim})"
        )
