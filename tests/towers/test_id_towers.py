import numpy as np
import pytest
import tensorflow as tf

from twotower.towers import IDTower, PooledIDTower


def test_id_tower_is_a_lookup_and_round_trips(tmp_path):
    tower = IDTower(10, 4, name="words")
    out = tower(tf.constant([[1, 2], [3, 9]]))
    assert out.shape == (2, 2, 4)
    np.testing.assert_allclose(out[1, 1], tower.embeddings.numpy()[9])
    clone = IDTower.from_config(tower.get_config())
    assert (clone.vocab_size, clone.dim, clone.name) == (10, 4, "words")


def test_pooled_mean_and_sum_ignore_padding_and_accept_ragged():
    tower = PooledIDTower(6, 3, pooling="mean", embeddings_initializer="random_normal")
    padded = tf.constant([[1, 2, 0], [3, 0, 0], [0, 0, 0]])
    out = tower(padded).numpy()
    w = tower.embeddings.numpy()
    np.testing.assert_allclose(out[0], (w[1] + w[2]) / 2, rtol=1e-6)
    np.testing.assert_allclose(out[1], w[3], rtol=1e-6)
    np.testing.assert_allclose(out[2], 0.0)  # an empty row is the zero vector
    ragged = tf.ragged.constant([[1, 2], [3], []])
    np.testing.assert_allclose(tower(ragged).numpy(), out, rtol=1e-6)
    summed = PooledIDTower(6, 3, pooling="sum")
    summed.build(None)
    summed.embeddings.assign(w)
    np.testing.assert_allclose(summed(padded).numpy()[0], w[1] + w[2], rtol=1e-6)
    clone = PooledIDTower.from_config(tower.get_config())
    assert clone.pooling == "mean" and clone.vocab_size == 6


def test_towers_inside_a_saved_keras_model(tmp_path):
    inp = tf.keras.Input(shape=(3,), dtype=tf.int64)
    model = tf.keras.Model(inp, PooledIDTower(8, 2)(inp))
    x = np.array([[1, 2, 0]])
    model.save(tmp_path / "m")
    reloaded = tf.keras.models.load_model(tmp_path / "m")
    np.testing.assert_allclose(reloaded(x), model(x), rtol=1e-6)


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="vocab_size must be an int >= 1, got 0"):
        IDTower(0, 3)
    with pytest.raises(ValueError, match="dim must be an int >= 1, got -2"):
        IDTower(3, -2)
    with pytest.raises(ValueError, match="pooling must be one of"):
        PooledIDTower(3, 2, pooling="max")
    with pytest.raises(ValueError, match="ids must have rank 2"):
        PooledIDTower(3, 2)(tf.constant([1, 2]))
    with pytest.raises(ValueError, match="ids must be integers"):
        IDTower(3, 2)(tf.constant([0.5]))
    with pytest.raises(ValueError, match=r"ids must be in \[0, vocab_size=3\), got 3"):
        PooledIDTower(3, 2)(tf.constant([[1, 3]]))
