"""Candidate sources: which items a query is scored against, and Q(c) for logQ.

Each source is a Keras layer with two steps, the abstract methods of the base class
``CandidateSource``, split so that the model embeds any extra candidates with the item
tower in between:

  ``draw(positive_ids, training, query_ids)`` → ids of extra candidates to embed, or None:
      InBatch: None; SampledNegatives: [k] (shared) or [B, k] (per example);
      MixedNegatives: [k] uniform index negatives; AllItems: [N] = every item;
      GroupNegatives: [B, k] from the anchor's group; ConcatNegatives: [B, k₁ + k₂ ...].
  ``call(query, positives, positive_ids, extra, extra_ids, similarity=...)``
      → (scores [B, C], candidate_ids [C] or [B, C], labels [B], log_q or None)

Q(c) is the expected number of times c appears in the candidate set (docs/formulation.md):

  | source            | candidates                 | Q(c)                   |
  | InBatch           | the batch's positives      | B·p(c)  (p counted or streamed) |
  | SampledNegatives  | positive + k draws of q    | k·q(c)                 |
  | MixedNegatives    | batch ∪ k uniform draws    | B·p(c) + k/N           |
  | AllItems          | all N items                | none (full softmax)    |
  | GroupNegatives    | positive + k from a group  | k / |group|            |

Under a tf.distribute strategy with several replicas, InBatch and MixedNegatives gather
the batch over replicas (``RetrievalLoss(cross_replica=...)``, losses/cross_replica.py):
B above is then the global batch, and labels are offset by the replica's position.

``frequencies`` (for InBatch and MixedNegatives) is None, an array of item counts
(p = counts / Σ counts), or a data.frequency.StreamingFrequencyEstimator updated by
``draw`` during training (p̂ = 1/δ̂ per occurrence, Q = B·p̂).
TFRS's tfrs.tasks.Retrieval covers in-batch softmax with a given sampling probability;
this module goes past it with sampled, mixed and all-item candidates, per-example
negatives, and the streaming estimator inside the step.
"""

import abc

import numpy as np
import tensorflow as tf

from twotower.data.frequency import StreamingFrequencyEstimator
from twotower.data.samplers import Sampler, UniformSampler, deserialize_sampler, serialize_sampler
from twotower.losses import cross_replica as xr
from twotower.losses.logits import scores as similarity_scores


def log_expected_count(q):
    """log Q with zeros floored at the smallest positive Q among the same candidates.

    An item with Q = 0 (a zero count, or a positive the sampler never draws) would get
    log Q = −inf, z = +inf, and turn its row of a softmax into NaN. A fixed tiny floor
    (1e-6) is no better: −log 1e-6 = +13.8 on that logit, enough to dominate any softmax
    whose logits are cosines over τ. Floored at the smallest Q actually observed among the
    candidates, an unknown item is treated as the rarest known one: its correction is
    never larger than a real item's, so it cannot win a softmax by its correction alone.
    With no positive Q at all, Q = 1 (no correction).
    """
    q = tf.cast(q, tf.float32)
    positive = q > 0
    smallest = tf.reduce_min(tf.where(positive, q, float("inf")))
    smallest = tf.where(tf.math.is_finite(smallest), smallest, 1.0)
    return tf.math.log(tf.where(positive, q, smallest))


def _row_scores(query, positives, similarity):
    """<u_i, v_i> for each row: [B, 1]."""
    return similarity_scores(query, positives[:, tf.newaxis, :], similarity=similarity)


class _Frequencies:
    """p(c) from counts, or p̂(c) from a streaming estimator; Q_batch(c) = B·p(c)."""

    def __init__(self, frequencies):
        self.estimator = None
        self.probabilities = None
        if frequencies is None:
            return
        if isinstance(frequencies, StreamingFrequencyEstimator):
            self.estimator = frequencies
            return
        counts = np.asarray(frequencies, dtype=np.float64)
        if counts.ndim != 1 or counts.size == 0 or np.any(counts < 0) or counts.sum() <= 0:
            raise ValueError("frequencies must be None, a StreamingFrequencyEstimator, or a "
                             f"1-D array of non-negative counts with a positive sum; got "
                             f"{type(frequencies).__name__} of shape {counts.shape}")
        # A zero count (an item never seen when the counts were taken) is raised to the
        # smallest positive count: the item is taken for as rare as the rarest seen item,
        # not infinitely rare (see log_expected_count). p is normalised after the floor.
        counts = np.where(counts > 0, counts, counts[counts > 0].min())
        with tf.init_scope():
            self.probabilities = tf.constant(counts / counts.sum(), tf.float32)

    @property
    def available(self):
        return self.estimator is not None or self.probabilities is not None

    def observe(self, ids):
        if self.estimator is not None:
            self.estimator.update(ids)

    def batch_expected_count(self, ids, batch_size):
        if self.estimator is not None:
            return self.estimator.expected_count(ids, batch_size)
        return tf.cast(batch_size, tf.float32) * tf.gather(self.probabilities, ids)

    def get_config(self):
        if self.estimator is not None:
            return {"streaming": self.estimator.get_config()}
        if self.probabilities is not None:
            return {"probabilities": self.probabilities.numpy().tolist()}
        return None


