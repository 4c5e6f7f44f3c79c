import numpy as np
import pytest
import tensorflow as tf

from twotower.data.samplers import (UniformSampler, UnigramSampler, build_alias_table,
                                    sampler_from_config)


def test_alias_table_reproduces_the_distribution_exactly(rng):
    p = rng.random(50) ** 3
    p /= p.sum()
    prob, alias = build_alias_table(p)
    # P(draw = j) = (1/N) Σ_i [prob_i if i == j] + (1 − prob_i)[alias_i == j]
    n = p.size
    implied = prob / n
    np.add.at(implied, alias, (1.0 - prob) / n)
    np.testing.assert_allclose(implied, p, atol=1e-12)


def test_unigram_power_075_matches_word2vec_formula():
    counts = np.array([100, 10, 1, 0])
    s = UnigramSampler(counts, power=0.75, seed=0)
    expected = np.array([100 ** 0.75, 10 ** 0.75, 1.0, 0.0])
    np.testing.assert_allclose(s.probabilities, expected / expected.sum())
    draws = s.sample(200_000)
    freq = np.bincount(draws, minlength=4) / draws.size
    np.testing.assert_allclose(freq, s.probabilities, atol=0.005)
    assert freq[3] == 0  # a zero count is never drawn


def test_tf_draws_follow_the_same_distribution():
    s = UnigramSampler([5, 1, 1, 3], power=1.0)
    draws = tf.function(lambda: s.sample_tf([100_000], seed=3))().numpy()
    freq = np.bincount(draws, minlength=4) / draws.size
    np.testing.assert_allclose(freq, [0.5, 0.1, 0.1, 0.3], atol=0.01)
    u = UniformSampler(7)
    draws = u.sample_tf([70_000]).numpy()
    np.testing.assert_allclose(np.bincount(draws, minlength=7) / 70_000, 1 / 7, atol=0.01)


def test_expected_count_is_k_times_p():
    s = UnigramSampler([1, 3], power=1.0)
    np.testing.assert_allclose(s.expected_count(np.array([0, 1]), 8), [2.0, 6.0])
    np.testing.assert_allclose(s.expected_count(tf.constant([0, 1]), 8).numpy(), [2.0, 6.0])
    np.testing.assert_allclose(UniformSampler(4).expected_count(tf.constant([2]), 8), [2.0])


def test_without_replacement_and_bad_input_are_named():
    s = UniformSampler(5, seed=0)
    assert sorted(s.sample_without_replacement(5)) == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match=r"n must be in \[1, num_items=5\].*got 6"):
        s.sample_without_replacement(6)
    with pytest.raises(ValueError, match="counts must have a positive total"):
        UnigramSampler([0, 0])
    with pytest.raises(ValueError, match="power must be a finite number >= 0, got -1"):
        UnigramSampler([1, 2], power=-1)
    with pytest.raises(ValueError, match="num_items must be an int >= 1, got 0"):
        UniformSampler(0)
    with pytest.raises(ValueError, match="seed must be a non-negative int"):
        UniformSampler(3, seed=-2)


def test_config_round_trip():
    s = UnigramSampler([4, 1, 2], power=0.5)
    np.testing.assert_allclose(sampler_from_config(s.get_config()).probabilities, s.probabilities)
    assert sampler_from_config(UniformSampler(9).get_config()).num_items == 9
