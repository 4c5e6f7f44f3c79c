import numpy as np
import pytest
import tensorflow as tf

from twotower.data.huffman import HuffmanTree
from twotower.losses import HierarchicalSoftmax, hierarchical_softmax_loss


def reference_impl(u, theta, tree, w):
    """−Σ_j log σ((1 − 2 b_j) <u, θ_{p_j}>) along leaf w's path (float64)."""
    loss = 0.0
    for j in range(tree.lengths[w]):
        x = u @ theta[tree.points[w, j]]
        sign = 1.0 - 2.0 * tree.codes[w, j]
        loss += np.logaddexp(0.0, -sign * x)
    return loss


def test_matches_numpy_reference_values_and_gradients(rng, grads):
    numeric_grad, tf_value_and_grad = grads
    counts = rng.integers(1, 100, size=9)
    tree = HuffmanTree(counts)
    theta = rng.normal(size=(tree.num_inner, 4))
    u = rng.normal(size=(3, 4))
    ids = np.array([0, 4, 8])
    ref = lambda x: sum(reference_impl(x[i], theta, tree, ids[i]) for i in range(3))
    f = lambda x: hierarchical_softmax_loss(x, tf.constant(theta), tree.points[ids],
                                            tree.codes[ids], tree.lengths[ids])
    value, grad = tf_value_and_grad(f, u)
    np.testing.assert_allclose(value, ref(u), rtol=1e-10)
    np.testing.assert_allclose(grad, numeric_grad(ref, u), atol=1e-6)


def test_leaf_probabilities_sum_to_one(rng):
    layer = HierarchicalSoftmax(rng.integers(1, 50, size=13), dim=5, initializer="random_normal")
    u = tf.constant(rng.normal(size=(4, 5)), tf.float32)
    layer(u, tf.constant([0, 1, 2, 3]))
    probs = np.exp(layer.log_probabilities(u).numpy())
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    # the loss of leaf w is −log P(w | u)
    loss = layer(u, tf.constant([3, 7, 12, 0])).numpy()
    np.testing.assert_allclose(loss, -np.log(probs[np.arange(4), [3, 7, 12, 0]]), rtol=1e-4)


def test_huffman_codes_are_prefix_free_and_frequent_items_are_short():
    counts = np.array([100, 50, 25, 12, 6, 3, 2, 1])
    tree = HuffmanTree(counts)
    codes = {tuple(tree.codes[w, : tree.lengths[w]].astype(int)) for w in range(8)}
    assert len(codes) == 8
    for a in codes:
        for b in codes:
            assert a == b or a != b[: len(a)]
    assert tree.lengths[0] == 1 and tree.lengths[0] <= tree.lengths[-1]
    # all paths start at the root (inner node N − 2)
    assert set(tree.points[:, 0]) == {tree.num_inner - 1}


def test_config_round_trip_and_bad_input():
    layer = HierarchicalSoftmax([3, 2, 1], dim=2)
    clone = HierarchicalSoftmax.from_config(layer.get_config())
    assert clone.dim == 2 and clone.tree.num_leaves == 3
    with pytest.raises(ValueError, match="at least 2 items"):
        HuffmanTree([5])
    with pytest.raises(ValueError, match="dim must be an int >= 1, got 0"):
        HierarchicalSoftmax([1, 2], dim=0)


def test_ids_are_checked_and_unusable_settings_refused():
    from twotower.losses import RetrievalLoss

    layer = HierarchicalSoftmax([3, 2, 1], dim=2)
    with pytest.raises(ValueError, match=r"ids must be in \[0, vocab_size=3\), got 5"):
        layer(tf.zeros([1, 2]), tf.constant([5]))
    with pytest.raises(ValueError, match=r"\['num_hard_negatives', 'temperature'\] set"):
        RetrievalLoss(HierarchicalSoftmax([3, 2, 1], 2), candidates=None, temperature=0.1,
                      num_hard_negatives=2)