def _batch_candidates(query, positives, positive_ids, cross_replica):
    """The batch's positives as candidates: (positives, their ids, each query's label
    column, the candidate count) — the global batch gathered over replicas when
    ``cross_replica`` (labels offset by the replica's position), else this batch."""
    if cross_replica:
        return xr.gather_candidates(positives, positive_ids)
    batch = tf.shape(query)[0]
    return positives, positive_ids, tf.range(batch, dtype=tf.int32), batch


def _frequencies_from_config(config):
    if config is None:
        return None
    if "streaming" in config:
        return StreamingFrequencyEstimator.from_config(config["streaming"])
    return np.asarray(config["probabilities"])


class CandidateSource(tf.keras.layers.Layer, metaclass=abc.ABCMeta):
    """The contract of a candidate source (an abstract Keras layer; module docstring).

    Every source provides the two steps, abstract here:

      ``draw(positive_ids, training=False, query_ids=None)`` → the ids of the extra
          candidates for the item tower to embed ([k], [B, k] or [N] int), or None when
          the batch's own positives are the only candidates;
      ``call(query, positives, positive_ids, extra=None, extra_ids=None,
             similarity="dot")`` → (scores [B, C], candidate_ids [C] or [B, C],
          labels [B] int32 (the positive's column of each row), log_q [B, C] / [C] or
          None), where ``extra`` are the item tower's embeddings of ``draw``'s ids;

    and states three facts as class (or instance) attributes, read by RetrievalLoss:

      ``provides_q``: whether ``call`` returns log Q (logQ correction needs it);
      ``batch_candidates``: the candidates include the batch's positives; ``draw`` and
          ``call`` then also take ``cross_replica`` (gather the batch over replicas);
      ``positive_drawn``: for the corrected logQ, True when the row's positive is one of
          the M draws Q counts, False when it is added beside the k draws, None when the
          corrected logQ is not defined for the source.

    A source with constructor arguments also defines ``get_config`` (Keras'), and
    registers with ``@tf.keras.utils.register_keras_serializable`` to reload.
    A subclass missing ``draw`` or ``call`` cannot be instantiated (TypeError).
    """

    provides_q = False
    # True for sources whose candidates include the batch's positives (InBatch, Mixed):
    # their draw/call take ``cross_replica`` and gather the batch over replicas
    batch_candidates = False
    # For the corrected logQ (RetrievalLoss(logq="corrected"), logits.corrected_log_q),
    # which needs the per-draw probability q = Q / M: True where every candidate column,
    # the row's positive included, is one of the M draws Q counts (in-batch, mixed:
    # M = C), False where the positive is added beside k draws (sampled: M = C − 1), and
    # None where the corrected logQ is not defined (no sampling, or negatives that are
    # not a sample of the catalogue).
    positive_drawn = None

    @abc.abstractmethod
    def draw(self, positive_ids, training=False, query_ids=None):
        """Ids of the extra candidates to embed, or None (see the class docstring)."""

    @abc.abstractmethod
    def call(self, query, positives, positive_ids, extra=None, extra_ids=None,
             similarity="dot"):
        """(scores, candidate_ids, labels, log_q or None) (see the class docstring)."""


class _FrequencySource(CandidateSource):
    """A source whose Q uses item frequencies (counts or a streaming estimator)."""

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["frequencies"] = _frequencies_from_config(config.get("frequencies"))
        return cls(**config)


