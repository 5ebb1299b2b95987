"""Embed a column of a Ray Dataset with a bundle, on as many machines as the Ray cluster has.

``embed_dataset`` adds one ``map_batches`` stage backed by a pool of Ray actors. Each actor opens the
bundle itself, once, on first use: nothing heavy is created in the driver or pickled to the workers,
only the bundle's path. That path must therefore be readable on every node (shared storage or a copy
at the same path on each node; see docs/scaling.md). ``import ray`` happens only inside
:func:`embed_dataset`, so ``import embedrt`` never loads Ray.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from typing import Any

from embedrt.errors import BundleError, InputError, InputTypeError
from embedrt.extras import missing_extra

#: ONNX Runtime threads per worker when neither ``concurrency`` nor ``threads_per_worker`` is given.
DEFAULT_THREADS_PER_WORKER = 2
#: Rows per inference batch inside a worker (the encoder's default; Ray batches are split into these).
ENCODE_BATCH_SIZE = 32


@dataclass(frozen=True)
class WorkerPlan:
    """How many actors, how many ONNX Runtime threads each, and how many Ray CPUs each reserves.

    ``reserve_cpus`` is a little below ``threads``: actors that reserve every CPU of a node leave no
    slot for Ray Data's own read and write tasks, and the pipeline waits forever (seen with
    ``read_parquet`` on a 2-CPU node). Reserving ``threads * (1 - 1/node_cpus)`` keeps one CPU per
    full node free for them while the ORT threads still match the cores.
    """

    workers: int
    threads: int
    reserve_cpus: float


def plan_workers(
    cluster_cpus: int, node_cpus: int, concurrency: int | None = None, threads_per_worker: int | None = None
) -> WorkerPlan:
    """Split the cluster's CPUs into workers; by default workers x threads equals the CPUs (no oversubscription).

    An explicit ``concurrency`` larger than the CPUs is taken as asked (one thread each).
    """
    if concurrency is not None and concurrency < 1:
        raise InputError(f"concurrency must be >= 1, got {concurrency}")
    if threads_per_worker is not None and threads_per_worker < 1:
        raise InputError(f"threads_per_worker must be >= 1, got {threads_per_worker}")
    cluster_cpus = max(1, int(cluster_cpus))
    node_cpus = max(1, min(int(node_cpus), cluster_cpus))
    if threads_per_worker is not None and threads_per_worker > node_cpus:
        raise InputError(
            f"threads_per_worker={threads_per_worker} is more than the {node_cpus} CPUs of the largest Ray node; "
            "a worker runs on one node, so pass at most that"
        )
    threads = threads_per_worker
    if threads is None:
        if concurrency is None:
            threads = min(DEFAULT_THREADS_PER_WORKER, node_cpus)
        else:
            threads = max(1, min(node_cpus, cluster_cpus // concurrency))
    workers = concurrency if concurrency is not None else max(1, cluster_cpus // threads)
    reserve = threads * (1 - 1 / node_cpus)  # 0 on 1-CPU nodes: nothing to spare there
    return WorkerPlan(workers=workers, threads=threads, reserve_cpus=round(max(reserve, 0.01), 4))


def _import_ray() -> Any:
    try:
        import ray.data  # binds ``ray`` too
    except ImportError as err:
        raise missing_extra("ray", "embedding a Ray Dataset") from err
    return ray


def _host() -> str:
    try:
        return f"{socket.gethostname()} ({socket.gethostbyname(socket.gethostname())})"
    except OSError:
        return socket.gethostname()


class BundleEmbedder:
    """The ``map_batches`` callable: opens the bundle in the worker on first call, then embeds Arrow batches.

    Constructed by Ray inside each actor from plain arguments; it never holds an engine when pickled.
    """

    def __init__(
        self, bundle: str, precision: str, threads: int, text_column: str, output_column: str, engine: str = "auto"
    ) -> None:
        self.bundle = bundle
        self.precision = precision
        self.engine = engine
        self.threads = threads
        self.text_column = text_column
        self.output_column = output_column
        self._encoder: Any = None

    def _load(self) -> Any:
        from embedrt.runtime.encoder import Encoder

        if not os.path.isdir(self.bundle) or not os.access(self.bundle, os.R_OK | os.X_OK):
            raise BundleError(
                f"bundle {self.bundle} is not readable on Ray worker host {_host()}: every worker opens the "
                "bundle itself, so put it at the same path on every node (shared storage, or a copy per node; "
                "see docs/scaling.md)"
            )
        try:
            return Encoder.load(self.bundle, precision=self.precision, engine=self.engine, threads=self.threads)
        except BundleError as err:
            raise BundleError(f"on Ray worker host {_host()}: {err}") from err

    def __call__(self, batch: Any) -> Any:
        import numpy as np
        import pyarrow as pa

        if self.text_column not in batch.column_names:
            raise InputError(
                f"the dataset has no column {self.text_column!r} (columns: {', '.join(batch.column_names)}); "
                "pass text_column="
            )
        if self.output_column in batch.column_names:
            raise InputError(f"the dataset already has a column {self.output_column!r}; pass another output_column=")
        texts = batch.column(self.text_column).to_pylist()
        for index, text in enumerate(texts):
            if not isinstance(text, str):
                row = repr(batch.slice(index, 1).to_pylist()[0])
                raise InputTypeError(
                    f"column {self.text_column!r} holds {type(text).__name__}, expected str, in row {row[:200]}; "
                    "drop or fill such rows before embedding (e.g. ds.filter(...))"
                )
        if self._encoder is None:
            self._encoder = self._load()
        vectors = self._encoder.encode(texts, batch_size=ENCODE_BATCH_SIZE)
        flat = pa.array(np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1), type=pa.float32())
        return batch.append_column(self.output_column, pa.FixedSizeListArray.from_arrays(flat, self._encoder.dim))


def _cluster_cpus(ray: Any) -> tuple[int, int]:
    """Total CPUs of the running cluster and the CPUs of its largest node (starts Ray if needed)."""
    if not ray.is_initialized():
        ray.init()
    nodes = [node for node in ray.nodes() if node.get("Alive")]
    per_node = [int(node.get("Resources", {}).get("CPU", 0)) for node in nodes]
    total = int(ray.cluster_resources().get("CPU", 0)) or sum(per_node) or (os.cpu_count() or 1)
    return total, max(per_node, default=total) or total


def embed_dataset(
    ds: Any,
    bundle: str | os.PathLike[str],
    text_column: str = "text",
    output_column: str = "embedding",
    precision: str = "auto",
    batch_size: int = 256,
    concurrency: int | None = None,
    threads_per_worker: int | None = None,
    engine: str = "auto",
) -> Any:
    """Add ``output_column`` (``fixed_size_list<float32>[dim]``) holding the embedding of ``text_column``.

    Lazy, like every Ray Dataset transform; other columns are kept. ``concurrency`` actors each run
    ``threads_per_worker`` engine threads (default: the cluster's CPUs split evenly, 2 threads per
    worker). ``batch_size`` rows go to a worker per call; the bundle is opened in each worker.
    ``precision`` and ``engine`` mean what they mean for ``Encoder.load``.
    """
    ray = _import_ray()
    if batch_size < 1:
        raise InputError(f"batch_size must be >= 1, got {batch_size}")
    if not text_column or not output_column:
        raise InputError("text_column and output_column must be non-empty column names")
    path = os.path.abspath(os.fspath(bundle))  # workers do not share the driver's working directory
    if os.path.exists(path):  # checked in the driver too when it can see the path: fail before any actor starts
        from embedrt.bundle import Bundle
        from embedrt.runtime.backends.select import choose

        choose(Bundle.open(path), precision, engine, "cpu")
    plan = plan_workers(*_cluster_cpus(ray), concurrency=concurrency, threads_per_worker=threads_per_worker)
    return ds.map_batches(
        BundleEmbedder,
        fn_constructor_kwargs={
            "bundle": path,
            "precision": precision,
            "engine": engine,
            "threads": plan.threads,
            "text_column": text_column,
            "output_column": output_column,
        },
        batch_size=batch_size,
        batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(size=plan.workers),
        num_cpus=plan.reserve_cpus,  # Ray Data spreads actors over the nodes by default
    )


# ------------------------------------------------------------------------------------------ Ray Serve
#: Ray Serve's name for the deployment and for the application holding it.
SERVE_NAME = "embedrt"
#: Requests a replica may hold at once before Ray Serve queues them in its proxy. The batcher merges
#: what a replica holds into engine runs, so it must hold many: 64 concurrent clients on one replica batch.
MAX_ONGOING_REQUESTS = 256
#: Autoscaling target: requests in flight per replica (queued in the replica's batcher or running).
TARGET_ONGOING_REQUESTS = 32


class ServeReplica:
    """One Ray Serve replica: the very ASGI app of ``embedrt serve`` (routes, validation, errors, batcher).

    Ray constructs it in the replica's actor from the settings alone; the replica loads the bundles
    itself, from a path every node must be able to read (as :func:`embed_dataset`).
    """

    def __init__(self, settings: Any) -> None:
        self.settings = settings

    def __serve_build_asgi_app__(self) -> Any:
        """Called by Ray Serve once per replica; Ray runs the app's lifespan (warm-up) before routing to it."""
        from embedrt.server.app import EmbeddingServer
        from embedrt.server.serve import bundle_spec, load_models

        for _, path in (bundle_spec(spec) for spec in self.settings.bundles):
            if not os.path.isdir(path):
                raise BundleError(
                    f"bundle {path} is not readable on Ray node {_host()}: every replica opens the bundle "
                    "itself, so put it at the same path on every node (see docs/scaling.md)"
                )
        served, lanes = load_models(self.settings)
        return EmbeddingServer(served, self.settings, engine_threads=lanes)


