"""ONNX Runtime on an NVIDIA GPU: the CUDA provider, with IO binding.

ONNX Runtime quietly falls back to the CPU when a GPU provider cannot start (missing CUDA
libraries, no device): it logs a warning and carries on. Serving at CPU speed while the caller
asked for a GPU is a bug, so every session here checks the providers it actually got.

With CUDA and cuDNN installed from pip (``onnxruntime-gpu[cuda,cudnn]``, what ``embedrt[gpu]``
installs) the libraries sit in ``site-packages/nvidia/`` where the dynamic loader does not look;
``import torch`` happens to load them, a torch-free process must call ``onnxruntime.preload_dlls()``
(onnxruntime >= 1.21) before its first CUDA or TensorRT session. :func:`gpu_session` does.
"""

from __future__ import annotations

import contextlib
import io
import threading
import time
import warnings
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np

from embedrt.errors import BackendError, EmbedrtWarning
from embedrt.extras import install_command
from embedrt.runtime.backends.cuda_arch import check_cuda_kernels, explain_kernel_error
from embedrt.runtime.backends.ort import import_onnxruntime

GPU_INSTALL = f"pip uninstall -y onnxruntime && {install_command('gpu')}  (onnxruntime-gpu)"


#: What ``preload_dlls()`` said, by the id of the onnxruntime module it was called on: once per process.
_PRELOADED: dict[int, str] = {}


def preload_cuda_libraries(ort: Any) -> str:
    """Call ``ort.preload_dlls()`` once per process where this onnxruntime has it; return what it printed.

    It prints (to stdout) the libraries it could not load; that text is kept for the error raised
    if the provider then fails to start, and kept off stdout, which may carry embeddings.
    """
    preload = getattr(ort, "preload_dlls", None)
    if preload is None:
        return ""
    if id(ort) not in _PRELOADED:
        said = io.StringIO()
        try:
            with contextlib.redirect_stdout(said):
                preload()
            _PRELOADED[id(ort)] = " ".join(said.getvalue().split())
        except (OSError, RuntimeError) as err:
            _PRELOADED[id(ort)] = f"onnxruntime.preload_dlls() failed: {err}"
    return _PRELOADED[id(ort)]


def _install_advice() -> str:
    """How to get the GPU build; both builds installed write one module, and the one installed last wins."""
    found = {}
    for distribution in ("onnxruntime", "onnxruntime-gpu"):
        try:
            found[distribution] = version(distribution)
        except PackageNotFoundError:
            continue
    if len(found) < 2:
        return f"install the GPU build: {GPU_INSTALL}"
    return (
        f"onnxruntime {found['onnxruntime']} and onnxruntime-gpu {found['onnxruntime-gpu']} are both installed and "
        f"share one module: pip uninstall -y onnxruntime onnxruntime-gpu && {install_command('gpu')}"
    )


def _preload_note(said: str) -> str:
    return f" (onnxruntime.preload_dlls() said: {said})" if said else ""


def gpu_session(model_path: Path, providers: Sequence[tuple[str, dict[str, Any]]], threads: int = 1) -> Any:
    """An ``InferenceSession`` whose first provider really is ``providers[0]``, else :class:`BackendError`.

    The CPU provider is appended for the few shape ops GPU providers hand back; ``threads`` sizes its pool.
    """
    ort = import_onnxruntime()
    wanted = providers[0][0]
    available = ort.get_available_providers()
    if wanted not in available:
        raise BackendError(
            f"ONNX Runtime here has no {wanted} (available: {', '.join(available)}); {_install_advice()}"
        )
    said = preload_cuda_libraries(ort)
    if wanted == "CUDAExecutionProvider":
        check_cuda_kernels(ort, int(providers[0][1].get("device_id", 0)))
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(
            str(model_path), sess_options=options, providers=[*providers, "CPUExecutionProvider"]
        )
    except Exception as err:  # ORT raises its own exception types, not exported stably
        raise BackendError(
            f"ONNX Runtime could not start {wanted} on {model_path.name}: {err}"
            f"{explain_kernel_error(err)}{_preload_note(said)}"
        ) from err
    active = session.get_providers()
    if not active or active[0] != wanted:
        raise BackendError(
            f"ONNX Runtime could not start {wanted} (it fell back to {', '.join(active) or 'nothing'}): no usable "
            "GPU, or the CUDA/cuDNN/TensorRT libraries it needs are missing; check `nvidia-smi` and the "
            f"install matrix in docs/gpu.md{_preload_note(said)}. embedrt does not run a GPU request on the CPU"
        )
    return session


#: Input shapes whose device buffers a runner keeps (least recently used dropped first): padded-width
#: buckets and a few batch sizes give a handful of shapes; int64 ids are small next to the model.
KEPT_SHAPES = 64