@tf.keras.utils.register_keras_serializable(package="twotower")
class InBatch(_FrequencySource):
    """The other positives of the batch are the negatives (Yi et al., RecSys 2019)."""

    def __init__(self, frequencies=None, **kwargs):
        super().__init__(**kwargs)
        self.frequencies = _Frequencies(frequencies)
        # a layer attribute, so Keras tracks the estimator's state (saved and restored)
        self.frequency_estimator = self.frequencies.estimator
        self.provides_q = self.frequencies.available

    # its candidates are the batch's positives: gathered over replicas (cross_replica.py)
    batch_candidates = True
    positive_drawn = True  # Q = B·p counts the B positives, the row's own among them

    def draw(self, positive_ids, training=False, query_ids=None, cross_replica=False):
        if training:
            # every replica records the global batch's ids into its own copy of the
            # estimator: one update per step, the same state on every replica
            self.frequencies.observe(xr.all_gather(positive_ids) if cross_replica
                                     else positive_ids)
        return None

    def call(self, query, positives, positive_ids, extra=None, extra_ids=None,
             similarity="dot", cross_replica=False):
        positives, positive_ids, labels, batch = _batch_candidates(query, positives,
                                                                   positive_ids, cross_replica)
        scores = similarity_scores(query, positives, similarity=similarity)
        log_q = None
        if self.provides_q:
            log_q = log_expected_count(self.frequencies.batch_expected_count(positive_ids, batch))
        return scores, positive_ids, labels, log_q

    def get_config(self):
        config = super().get_config()
        config["frequencies"] = self.frequencies.get_config()
        return config


@tf.keras.utils.register_keras_serializable(package="twotower")
class SampledNegatives(CandidateSource):
    """k negatives drawn from a sampler (unigram^α, uniform, ...): shared by the whole
    batch (one [k] draw, as TF's sampled_softmax_loss) or per example ([B, k], as
    word2vec). Q(c) = k·q(c) for the positive and the negatives alike."""

    provides_q = True
    positive_drawn = False  # the positive column is added beside the k draws

    def __init__(self, sampler, num_negatives, shared=True, **kwargs):
        super().__init__(**kwargs)
        if isinstance(sampler, dict):  # Keras' config, or the flat form saved before
            sampler = deserialize_sampler(sampler)
        if not isinstance(sampler, Sampler):
            raise ValueError("sampler must be a twotower.data.samplers.Sampler (subclass it "
                             f"for your own), got {sampler!r}")
        if not isinstance(num_negatives, (int, np.integer)) or num_negatives < 1:
            raise ValueError(f"num_negatives must be an int >= 1, got {num_negatives!r}")
        self.sampler = sampler
        self.num_negatives = int(num_negatives)
        self.shared = bool(shared)

    def draw(self, positive_ids, training=False, query_ids=None):
        if self.shared:
            return self.sampler.sample_tf([self.num_negatives])
        return self.sampler.sample_tf([tf.shape(positive_ids)[0], self.num_negatives])

    def call(self, query, positives, positive_ids, extra=None, extra_ids=None,
             similarity="dot"):
        pos = _row_scores(query, positives, similarity)
        neg = similarity_scores(query, extra, similarity=similarity)
        scores = tf.concat([pos, neg], axis=1)
        positive_ids = tf.cast(positive_ids, tf.int64)
        extra_ids = tf.cast(extra_ids, tf.int64)
        if self.shared:
            extra_ids = tf.broadcast_to(extra_ids[tf.newaxis, :],
                                        [tf.shape(query)[0], self.num_negatives])
        ids = tf.concat([positive_ids[:, tf.newaxis], extra_ids], axis=1)
        labels = tf.zeros([tf.shape(query)[0]], tf.int32)
        log_q = log_expected_count(self.sampler.expected_count(ids, self.num_negatives))
        return scores, ids, labels, log_q

    def get_config(self):
        config = super().get_config()
        config.update(sampler=serialize_sampler(self.sampler), num_negatives=self.num_negatives,
                      shared=self.shared)
        return config


