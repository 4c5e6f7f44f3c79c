import numpy as np
import pytest
import tensorflow as tf

from twotower.data.frequency import StreamingFrequencyEstimator


def test_streaming_estimate_within_10_percent_on_a_zipf_stream():
    # Zipf(1.1) stream over 2000 ids, batches of 64, 4000 steps. The estimator targets
    # P(id in a batch) = 1 − (1 − p)^B (an id seen twice in a batch counts once).
    rng = np.random.default_rng(0)
    n, batch, steps = 2000, 64, 4000
    p = 1.0 / np.arange(1, n + 1) ** 1.1
    p /= p.sum()
    stream = rng.choice(n, size=(steps, batch), p=p)
    # The moving average's relative noise is about sqrt(α/2·(1 − P)): α = 0.002 keeps it
    # near 3%, and 4000 steps give the 20th id (P ≈ 0.3) over 1000 sightings to settle.
    est = StreamingFrequencyEstimator(num_buckets=4096, alpha=0.002)
    update = tf.function(est.update)
    for ids in tf.data.Dataset.from_tensor_slices(stream).prefetch(8):
        update(ids)
    top = np.arange(20)
    truth = 1.0 - (1.0 - p[top]) ** batch
    got = est(tf.constant(top)).numpy()
    rel = np.abs(got - truth) / truth
    assert rel.max() < 0.10, (rel.max(), got[:5], truth[:5])


def test_update_rule_worked_by_hand():
    est = StreamingFrequencyEstimator(num_buckets=16, alpha=0.5)
    est.update(tf.constant([3]))          # t=1: first sighting, δ = 1
    est.update(tf.constant([5]))          # t=2
    est.update(tf.constant([3, 3]))       # t=3: gap 2 → δ = 0.5·1 + 0.5·2 = 1.5
    assert est.delta.numpy()[3] == pytest.approx(1.5)
    assert est(tf.constant([3])).numpy()[0] == pytest.approx(1 / 1.5)
    assert est(tf.constant([7])).numpy()[0] == pytest.approx(est.min_probability)


def test_config_and_bad_input():
    est = StreamingFrequencyEstimator(num_buckets=32, alpha=0.05)
    clone = StreamingFrequencyEstimator.from_config(est.get_config())
    assert (clone.num_buckets, clone.alpha) == (32, 0.05)
    with pytest.raises(ValueError, match=r"alpha must be in \(0, 1\], got 0"):
        StreamingFrequencyEstimator(alpha=0)
    with pytest.raises(ValueError, match="num_buckets must be an int >= 1, got -4"):
        StreamingFrequencyEstimator(num_buckets=-4)
