"""RaggedRows.take: the selected rows in order; a 0..k-1 prefix shares the arrays."""

import numpy as np
import pytest

from twotower.data.ragged_rows import RaggedRows


def _rows(seed=0, n=60):
    rng = np.random.default_rng(seed)
    lists = [np.sort(rng.choice(40, rng.integers(0, 7), replace=False)).astype(np.int32)
             for _ in range(n)]
    return lists, RaggedRows(np.r_[0, np.cumsum([len(x) for x in lists])],
                             np.concatenate(lists))


@pytest.mark.parametrize("pick", ["prefix", "all", "permuted", "repeated", "empty"])
def test_take_returns_the_rows_asked_for_in_order(pick):
    lists, rows = _rows()
    rng = np.random.default_rng(1)
    chosen = {"prefix": np.arange(25), "all": np.arange(60),
              "permuted": rng.permutation(60)[:45], "repeated": np.array([7, 7, 0, 59, 3]),
              "empty": np.zeros(0, np.int64)}[pick]
    got = rows.take(chosen, chunk_rows=4)  # several chunks
    assert len(got) == len(chosen) and got.values.dtype == np.int32
    for j, r in enumerate(chosen.tolist()):
        np.testing.assert_array_equal(got[j], lists[r])


def test_take_of_a_prefix_shares_the_values_and_a_selection_copies_them():
    _, rows = _rows()
    assert np.shares_memory(rows.take(np.arange(10)).values, rows.values)
    assert not np.shares_memory(rows.take(np.array([3, 1])).values, rows.values)


def test_take_refuses_a_row_out_of_range():
    _, rows = _rows(n=5)
    with pytest.raises(IndexError, match="row 5 out of range for 5 rows"):
        rows.take([0, 5])
    with pytest.raises(IndexError, match="row -1 out of range"):
        rows.take([-1])


@pytest.mark.parametrize("seed", range(6))
def test_union_merges_pairs_into_sorted_distinct_rows(seed):
    lists, rows = _rows(seed, n=int(np.random.default_rng(seed).integers(1, 50)))
    rng = np.random.default_rng(seed + 100)
    m = int(rng.integers(0, 80))
    users, items = rng.integers(0, len(lists), m), rng.integers(0, 45, m)
    got = rows.union(users, items, chunk_values=int(rng.integers(1, 30)))  # many chunks
    assert len(got) == len(lists) and got.values.dtype == np.int32
    for r, own in enumerate(lists):
        np.testing.assert_array_equal(got[r], np.union1d(own, items[users == r]))


def test_union_refuses_mismatched_or_out_of_range_pairs():
    _, rows = _rows(n=5)
    with pytest.raises(ValueError, match="2 rows for 1 values"):
        rows.union([0, 1], [3])
    with pytest.raises(IndexError, match="row 7 out of range for 5 rows"):
        rows.union([7], [3])
