"""Negative samplers: one contract (``Sampler``), one way to draw (``AliasTable``).

A sampler is a fixed distribution p over the item ids [0, N), drawn i.i.d. Its contract,
the abstract base class ``Sampler``:

  - ``num_items``: N, the size of the id space [0, N) (default: len(p));
  - ``probabilities``: p(c) as a numpy array of shape [N] (abstract);
  - ``sample(n)``: n i.i.d. draws as numpy int64 (for data pipelines);
  - ``sample_tf(shape, seed=None)``: the same distribution as a TensorFlow op (train_step);
  - ``expected_count(ids, num_draws)``: Q(c) = num_draws · p(c), the term that logQ
    correction subtracts (docs/formulation.md);
  - ``alias_table()``: p as an ``AliasTable`` (built once from p by default), the one
    form the fast word2vec engines draw from (training/sgd_trainer.py, training/hogwild.py);
    None when the draws are not i.i.d. from a fixed p, and those engines refuse it;
  - ``get_config()``: the constructor's arguments (abstract), for saving.

Built in: ``UnigramSampler`` (counts^α, word2vec's negatives) and ``UniformSampler``.

Samplers are Keras-serializable through Keras' own registry: register a subclass with
``@tf.keras.utils.register_keras_serializable(package="my_project")`` and a
``SampledNegatives`` (so a ``RetrievalLoss``, a saved model) holding it reloads, with no
list of classes to edit here. ``serialize_sampler`` / ``deserialize_sampler`` are Keras'
``serialize_keras_object`` / ``deserialize_keras_object``; ``deserialize_sampler`` also
reads the flat ``{"class_name": "UnigramSampler", "counts": ..., "power": ...}`` form that
samplers were saved in before they were registered.
"""

import abc

import numpy as np
import tensorflow as tf


def _check_seed(seed):
    if seed is not None and (not isinstance(seed, (int, np.integer)) or seed < 0):
        raise ValueError(f"seed must be a non-negative int or None, got {seed!r}")


def _tf_constant(owner, name, value, dtype):
    """A TF copy of a numpy table, made once outside any traced function (a constant
    cached from inside a tf.function could not be used by another one)."""
    cache = owner.__dict__.setdefault("_tf_cache", {})
    key = (name, tf.as_dtype(dtype).name)
    if key not in cache:
        with tf.init_scope():
            cache[key] = tf.constant(value, dtype)
    return cache[key]


