"""The library API: scores from a real bundle, each sentence embedded once, the PyTorch reference row."""

import numpy as np
import pytest
from scipy import stats

from embedrt import Encoder
from embedrt.errors import InputError, InputTypeError
from embedrt.tools.evaluate.metrics import cosine_scores, evaluate
from embedrt.tools.evaluate.readers import load_pairs


class CountingEncoder:
    """Wraps an encoder and records every text it is asked to embed."""

    def __init__(self, inner):
        self.inner = inner
        self.seen: list[str] = []

    def encode(self, texts, batch_size=32):
        self.seen.extend(texts)
        return self.inner.encode(texts, batch_size=batch_size)


@pytest.fixture(scope="module")
def fp32(tiny_bundle):
    return Encoder.load(tiny_bundle, precision="fp32")


def test_scores_match_a_direct_computation(fp32, pairs_tsv, pairs):
    pair_set = load_pairs(pairs_tsv)
    counting = CountingEncoder(fp32)
    result = evaluate(counting, pair_set)

    distinct = {a for a, _, _ in pairs} | {b for _, b, _ in pairs}
    assert sorted(counting.seen) == sorted(distinct)  # each distinct sentence once, no more
    left = fp32.encode([a for a, _, _ in pairs], normalize=True)
    right = fp32.encode([b for _, b, _ in pairs], normalize=True)
    cosines = np.sum(left * right, axis=1)
    gold = [s for _, _, s in pairs]
    assert result["spearman"] == pytest.approx(100 * stats.spearmanr(cosines, gold).statistic, abs=1e-3)
    assert result["pearson"] == pytest.approx(100 * stats.pearsonr(cosines, gold).statistic, abs=1e-3)
    assert evaluate(fp32, pairs) == pytest.approx(result, abs=1e-9)  # a list of tuples works the same


def test_perfect_and_inverted_gold(fp32, pairs):
    cosines = cosine_scores(fp32, pairs)
    same = [(a, b, float(c)) for (a, b, _), c in zip(pairs, cosines, strict=True)]
    assert evaluate(fp32, same)["spearman"] == pytest.approx(100.0)
    inverted = [(a, b, -score) for a, b, score in same]
    assert evaluate(fp32, inverted)["pearson"] == pytest.approx(-100.0)


@pytest.mark.parametrize(
    "bad, error, pattern",
    [
        ("甲\t乙\t1", InputTypeError, "must be a PairSet or a list"),
        ([("甲", "乙")], InputTypeError, r"pairs\[0\] must be \(sentence1, sentence2, score\)"),
        ([("甲", None, 1.0), ("丙", "丁", 0.0)], InputTypeError, r"pairs\[0\]: both sentences must be str"),
        ([("甲", "乙", "high"), ("丙", "丁", 0.0)], InputError, r"pairs\[0\]: score 'high' is not a number"),
        ([("甲", "乙", 1.0)], InputError, "at least 2"),
        ([("甲", "乙", 1.0), ("丙", "丁", 1.0)], InputError, "gold scores equal"),
    ],
)
def test_bad_pairs_raise_typed_errors(fp32, bad, error, pattern):
    with pytest.raises(error, match=pattern):
        evaluate(fp32, bad)


def test_reference_row_agrees_with_fp32(fp32, tiny_model_dir, pairs):
    from embedrt.tools.evaluate.run import load_reference

    reference = load_reference(str(tiny_model_dir))
    np.testing.assert_allclose(cosine_scores(reference, pairs), cosine_scores(fp32, pairs), atol=1e-4)
    assert evaluate(reference, pairs)["pearson"] == pytest.approx(evaluate(fp32, pairs)["pearson"], abs=0.05)


def test_reference_that_is_not_here_is_an_input_error(tmp_path):
    from embedrt.tools.evaluate.run import load_reference

    with pytest.raises(InputError, match="is not a directory here; pass the model's directory with --reference-model"):
        load_reference(str(tmp_path / "gone"))
    with pytest.raises(InputError, match="not in the local Hugging Face cache"):
        load_reference("nobody-here/never-cached-model")
