import numpy as np
import pytest
import tensorflow as tf

from twotower.data.frequency import StreamingFrequencyEstimator


def reference_algorithm_2(batches, num_buckets, alpha):
    """Yi et al. 2019, Algorithm 2, one update per occurrence, in plain Python: the clock
    t counts occurrences; a bucket's first gap replaces B (module docstring)."""
    a = np.zeros(num_buckets, np.int64)
    b = np.zeros(num_buckets, np.float64)
    t = 0
    for batch in batches:
        for y in np.asarray(batch).reshape(-1):
            t += 1
            h = int(y) % num_buckets
            gap = t - a[h]
            b[h] = (1 - alpha) * b[h] + alpha * gap if a[h] > 0 else gap
            a[h] = t
    return a, b, t


def _stream(estimator, batches):
    update = tf.function(estimator.update)
    for ids in tf.data.Dataset.from_tensor_slices(batches).prefetch(8):
        update(ids)


@pytest.mark.parametrize("mode", ["eager", "xla"])
def test_per_occurrence_update_matches_the_plain_python_algorithm(rng, mode):
    # small id range, so ids repeat inside batches and collide in buckets (ids 3 and 11);
    # the update has static shapes only, so it also compiles with XLA (jit_compile)
    batches = rng.integers(0, 12, size=(30, 7))
    est = StreamingFrequencyEstimator(num_buckets=8, alpha=0.3)
    update = est.update if mode == "eager" else tf.function(est.update, jit_compile=True)
    for batch in batches:
        update(tf.constant(batch))
    a, b, t = reference_algorithm_2(batches, 8, 0.3)
    assert est.occurrences.numpy() == t == batches.size
    assert est.step.numpy() == len(batches)  # batches recorded
    np.testing.assert_array_equal(est.last_seen.numpy(), a)
    np.testing.assert_allclose(est.delta.numpy(), b, rtol=1e-5)
    np.testing.assert_allclose(est(tf.range(8)).numpy(), 1.0 / b, rtol=1e-5)


def test_an_empty_batch_changes_nothing_but_the_step():
    est = StreamingFrequencyEstimator(num_buckets=8, alpha=0.3)
    est.update(tf.constant([1, 2, 1]))
    before = est.delta.numpy().copy()
    est.update(tf.zeros([0], tf.int64))
    np.testing.assert_array_equal(est.delta.numpy(), before)
    assert (est.step.numpy(), est.occurrences.numpy()) == (2, 3)


def test_update_rule_worked_by_hand():
    est = StreamingFrequencyEstimator(num_buckets=16, alpha=0.5)
    est.update(tf.constant([3]))          # t=1: first sighting, δ = 1
    est.update(tf.constant([5]))          # t=2
    est.update(tf.constant([3, 3]))       # t=3: gap 2 → δ = 1.5; t=4: gap 1 → δ = 1.25
    assert est.delta.numpy()[3] == pytest.approx(1.25)
    assert est.last_seen.numpy()[3] == 4
    assert est(tf.constant([3])).numpy()[0] == pytest.approx(1 / 1.25)
    # a batch counting id 3 twice has expected count 2·p̂, not 1
    assert est.expected_count(tf.constant([3]), 2).numpy()[0] == pytest.approx(2 / 1.25)


def test_streamed_q_is_the_expected_count_on_a_zipf_stream(rng):
    # Zipf(1.1) over 2000 ids, batches of 256: the head item's B·p is ≈ 43, far past the
    # saturation at Q = 1 of an estimate of P(id in batch). Per occurrence, streamed Q must
    # match B·p of the static counts of the same stream within 10% for the top 20 ids.
    n, batch, steps = 2000, 256, 1500
    p = 1.0 / np.arange(1, n + 1) ** 1.1
    p /= p.sum()
    stream = rng.choice(n, size=(steps, batch), p=p)
    # the gap of an id is geometric, its relative spread ≈ 1; α = 0.002 averages over
    # ~500 occurrences (noise ≈ √(α/2) ≈ 3%), and the 20th id is seen ≈ 7500 times.
    est = StreamingFrequencyEstimator(num_buckets=4096, alpha=0.002)
    _stream(est, stream)
    static = np.bincount(stream.reshape(-1), minlength=n) / stream.size
    top = np.arange(20)
    assert batch * static[0] > 30
    got = est.expected_count(tf.constant(top), batch).numpy()
    rel = np.abs(got - batch * static[top]) / (batch * static[top])
    assert rel.max() < 0.10, (rel.max(), got[:5], batch * static[:5])
    # the batch-level estimate (one update per id and batch) is what this replaced:
    # it would give P(in batch) ≤ 1, here 1 − (1 − p)^B for the head item
    assert got[0] > 10 * (1 - (1 - p[0]) ** batch)


def test_unseen_id_counts_as_one_occurrence_not_as_a_tiny_floor():
    est = StreamingFrequencyEstimator(num_buckets=16, alpha=0.1)
    assert est(tf.constant([7])).numpy()[0] == pytest.approx(1.0)  # t = 0: 1/(0 + 1)
    est.update(tf.constant([1, 2, 1, 2, 1, 2, 3, 1]))
    unseen = est(tf.constant([7])).numpy()[0]
    assert unseen == pytest.approx(1 / 9)
    # never rarer-looking than the rarest seen id (id 3, seen once at position 7)
    assert unseen <= 1.0 and est(tf.constant([3])).numpy()[0] >= unseen
    assert np.log(unseen) > np.log(1e-6) + 10  # the old floor's +13.8 on the logit
    floored = StreamingFrequencyEstimator(num_buckets=16, min_probability=0.5)
    floored.update(tf.constant([1, 2, 3, 4]))
    assert floored(tf.constant([7])).numpy()[0] == pytest.approx(0.5)


def test_config_and_bad_input():
    est = StreamingFrequencyEstimator(num_buckets=32, alpha=0.05)
    clone = StreamingFrequencyEstimator.from_config(est.get_config())
    assert (clone.num_buckets, clone.alpha, clone.min_probability) == (32, 0.05, None)
    with pytest.raises(ValueError, match=r"alpha must be in \(0, 1\], got 0"):
        StreamingFrequencyEstimator(alpha=0)
    with pytest.raises(ValueError, match="num_buckets must be an int >= 1, got -4"):
        StreamingFrequencyEstimator(num_buckets=-4)
    with pytest.raises(ValueError, match=r"min_probability must be None or in \(0, 1\], got 0"):
        StreamingFrequencyEstimator(min_probability=0)
