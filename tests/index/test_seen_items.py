"""Seen items as flat arrays (SeenItems): lookups as the dict they replace, validation,
save/load of the arrays themselves (int32 and int64 items), and the export's builder."""

import os

import numpy as np
import pytest

import twotower  # noqa: F401
from twotower.data.ragged_rows import RaggedRows
from twotower.index import persistence
from twotower.index.builder import build_index
from twotower.index.export import seen_items
from twotower.index.retriever import Retriever, SeenItems


def _mapping():
    rng = np.random.default_rng(0)
    return {int(u): rng.choice(50, rng.integers(0, 5), replace=False)
            for u in rng.permutation(np.arange(0, 90, 3))}


def test_seen_items_reads_as_the_mapping_it_is_built_from():
    d = _mapping()
    seen = SeenItems.from_mapping(d)
    assert len(seen) == len(d) and sorted(seen) == sorted(d)
    assert list(seen.users) == sorted(d)
    for u, v in d.items():
        assert u in seen and np.int64(u) in seen
        np.testing.assert_array_equal(seen[u], v)
    assert 1 not in seen and "3" not in seen and True not in seen
    assert seen.get(1) is None
    with pytest.raises(KeyError):
        seen[1]
    with pytest.raises(ValueError):  # views are read-only
        seen[0][:] = 0


@pytest.mark.parametrize("users, offsets, items, message", [
    ([2, 1], [0, 1, 2], [5, 6], "strictly increasing"),
    ([1, 1], [0, 1, 2], [5, 6], "strictly increasing"),
    ([1, 2], [0, 2], [5, 6], "len\\(users\\) \\+ 1 = 3"),
    ([1, 2], [0, 2, 1], [5, 6], "never"),
    ([1, 2], [0, 1, 3], [5, 6], "len\\(items\\) = 2"),
    ([1], [0, 1], [5.0], "integer ids"),
    ([1.5], [0, 1], [5], "user_seen users"),
])
def test_seen_items_refuses_inconsistent_arrays(users, offsets, items, message):
    with pytest.raises(ValueError, match=message):
        SeenItems(np.asarray(users), np.asarray(offsets), np.asarray(items))


def test_retriever_keeps_seen_items_as_given_and_refuses_a_non_mapping():
    seen = SeenItems(np.array([0, 4]), np.array([0, 2, 3]), np.array([1, 2, 3], np.int32))
    index = build_index(np.random.default_rng(0).normal(size=(20, 4)).astype(np.float32))
    assert Retriever(index, user_seen=seen).user_seen is seen
    with pytest.raises(ValueError, match="user_seen must be a mapping"):
        Retriever(index, user_seen=[[1, 2]])


@pytest.mark.parametrize("dtype", [np.int32, np.int64])
def test_save_writes_the_arrays_and_load_reads_them_back(tmp_path, dtype):
    d = _mapping()
    built = SeenItems.from_mapping(d)
    seen = SeenItems(built.users, built.offsets, built.items.astype(dtype))
    index = build_index(np.random.default_rng(0).normal(size=(50, 4)).astype(np.float32))
    path = str(tmp_path / "index")
    persistence.save(path, Retriever(index, user_seen=seen))
    with np.load(os.path.join(path, "user_seen.npz")) as z:
        assert z["items"].dtype == dtype and sorted(z.files) == ["items", "offsets", "users"]
        np.testing.assert_array_equal(z["users"], sorted(d))
    loaded = persistence.load(path).user_seen
    assert isinstance(loaded, SeenItems) and loaded.items.dtype == dtype
    assert len(loaded) == len(d)
    for u, v in d.items():
        np.testing.assert_array_equal(loaded[u], v)


def test_export_builder_shares_streamed_values_and_maps_other_ids():
    lists = [np.array([1, 4], np.int32), np.array([], np.int32), np.array([0, 2, 3], np.int32)]
    rows = RaggedRows(np.r_[0, np.cumsum([len(x) for x in lists])], np.concatenate(lists))
    # the streamed road: users 0..2 in order, internal item ids: no copy
    shared = seen_items(rows, np.arange(3), np.arange(3), np.arange(5))
    assert np.shares_memory(shared.items, rows.values)
    np.testing.assert_array_equal(shared[2], [0, 2, 3])
    # user ids out of order, rows permuted, item ids that are not 0..N-1 (MovieLens)
    movie_ids = np.array([10, 11, 12, 13, 14]) * 7
    for seen in (rows, lists):
        got = seen_items(seen, np.array([30, 10, 20]), np.array([0, 2, 1]), movie_ids)
        assert list(got.users) == [10, 20, 30]
        np.testing.assert_array_equal(got[30], movie_ids[[1, 4]])
        np.testing.assert_array_equal(got[10], movie_ids[[0, 2, 3]])
        assert len(got[20]) == 0
    with pytest.raises(ValueError, match="2 user ids for 3 seen-item rows"):
        seen_items(rows, np.arange(2), np.arange(3), np.arange(5))