class _Bound:
    """One shape's IO binding: device-resident inputs (rewritten in place) and, when small, its output."""

    def __init__(self, binding: Any, inputs: dict[str, Any], output: Any | None) -> None:
        self.binding = binding
        self.inputs = inputs
        self.output = output


class BoundRunner:
    """Runs one session through IO binding, reusing device buffers for shapes seen before.

    Inputs are copied into device OrtValues kept per input shape (``update_inplace``: the same device
    addresses every run, no allocation). ``output`` names the output to read: the pooled ``(batch, dim)``
    one gets a kept device buffer too; the unpooled ``(batch, seq, dim)`` one is left to ONNX Runtime's
    arena (keeping one per shape would hold hundreds of MB) and copied to the host once.
    """

    def __init__(
        self,
        session: Any,
        device: str = "cuda",
        device_id: int = 0,
        output: str | None = None,
        keep: int | None = KEPT_SHAPES,
        lock: threading.Lock | None = None,
    ) -> None:
        self._session = session
        self._device = device
        self._device_id = device_id
        self.input_names = tuple(node.name for node in session.get_inputs())
        outputs = {node.name: node for node in session.get_outputs()}
        self.output_name = output or next(iter(outputs))
        if self.output_name not in outputs:
            raise BackendError(f"the graph has no output {self.output_name!r} (it has: {', '.join(outputs)})")
        shape: Sequence[Any] = getattr(outputs[self.output_name], "shape", None) or ()
        #: The pooled output's width when the graph states it: then its buffer is kept per batch size.
        self._kept_width = shape[1] if len(shape) == 2 and isinstance(shape[1], int) else None
        self._bound: OrderedDict[tuple[int, ...], _Bound] = OrderedDict()
        #: Shapes whose buffers are kept (least recently used dropped first); ``None``: every shape, forever.
        self._keep = keep
        #: Held while a batch is prepared, run and read: shared by the runners of one backend (see GraphRunner).
        self.lock = lock or threading.Lock()

    def _binding_for(self, shape: tuple[int, ...]) -> _Bound:
        bound = self._bound.get(shape)
        if bound is not None:
            self._bound.move_to_end(shape)
            return bound
        ort = import_onnxruntime()
        binding = self._session.io_binding()
        inputs = {}
        for name in self.input_names:
            value = ort.OrtValue.ortvalue_from_shape_and_type(shape, np.int64, self._device, self._device_id)
            binding.bind_ortvalue_input(name, value)
            inputs[name] = value
        output = None
        if self._kept_width is not None:
            output = ort.OrtValue.ortvalue_from_shape_and_type(
                (shape[0], self._kept_width), np.float32, self._device, self._device_id
            )
            binding.bind_ortvalue_output(self.output_name, output)
        else:  # allocated by ORT on the device at the shape it computes
            binding.bind_output(self.output_name, self._device, self._device_id)
        bound = self._bound[shape] = _Bound(binding, inputs, output)
        if self._keep is not None and len(self._bound) > self._keep:
            self._bound.popitem(last=False)
        return bound

    def prepare(self, batch: Mapping[str, np.ndarray]) -> _Bound:
        """The batch's inputs copied into the device buffers of its shape (the engine-alone benchmark times
        :meth:`execute` on such prepared bindings: inputs resident, output left on the device)."""
        bound = self._binding_for(tuple(batch["input_ids"].shape))
        for name, value in bound.inputs.items():
            value.update_inplace(np.ascontiguousarray(batch[name], dtype=np.int64))
        # update_inplace copies with a plain cudaMemcpy, whose DMA from pageable memory may still be under way
        # when it returns, and the session runs on a stream of its own: wait for the copies, as ONNX Runtime's
        # own IO-binding and CUDA-graph tests do before each run.
        bound.binding.synchronize_inputs()
        return bound

    def execute(self, bound: _Bound, run_options: Any = None) -> None:
        """Run the graph on prepared buffers; ONNX Runtime returns once the device has finished."""
        if run_options is None:
            self._session.run_with_iobinding(bound.binding)
        else:
            self._session.run_with_iobinding(bound.binding, run_options)

    def run(self, batch: Mapping[str, np.ndarray], run_options: Any = None) -> np.ndarray:
        """The output for one batch as float32 on the host (``run_options``: ONNX Runtime's, e.g. a graph id)."""
        try:
            with self.lock:  # the kept buffers are this shape's, whichever thread calls
                bound = self.prepare(batch)
                self.execute(bound, run_options)
                if bound.output is not None:  # a copy: on the CPU device numpy() shares the kept buffer
                    return np.array(bound.output.numpy(), dtype=np.float32, copy=True)
                result = bound.binding.copy_outputs_to_cpu()[0]
        except Exception as err:
            raise BackendError(
                f"ONNX Runtime failed on a batch of shape {batch['input_ids'].shape}: {err}{explain_kernel_error(err)}"
            ) from err
        return np.asarray(result, dtype=np.float32)


