"""RetrievalLoss against a plain-numpy reference of the whole pipeline, and its limiting
cases (docs/formulation.md)."""

import numpy as np
import pytest
import tensorflow as tf

from twotower.data.frequency import StreamingFrequencyEstimator
from twotower.data.samplers import UniformSampler, UnigramSampler
from twotower.losses import (AllItems, InBatch, MixedNegatives, NCE, RetrievalLoss,
                             SampledNegatives, Triplet, softmax_loss)


def np_softmax_loss(z, label):
    m = z.max()
    return -z[label] + m + np.log(np.exp(z - m).sum())


def test_in_batch_softmax_with_logq_tau_and_accidental_hits_matches_numpy(rng, grads):
    numeric_grad, tf_value_and_grad = grads
    # ids 2 appears twice: row 1's column 2 and row 2's column 1 are accidental hits.
    ids = np.array([1, 2, 2, 3])
    counts = rng.integers(1, 20, size=6).astype(float)
    u = rng.normal(size=(4, 3))
    v = rng.normal(size=(4, 3))
    tau = 0.5
    p = counts / counts.sum()

    def reference(uu):
        total = 0.0
        for i in range(4):
            z = uu[i] @ v.T / tau - np.log(4 * p[ids])
            keep = [j for j in range(4) if j == i or ids[j] != ids[i]]
            total += np_softmax_loss(z[keep], keep.index(i))
        return total

    layer = RetrievalLoss("softmax", InBatch(frequencies=counts), temperature=tau)
    assert layer.logq
    value, grad = tf_value_and_grad(
        lambda uu: layer(tf.cast(uu, tf.float32), tf.constant(v, tf.float32), ids), u)
    np.testing.assert_allclose(value, reference(u), rtol=1e-5)
    np.testing.assert_allclose(grad, numeric_grad(reference, u), atol=1e-4)


def test_every_item_as_a_candidate_equals_full_softmax(rng):
    # A batch holding each of the N items once, uniform Q: in-batch (sampled) softmax over
    # the batch IS the full softmax over all items.
    n, d = 8, 4
    table = rng.normal(size=(n, d)).astype(np.float32)
    perm = rng.permutation(n)
    u = rng.normal(size=(n, d)).astype(np.float32)
    v = table[perm]
    in_batch = RetrievalLoss("softmax", InBatch(frequencies=np.ones(n)))(u, v, perm).numpy()
    full_layer = RetrievalLoss("softmax", AllItems(n))
    extra_ids = full_layer.draw(perm)
    full = full_layer(u, v, perm, tf.constant(table), extra_ids).numpy()
    reference = [np_softmax_loss(u[i] @ table.T, perm[i]) for i in range(n)]
    np.testing.assert_allclose(in_batch, reference, rtol=1e-5)
    np.testing.assert_allclose(full, reference, rtol=1e-5)


def test_uniform_q_changes_nothing(rng):
    u, v = rng.normal(size=(2, 5, 3)).astype(np.float32)
    ids = np.array([0, 1, 2, 3, 4])
    plain = RetrievalLoss("softmax", InBatch())(u, v, ids)
    uniform = RetrievalLoss("softmax", InBatch(frequencies=np.full(9, 7.0)))(u, v, ids)
    np.testing.assert_allclose(plain, uniform, rtol=1e-6)
    # same for sampled softmax with a uniform sampler: Q = k/N is one constant
    extra_ids = tf.constant([5, 6, 7], tf.int64)
    extra = tf.constant(rng.normal(size=(3, 3)), tf.float32)
    src = SampledNegatives(UniformSampler(9), 3)
    with_q = RetrievalLoss("softmax", src, logq=True)(u, v, ids, extra, extra_ids)
    without = RetrievalLoss("softmax", src, logq=False)(u, v, ids, extra, extra_ids)
    np.testing.assert_allclose(with_q, without, rtol=1e-6)


def test_sampled_softmax_per_example_negatives_match_numpy(rng):
    n, k = 10, 4
    sampler = UnigramSampler(rng.integers(1, 50, size=n))
    u, v = rng.normal(size=(2, 3, 5)).astype(np.float32)
    ids = np.array([0, 1, 2])
    neg_ids = np.array([[3, 4, 0, 5], [6, 7, 8, 9], [1, 2, 3, 4]])  # row 0 and 2 hit
    neg = rng.normal(size=(3, k, 5)).astype(np.float32)
    layer = RetrievalLoss("softmax", SampledNegatives(sampler, k, shared=False))
    got = layer(u, v, ids, neg, neg_ids).numpy()
    logq = np.log(k * sampler.probabilities)
    for i in range(3):
        z = np.concatenate([[u[i] @ v[i]], neg[i] @ u[i]]) - logq[np.r_[ids[i], neg_ids[i]]]
        keep = [0] + [j + 1 for j in range(k) if neg_ids[i, j] != ids[i]]
        assert got[i] == pytest.approx(np_softmax_loss(z[keep], 0), rel=1e-5)


