"""AttentionPooledIDTower against a plain-numpy Transformer block, and in its limits."""

import numpy as np
import pytest
import tensorflow as tf

from twotower.towers.attention_id_tower import AttentionPooledIDTower
from twotower.towers.feature_tower import FeatureTower, sequence


def _tower(**kwargs):
    tf.keras.utils.set_random_seed(3)
    args = dict(vocab_size=12, dim=8, max_length=6, num_heads=2)
    args.update(kwargs)
    return AttentionPooledIDTower(**args)


def _layer_norm(x, layer):
    gamma, beta = (w.numpy() for w in layer.weights)
    mean = x.mean(-1, keepdims=True)
    var = x.var(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + layer.epsilon) * gamma + beta


def _numpy_block(tower, ids):
    """The module docstring's formula, written out."""
    W, P = tower.embeddings.numpy(), tower.positions.numpy()
    mha = tower._attention
    wq, bq = mha._query_dense.kernel.numpy(), mha._query_dense.bias.numpy()
    wk, bk = mha._key_dense.kernel.numpy(), mha._key_dense.bias.numpy()
    wv, bv = mha._value_dense.kernel.numpy(), mha._value_dense.bias.numpy()
    wo, bo = mha._output_dense.kernel.numpy(), mha._output_dense.bias.numpy()
    out = []
    for row in ids:
        L = len(row)
        e = W[row] + P[:L]                                        # [L, d]
        present = row != 0
        if not present.any():
            out.append(np.zeros(tower.dim))
            continue
        q = np.einsum("d,dhk->hk", e[0], wq) + bq                # [H, k]
        k = np.einsum("ld,dhk->lhk", e, wk) + bk                 # [L, H, k]
        v = np.einsum("ld,dhk->lhk", e, wv) + bv
        scores = np.einsum("hk,lhk->hl", q, k) / np.sqrt(wq.shape[-1])
        scores = np.where(present[None], scores, -np.inf)
        att = np.exp(scores - scores.max(1, keepdims=True))
        att /= att.sum(1, keepdims=True)
        a = np.einsum("hl,lhk->hk", att, v)
        a = np.einsum("hk,hkd->d", a, wo) + bo
        h = _layer_norm(e[0] + a, tower._norm_attention)
        w1, b1 = (x.numpy() for x in tower._ffn_hidden.weights)
        w2, b2 = (x.numpy() for x in tower._ffn_out.weights)
        f = np.maximum(h @ w1 + b1, 0) @ w2 + b2
        out.append(_layer_norm(h + f, tower._norm_ffn))
    return np.array(out)


IDS = np.array([[3, 7, 1, 0, 0, 0], [5, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0],
                [11, 2, 9, 4, 6, 8]])


def test_matches_the_numpy_block_and_an_empty_history_gives_zero():
    tower = _tower()
    got = tower(IDS).numpy()
    np.testing.assert_allclose(got, _numpy_block(tower, IDS), rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(got[2], np.zeros(8))


def test_order_matters_and_padding_does_not():
    tower = _tower()
    base = tower(np.array([[3, 7, 1]])).numpy()
    # more padding columns, same items: same output (padding is masked, positions align)
    np.testing.assert_allclose(tower(np.array([[3, 7, 1, 0, 0]])).numpy(), base, atol=1e-6)
    # a row longer than max_length: its max_length most recent items
    long = np.array([[3, 7, 1, 0, 0, 0, 9, 9]])
    np.testing.assert_allclose(tower(long).numpy(), base, atol=1e-6)
    # the same items in another order: another output (a mean would not change)
    assert not np.allclose(tower(np.array([[1, 7, 3]])).numpy(), base, atol=1e-3)


def test_gradients_reach_items_positions_and_attention_but_not_padding():
    tower = _tower()
    ids = tf.constant(IDS[:2])
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(tower(ids, training=True) ** 2)
    grads = dict(zip([w.name for w in tower.trainable_weights],
                     tape.gradient(loss, tower.trainable_weights)))
    table = tf.convert_to_tensor(grads[tower.embeddings.name]).numpy()
    assert np.abs(table[[3, 7, 1, 5]]).sum() > 0
    np.testing.assert_array_equal(table[0], 0.0)   # padding id
    positions = tf.convert_to_tensor(grads[tower.positions.name]).numpy()
    assert np.abs(positions[:3]).sum() > 0
    np.testing.assert_array_equal(positions[3:], 0.0)  # only padding sits there


def test_bad_arguments_name_themselves():
    with pytest.raises(ValueError, match="max_length"):
        AttentionPooledIDTower(10, 4, max_length=0)
    with pytest.raises(ValueError, match="num_heads"):
        AttentionPooledIDTower(10, 4, max_length=3, num_heads=0)
    with pytest.raises(ValueError, match="pooling must be one of"):
        sequence("history", 10, pooling="max")
    with pytest.raises(ValueError, match="needs max_length"):
        sequence("history", 10, pooling="attention")


def test_feature_tower_round_trips_and_compiles():
    specs = [FeatureTower.categorical("user", [1, 2, 3], dim=4),
             sequence("history", 12, dim=8, pooling="attention", max_length=6)]
    tower = FeatureTower(specs, output_dim=5)
    x = {"user": np.array([1, 2, 3, 1]), "history": IDS}
    expected = tower(x).numpy()
    compiled = tf.function(lambda d: tower(d), jit_compile=True)
    np.testing.assert_allclose(compiled(tower.preprocess(x)).numpy(), expected,
                               rtol=1e-5, atol=1e-6)
    clone = FeatureTower.from_config(tower.get_config())
    clone(x)
    clone.set_weights(tower.get_weights())
    np.testing.assert_allclose(clone(x).numpy(), expected, rtol=1e-6)
