import doctest
import json

import numpy as np
import pytest
import tensorflow as tf

from twotower.data import samplers
from twotower.data.samplers import (AliasTable, Sampler, UniformSampler, UnigramSampler,
                                    build_alias_table, deserialize_sampler,
                                    sampler_from_config, serialize_sampler)


def test_alias_table_reproduces_the_distribution_exactly(rng):
    p = rng.random(50) ** 3
    p /= p.sum()
    prob, alias = build_alias_table(p)
    # P(draw = j) = (1/N) Σ_i [prob_i if i == j] + (1 − prob_i)[alias_i == j]
    n = p.size
    implied = prob / n
    np.add.at(implied, alias, (1.0 - prob) / n)
    np.testing.assert_allclose(implied, p, atol=1e-12)
    table = AliasTable.from_probabilities(p)
    np.testing.assert_array_equal(table.prob, prob)
    np.testing.assert_array_equal(table.alias, alias)
    np.testing.assert_allclose(table.distribution(), p, atol=1e-12)
    # weights that do not sum to 1 are normalised first
    np.testing.assert_allclose(AliasTable.from_probabilities(3 * p).distribution(), p,
                               atol=1e-12)


def test_alias_table_draws_numpy_tf_and_stateless_alike():
    p = np.array([0.5, 0.1, 0.0, 0.4])
    table = AliasTable.from_probabilities(p)
    draws = table.draw(np.random.default_rng(1), (400, 250))
    assert draws.shape == (400, 250) and draws.dtype == np.int64
    np.testing.assert_allclose(np.bincount(draws.ravel(), minlength=4) / draws.size, p,
                               atol=0.005)
    # the numpy draw is a function of the generator's state: the column, then the coin
    np.testing.assert_array_equal(table.draw(np.random.default_rng(7), 50),
                                  table.draw(7, 50))
    tf_draws = tf.function(lambda: table.draw_tf([100_000], seed=2))().numpy()
    np.testing.assert_allclose(np.bincount(tf_draws, minlength=4) / tf_draws.size, p,
                               atol=0.01)
    seed = tf.constant([3, 4], tf.int64)
    stateless = table.draw_tf_stateless([100_000], seed, dtype=tf.int32)
    assert stateless.dtype == tf.int32
    np.testing.assert_allclose(np.bincount(stateless.numpy(), minlength=4) / 100_000, p,
                               atol=0.01)
    np.testing.assert_array_equal(table.draw_tf_stateless([100_000], seed, dtype=tf.int32),
                                  stateless)  # a function of the seed
    assert not np.any(stateless.numpy() == 2)  # a zero probability is never drawn


def test_alias_table_bad_input_is_named():
    with pytest.raises(ValueError, match="non-empty 1-D arrays of one length"):
        AliasTable([1.0, 1.0], [0])
    with pytest.raises(ValueError, match=r"alias must hold ids in \[0, 2\)"):
        AliasTable([0.5, 1.0], [0, 2])
    with pytest.raises(ValueError, match=r"prob must lie in \[0, 1\]"):
        AliasTable([1.5, 1.0], [0, 1])
    with pytest.raises(ValueError, match="positive sum"):
        AliasTable.from_probabilities([0.0, 0.0])


