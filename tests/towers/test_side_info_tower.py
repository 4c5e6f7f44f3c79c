import numpy as np
import pytest
import tensorflow as tf

from twotower.towers.side_info_tower import SideInfoTower

SIDE = {"genre": np.array([[1, 2], [2, 0], [0, 0], [3, 1]]), "year": np.array([1, 1, 2, 0])}


def reference_impl(tower, v):
    """H_v = Σ_j softmax(a_v)_j W^j_v over the available slots (numpy)."""
    slots = [tower.id_embeddings.numpy()[v]]
    ok = [bool(tower.known_items[v])]
    for k in tower.fields:
        codes = tower.side_info[k][v]
        codes = codes[codes > 0]
        table = tower.field_embeddings[k].numpy()
        slots.append(table[codes].mean(axis=0) if codes.size else np.zeros(tower.dim))
        ok.append(codes.size > 0)
    a = tower.attention.numpy()[v][ok]
    w = np.exp(a - a.max()) / np.exp(a - a.max()).sum()
    return (w[:, None] * np.array(slots)[ok]).sum(axis=0)


def test_matches_numpy_reference_with_missing_fields_and_cold_items(rng):
    tower = SideInfoTower(4, 3, SIDE, known_items=[True, True, True, False])
    tower.build(None)
    tower.attention.assign(rng.normal(size=(4, 3)))
    out = tower(tf.constant([0, 1, 2, 3])).numpy()
    for v in range(4):
        np.testing.assert_allclose(out[v], reference_impl(tower, v), rtol=1e-5, atol=1e-7)


def test_cold_item_embedding_comes_from_side_information_only():
    tower = SideInfoTower(4, 3, SIDE, known_items=[True, True, True, False])
    tower.build(None)
    before = tower(tf.constant([3])).numpy()
    tower.id_embeddings.assign(tower.id_embeddings * 100.0)  # the untrained id row changes
    np.testing.assert_allclose(tower(tf.constant([3])).numpy(), before, rtol=1e-6)


def test_gradients_reach_attention_and_tables_and_config_round_trips(tmp_path):
    tower = SideInfoTower(4, 3, SIDE)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(tower(tf.constant([[0, 1], [3, 3]])) ** 2)
    grads = tape.gradient(loss, tower.trainable_variables)
    assert all(g is not None for g in grads)
    clone = SideInfoTower.from_config(tower.get_config())
    assert clone.fields == ["genre", "year"] and clone.vocab_sizes == {"genre": 4, "year": 3}


def test_bad_input_is_named():
    with pytest.raises(ValueError, match=r"side_info\['year'\] must have one row per item \(4\)"):
        SideInfoTower(4, 3, {"year": [1, 2]})
    with pytest.raises(ValueError, match="side_info must be a non-empty dict"):
        SideInfoTower(4, 3, {})
    with pytest.raises(ValueError, match=r"ids must be in \[0, vocab_size=4\), got 9"):
        SideInfoTower(4, 3, SIDE)(tf.constant([9]))