def test_mixed_negatives_q_is_the_expected_count_under_the_mixture(rng):
    n, k, b = 20, 6, 4
    counts = rng.integers(1, 30, size=n).astype(float)
    src = MixedNegatives(k, n, frequencies=counts)
    ids = np.array([3, 5, 7, 9])
    extra_ids = tf.constant([0, 1, 2, 3, 4, 5], tf.int64)
    u, v = rng.normal(size=(2, b, 2)).astype(np.float32)
    extra = rng.normal(size=(k, 2)).astype(np.float32)
    _, cand_ids, labels, log_q = src(u, v, ids, extra, extra_ids)
    p = counts / counts.sum()
    expected = b * p[cand_ids.numpy()] + k / n
    np.testing.assert_allclose(np.exp(log_q.numpy()), expected, rtol=1e-5)
    np.testing.assert_array_equal(labels.numpy(), np.arange(b))
    with pytest.raises(ValueError, match="num_index_negatives must be an int in \\[1, num_items=20\\], got 21"):
        MixedNegatives(21, n)


def test_nce_without_correction_equals_neg(rng):
    sampler = UnigramSampler(rng.integers(1, 9, size=12))
    src = SampledNegatives(sampler, 5, shared=False)
    u, v = rng.normal(size=(2, 4, 3)).astype(np.float32)
    ids = np.array([0, 1, 2, 3])
    neg_ids = rng.integers(4, 12, size=(4, 5))
    neg = rng.normal(size=(4, 5, 3)).astype(np.float32)
    nce_off = RetrievalLoss("nce", src, logq=False)(u, v, ids, neg, neg_ids)
    neg_loss = RetrievalLoss("neg", src)(u, v, ids, neg, neg_ids)
    nce_on = RetrievalLoss("nce", src)(u, v, ids, neg, neg_ids)
    np.testing.assert_allclose(nce_off, neg_loss, rtol=1e-6)
    assert not np.allclose(nce_on, neg_loss)


def test_nce_gradient_approaches_softmax_direction_as_k_grows(rng):
    # With a self-normalised model (Σ exp s = 1), E[∇ NCE] → ∇ softmax as k → ∞.
    n = 30
    s = rng.normal(size=n)
    s = s - np.log(np.exp(s).sum())
    target = 4
    full_grad = np.exp(s) - np.eye(n)[target]
    sampler = UnigramSampler(rng.integers(1, 20, size=n), power=1.0, seed=1)
    cosines = []
    for k in (2, 20000):
        noise = sampler.sample(k)
        cols = np.r_[target, noise]
        logits = tf.Variable(s[cols] - np.log(k * sampler.probabilities[cols]))
        with tf.GradientTape() as tape:
            loss = NCE().per_example(logits[tf.newaxis], tf.constant([0]))
        g = tape.gradient(loss, logits).numpy()
        per_item = np.bincount(cols, weights=g, minlength=n)
        cosines.append(per_item @ full_grad / np.linalg.norm(per_item) / np.linalg.norm(full_grad))
    assert cosines[1] > 0.99
    assert cosines[1] > cosines[0]


def test_hard_negatives_keep_positive_and_top_m(rng):
    u = np.eye(4, dtype=np.float32)
    v = np.array([[1, 0, 0, 0], [0.9, 1, 0, 0], [0.5, 0, 1, 0], [0.1, 0, 0, 1]], np.float32)
    ids = np.arange(4)
    layer = RetrievalLoss("softmax", InBatch(), num_hard_negatives=1)
    z, labels = layer.logits(u, v, ids)
    assert z.shape == (4, 2) and set(labels.numpy()) == {0}
    # row 0: positive 1.0, hardest negative 0.9 (item 1)
    np.testing.assert_allclose(z.numpy()[0], [1.0, 0.9], rtol=1e-6)


def test_query_own_id_is_masked_for_item_to_item(rng):
    u, v = rng.normal(size=(2, 3, 2)).astype(np.float32)
    ids = np.array([10, 11, 12])
    query_ids = np.array([11, 12, 10])  # each query's own id is another row's positive
    z, _ = RetrievalLoss().logits(u, v, ids, query_ids=query_ids)
    assert z.numpy()[0, 1] < -1e8 and z.numpy()[1, 2] < -1e8 and z.numpy()[2, 0] < -1e8