#: ONNX Runtime's run option naming the CUDA graph a run captures or replays (``gpu_graph_id``, ONNX Runtime >= 1.18,
#: ``onnxruntime_run_options_config_keys.h``): ids from 1 (0 is its default id, "reserved for internal use"); -1
#: runs without a graph.
GRAPH_ID_KEY = "gpu_graph_id"
#: Runs of one graph id that capture it: the CUDA provider makes ``min_num_runs_before_cuda_graph_capture_`` (2)
#: regular runs of an id first, so that the arena has allocated what the run needs (no allocation may happen
#: while capturing), captures on the next, and replays from then on.
CAPTURE_RUNS = 3


class GraphRunner:
    """CUDA graphs of a few fixed input shapes, on a session of their own opened with ``enable_cuda_graph``.

    What ONNX Runtime's CUDA provider requires, read from its source (``inference_session.cc``,
    ``cuda_execution_provider.cc``, ``cuda_graph.cc``; none of it has run here, see docs/gpu.md):

    - every compute node on the CUDA provider: shape nodes on the CPU are allowed, a ``Memcpy`` node is not,
      and then the session refuses to start (so does a graph with ``If``/``Loop``/``Scan``). The graph session
      is a second session, so such a refusal leaves the normal one as it was;
    - one graph per input shape, named by the ``gpu_graph_id`` run option, and captured on its third run;
    - inputs AND outputs at the same device addresses on every replay: the buffers of a graph's shape are kept
      for the runner's life (never dropped, unlike :class:`BoundRunner`'s), and only an output whose size the
      graph states (the pooled ``(batch, dim)``) can be bound to a kept buffer, so only pooled graphs qualify;
    - graphs are kept per calling thread (the provider's per-thread context) and captured in
      ``cudaStreamCaptureModeGlobal``: no other thread may make a CUDA call while one captures. Graphs are
      replayed for the thread that captured them (:attr:`owner`) only; another thread gets ``None`` from
      :meth:`run` and the caller runs its normal session. :meth:`capture` on another thread moves them there.
    """

    def __init__(
        self, session: Any, device: str, device_id: int, output: str, lock: threading.Lock | None = None
    ) -> None:
        self._runner = BoundRunner(session, device, device_id, output, keep=None, lock=lock)
        if self._runner._kept_width is None:
            raise BackendError(
                f"the graph's {output!r} output does not state its width; a CUDA graph needs it bound to a kept buffer"
            )
        self.input_names = self._runner.input_names
        self._options: dict[tuple[int, ...], Any] = {}
        #: The thread the graphs were captured on and are replayed for.
        self.owner: int | None = None

    @property
    def shapes(self) -> tuple[tuple[int, ...], ...]:
        """The input shapes that have a graph."""
        return tuple(self._options)

    def capture(self, shapes: Sequence[tuple[int, int]]) -> list[tuple[int, int, float]]:
        """Capture one graph per ``(rows, width)`` on the calling thread; ``(rows, width, seconds)`` each."""
        ort = import_onnxruntime()
        self.owner = threading.get_ident()
        took = []
        for number, (rows, width) in enumerate(shapes, start=len(self._options) + 1):
            options = self._options.get((rows, width))
            if options is None:
                options = ort.RunOptions()
                options.add_run_config_entry(GRAPH_ID_KEY, str(number))
            ones = np.ones((rows, width), dtype=np.int64)
            batch = {"input_ids": np.zeros_like(ones), "attention_mask": ones, "token_type_ids": np.zeros_like(ones)}
            started = time.perf_counter()
            for _ in range(CAPTURE_RUNS):
                self._runner.run({name: batch[name] for name in self.input_names}, options)
            self._options[(rows, width)] = options
            took.append((rows, width, time.perf_counter() - started))
        return took

    def run(self, batch: Mapping[str, np.ndarray]) -> np.ndarray | None:
        """The graph's output for ``batch`` when its shape has a graph for this thread, else ``None``."""
        options = self._options.get(tuple(batch["input_ids"].shape))
        if options is None or threading.get_ident() != self.owner:
            return None
        return self._runner.run(batch, options)


