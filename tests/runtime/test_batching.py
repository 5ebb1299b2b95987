import numpy as np
import pytest

from embedrt.runtime.batching import MAX_PADDING_RATIO, pad_batch, plan_batches


def _flatten(batches):
    return np.concatenate(batches).tolist()


def test_every_position_appears_once_longest_first():
    lengths = [5, 9, 3, 9, 7, 1, 4]
    batches = plan_batches(lengths, batch_size=3)
    assert sorted(_flatten(batches)) == list(range(len(lengths)))
    widths = [lengths[b[0]] for b in batches]
    assert widths == sorted(widths, reverse=True)
    assert all(len(b) <= 3 for b in batches)


def test_token_budget_limits_padded_tokens_but_a_long_text_always_fits():
    lengths = [100, 100, 100, 10, 10, 10, 10]
    for batch in plan_batches(lengths, batch_size=32, max_batch_tokens=150):
        width = max(lengths[i] for i in batch)
        assert len(batch) == 1 or len(batch) * width <= 150
    assert [len(b) for b in plan_batches([500], batch_size=8, max_batch_tokens=64)] == [1]


def test_short_texts_do_not_pad_to_a_long_one():
    lengths = [512, 20, 19, 18]
    batches = plan_batches(lengths, batch_size=32)
    assert batches[0].tolist() == [0]
    for batch in batches:
        width = max(lengths[i] for i in batch)
        assert all(width <= MAX_PADDING_RATIO * lengths[i] for i in batch)


def test_stable_for_equal_lengths():
    assert _flatten(plan_batches([4, 4, 4, 4], batch_size=2)) == [0, 1, 2, 3]


def test_rejects_bad_batch_size():
    with pytest.raises(ValueError):
        plan_batches([1], batch_size=0)


def test_pad_batch_right_pads_with_mask():
    from tokenizers import Encoding  # noqa: F401  (type only)

    class Fake:
        def __init__(self, ids):
            self.ids = ids
            self.type_ids = [0] * len(ids)

    batch = pad_batch([Fake([2, 5, 6, 3]), Fake([2, 3])])
    assert batch["input_ids"].dtype == np.int64
    assert batch["input_ids"].tolist() == [[2, 5, 6, 3], [2, 3, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1], [1, 1, 0, 0]]
    assert batch["token_type_ids"].shape == (2, 4)
    assert "token_type_ids" not in pad_batch([Fake([2, 3])], with_token_types=False)