def test_docstring_examples_run():
    result = doctest.testmod(samplers, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted >= 10 and result.failed == 0


def test_unigram_power_075_matches_word2vec_formula():
    counts = np.array([100, 10, 1, 0])
    s = UnigramSampler(counts, power=0.75, seed=0)
    expected = np.array([100 ** 0.75, 10 ** 0.75, 1.0, 0.0])
    np.testing.assert_allclose(s.probabilities, expected / expected.sum())
    draws = s.sample(200_000)
    freq = np.bincount(draws, minlength=4) / draws.size
    np.testing.assert_allclose(freq, s.probabilities, atol=0.005)
    assert freq[3] == 0  # a zero count is never drawn
    # its draws are its alias table's (the one implementation of the draw)
    np.testing.assert_array_equal(UnigramSampler(counts, seed=4).sample(100),
                                  s.alias_table().draw(np.random.default_rng(4), 100))


def test_tf_draws_follow_the_same_distribution():
    s = UnigramSampler([5, 1, 1, 3], power=1.0)
    draws = tf.function(lambda: s.sample_tf([100_000], seed=3))().numpy()
    freq = np.bincount(draws, minlength=4) / draws.size
    np.testing.assert_allclose(freq, [0.5, 0.1, 0.1, 0.3], atol=0.01)
    u = UniformSampler(7)
    draws = u.sample_tf([70_000]).numpy()
    np.testing.assert_allclose(np.bincount(draws, minlength=7) / 70_000, 1 / 7, atol=0.01)


def test_uniform_sampler_has_the_exact_uniform_alias_table():
    table = UniformSampler(5).alias_table()
    np.testing.assert_array_equal(table.prob, np.ones(5))
    np.testing.assert_array_equal(table.alias, np.arange(5))
    np.testing.assert_allclose(table.distribution(), 0.2)


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


class Weighted(Sampler):
    """A user's sampler: only ``probabilities`` and ``get_config``; the rest is the base's."""

    def __init__(self, weights, seed=None):
        super().__init__(seed)
        self.weights = list(weights)

    @property
    def probabilities(self):
        w = np.asarray(self.weights, np.float64)
        return w / w.sum()

    def get_config(self):
        return {"weights": self.weights}


def test_sampler_is_an_abstract_contract():
    class NoProbabilities(Sampler):
        def get_config(self):
            return {}

    class NoConfig(Sampler):
        probabilities = np.array([1.0])

    for cls in (NoProbabilities, NoConfig):
        with pytest.raises(TypeError, match="abstract"):
            cls()
    assert isinstance(UnigramSampler([1]), Sampler) and isinstance(UniformSampler(2), Sampler)


def test_a_user_sampler_gets_every_draw_from_its_probabilities():
    s = Weighted([6, 0, 3, 1], seed=0)
    p = np.array([0.6, 0.0, 0.3, 0.1])
    assert s.num_items == 4
    np.testing.assert_allclose(s.alias_table().distribution(), p, atol=1e-12)
    assert s.alias_table() is s.alias_table()  # built once
    for draws in (s.sample(100_000), s.sample_tf([100_000], seed=1).numpy()):
        assert draws.dtype == np.int64
        np.testing.assert_allclose(np.bincount(draws, minlength=4) / 100_000, p, atol=0.01)
    np.testing.assert_allclose(s.expected_count(tf.constant([0, 3]), 10).numpy(), [6.0, 1.0])
    assert sorted(s.sample_without_replacement(3)) == [0, 2, 3]


def test_config_round_trip_through_keras_registry():
    s = UnigramSampler([4, 1, 2], power=0.5)
    config = serialize_sampler(s)
    assert config["registered_name"] == "twotower>UnigramSampler"
    assert config["config"] == {"counts": [4.0, 1.0, 2.0], "power": 0.5}
    again = deserialize_sampler(json.loads(json.dumps(config)))
    assert type(again) is UnigramSampler
    np.testing.assert_allclose(again.probabilities, s.probabilities)
    assert deserialize_sampler(serialize_sampler(UniformSampler(9))).num_items == 9
    # Keras' legacy form (what the SavedModel format writes)
    legacy = {"class_name": "twotower>UniformSampler", "config": {"num_items": 4}}
    assert deserialize_sampler(legacy).num_items == 4


def test_flat_configs_saved_before_registration_still_load():
    # verbatim, as UnigramSampler / UniformSampler.get_config() wrote them before
    old_unigram = {"class_name": "UnigramSampler", "counts": [1.0, 2.0, 3.0], "power": 0.75}
    old_uniform = {"class_name": "UniformSampler", "num_items": 5}
    s = deserialize_sampler(old_unigram)
    assert type(s) is UnigramSampler and s.power == 0.75
    np.testing.assert_allclose(s.probabilities, UnigramSampler([1, 2, 3]).probabilities)
    u = sampler_from_config(old_uniform)  # the old name still reads both forms
    assert type(u) is UniformSampler and u.num_items == 5
    assert old_unigram["class_name"] == "UnigramSampler"  # the caller's dict is untouched
    with pytest.raises(ValueError, match="unknown sampler class_name 'Zipf'.*twotower>Zipf"
                                         ".*register_keras_serializable"):
        deserialize_sampler({"class_name": "Zipf", "num_items": 3})
    with pytest.raises(ValueError, match="must be a dict with a class_name"):
        deserialize_sampler({"num_items": 3})
    with pytest.raises(ValueError, match="sampler must be a twotower.data.samplers.Sampler"):
        serialize_sampler(object())


def test_a_sampler_without_an_alias_table_must_draw_itself():
    class Stateful(Weighted):
        def alias_table(self):
            return None

    s = Stateful([1, 1])
    with pytest.raises(NotImplementedError, match="Stateful.alias_table.. is None.*must "
                                                  "define sample_tf"):
        s.sample_tf([3])
    with pytest.raises(NotImplementedError, match="must define sample$"):
        s.sample(3)