class AliasTable:
    """Walker's alias table: O(1) i.i.d. draws from a fixed distribution p over [0, N).

    Column i keeps itself with probability prob[i] and otherwise yields alias[i]:

        draw i ~ Uniform{0..N-1}, u ~ Uniform[0, 1);  return i if u < prob[i] else alias[i]

    so P(c) = (prob[c] + Σ_{i: alias[i] = c} (1 − prob[i])) / N, which equals p(c) exactly
    for the table that Vose's method builds from p in O(N) (``from_probabilities``;
    Walker, "An Efficient Method for Generating Discrete Random Variables with General
    Distributions", 1977; Vose, "A Linear Algorithm for Generating Random Numbers with a
    Given Distribution", 1991). This is the one implementation of the draw: ``draw`` (numpy),
    ``draw_tf`` (a stateful TF op) and ``draw_tf_stateless`` (TF, keyed by a seed
    tensor). The numba kernel of training/hogwild.py, which cannot call Python, reads
    ``prob`` and ``alias`` and repeats the two-line draw inline.

    Attributes:
      prob: [N] float64, each column's probability of keeping itself.
      alias: [N] int64, each column's alias.
      num_items: N.

    >>> table = AliasTable.from_probabilities([0.5, 0.25, 0.25])
    >>> table.num_items
    3
    >>> bool(np.allclose(table.distribution(), [0.5, 0.25, 0.25]))
    True
    >>> draws = table.draw(np.random.default_rng(0), 20_000)
    >>> draws.dtype.name, sorted(set(draws.tolist()))
    ('int64', [0, 1, 2])
    >>> round(float(np.mean(draws == 0)), 1)
    0.5
    >>> table.draw_tf([2, 3], seed=1).shape
    TensorShape([2, 3])
    """

    def __init__(self, prob, alias):
        prob = np.ascontiguousarray(prob, dtype=np.float64)
        alias = np.ascontiguousarray(alias, dtype=np.int64)
        if prob.ndim != 1 or prob.size == 0 or alias.shape != prob.shape:
            raise ValueError(f"prob and alias must be non-empty 1-D arrays of one length, got "
                             f"shapes {prob.shape} and {alias.shape}")
        if not np.all((prob >= 0) & (prob <= 1)):
            raise ValueError("prob must lie in [0, 1]")
        if np.any(alias < 0) or np.any(alias >= prob.size):
            raise ValueError(f"alias must hold ids in [0, {prob.size})")
        self.prob = prob
        self.alias = alias
        self.num_items = int(prob.size)

    @classmethod
    def from_probabilities(cls, probabilities):
        """The table of p (non-negative weights with a positive sum, divided by their sum
        unless it is already 1 to 1e-9), built by Vose's method (``build_alias_table``)."""
        p = np.asarray(probabilities, dtype=np.float64)
        if p.ndim != 1 or p.size == 0:
            raise ValueError(f"probabilities must be a non-empty 1-D array, got shape {p.shape}")
        if np.any(p < 0) or not np.all(np.isfinite(p)) or p.sum() <= 0:
            raise ValueError("probabilities must be finite, >= 0, with a positive sum")
        total = p.sum()
        if abs(total - 1.0) > 1e-9:
            p = p / total
        return cls(*build_alias_table(p))

    def distribution(self):
        """The p the table draws from: (prob[c] + Σ_{alias[i] = c} (1 − prob[i])) / N."""
        n = self.num_items
        p = self.prob / n
        np.add.at(p, self.alias, (1.0 - self.prob) / n)
        return p

    def draw(self, rng, size):
        """i.i.d. draws of shape ``size`` (int or tuple) as numpy int64; ``rng`` is a
        numpy Generator (or a seed for one). The column comes first, then the coin."""
        if not isinstance(rng, np.random.Generator):
            rng = np.random.default_rng(rng)
        i = rng.integers(0, self.num_items, size=size)
        u = rng.random(size)
        return np.where(u < self.prob[i], i, self.alias[i]).astype(np.int64)

    def _select(self, i, u, dtype):
        prob = _tf_constant(self, "prob", self.prob, tf.float32)
        alias = _tf_constant(self, "alias", self.alias, dtype)
        return tf.where(u < tf.gather(prob, i), i, tf.gather(alias, i))

    def draw_tf(self, shape, seed=None, dtype=tf.int64):
        """i.i.d. draws of ``shape`` as a TF op (TF's global seed and op ``seed``)."""
        i = tf.random.uniform(shape, 0, self.num_items, dtype=dtype, seed=seed)
        u = tf.random.uniform(shape, dtype=tf.float32, seed=seed)
        return self._select(i, u, dtype)

    def draw_tf_stateless(self, shape, seed, dtype=tf.int64):
        """i.i.d. draws of ``shape`` that are a function of ``seed`` (a [2] int tensor):
        the same seed gives the same draws (tf.random.stateless_uniform)."""
        seeds = tf.random.experimental.stateless_split(seed, 2)
        i = tf.random.stateless_uniform(shape, seeds[0], 0, self.num_items, dtype=dtype)
        u = tf.random.stateless_uniform(shape, seeds[1])
        return self._select(i, u, dtype)

    def __repr__(self):
        return f"AliasTable(num_items={self.num_items})"


