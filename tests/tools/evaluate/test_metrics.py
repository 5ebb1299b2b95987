"""The NumPy Spearman and Pearson against SciPy, ties included."""

import math

import numpy as np
import pytest
from scipy import stats

from embedrt.tools.evaluate.metrics import average_ranks, pearson, spearman


@pytest.mark.parametrize("seed", range(5))
def test_match_scipy_with_ties(seed):
    rng = np.random.default_rng(seed)
    gold = rng.integers(0, 6, size=200).astype(float)  # many ties, like STS scores and 0/1 labels
    predicted = np.round(rng.normal(size=200) + 0.3 * gold, 1)  # ties on this side too
    assert spearman(predicted, gold) == pytest.approx(stats.spearmanr(predicted, gold).statistic, abs=1e-12)
    assert pearson(predicted, gold) == pytest.approx(stats.pearsonr(predicted, gold).statistic, abs=1e-12)
    np.testing.assert_allclose(average_ranks(predicted), stats.rankdata(predicted), atol=0)


def test_binary_labels_and_exact_values():
    labels = np.array([0, 1, 0, 1, 1, 0], dtype=float)
    cosines = np.array([0.1, 0.9, 0.2, 0.8, 0.3, 0.7])
    assert spearman(cosines, labels) == pytest.approx(stats.spearmanr(cosines, labels).statistic, abs=1e-12)
    assert spearman([1, 2, 3], [10, 20, 30]) == pytest.approx(1.0)
    assert spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    np.testing.assert_array_equal(average_ranks(np.array([5.0, 1.0, 5.0, 5.0])), [3.0, 1.0, 3.0, 3.0])


def test_constant_input_is_nan_not_a_crash():
    assert math.isnan(pearson([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]))
    assert math.isnan(spearman([1.0, 2.0, 3.0], [4.0, 4.0, 4.0]))
