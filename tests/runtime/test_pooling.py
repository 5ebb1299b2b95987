import numpy as np

from embedrt.bundle import Pooling
from embedrt.runtime.pooling import l2_normalize, pool


def _data():
    rng = np.random.default_rng(0)
    hidden = rng.normal(size=(3, 5, 4)).astype(np.float32)
    mask = np.array([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [1, 0, 0, 0, 0]], dtype=np.int64)
    return hidden, mask


def test_mean_ignores_padding():
    hidden, mask = _data()
    out = pool(hidden, mask, Pooling.MEAN)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out[1], hidden[1, :2].mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(out[2], hidden[2, 0], rtol=1e-6)


def test_cls_and_max():
    hidden, mask = _data()
    np.testing.assert_array_equal(pool(hidden, mask, Pooling.CLS), hidden[:, 0])
    np.testing.assert_allclose(pool(hidden, mask, Pooling.MAX)[1], hidden[1, :2].max(axis=0))


def test_l2_normalize_handles_zero_rows():
    x = np.array([[3.0, 4.0], [0.0, 0.0]], dtype=np.float32)
    out = l2_normalize(x)
    np.testing.assert_allclose(out[0], [0.6, 0.8], rtol=1e-6)
    assert np.all(out[1] == 0)