def _import_serve() -> Any:
    try:
        from ray import serve
    except ImportError as err:
        raise missing_extra("ray", "serving on Ray Serve") from err
    return serve


def serve_app(
    bundles: list[str] | tuple[str, ...],
    threads_per_replica: int = 1,
    min_replicas: int = 1,
    max_replicas: int | None = None,
    target_ongoing_requests: int = TARGET_ONGOING_REQUESTS,
    **options: Any,
) -> Any:
    """The Ray Serve application: replicas of the ``embedrt serve`` app, each reserving its engine threads as CPUs.

    ``bundles``: directories or ``NAME=DIRECTORY``, as ``embedrt serve`` takes them. ``max_replicas``
    above ``min_replicas`` turns on Ray Serve's autoscaling on requests in flight per replica
    (``target_ongoing_requests``); dynamic batching happens inside each replica. ``options``: any
    :class:`~embedrt.server.settings.ServerSettings` field (``precision``, ``max_wait_ms``, ``api_key``...).
    """
    from dataclasses import replace

    from embedrt.server.serve import bundle_spec
    from embedrt.server.settings import ServerSettings

    serve = _import_serve()
    if not bundles:
        raise InputError("no bundle given: pass at least one bundle directory")
    if threads_per_replica < 1 or min_replicas < 1 or (max_replicas is not None and max_replicas < min_replicas):
        raise InputError("need threads_per_replica >= 1, min_replicas >= 1 and max_replicas >= min_replicas")
    paths = []
    for name, path in (bundle_spec(os.fspath(spec)) for spec in bundles):
        absolute = os.path.abspath(path)  # replicas do not share the driver's working directory
        paths.append(f"{name}={absolute}" if name else absolute)
    try:
        settings = replace(ServerSettings(bundle=paths[0]), more_bundles=tuple(paths[1:]), **options)
    except TypeError as err:
        raise InputError(f"{err}; options are the fields of embedrt.server.settings.ServerSettings") from err
    settings = replace(settings, threads=threads_per_replica, workers=1)
    scaling: dict[str, Any] = {"num_replicas": min_replicas}
    if max_replicas is not None and max_replicas > min_replicas:
        scaling = {
            "autoscaling_config": {
                "min_replicas": min_replicas,
                "max_replicas": max_replicas,
                "target_ongoing_requests": target_ongoing_requests,
            }
        }
    deployment = serve.deployment(
        serve.ingress()(ServeReplica),
        name=SERVE_NAME,
        ray_actor_options={"num_cpus": threads_per_replica},
        max_ongoing_requests=MAX_ONGOING_REQUESTS,
        **scaling,
    )
    return deployment.bind(settings)


