"""Q(c) of the candidate sources and its floor, against plain numpy."""

import numpy as np
import pytest
import tensorflow as tf

from twotower.data.frequency import StreamingFrequencyEstimator
from twotower.data.samplers import UnigramSampler
from twotower.losses import InBatch, MixedNegatives, RetrievalLoss, SampledNegatives
from twotower.losses.candidates import log_expected_count


def np_softmax_loss(z, label):
    m = z.max()
    return -z[label] + m + np.log(np.exp(z - m).sum())


def test_log_expected_count_floors_zeros_at_the_smallest_observed_q():
    q = np.array([[0.0, 0.5, 2.0], [4.0, 0.0, 0.25]])
    ref = np.log(np.where(q > 0, q, q[q > 0].min()))
    np.testing.assert_allclose(log_expected_count(q).numpy(), ref, rtol=1e-6)
    np.testing.assert_allclose(log_expected_count(np.zeros(3)).numpy(), 0.0)  # no Q: none


def test_zero_count_item_is_taken_for_the_rarest_seen_item(rng, grads):
    numeric_grad, tf_value_and_grad = grads
    # item 3 has a zero count (never seen when counted) but is a positive of the batch
    counts = np.array([50.0, 5.0, 2.0, 0.0])
    ids = np.array([0, 1, 2, 3])
    u, v = rng.normal(size=(2, 4, 3))
    tau = 0.2
    floored = np.where(counts > 0, counts, 2.0)
    p = floored / floored.sum()

    def reference(uu):
        return sum(np_softmax_loss(uu[i] @ v.T / tau - np.log(4 * p[ids]), i)
                   for i in range(4))

    layer = RetrievalLoss("softmax", InBatch(frequencies=counts), temperature=tau)
    value, grad = tf_value_and_grad(
        lambda uu: layer(tf.cast(uu, tf.float32), tf.constant(v, tf.float32), ids), u)
    np.testing.assert_allclose(value, reference(u), rtol=1e-5)
    np.testing.assert_allclose(grad, numeric_grad(reference, u), atol=1e-4)
    z, _ = layer.logits(u, v, ids)
    correction = z.numpy() - (u @ v.T / tau)
    # the unseen item's correction equals the rarest seen item's, never more
    np.testing.assert_allclose(correction[:, 3], correction[:, 2], rtol=1e-5)
    assert correction[:, 3].max() < 13.8 - 5


def test_sampled_softmax_positive_the_sampler_never_draws_is_not_boosted(rng):
    # unigram^1 over counts with a zero: item 0's Q = k·q(0) = 0 would have been 1e-6
    # (+13.8 on the positive's logit, a near-zero loss whatever the towers say)
    sampler = UnigramSampler([0, 3, 1, 4], power=1.0, seed=0)
    src = SampledNegatives(sampler, 4, shared=True)
    u, v = rng.normal(size=(2, 1, 3)).astype(np.float32)
    extra_ids = tf.constant([1, 3, 3, 2], tf.int64)
    extra = rng.normal(size=(4, 3)).astype(np.float32)
    _, ids, _, log_q = src(tf.constant(u), tf.constant(v), tf.constant([0]),
                           tf.constant(extra), extra_ids)
    q = 4 * np.array([0, 3, 1, 4])[ids.numpy()] / 8.0
    np.testing.assert_allclose(log_q.numpy(), np.log(np.where(q > 0, q, q[q > 0].min())),
                               rtol=1e-6)


def test_in_batch_streamed_q_is_batch_size_times_p_hat():
    est = StreamingFrequencyEstimator(num_buckets=16, alpha=0.5)
    src = InBatch(frequencies=est)
    for _ in range(4):
        src.draw(tf.constant([1, 2, 1, 3]), training=True)
    _, _, _, log_q = src(tf.ones([4, 2]), tf.ones([4, 2]), tf.constant([1, 2, 1, 3]))
    p_hat = est(tf.constant([1, 2, 1, 3])).numpy()
    np.testing.assert_allclose(np.exp(log_q.numpy()), 4 * p_hat, rtol=1e-5)
    # id 1 fills every other position: its expected count in a batch of 4 is 2, not 1
    assert np.exp(log_q.numpy()[0]) == pytest.approx(2.0, rel=0.01)


def test_mixed_negatives_unseen_index_negative_gets_a_bounded_correction():
    est = StreamingFrequencyEstimator(num_buckets=16, alpha=0.5)
    src = MixedNegatives(2, 10, frequencies=est)
    src.draw(tf.constant([1, 2]), training=True)
    _, ids, _, log_q = src(tf.ones([2, 2]), tf.ones([2, 2]), tf.constant([1, 2]),
                           tf.ones([2, 2]), tf.constant([7, 8]))
    # unseen 7, 8: Q = B/(t + 1) + k/N = 2/3 + 0.2
    np.testing.assert_allclose(np.exp(log_q.numpy()[2:]), 2 / 3 + 0.2, rtol=1e-5)
