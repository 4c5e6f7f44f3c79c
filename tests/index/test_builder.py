import numpy as np
import pytest

import twotower  # noqa: F401
from twotower.index import config as config_lib
from twotower.index.brute_force import exact_top_k, recall_at_k
from twotower.index.builder import build_index, embed, exact_index, scann_config_text


@pytest.mark.parametrize("distance", ["dot", "cosine"])
def test_exact_scann_equals_numpy_brute_force(corpus, distance):
    items, queries = corpus
    index = exact_index(items, np.arange(len(items)) + 1000, distance=distance)
    ids, scores = index.search(queries, 10)
    if distance == "cosine":
        items = items / np.linalg.norm(items, axis=1, keepdims=True)
        queries = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    pos, ref_scores = exact_top_k(queries, items, 10)
    np.testing.assert_array_equal(ids, pos + 1000)
    np.testing.assert_allclose(scores, ref_scores, rtol=1e-5, atol=1e-5)


def test_one_leaf_reorder_everything_equals_brute_force(corpus):
    items, queries = corpus
    config = config_lib.IndexConfig(num_leaves=1, num_leaves_to_search=1,
                                    reorder=len(items))
    index = build_index(items, config=config)
    ids, _ = index.search(queries, 10)
    pos, _ = exact_top_k(queries, items, 10)
    np.testing.assert_array_equal(ids, pos)


def test_tree_ah_reorder_is_accurate(corpus):
    items, queries = corpus
    index = build_index(items, distance="cosine", num_leaves=50, num_leaves_to_search=25,
                        reorder=200, brute_force=False)
    ids, _ = index.search(queries, 10)
    truth, _ = index.exact_search(queries, 10)
    assert recall_at_k(ids, truth) >= 0.9
    assert "noise_shaping_threshold: 0.2" in scann_config_text(index.vectors, index.config)


def test_soar_config_builds():
    text = scann_config_text(np.ones((200, 4), np.float32),
                             config_lib.IndexConfig(num_leaves=10, num_leaves_to_search=2,
                                                    soar_lambda=1.0, reorder=20))
    assert "TWO_CENTER_ORTHOGONALITY_AMPLIFIED" in text


def test_embed_batches_through_a_keras_tower():
    import tensorflow as tf

    tower = tf.keras.layers.Embedding(50, 6)
    ids = np.arange(50)
    out = embed(tower, ids, batch_size=7, progress=False)
    np.testing.assert_allclose(out, tower.embeddings.numpy(), rtol=1e-6)
    with pytest.raises(ValueError, match="batch_size must be an int >= 1, got 0"):
        embed(tower, ids, batch_size=0)


def test_bad_input(corpus):
    items, queries = corpus
    index = exact_index(items)
    with pytest.raises(ValueError, match=r"queries must have shape \[n, 16\], got \(3, 5\)"):
        index.search(np.zeros((3, 5), np.float32), 5)
    with pytest.raises(ValueError, match="queries must be floating point, got dtype int64"):
        index.search(np.zeros((3, 16), np.int64), 5)
    for k in (0, -1, len(items) + 1, 2.5):
        with pytest.raises(ValueError, match=rf"k must be an int in \[1, 3000\], got {k}"):
            index.search(queries, k)
    with pytest.raises(ValueError, match="item_ids must have shape"):
        build_index(items, np.arange(5))
    with pytest.raises(ValueError, match="vectors contains NaN"):
        build_index(np.full((10, 2), np.nan, np.float32))
