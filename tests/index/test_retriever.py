import numpy as np
import pytest
import tensorflow as tf

import twotower  # noqa: F401
from twotower.index.builder import build_index, embed
from twotower.index.retriever import Retriever
from twotower.towers import IDTower, evaluation


@pytest.fixture(scope="module")
def towers():
    tf.keras.utils.set_random_seed(0)
    query_tower, item_tower = IDTower(40, 8, name="q"), IDTower(600, 8, name="i")
    query_tower(np.arange(2)), item_tower(np.arange(2))
    return query_tower, item_tower


def test_u2i_matches_brute_force_with_seen_items_excluded(towers):
    query_tower, item_tower = towers
    items = embed(item_tower, np.arange(600), progress=False)
    retriever = Retriever(build_index(items, np.arange(600)), query_tower, item_tower)
    users = np.arange(40)
    seen = [np.arange(u, u + 5) for u in users]
    ids, scores = retriever.u2i(users, 10, exclude=seen)
    ref_ids, ref_scores = evaluation.top_k(query_tower(users).numpy(), items, 10,
                                           exclude=[list(s) for s in seen])
    np.testing.assert_array_equal(ids, ref_ids)
    np.testing.assert_allclose(scores, ref_scores, rtol=1e-5)


def test_i2i_excludes_the_item_itself(towers):
    _, item_tower = towers
    items = embed(item_tower, np.arange(600), progress=False)
    retriever = Retriever(build_index(items, np.arange(600) + 1, distance="cosine"),
                          None, item_tower)
    ids, _ = retriever.i2i([1, 2, 3], 5)
    unit = items / np.linalg.norm(items, axis=1, keepdims=True)
    ref, _ = evaluation.top_k(unit[:3], unit, 5, exclude=[[0], [1], [2]])
    np.testing.assert_array_equal(ids, ref + 1)
    assert all(i not in row for i, row in zip([1, 2, 3], ids))
    with pytest.raises(ValueError, match=r"exclude must have one list per item id \(3\), got 1"):
        retriever.i2i([1, 2, 3], 5, exclude=[[7]])
    # by features (through the item tower): the item itself comes first
    by_feat, _ = retriever.i2i_features(np.array([0, 1, 2]), 1)
    np.testing.assert_array_equal(by_feat[:, 0], [1, 2, 3])


def test_bad_input(towers):
    query_tower, item_tower = towers
    items = embed(item_tower, np.arange(600), progress=False)
    retriever = Retriever(build_index(items), query_tower)
    with pytest.raises(ValueError, match="unknown item id 600"):
        retriever.i2i([600])
    with pytest.raises(ValueError, match=r"k must be an int in \[1, 599\], got 600"):
        retriever.i2i([0], 600)
    with pytest.raises(ValueError, match=r"k must be an int in \[1, 600\], got 0"):
        retriever.u2i(np.arange(3), 0)
    with pytest.raises(ValueError, match="has no item_tower"):
        retriever.i2i_features(np.arange(3))
