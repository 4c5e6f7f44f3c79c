import numpy as np
import pytest

from twotower.towers.evaluation import (popularity_scores, positive_ranks, retrieval_metrics,
                                        top_k)

Q = np.array([[1.0, 0.0], [0.0, 1.0]], np.float32)
V = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]], np.float32)


def test_metrics_worked_by_hand():
    # query 0: positive 1 (score .9), item 0 excluded → rank 1.
    # query 1: positives {3, 2}, scores .9 and 1.0 → ranks 2 and 1; item 2 is a positive,
    # so it is not excluded even though listed.
    m = retrieval_metrics(Q, V, [1, [3, 2]], ks=(1, 2), exclude=[[0], [2]])
    assert m["recall@1"] == pytest.approx((1 + 0.5) / 2)
    assert m["recall@2"] == pytest.approx(1.0)
    assert m["mrr"] == pytest.approx(1.0)
    ids, scores = top_k(Q, V, 2, exclude=[[0], []])
    np.testing.assert_array_equal(ids, [[1, 3], [2, 3]])


def test_popularity_scores_break_ties_by_index():
    s = popularity_scores([5, 5, 1])[:, 0]
    assert s[0] > s[1] > s[2]
    # the tied item 1 ranks second, not first
    assert positive_ranks(np.ones((1, 1), np.float32), s[:, None], [1])[0][0] == 2


def test_bad_input_is_named():
    with pytest.raises(ValueError, match=r"positives must have one entry per query \(2\), got 5"):
        retrieval_metrics(Q, V, np.arange(5))
    with pytest.raises(ValueError, match=r"exclude must hold item ids in \[0, 4\), got -1"):
        top_k(Q, V, 1, exclude=[[-1], []])
    with pytest.raises(ValueError, match=r"k must be an int in \[1, num_items=4\], got 5"):
        top_k(Q, V, 5)