def build_app(args: dict[str, Any]) -> Any:
    """Ray Serve's application builder, for ``serve run`` and KubeRay: ``import_path: embedrt.ray:build_app``.

    ``args`` are :func:`serve_app`'s keyword arguments, as a Serve config's ``args:`` gives them, or as
    ``serve run embedrt.ray:build_app bundles=A,B precision=int8`` gives them (all strings: parsed here).
    """
    from embedrt.server.settings import OPTIONS

    args = dict(args)
    bundles = args.pop("bundles", None)
    if isinstance(bundles, str):
        bundles = [one for one in bundles.split(",") if one]
    if not isinstance(bundles, list) or not bundles:
        raise InputError("args.bundles must be a non-empty list of bundle directories")
    parsers = {option.field: option.parse for option in OPTIONS}
    for key, value in args.items():
        if isinstance(value, str) and key in _COUNTS:
            args[key] = int(value)
        elif isinstance(value, str) and key in parsers:
            args[key] = parsers[key](value)
    return serve_app(bundles, **args)


_COUNTS = ("threads_per_replica", "min_replicas", "max_replicas", "target_ongoing_requests")


def serve(
    bundles: list[str] | tuple[str, ...],
    address: str | None = None,
    host: str = "127.0.0.1",
    port: int = 8000,
    **kwargs: Any,
) -> str:
    """Run the embedding server on a Ray cluster (``address``: as ``ray.init`` takes it) and return its URL.

    Returns once every replica is warmed up; the application keeps running after the driver exits.
    Stop it with ``ray.serve.shutdown()`` (or ``serve shutdown``). ``kwargs``: :func:`serve_app`'s.
    """
    import ray

    serve_module = _import_serve()
    if not ray.is_initialized():
        ray.init(address=address)
    serve_module.start(http_options={"host": host, "port": port})
    app = serve_app(bundles, **kwargs)
    serve_module.run(app, name=SERVE_NAME, route_prefix="/", blocking=False)
    return f"http://{host}:{port}"
