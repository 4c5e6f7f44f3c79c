import numpy as np
import pytest

from twotower.losses import MASK, NCE, NegativeSampling, sigmoid_loss


def log_sigmoid(x):
    return -np.logaddexp(0.0, -x)


def reference_impl(z, label):
    """ℓ = −log σ(z⁺) − Σ_{c ≠ c⁺} log σ(−z_c)  (one row, float64)."""
    neg = np.delete(z, label)
    return -log_sigmoid(z[label]) - log_sigmoid(-neg).sum()


def test_matches_numpy_reference_values_and_gradients(rng, grads):
    numeric_grad, tf_value_and_grad = grads
    z = rng.normal(size=(4, 6)) * 3
    labels = rng.integers(0, 6, size=4)
    ref = lambda x: sum(reference_impl(x[i], labels[i]) for i in range(4))
    value, grad = tf_value_and_grad(lambda x: sigmoid_loss(x, labels), z)
    np.testing.assert_allclose(value, ref(z), rtol=1e-10)
    np.testing.assert_allclose(grad, numeric_grad(ref, z), atol=1e-6)


def test_worked_by_hand():
    # softplus(0) + softplus(0) = 2 log 2 = 1.386294
    assert sigmoid_loss([[0.0, 0.0]], [0]).numpy()[0] == pytest.approx(1.386294, abs=1e-6)


def test_masked_negative_adds_nothing():
    z = np.array([[1.0, -0.5, MASK]], np.float32)
    assert sigmoid_loss(z, [0]).numpy()[0] == pytest.approx(
        reference_impl(np.array([1.0, -0.5]), 0), rel=1e-6)


def test_heads_declare_their_logq_default():
    assert NCE.uses_logq and not NegativeSampling.uses_logq
