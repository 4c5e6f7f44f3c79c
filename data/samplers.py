"""Negative samplers: unigram^α by the alias method, and uniform over the item corpus.

Both expose the same small interface:
  - ``num_items``: N, the size of the id space [0, N);
  - ``probabilities``: p(c) as a numpy array of shape [N];
  - ``sample(n)``: n i.i.d. draws as numpy int64 (for data pipelines);
  - ``sample_tf(shape)``: the same distribution as a TensorFlow op (for train_step);
  - ``expected_count(ids, num_draws)``: Q(c) = num_draws · p(c), the term that logQ
    correction subtracts (docs/formulation.md).
"""

import numpy as np
import tensorflow as tf


def _check_seed(seed):
    if seed is not None and (not isinstance(seed, (int, np.integer)) or seed < 0):
        raise ValueError(f"seed must be a non-negative int or None, got {seed!r}")


class _Sampler:
    """Shared interface; subclasses set ``num_items`` and ``probabilities``."""

    def _tf_constant(self, name, value, dtype):
        """A TF copy of a numpy table, made once outside any traced function (a constant
        cached from inside a tf.function could not be used by another one)."""
        cache = self.__dict__.setdefault("_tf_cache", {})
        if name not in cache:
            with tf.init_scope():
                cache[name] = tf.constant(value, dtype)
        return cache[name]

    def expected_count(self, ids, num_draws):
        """Q(c) = num_draws · p(c) for a TF tensor or numpy array of ids."""
        if tf.is_tensor(ids):
            probs = self._tf_constant("probabilities", self.probabilities, tf.float32)
            return tf.cast(num_draws, tf.float32) * tf.gather(probs, ids)
        return num_draws * self.probabilities[np.asarray(ids)]

    def sample_without_replacement(self, n):
        """n distinct ids (numpy), drawn in proportion to p; needs n <= N."""
        if not 0 < n <= self.num_items:
            raise ValueError(
                f"n must be in [1, num_items={self.num_items}] to draw without replacement, "
                f"got {n!r}")
        return self._rng.choice(self.num_items, size=n, replace=False, p=self.probabilities)


class UnigramSampler(_Sampler):
    """Draws ids from counts^α / Σ counts^α in O(1) per draw (Walker's alias method).

    word2vec (Mikolov et al., "Distributed Representations of Words and Phrases and their
    Compositionality", 2013) draws negatives from p_α(w) = count(w)^α / Σ_v count(v)^α
    with α = 0.75, via a 1e8-entry table; the alias table (Walker 1977, Vose 1991) gives
    the same distribution exactly in O(N) memory:

        draw i ~ Uniform{0..N-1}, u ~ Uniform[0, 1);  return i if u < prob[i] else alias[i]

    Args:
      counts: [N] non-negative counts (ids with count 0 are never drawn).
      power: α (0.75 for word2vec; 1 for the unigram itself; 0 for uniform over seen ids).
      seed: numpy seed for ``sample``; ``sample_tf`` uses TF's global/op seeds.
    """

    def __init__(self, counts, power=0.75, seed=None):
        counts = np.asarray(counts, dtype=np.float64)
        if counts.ndim != 1 or counts.size == 0:
            raise ValueError(f"counts must be a non-empty 1-D array, got shape {counts.shape}")
        if np.any(counts < 0) or not np.all(np.isfinite(counts)):
            raise ValueError("counts must be finite and >= 0; got min "
                             f"{counts.min()!r}")
        if counts.sum() <= 0:
            raise ValueError("counts must have a positive total, got all zeros")
        if not np.isfinite(power) or power < 0:
            raise ValueError(f"power must be a finite number >= 0, got {power!r}")
        _check_seed(seed)
        self.power = float(power)
        self.num_items = counts.size
        weights = np.where(counts > 0, counts ** self.power, 0.0)
        self.probabilities = weights / weights.sum()
        self.alias_prob, self.alias_index = build_alias_table(self.probabilities)
        self._rng = np.random.default_rng(seed)
        self._counts = counts

    def get_config(self):
        return {"class_name": "UnigramSampler", "counts": self._counts.tolist(),
                "power": self.power}

    def sample(self, n):
        i = self._rng.integers(0, self.num_items, size=n)
        u = self._rng.random(size=n)
        return np.where(u < self.alias_prob[i], i, self.alias_index[i]).astype(np.int64)

    def sample_tf(self, shape, seed=None):
        prob = self._tf_constant("alias_prob", self.alias_prob, tf.float32)
        alias = self._tf_constant("alias_index", self.alias_index, tf.int64)
        i = tf.random.uniform(shape, 0, self.num_items, dtype=tf.int64, seed=seed)
        u = tf.random.uniform(shape, dtype=tf.float32, seed=seed)
        return tf.where(u < tf.gather(prob, i), i, tf.gather(alias, i))


class UniformSampler(_Sampler):
    """Draws ids uniformly from the whole corpus [0, N): p(c) = 1/N, Q(c) = k/N.

    These are the "index negatives" of mixed negative sampling (Yang et al., "Mixed
    Negative Sampling for Learning Two-tower Neural Networks in Recommendations", 2020).
    """

    def __init__(self, num_items, seed=None):
        if not isinstance(num_items, (int, np.integer)) or num_items < 1:
            raise ValueError(f"num_items must be an int >= 1, got {num_items!r}")
        _check_seed(seed)
        self.num_items = int(num_items)
        self.probabilities = np.full(self.num_items, 1.0 / self.num_items)
        self._rng = np.random.default_rng(seed)

    def get_config(self):
        return {"class_name": "UniformSampler", "num_items": self.num_items}

    def sample(self, n):
        return self._rng.integers(0, self.num_items, size=n, dtype=np.int64)

    def sample_tf(self, shape, seed=None):
        return tf.random.uniform(shape, 0, self.num_items, dtype=tf.int64, seed=seed)

    def expected_count(self, ids, num_draws):
        if tf.is_tensor(ids):
            return tf.fill(tf.shape(ids), tf.cast(num_draws, tf.float32) / self.num_items)
        return np.full(np.shape(ids), num_draws / self.num_items)


def build_alias_table(probabilities):
    """Vose's alias method: returns (prob [N] float, alias [N] int64) for O(1) draws.

    Column i keeps itself with probability prob[i] and otherwise yields alias[i]; the
    mixture over uniformly chosen columns equals ``probabilities`` exactly.
    """
    p = np.asarray(probabilities, dtype=np.float64)
    n = p.size
    scaled = p * n
    prob = np.ones(n)
    alias = np.arange(n, dtype=np.int64)
    small = [i for i in range(n) if scaled[i] < 1.0]
    large = [i for i in range(n) if scaled[i] >= 1.0]
    while small and large:
        s, g = small.pop(), large.pop()
        prob[s] = scaled[s]
        alias[s] = g
        scaled[g] = scaled[g] + scaled[s] - 1.0
        (small if scaled[g] < 1.0 else large).append(g)
    # What remains is 1 up to rounding.
    for i in small + large:
        prob[i] = 1.0
    return prob, alias


def sampler_from_config(config):
    """Rebuilds a sampler from its ``get_config()`` dict."""
    config = dict(config)
    name = config.pop("class_name", None)
    classes = {"UnigramSampler": UnigramSampler, "UniformSampler": UniformSampler}
    if name not in classes:
        raise ValueError(f"unknown sampler class_name {name!r}; expected one of {sorted(classes)}")
    return classes[name](**config)