class Sampler(abc.ABC):
    """A negative sampler: a fixed distribution p over the ids [0, N), drawn i.i.d.

    The contract (module docstring): a subclass defines ``probabilities`` (p, a numpy
    [N] array summing to 1) and ``get_config`` (its constructor's arguments, JSON-able),
    and registers itself with ``@tf.keras.utils.register_keras_serializable(package=...)``
    so that a saved loss holding it reloads. The rest follows from p:

      num_items = N = len(p)
      sample(n), sample_tf(shape, seed)   draws through ``alias_table()``
      expected_count(ids, k) = k · p(ids)  (Q of logQ correction)
      alias_table()   the AliasTable of p, built once; the fast word2vec engines draw
                      from it (word2vec.c's generator in training/hogwild.py, stateless TF
                      draws in training/sgd_trainer.py)

    A subclass may override ``sample`` / ``sample_tf`` / ``expected_count`` with a
    faster exact form (UniformSampler does), keeping them draws from p; and must override
    ``alias_table`` to return None when its draws are not i.i.d. from its fixed p (they
    depend on state or on the batch), and then define ``sample`` and ``sample_tf``
    itself: the fast engines refuse such a sampler by name instead of drawing from the
    wrong distribution. ``__init__(seed)`` seeds ``sample``.

    >>> @tf.keras.utils.register_keras_serializable(package="doc")
    ... class Harmonic(Sampler):
    ...     '''p(c) ∝ 1 / (c + 1).'''
    ...     def __init__(self, num_items, seed=None):
    ...         super().__init__(seed)
    ...         self.size = num_items
    ...     @property
    ...     def probabilities(self):
    ...         w = 1.0 / np.arange(1, self.size + 1)
    ...         return w / w.sum()
    ...     def get_config(self):
    ...         return {"num_items": self.size}
    >>> s = Harmonic(4, seed=0)
    >>> s.num_items, s.sample(5).dtype.name, s.sample_tf([3]).shape
    (4, 'int64', TensorShape([3]))
    >>> s.expected_count(np.array([0, 3]), 25)
    array([12.,  3.])
    >>> deserialize_sampler(serialize_sampler(s)).probabilities.round(2)
    array([0.48, 0.24, 0.16, 0.12])
    """

    def __init__(self, seed=None):
        _check_seed(seed)
        self._rng = np.random.default_rng(seed)

    @property
    @abc.abstractmethod
    def probabilities(self):
        """p(c) for every id: numpy [N], non-negative, summing to 1."""

    @abc.abstractmethod
    def get_config(self):
        """The constructor's keyword arguments (JSON-able): ``cls(**get_config())``
        rebuilds the sampler."""

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    @property
    def num_items(self):
        """N: ids are in [0, N)."""
        return int(np.shape(self.probabilities)[0])

    @property
    def rng(self):
        """The numpy Generator of ``sample`` (seeded by ``__init__``; unseeded if a
        subclass did not call it)."""
        if self.__dict__.get("_rng") is None:
            self._rng = np.random.default_rng()
        return self._rng

    def alias_table(self):
        """p as an AliasTable (built on first use and kept), or None where the draws are
        not i.i.d. from a fixed p (see the class docstring)."""
        table = self.__dict__.get("_alias_table")
        if table is None:
            table = self._alias_table = AliasTable.from_probabilities(self.probabilities)
        return table

    def _table(self, method):
        table = self.alias_table()
        if table is None:
            raise NotImplementedError(
                f"{type(self).__name__}.alias_table() is None, so the default {method} "
                f"(a draw from the alias table) cannot run: {type(self).__name__} must "
                f"define {method}")
        return table

    def sample(self, n):
        """n i.i.d. draws from p, numpy int64."""
        return self._table("sample").draw(self.rng, n)

    def sample_tf(self, shape, seed=None):
        """i.i.d. draws from p of ``shape``, int64, as a TF op."""
        return self._table("sample_tf").draw_tf(shape, seed=seed)

    def expected_count(self, ids, num_draws):
        """Q(c) = num_draws · p(c) for a TF tensor or numpy array of ids."""
        if tf.is_tensor(ids):
            probs = _tf_constant(self, "probabilities", self.probabilities, tf.float32)
            return tf.cast(num_draws, tf.float32) * tf.gather(probs, ids)
        return num_draws * self.probabilities[np.asarray(ids)]

    def sample_without_replacement(self, n):
        """n distinct ids (numpy), drawn in proportion to p; needs n <= N."""
        if not 0 < n <= self.num_items:
            raise ValueError(
                f"n must be in [1, num_items={self.num_items}] to draw without replacement, "
                f"got {n!r}")
        return self.rng.choice(self.num_items, size=n, replace=False, p=self.probabilities)