@tf.keras.utils.register_keras_serializable(package="twotower")
class MixedNegatives(_FrequencySource):
    """Mixed negative sampling (Yang et al., "Mixed Negative Sampling for Learning
    Two-tower Neural Networks in Recommendations", WWW 2020): the batch's positives plus
    k uniform "index negatives" from the whole corpus, embedded by the same item tower.
    Q(c) = B·p(c) + k/N, the expected count under the mixture."""

    def __init__(self, num_index_negatives, num_items, frequencies=None, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(num_items, (int, np.integer)) or num_items < 1:
            raise ValueError(f"num_items must be an int >= 1, got {num_items!r}")
        if (not isinstance(num_index_negatives, (int, np.integer))
                or not 1 <= num_index_negatives <= num_items):
            raise ValueError(f"num_index_negatives must be an int in [1, num_items={num_items}],"
                             f" got {num_index_negatives!r}")
        self.num_index_negatives = int(num_index_negatives)
        self.num_items = int(num_items)
        self.sampler = UniformSampler(self.num_items)
        self.frequencies = _Frequencies(frequencies)
        self.frequency_estimator = self.frequencies.estimator  # tracked, see InBatch
        self.provides_q = self.frequencies.available

    batch_candidates = True  # see InBatch
    positive_drawn = True  # Q = B·p + k/N counts the B + k columns as draws

    def draw(self, positive_ids, training=False, query_ids=None, cross_replica=False):
        """The k index negatives. Under ``cross_replica`` they are drawn once per global
        step: every replica draws, and all take replica 0's draw, so the global candidate
        set is the global batch ∪ the same k items (Q keeps k/N), each replica embedding
        them with its own copy of the item tower."""
        if training:
            self.frequencies.observe(xr.all_gather(positive_ids) if cross_replica
                                     else positive_ids)
        ids = self.sampler.sample_tf([self.num_index_negatives])
        return xr.first_replica(ids) if cross_replica else ids

    def call(self, query, positives, positive_ids, extra=None, extra_ids=None,
             similarity="dot", cross_replica=False):
        positives, positive_ids, labels, batch = _batch_candidates(query, positives,
                                                                   positive_ids, cross_replica)
        scores = tf.concat([similarity_scores(query, positives, similarity=similarity),
                            similarity_scores(query, extra, similarity=similarity)], axis=1)
        ids = tf.concat([tf.cast(positive_ids, tf.int64), tf.cast(extra_ids, tf.int64)], axis=0)
        log_q = None
        if self.provides_q:
            q = (self.frequencies.batch_expected_count(ids, batch)
                 + self.sampler.expected_count(ids, self.num_index_negatives))
            log_q = log_expected_count(q)
        return scores, ids, labels, log_q

    def get_config(self):
        config = super().get_config()
        config.update(num_index_negatives=self.num_index_negatives, num_items=self.num_items,
                      frequencies=self.frequencies.get_config())
        return config


@tf.keras.utils.register_keras_serializable(package="twotower")
class AllItems(CandidateSource):
    """Every item is a candidate: the full softmax, the reference the others estimate."""

    def __init__(self, num_items, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(num_items, (int, np.integer)) or num_items < 1:
            raise ValueError(f"num_items must be an int >= 1, got {num_items!r}")
        self.num_items = int(num_items)

    def draw(self, positive_ids, training=False, query_ids=None):
        return tf.range(self.num_items, dtype=tf.int64)

    def call(self, query, positives, positive_ids, extra=None, extra_ids=None,
             similarity="dot"):
        scores = similarity_scores(query, extra, similarity=similarity)
        return scores, extra_ids, tf.cast(positive_ids, tf.int32), None

    def get_config(self):
        config = super().get_config()
        config["num_items"] = self.num_items
        return config


@tf.keras.utils.register_keras_serializable(package="twotower")
class GroupNegatives(CandidateSource):
    """k negatives per example drawn uniformly from the items of the anchor's group.

    Airbnb's listing embeddings (Grbovic & Cheng, "Real-time Personalization using
    Embeddings for Search Ranking at Airbnb", KDD 2018, §3.1) add negatives from the
    central listing's own market, because corpus-wide negatives are almost always from
    other markets and teach the model only to tell markets apart. With anchor="query"
    the anchor is the query's item id (the centre listing: pass ``query_ids``); with
    anchor="positive", the positive's. Q(c) = k / |group(c)| for the negatives.

    Args:
      groups: [N] int group of every item (e.g. its market); -1 = none: never drawn as a
        negative, and an anchor without a group draws from every grouped item.
      num_negatives: k.
      anchor: "query" or "positive".
    """

    provides_q = True

    def __init__(self, groups, num_negatives, anchor="query", **kwargs):
        super().__init__(**kwargs)
        groups = np.asarray(groups, dtype=np.int64)
        if groups.ndim != 1 or groups.size == 0:
            raise ValueError(f"groups must be a non-empty 1-D array of group ids, got shape "
                             f"{groups.shape}")
        if not isinstance(num_negatives, (int, np.integer)) or num_negatives < 1:
            raise ValueError(f"num_negatives must be an int >= 1, got {num_negatives!r}")
        if anchor not in ("query", "positive"):
            raise ValueError(f"anchor must be 'query' or 'positive', got {anchor!r}")
        self.groups = groups
        self.num_negatives = int(num_negatives)
        self.anchor = anchor
        # CSR of group members: members[offset[g] : offset[g] + size[g]] are group g.
        valid = np.flatnonzero(groups >= 0)
        if valid.size == 0:
            raise ValueError("groups must give at least one item a group (>= 0); all are -1")
        order = valid[np.argsort(groups[valid], kind="stable")]
        num_groups = int(groups.max()) + 1
        size = np.bincount(groups[valid], minlength=num_groups)
        offset = np.concatenate([[0], np.cumsum(size)[:-1]])
        # One more group, num_groups: every grouped item. An anchor without a group (-1)
        # draws from it; an anchor's own group is never empty (it holds the anchor).
        order = np.concatenate([order, valid])
        size = np.append(size, valid.size)
        offset = np.append(offset, len(order) - valid.size)
        self._all_group = num_groups
        with tf.init_scope():
            self._group_of = tf.constant(groups)
            self._members = tf.constant(order, tf.int64)
            self._offset = tf.constant(offset, tf.int64)
            self._size = tf.constant(size, tf.int64)

    def draw(self, positive_ids, training=False, query_ids=None):
        if self.anchor == "query":
            if query_ids is None:
                raise ValueError("GroupNegatives(anchor='query') draws from the query item's "
                                 "group: pass query_ids (the batch key 'query_id')")
            anchors = query_ids
        else:
            anchors = positive_ids
        group = tf.gather(self._group_of, tf.cast(anchors, tf.int64))
        group = tf.where(group < 0, tf.cast(self._all_group, group.dtype), group)
        size = tf.gather(self._size, group)[:, tf.newaxis]
        u = tf.random.uniform([tf.shape(group)[0], self.num_negatives])
        pick = tf.minimum(tf.cast(u * tf.cast(size, tf.float32), tf.int64), size - 1)
        return tf.gather(self._members, tf.gather(self._offset, group)[:, tf.newaxis] + pick)

    def expected_count(self, ids):
        group = tf.gather(self._group_of, ids)
        size = tf.gather(self._size, tf.where(group < 0, tf.cast(self._all_group, group.dtype),
                                              group))
        return tf.cast(self.num_negatives, tf.float32) / tf.cast(size, tf.float32)

    def call(self, query, positives, positive_ids, extra=None, extra_ids=None,
             similarity="dot"):
        return _per_example_call(query, positives, positive_ids, extra, extra_ids,
                                 similarity, self.expected_count)

    def get_config(self):
        config = super().get_config()
        config.update(groups=self.groups.tolist(), num_negatives=self.num_negatives,
                      anchor=self.anchor)
        return config


@tf.keras.utils.register_keras_serializable(package="twotower")
class ConcatNegatives(CandidateSource):
    """Per-example negatives of several sources side by side: [B, k₁ + k₂ + ...].

    Airbnb uses k corpus negatives (SampledNegatives(unigram, k, shared=False)) plus m
    same-market negatives (GroupNegatives). The union is a sample from no single
    distribution with a simple Q, so this source gives none (NEG needs none).
    """

    def __init__(self, sources, **kwargs):
        super().__init__(**kwargs)
        sources = [tf.keras.layers.deserialize(s) if isinstance(s, dict) else s
                   for s in sources]
        if len(sources) < 2:
            raise ValueError(f"sources must list at least 2 candidate sources, got {len(sources)}")
        for s in sources:
            if not isinstance(s, (SampledNegatives, GroupNegatives)) or (
                    isinstance(s, SampledNegatives) and s.shared):
                raise ValueError("ConcatNegatives takes per-example sources "
                                 "(SampledNegatives(shared=False), GroupNegatives); got "
                                 f"{s!r}")
        self.sources = sources

    def draw(self, positive_ids, training=False, query_ids=None):
        return tf.concat([tf.cast(s.draw(positive_ids, training, query_ids), tf.int64)
                          for s in self.sources], axis=1)

    def call(self, query, positives, positive_ids, extra=None, extra_ids=None,
             similarity="dot"):
        return _per_example_call(query, positives, positive_ids, extra, extra_ids,
                                 similarity, None)

    def get_config(self):
        config = super().get_config()
        config["sources"] = [tf.keras.layers.serialize(s) for s in self.sources]
        return config


def _per_example_call(query, positives, positive_ids, extra, extra_ids, similarity,
                      expected_count):
    """Scores of [positive, per-example negatives], positive in column 0."""
    pos = _row_scores(query, positives, similarity)
    neg = similarity_scores(query, extra, similarity=similarity)
    ids = tf.concat([tf.cast(positive_ids, tf.int64)[:, tf.newaxis],
                     tf.cast(extra_ids, tf.int64)], axis=1)
    labels = tf.zeros([tf.shape(query)[0]], tf.int32)
    log_q = None if expected_count is None else log_expected_count(expected_count(ids))
    return tf.concat([pos, neg], axis=1), ids, labels, log_q
