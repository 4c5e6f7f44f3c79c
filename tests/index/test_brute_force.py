import numpy as np
import pytest

import twotower  # noqa: F401
from twotower.index.brute_force import exact_top_k, recall_at_k


def test_hand_worked_example():
    items = np.array([[1, 0], [0, 1], [1, 1], [-1, 0]], np.float32)
    q = np.array([[2, 1]], np.float32)
    # scores: [2, 1, 3, -2] -> order 2, 0, 1
    pos, scores = exact_top_k(q, items, 3)
    np.testing.assert_array_equal(pos, [[2, 0, 1]])
    np.testing.assert_allclose(scores, [[3, 2, 1]])
    pos, _ = exact_top_k(q, items, 3, exclude=[[2]])
    np.testing.assert_array_equal(pos, [[0, 1, 3]])
    pos, scores = exact_top_k(q, items, 4, exclude=[[0, 1]])
    np.testing.assert_array_equal(pos, [[2, 3, -1, -1]])
    assert np.isneginf(scores[0, 2:]).all()


def test_matches_full_sort():
    rng = np.random.default_rng(1)
    items, q = rng.normal(size=(500, 8)), rng.normal(size=(300, 8))
    pos, _ = exact_top_k(q, items, 7, chunk_size=64)
    ref = np.argsort(-(q.astype(np.float32) @ items.astype(np.float32).T), axis=1)[:, :7]
    np.testing.assert_array_equal(pos, ref)


def test_recall():
    assert recall_at_k([[1, 2, 3]], [[3, 4, 1]]) == pytest.approx(2 / 3)
    assert recall_at_k([[1, 2], [5, 6]], [[1, 2], [7, 8]]) == pytest.approx(0.5)


def test_bad_input():
    items = np.zeros((5, 3), np.float32)
    with pytest.raises(ValueError, match=r"k must be an int in \[1, num_items=5\], got 6"):
        exact_top_k(np.zeros((1, 3)), items, 6)
    with pytest.raises(ValueError, match="query dim 4 != item dim 3"):
        exact_top_k(np.zeros((1, 4)), items, 2)