def test_streaming_frequencies_feed_logq(rng):
    est = StreamingFrequencyEstimator(num_buckets=64, alpha=0.5)
    src = InBatch(frequencies=est)
    layer = RetrievalLoss("softmax", src)
    assert layer.logq
    for _ in range(3):
        layer.draw(tf.constant([1, 2, 3]), training=True)
    _, _, _, log_q = src(tf.ones([3, 2]), tf.ones([3, 2]), tf.constant([1, 2, 3]))
    # id 3 sits at positions 3, 6, 9: every gap is 3, p̂ = 1/3, Q = B·p̂ = 1 (seen once a
    # batch); ids 1 and 2 start with a shorter first gap (1, 2), then gaps of 3
    np.testing.assert_allclose(np.exp(log_q.numpy()), 3 / np.array([2.5, 2.75, 3.0]),
                               rtol=1e-6)


@pytest.mark.parametrize("head", ["softmax", "neg", "triplet"])
def test_float64_embeddings_are_cast_and_match_float32(rng, head):
    u, v = rng.normal(size=(2, 5, 3))
    ids = np.array([0, 1, 2, 1, 4])
    layer = RetrievalLoss(head, InBatch(frequencies=np.arange(1, 6)))
    want = layer(tf.constant(u, tf.float32), tf.constant(v, tf.float32), ids).numpy()
    for cast in (tf.constant, np.asarray):  # float64 tensors and numpy arrays
        got = layer(cast(u), cast(v), ids)
        assert got.dtype == tf.float32
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-6)
    # gradients reach float64 variables through the cast
    uu = tf.Variable(u)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(layer(uu, tf.constant(v), ids))
    assert tape.gradient(loss, uu).dtype == tf.float64


def test_float64_extra_candidates_are_cast(rng):
    layer = RetrievalLoss("softmax", MixedNegatives(3, 6, frequencies=np.ones(6)))
    extra_ids = layer.draw(tf.constant([0, 1]), training=True)
    u, v = rng.normal(size=(2, 2, 4))
    extra = rng.normal(size=(3, 4))
    got = layer(tf.constant(u), tf.constant(v), [0, 1], tf.constant(extra), extra_ids)
    want = layer(u.astype(np.float32), v.astype(np.float32), [0, 1],
                 extra.astype(np.float32), extra_ids)
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-6)


def test_integer_embeddings_are_refused_with_the_argument_named():
    with pytest.raises(ValueError, match="positives embeddings must be floating point.*int32"):
        RetrievalLoss().logits(np.ones((2, 3), np.float32), tf.ones([2, 3], tf.int32), [0, 1])


def test_config_round_trip():
    layers = [
        RetrievalLoss("softmax", InBatch(frequencies=np.arange(1, 5)), temperature=0.1,
                      learn_temperature=True, similarity="cosine"),
        RetrievalLoss("nce", SampledNegatives(UnigramSampler([1, 2, 3]), 2, shared=False)),
        RetrievalLoss(Triplet(0.3, "hardest"), MixedNegatives(2, 5), num_hard_negatives=2),
        RetrievalLoss("softmax", InBatch(frequencies=StreamingFrequencyEstimator(8, 0.1))),
    ]
    for layer in layers:
        clone = RetrievalLoss.from_config(layer.get_config())
        assert clone.get_config() == layer.get_config()


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="temperature must be a finite number > 0, got 0.0"):
        RetrievalLoss(temperature=0)
    with pytest.raises(ValueError, match="temperature must be a finite number > 0, got -1.0"):
        RetrievalLoss(temperature=-1)
    with pytest.raises(ValueError, match="head must be one of"):
        RetrievalLoss("hinge")
    with pytest.raises(ValueError, match="similarity must be one of"):
        RetrievalLoss(similarity="l2")
    with pytest.raises(ValueError, match="logq=True needs candidates that give Q"):
        RetrievalLoss("softmax", InBatch(), logq=True)
    layer = RetrievalLoss()
    with pytest.raises(ValueError, match="query and item towers disagree on the dimension: "
                                         "query dim 3, item dim 4"):
        layer(tf.zeros([2, 3]), tf.zeros([2, 4]), tf.constant([0, 1]))
    with pytest.raises(ValueError, match="query embeddings must have rank 2"):
        layer(tf.zeros([2]), tf.zeros([2, 4]), tf.constant([0, 1]))
    with pytest.raises(ValueError, match="empty batch"):
        layer(tf.zeros([0, 3]), tf.zeros([0, 3]), tf.constant([], tf.int32))
    with pytest.raises(ValueError, match="num_hard_negatives must be None or an int >= 1, got 0"):
        RetrievalLoss(num_hard_negatives=0)
