import numpy as np
import pytest
import tensorflow as tf

from twotower.losses import MASK, InBatch, RetrievalLoss, SampledNegatives, adjust_logits, scores
from twotower.data.samplers import UniformSampler


def test_logq_is_applied_after_temperature():
    # s = 2, τ = 0.5, Q = e  →  z = 2/0.5 − log e = 4 − 1 = 3   (not (2 − 1)/0.5 = 2)
    z = adjust_logits(tf.constant([[2.0]]), temperature=0.5, log_q=tf.constant([1.0]))
    assert z.numpy()[0, 0] == pytest.approx(3.0)


def test_cosine_is_the_dot_product_of_normalised_vectors(rng):
    u = rng.normal(size=(3, 4)).astype(np.float32)
    v = rng.normal(size=(5, 4)).astype(np.float32) * 10
    un = u / np.linalg.norm(u, axis=1, keepdims=True)
    vn = v / np.linalg.norm(v, axis=1, keepdims=True)
    np.testing.assert_allclose(scores(u, v, similarity="cosine"), un @ vn.T, rtol=1e-5, atol=1e-6)
    per_example = rng.normal(size=(3, 2, 4)).astype(np.float32)
    np.testing.assert_allclose(scores(u, per_example), np.einsum("bd,bcd->bc", u, per_example), atol=1e-6,
                               rtol=1e-5)


def test_padding_candidates_are_masked(rng):
    u, v = rng.normal(size=(2, 2, 3)).astype(np.float32)
    neg = rng.normal(size=(2, 3, 3)).astype(np.float32)
    neg_ids = np.array([[0, 4, 0], [5, 6, 0]])  # 0 pads rows to k = 3
    layer = RetrievalLoss("softmax", SampledNegatives(UniformSampler(9), 3, shared=False),
                          padding_id=0)
    z, labels = layer.logits(u, v, np.array([1, 2]), neg, neg_ids)
    masked = z.numpy() <= MASK / 2
    np.testing.assert_array_equal(masked, [[False, True, False, True],
                                           [False, False, False, True]])


def test_learned_temperature_stays_positive_and_trains(rng):
    layer = RetrievalLoss("softmax", InBatch(), temperature=0.3, learn_temperature=True)
    assert float(layer.temperature) == pytest.approx(0.3)
    u, v = rng.normal(size=(2, 6, 4)).astype(np.float32)
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(layer(u, v, np.arange(6)))
    (grad,) = tape.gradient(loss, [layer.log_temperature])
    assert grad is not None and np.isfinite(grad.numpy())


def test_padding_never_masks_the_positive(rng):
    u, v = rng.normal(size=(2, 2, 3)).astype(np.float32)
    layer = RetrievalLoss("softmax", InBatch(), padding_id=0)
    z, labels = layer.logits(u, v, np.array([0, 4]))  # row 0's positive has id 0
    assert z.numpy()[0, 0] > MASK / 2 and z.numpy()[1, 0] <= MASK / 2