class OrtCudaBackend:
    """A bundle graph (fp16 fused, or fp32) on ONNX Runtime's CUDA provider.

    With ``pooled_output`` (a graph output holding the mean-pooled embeddings, see
    ``export/device_pooling.py``) :meth:`run_pooled` returns ``(batch, dim)`` and the encoder skips host pooling.
    """

    #: Opens the session CUDA graphs are captured on (:meth:`enable_graphs`); ``None``: none can be opened.
    _graph_session: Callable[[], Any] | None

    def __init__(
        self, model_path: Path, device_id: int = 0, threads: int = 1, pooled_output: str | None = None
    ) -> None:
        options = {"device_id": device_id, "arena_extend_strategy": "kSameAsRequested"}
        session = gpu_session(model_path, [("CUDAExecutionProvider", options)], threads)
        self._start(session, "cuda", device_id, pooled_output)

        def graph_session() -> Any:  # the same session options, plus CUDA graphs
            return gpu_session(model_path, [("CUDAExecutionProvider", {**options, "enable_cuda_graph": "1"})], threads)

        self._graph_session = graph_session

    @classmethod
    def on_session(
        cls,
        session: Any,
        device: str = "cuda",
        device_id: int = 0,
        pooled_output: str | None = None,
        graph_session: Callable[[], Any] | None = None,
    ) -> OrtCudaBackend:
        """The same backend around an existing session (tests bind it to the CPU device, where IO binding works too);
        ``graph_session`` opens the session :meth:`enable_graphs` captures on."""
        backend = cls.__new__(cls)
        backend._start(session, device, device_id, pooled_output)
        backend._graph_session = graph_session
        return backend

    def _start(self, session: Any, device: str, device_id: int, pooled_output: str | None) -> None:
        self._device, self._device_id, self._pooled_output = device, device_id, pooled_output
        lock = threading.Lock()  # one at a time on the device, whichever runner (a graph capture needs it)
        self._runner = BoundRunner(session, device, device_id, lock=lock)
        self._pooled = BoundRunner(session, device, device_id, pooled_output, lock=lock) if pooled_output else None
        self.name = f"onnxruntime-{device}"
        self.input_names = self._runner.input_names
        #: Whether :meth:`run_pooled` gives the sentence embeddings (the graph pools on the device).
        self.pools_on_device = self._pooled is not None
        #: CUDA graphs of a few shapes (:meth:`enable_graphs`); ``None``: off, or refused (:attr:`graphs_off`).
        self.graphs: GraphRunner | None = None
        #: Why :meth:`enable_graphs` left graphs off ("" when on or never asked).
        self.graphs_off = ""

    def enable_graphs(self, shapes: Sequence[tuple[int, int]]) -> list[tuple[int, int, float]]:
        """Capture CUDA graphs of ``shapes`` (``(rows, width)``) on the calling thread; batches of those shapes
        then replay them, others run the normal session. Where ONNX Runtime refuses (see :class:`GraphRunner`)
        graphs stay off with an :class:`EmbedrtWarning` saying why, and every batch runs as before."""
        if self.graphs is None:
            try:
                self.graphs = self._open_graphs()
            except BackendError as err:
                self.graphs_off = str(err)
                warnings.warn(f"CUDA graphs off, batches run without them: {err}", EmbedrtWarning, stacklevel=2)
                return []
        try:
            return self.graphs.capture(shapes)
        except BackendError as err:
            self.graphs, self.graphs_off = None, f"capturing failed: {err}"
            warnings.warn(f"CUDA graphs off, batches run without them: {self.graphs_off}", EmbedrtWarning, stacklevel=2)
            return []

    def _open_graphs(self) -> GraphRunner:
        if self._pooled_output is None:
            raise BackendError(
                "CUDA graphs need the graph's pooled output (device pooling: a mean-pooling bundle exported by this "
                "version); re-export the bundle with `embedrt export`"
            )
        if self._graph_session is None:
            raise BackendError("this backend was built around a given session; it cannot open a graph session")
        return GraphRunner(self._graph_session(), self._device, self._device_id, self._pooled_output, self._runner.lock)

    def run(self, batch: Mapping[str, np.ndarray]) -> np.ndarray:
        return self._runner.run(batch)

    def run_pooled(self, batch: Mapping[str, np.ndarray]) -> np.ndarray:
        """Mean-pooled embeddings ``(batch, dim)`` computed on the device; only for ``pools_on_device``.

        A batch of a shape with a CUDA graph (:meth:`enable_graphs`) replays it, on the thread that captured it.
        """
        if self._pooled is None:
            raise BackendError("this graph has no pooled output; pool the token embeddings of run() instead")
        if self.graphs is not None:
            replayed = self.graphs.run(batch)
            if replayed is not None:
                return replayed
        return self._pooled.run(batch)

    def resident(self, batch: Mapping[str, np.ndarray]) -> Callable[[], None]:
        """A call that runs ``batch`` again on its device-resident inputs, output left on the device."""
        runner = self._pooled or self._runner
        bound = runner.prepare(batch)
        return lambda: runner.execute(bound)