@tf.keras.utils.register_keras_serializable(package="twotower")
class UnigramSampler(Sampler):
    """Draws ids from counts^α / Σ counts^α in O(1) per draw (Walker's alias method).

    word2vec (Mikolov et al., "Distributed Representations of Words and Phrases and their
    Compositionality", 2013) draws negatives from p_α(w) = count(w)^α / Σ_v count(v)^α
    with α = 0.75, via a 1e8-entry table; the alias table (AliasTable) gives the same
    distribution exactly in O(N) memory.

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
        super().__init__(seed)
        self.power = float(power)
        weights = np.where(counts > 0, counts ** self.power, 0.0)
        self._probabilities = weights / weights.sum()
        self._alias_table = AliasTable.from_probabilities(self._probabilities)
        self._counts = counts

    @property
    def probabilities(self):
        return self._probabilities

    def get_config(self):
        return {"counts": self._counts.tolist(), "power": self.power}


@tf.keras.utils.register_keras_serializable(package="twotower")
class UniformSampler(Sampler):
    """Draws ids uniformly from the whole corpus [0, N): p(c) = 1/N, Q(c) = k/N.

    These are the "index negatives" of mixed negative sampling (Yang et al., "Mixed
    Negative Sampling for Learning Two-tower Neural Networks in Recommendations", 2020).
    Its draws skip the alias table (one uniform draw each); its table (prob = 1 in every
    column) is the same distribution, for the fast word2vec engines.
    """

    def __init__(self, num_items, seed=None):
        if not isinstance(num_items, (int, np.integer)) or num_items < 1:
            raise ValueError(f"num_items must be an int >= 1, got {num_items!r}")
        super().__init__(seed)
        self._num_items = int(num_items)
        self._probabilities = np.full(self._num_items, 1.0 / self._num_items)

    @property
    def num_items(self):
        return self._num_items

    @property
    def probabilities(self):
        return self._probabilities

    def get_config(self):
        return {"num_items": self.num_items}

    def alias_table(self):
        table = self.__dict__.get("_alias_table")
        if table is None:
            table = self._alias_table = AliasTable(np.ones(self.num_items),
                                                   np.arange(self.num_items))
        return table

    def sample(self, n):
        return self.rng.integers(0, self.num_items, size=n, dtype=np.int64)

    def sample_tf(self, shape, seed=None):
        return tf.random.uniform(shape, 0, self.num_items, dtype=tf.int64, seed=seed)

    def expected_count(self, ids, num_draws):
        if tf.is_tensor(ids):
            return tf.fill(tf.shape(ids), tf.cast(num_draws, tf.float32) / self.num_items)
        return np.full(np.shape(ids), num_draws / self.num_items)


def build_alias_table(probabilities):
    """Vose's alias method: returns (prob [N] float, alias [N] int64) for O(1) draws.

    Column i keeps itself with probability prob[i] and otherwise yields alias[i]; the
    mixture over uniformly chosen columns equals ``probabilities`` (which must sum to 1)
    exactly. ``AliasTable.from_probabilities`` wraps the result.
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


def serialize_sampler(sampler):
    """The sampler's Keras config (``tf.keras.utils.serialize_keras_object``): its class
    is found again through Keras' registry (``register_keras_serializable``)."""
    if not isinstance(sampler, Sampler):
        raise ValueError(f"sampler must be a twotower.data.samplers.Sampler, got {sampler!r}")
    return tf.keras.utils.serialize_keras_object(sampler)


def deserialize_sampler(config):
    """Rebuilds a sampler from ``serialize_sampler``'s config, or from the flat form
    ``{"class_name": "UnigramSampler", **constructor_arguments}`` of samplers saved before
    they were Keras-registered (a bare class name is looked up as "twotower>name")."""
    if isinstance(config, Sampler):
        return config
    if not isinstance(config, dict) or "class_name" not in config:
        raise ValueError(f"a sampler config must be a dict with a class_name, got {config!r}")
    if "config" in config:  # Keras' form (serialize_keras_object, new or legacy)
        sampler = tf.keras.utils.deserialize_keras_object(config)
    else:  # the flat form saved before samplers were registered
        config = dict(config)
        name = config.pop("class_name")
        registered = name if ">" in name else f"twotower>{name}"
        cls = tf.keras.utils.get_registered_object(registered)
        if cls is None:
            raise ValueError(
                f"unknown sampler class_name {name!r}: no sampler is registered as "
                f"{registered!r}; register the class with "
                "@tf.keras.utils.register_keras_serializable(package=...)")
        sampler = cls.from_config(config)
    if not isinstance(sampler, Sampler):
        raise ValueError(f"the config {config!r} does not build a Sampler, it built "
                         f"{type(sampler).__name__}")
    return sampler


#: The name samplers were rebuilt by before they were Keras-registered.
sampler_from_config = deserialize_sampler


__all__ = ["AliasTable", "Sampler", "UnigramSampler", "UniformSampler", "build_alias_table",
           "serialize_sampler", "deserialize_sampler", "sampler_from_config"]
