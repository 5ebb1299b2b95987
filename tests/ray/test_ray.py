"""`embed_dataset` on a local 2-CPU Ray runtime: same numbers as `Encoder.encode`, matched by id."""

import concurrent.futures
import subprocess
import sys
import warnings

import numpy as np
import pytest

import ray  # the `ray` extra: a missing extra fails here rather than skipping
from embedrt import Encoder, InputError
from embedrt.ray import BundleEmbedder, embed_dataset, plan_workers
from tests.helpers import SHORT_TEXTS

#: Ray Data has no timeout of its own: run each pipeline in a thread and fail instead of hanging.
PIPELINE_SECONDS = 180

TEXTS = SHORT_TEXTS


def bounded(fn):
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    try:
        return pool.submit(fn).result(timeout=PIPELINE_SECONDS)
    finally:
        pool.shutdown(wait=False)


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    with warnings.catch_warnings():
        # Ray 2.60's own DataContext() constructor warns about its deprecated fields (use_push_based_shuffle,
        # use_polars, use_arrow_tensor_v2) whatever the caller sets; the process's one context is made here.
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"ray\.data\.context")
        ray.data.DataContext.get_current().enable_progress_bars = False
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def rows():
    return [{"id": i, "text": f"{TEXTS[i % len(TEXTS)]}{i}", "group": i % 3} for i in range(300)]


@pytest.fixture(scope="module")
def offline(tiny_bundle, rows):
    vectors = Encoder.load(tiny_bundle, precision="fp32").encode([row["text"] for row in rows])
    return {row["id"]: vectors[i] for i, row in enumerate(rows)}


def check_by_id(result, rows, offline):
    assert len(result) == len(rows)
    by_id = {row["id"]: row for row in result}
    assert sorted(by_id) == sorted(row["id"] for row in rows)
    for row in rows:
        got = by_id[row["id"]]
        assert got["text"] == row["text"] and got["group"] == row["group"]  # other columns kept
        np.testing.assert_allclose(np.asarray(got["embedding"], dtype=np.float32), offline[row["id"]], atol=1e-6)


@pytest.mark.parametrize("concurrency, threads", [(2, 1), (None, None)])
def test_matches_offline_encode_by_id(local_ray, tiny_bundle, rows, offline, concurrency, threads):
    ds = ray.data.from_items(rows).random_shuffle(seed=0)
    out = embed_dataset(
        ds, tiny_bundle, precision="fp32", batch_size=64, concurrency=concurrency, threads_per_worker=threads
    )
    check_by_id(bounded(out.take_all), rows, offline)


def test_read_parquet_pipeline_does_not_starve(local_ray, tiny_bundle, rows, offline, tmp_path):
    """Workers leave a CPU for Ray Data's read tasks; reserving every CPU made this wait forever."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "in.parquet", row_group_size=100)
    ds = ray.data.read_parquet(str(tmp_path / "in.parquet"))
    out = embed_dataset(ds, tiny_bundle, precision="fp32", output_column="vec", concurrency=1, threads_per_worker=2)
    result = bounded(out.take_all)
    check_by_id([{**r, "embedding": r["vec"]} for r in result], rows, offline)
    assert out.schema().names == ["id", "text", "group", "vec"]


# Ray notes that an actor pool given no input has nothing to do: true, and the point of this test.
@pytest.mark.filterwarnings("ignore:The minimum number of concurrent actors:UserWarning")
def test_empty_dataset(local_ray, tiny_bundle):
    ds = ray.data.from_items([{"id": 0, "text": "a"}]).limit(0)
    assert bounded(embed_dataset(ds, tiny_bundle, concurrency=1).count) == 0


def test_bad_row_fails_naming_the_row(local_ray, tiny_bundle):
    ds = ray.data.from_items([{"id": 1, "text": "a"}, {"id": 2, "text": None}])
    with pytest.raises(Exception, match=r"column 'text' holds NoneType, expected str, in row \{'id': 2"):
        bounded(embed_dataset(ds, tiny_bundle, concurrency=1).materialize)


def test_missing_bundle_on_worker_names_the_host(local_ray, tmp_path):
    ds = ray.data.from_items([{"text": "a"}])
    with pytest.raises(Exception, match=r"not readable on Ray worker host .*same path on every node"):
        bounded(embed_dataset(ds, tmp_path / "not-here", concurrency=1).materialize)


def test_driver_never_opens_an_engine(local_ray, tiny_bundle, rows, offline, monkeypatch):
    from embedrt.runtime.backends import ort

    def refuse(*args, **kwargs):
        raise AssertionError("an ONNX Runtime session was created in the driver")

    monkeypatch.setattr(ort.OrtBackend, "__init__", refuse)  # workers are other processes: unaffected
    ds = embed_dataset(ray.data.from_items(rows[:20]), tiny_bundle, precision="fp32", concurrency=1)
    check_by_id(bounded(ds.take_all), rows[:20], offline)


def test_driver_side_checks(local_ray, tiny_bundle):
    ds = ray.data.from_items([{"text": "a"}])
    with pytest.raises(Exception, match="no 'fp16' variant"):
        embed_dataset(ds, tiny_bundle, precision="fp16")
    with pytest.raises(InputError, match="batch_size"):
        embed_dataset(ds, tiny_bundle, batch_size=0)
    with pytest.raises(InputError, match="concurrency"):
        embed_dataset(ds, tiny_bundle, concurrency=0)


def test_embedder_is_lazy_and_picklable(tiny_bundle):
    import pickle

    embedder = BundleEmbedder(str(tiny_bundle), "fp32", 1, "text", "embedding")
    assert embedder._encoder is None
    assert pickle.loads(pickle.dumps(embedder))._encoder is None


@pytest.mark.parametrize(
    "cluster, node, concurrency, threads, expected",
    [
        (2, 2, None, None, (1, 2)),  # this machine: one worker, two threads
        (2, 2, 2, None, (2, 1)),
        (2, 2, 1, None, (1, 2)),
        (64, 16, None, None, (32, 2)),
        (64, 16, 4, None, (4, 16)),  # never more threads than one node has
        (64, 16, None, 4, (16, 4)),
        (1, 1, None, None, (1, 1)),
    ],
)
def test_plan_workers(cluster, node, concurrency, threads, expected):
    """Pure arithmetic, no Ray needed."""
    plan = plan_workers(cluster, node, concurrency, threads)
    assert (plan.workers, plan.threads) == expected
    assert 0 < plan.reserve_cpus <= plan.threads
    if node > 1:  # what the workers of one full node reserve leaves a CPU for Ray Data's own tasks
        per_node = node // plan.threads
        assert per_node * plan.reserve_cpus <= node - 1 + 1e-9


def test_import_embedrt_does_not_import_ray():
    code = "import sys, embedrt, embedrt.tools.embed_file, embedrt.ray; assert 'ray' not in sys.modules, 'ray imported'"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_plan_workers_rejects_impossible_workers():
    with pytest.raises(InputError, match="more than the 2 CPUs of the largest Ray node"):
        plan_workers(8, 2, threads_per_worker=4)
    with pytest.raises(InputError, match="threads_per_worker must be >= 1"):
        plan_workers(8, 2, threads_per_worker=0)
