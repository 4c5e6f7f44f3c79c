import numpy as np
import pytest
import tensorflow as tf

from twotower.losses import MASK, softmax_loss, Softmax


def reference_impl(z, label):
    """ℓ = −z[c⁺] + log Σ exp z  (one row, float64)."""
    m = z.max()
    return -z[label] + m + np.log(np.exp(z - m).sum())


def test_matches_numpy_reference_values_and_gradients(rng, grads):
    numeric_grad, tf_value_and_grad = grads
    z = rng.normal(size=(5, 7))
    labels = rng.integers(0, 7, size=5)
    ref = lambda x: sum(reference_impl(x[i], labels[i]) for i in range(5))
    value, grad = tf_value_and_grad(lambda x: softmax_loss(x, labels), z)
    np.testing.assert_allclose(value, ref(z), rtol=1e-10)
    np.testing.assert_allclose(grad, numeric_grad(ref, z), atol=1e-6)


def test_worked_by_hand():
    # −2 + log(e² + e⁰ + e⁰) = −2 + log(9.389056) = −2 + 2.239545 = 0.239545
    assert softmax_loss([[2.0, 0.0, 0.0]], [0]).numpy()[0] == pytest.approx(0.239545, abs=1e-5)


def test_masked_column_is_exactly_neutral(rng):
    z = rng.normal(size=(3, 4)).astype(np.float32)
    labels = np.array([0, 1, 2])
    with_mask = np.concatenate([z, np.full((3, 1), MASK, np.float32)], axis=1)
    np.testing.assert_allclose(softmax_loss(with_mask, labels), softmax_loss(z, labels),
                               rtol=1e-6)


def test_keras_loss_reduces_to_mean(rng):
    z = rng.normal(size=(4, 6)).astype(np.float32)
    labels = np.array([1, 0, 5, 2])
    assert float(Softmax()(labels, z)) == pytest.approx(float(tf.reduce_mean(
        softmax_loss(z, labels))), rel=1e-6)
    assert Softmax.from_config(Softmax().get_config()).name == "softmax"


def test_bad_ranks_are_named():
    with pytest.raises(ValueError, match="logits must have rank 2"):
        softmax_loss(tf.zeros([3]), tf.zeros([3], tf.int32))
    with pytest.raises(ValueError, match="labels must have rank 1"):
        softmax_loss(tf.zeros([3, 2]), tf.zeros([3, 1], tf.int32))
    with pytest.raises(ValueError, match="batch size"):
        softmax_loss(tf.zeros([3, 2]), tf.zeros([4], tf.int32))
