"""RetrievalLoss: candidates → logits → masks → hard negatives → head, in one Keras layer.

    s = similarity(u, v)                  for every candidate of the source
    z = s / τ − log Q                     (losses/logits.py: logQ after temperature)
                                          (logq="corrected": z⁺ = s⁺/τ, negatives −log Q̃)
    z[accidental hits, padding, own id] = MASK
    keep the positive and the top-m negatives (optional)
    ℓ = head(z, labels)                   softmax | NEG | NCE | triplet

Hierarchical softmax has no candidate set: with head=HierarchicalSoftmax(...) the layer
returns its path loss and ``candidates`` must be None.

This is what tfrs.tasks.Retrieval does for in-batch softmax; it is written out here
because the toolkit needs the other heads (NEG, NCE, triplet, HS), sampled and mixed
candidates, and the streaming frequency estimator in the same pipeline.
"""

import math

import numpy as np
import tensorflow as tf

from twotower.losses import logits as L
from twotower.losses import cross_replica as xr
from twotower.losses.candidates import AllItems, CandidateSource, InBatch
from twotower.losses.hard_negatives import top_m_negatives
from twotower.losses.hierarchical_softmax import HierarchicalSoftmax
from twotower.losses.sigmoid import NCE, NegativeSampling
from twotower.losses.softmax import CorrectedLogQSoftmax, Softmax
from twotower.losses.triplet import Triplet

HEADS = {"softmax": Softmax, "neg": NegativeSampling, "negative_sampling": NegativeSampling,
         "nce": NCE, "triplet": Triplet}


def _make_head(head):
    if isinstance(head, str):
        if head not in HEADS:
            raise ValueError(f"head must be one of {sorted(HEADS)} or a head object, got {head!r}")
        return HEADS[head]()
    if isinstance(head, dict):  # from get_config(); the classes are registered
        return tf.keras.utils.deserialize_keras_object(head)
    return head


@tf.keras.utils.register_keras_serializable(package="twotower")
class RetrievalLoss(tf.keras.layers.Layer):
    """The loss family of docs/formulation.md as one layer.

    Args:
      head: "softmax", "neg", "nce", "triplet", a head object (e.g. Triplet(margin=0.3,
        mining="semi-hard")), or a HierarchicalSoftmax layer.
      candidates: a CandidateSource (InBatch(), SampledNegatives(...), MixedNegatives(...),
        AllItems(...)); default InBatch(); None with hierarchical softmax.
      temperature: τ > 0 (DSSM's γ = 1/τ). The initial value when learned.
      learn_temperature: learn log τ as a weight (τ stays positive).
      similarity: "dot" or "cosine" (L2-normalise both towers' outputs first).
      logq: subtract log Q(c). None = the head's default (on for softmax and NCE when the
        source gives Q; off for NEG and triplet); True requires a source that gives Q.
        "corrected": the corrected logQ of Khrylchenko et al. (RecSys 2025) for the
        softmax head: the positive's logit is not corrected, the negatives' Q is
        conditioned on not being the positive, and each example is weighted by the
        model's estimated probability of misclassifying it (losses/softmax.py
        ``corrected_logq_softmax_loss``). Defined for InBatch and MixedNegatives with
        frequencies and for SampledNegatives; refused (ValueError) for other heads and
        sources, with num_hard_negatives, and without remove_accidental_hits. The head
        becomes ``CorrectedLogQSoftmax`` (passing that head selects this mode).
      remove_accidental_hits: mask negatives whose id equals the row's positive id.
      num_hard_negatives: keep only the top-m negatives (TFRS's num_hard_negatives).
      padding_id: mask candidates with this id (e.g. 0 when 0 pads per-example negatives).
      cross_replica: under a tf.distribute strategy with several replicas, gather the
        in-batch / mixed candidates over replicas (global negatives, labels offset by the
        replica's position, Q from the global batch; losses/cross_replica.py). None (the
        default) = on whenever a step runs with more than one replica; False keeps each
        replica's negatives its own (TFRS's behaviour). Sampled, per-example, group and
        all-item candidates need no gathering: they are per row or the same everywhere.

    Call: ``loss_layer(query, positives, positive_ids, extra=None, extra_ids=None,
    query_ids=None)`` → [B] per-example losses, where ``extra`` are the embeddings of
    ``candidates.draw(...)`` and ``query_ids`` (item-to-item training) masks the query's
    own id among the candidates.
    """

    def __init__(self, head="softmax", candidates="in-batch", *, temperature=1.0,
                 learn_temperature=False, similarity="dot", logq=None,
                 remove_accidental_hits=True, num_hard_negatives=None, padding_id=None,
                 cross_replica=None, **kwargs):
        super().__init__(**kwargs)
        self.head = _make_head(head)
        self.hierarchical = isinstance(self.head, HierarchicalSoftmax)
        if candidates == "in-batch":
            candidates = None if self.hierarchical else InBatch()
        if isinstance(candidates, dict):
            candidates = tf.keras.layers.deserialize(candidates)
        corrected_head = isinstance(self.head, CorrectedLogQSoftmax)
        if logq is None and corrected_head:
            logq = "corrected"
        if isinstance(logq, str):
            if logq != "corrected":
                raise ValueError(f"logq must be None, True, False or 'corrected', got {logq!r}")
            self.head = self._corrected_head(candidates, num_hard_negatives,
                                             remove_accidental_hits)
        elif corrected_head:
            raise ValueError("head CorrectedLogQSoftmax scores the logits of "
                             f"logq='corrected' (or logq=None); got logq={logq!r}")
        if self.hierarchical:
            ignored = {k: v for k, v in (("temperature", float(temperature) != 1.0),
                                         ("learn_temperature", bool(learn_temperature)),
                                         ("similarity", similarity != "dot"),
                                         ("logq", bool(logq)),
                                         ("num_hard_negatives", num_hard_negatives is not None),
                                         ("padding_id", padding_id is not None)) if v}
            if ignored:
                raise ValueError("hierarchical softmax scores <u, θ_node> along the Huffman "
                                 "path: it has no temperature, similarity, logQ, hard "
                                 f"negatives or padding; got {sorted(ignored)} set")
        if self.hierarchical and candidates is not None:
            raise ValueError("hierarchical softmax scores the Huffman path, not a candidate "
                             f"set: candidates must be None, got {candidates!r}")
        if not self.hierarchical and not isinstance(candidates, CandidateSource):
            raise ValueError(f"candidates must be a CandidateSource, got {candidates!r}")
        self.candidates = candidates
        temperature = float(temperature)
        if not (temperature > 0 and math.isfinite(temperature)):
            raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")
        self.initial_temperature = temperature
        self.learn_temperature = bool(learn_temperature)
        self.similarity = L.check_similarity(similarity)
        if logq is None:
            logq = bool(getattr(self.head, "uses_logq", False)
                        and candidates is not None and candidates.provides_q)
        elif not isinstance(logq, str) and logq and (
                candidates is None or not candidates.provides_q):
            raise ValueError(f"logq=True needs candidates that give Q(c); {candidates!r} has "
                             "no frequencies (pass frequencies=counts or a "
                             "StreamingFrequencyEstimator)")
        self.logq = "corrected" if isinstance(logq, str) else bool(logq)
        self.remove_accidental_hits = bool(remove_accidental_hits)
        if num_hard_negatives is not None and (
                not isinstance(num_hard_negatives, (int, np.integer)) or num_hard_negatives < 1):
            raise ValueError(f"num_hard_negatives must be None or an int >= 1, got "
                             f"{num_hard_negatives!r}")
        self.num_hard_negatives = num_hard_negatives
        self.padding_id = padding_id
        if cross_replica not in (None, True, False):
            raise ValueError(f"cross_replica must be None, True or False, got {cross_replica!r}")
        self.cross_replica = cross_replica
        if self.learn_temperature:
            self.log_temperature = self.add_weight(
                name="log_temperature", shape=[],
                initializer=tf.keras.initializers.Constant(math.log(temperature)))

    def _corrected_head(self, candidates, num_hard_negatives, remove_accidental_hits):
        """The head for logq="corrected", or a ValueError naming what rules it out."""
        what = "logq='corrected'"
        head = self.head
        if not (type(head) is Softmax or isinstance(head, CorrectedLogQSoftmax)):
            raise ValueError(f"{what} is defined for the softmax head only (it corrects a "
                             f"softmax over sampled negatives); got head "
                             f"{type(head).__name__}")
        if isinstance(candidates, AllItems):
            raise ValueError(f"{what} corrects the sampling of negatives; AllItems samples "
                             "nothing (it is the full softmax the correction estimates): "
                             "use logq=None")
        if candidates is None or getattr(candidates, "positive_drawn", None) is None:
            raise ValueError(f"{what} is defined for candidates sampled from the catalogue "
                             "(InBatch, SampledNegatives, MixedNegatives); got "
                             f"{type(candidates).__name__}")
        if not candidates.provides_q:
            raise ValueError(f"{what} needs candidates that give Q(c); "
                             f"{type(candidates).__name__} has no frequencies (pass "
                             "frequencies=counts or a StreamingFrequencyEstimator)")
        if num_hard_negatives is not None:
            raise ValueError(f"{what} weighs every sampled negative (an importance-sampling "
                             f"estimate over the sample); num_hard_negatives="
                             f"{num_hard_negatives!r} keeps only the top ones: use None")
        if not remove_accidental_hits:
            raise ValueError(f"{what} draws the negatives from Q conditioned on c ≠ c⁺: it "
                             "needs remove_accidental_hits=True, got False")
        if isinstance(head, CorrectedLogQSoftmax):
            return head
        return CorrectedLogQSoftmax()

    @property
    def temperature(self):
        if self.learn_temperature:
            return tf.exp(self.log_temperature)
        return tf.constant(self.initial_temperature)

    def draw(self, positive_ids, training=False, query_ids=None):
        """Ids of extra candidates to embed with the item tower (see losses/candidates.py)."""
        if self.hierarchical:
            return None
        if self.candidates.batch_candidates:
            return self.candidates.draw(positive_ids, training=training, query_ids=query_ids,
                                        cross_replica=self._gathers())
        return self.candidates.draw(positive_ids, training=training, query_ids=query_ids)

    def _gathers(self):
        """Whether this step gathers the batch's candidates over replicas."""
        return self.candidates.batch_candidates and xr.resolve(self.cross_replica)

    def logits(self, query, positives, positive_ids, extra=None, extra_ids=None,
               query_ids=None):
        """Returns (logits [B, C], labels [B]) after τ, logQ, masks and hard negatives."""
        query, positives, extra = (_as_float32(t, name) for t, name in (
            (query, "query"), (positives, "positives"), (extra, "extra")))
        positive_ids = tf.convert_to_tensor(positive_ids)
        if extra_ids is not None:
            extra_ids = tf.convert_to_tensor(extra_ids)
        _check_embeddings(query, positives, extra)
        gathered = {"cross_replica": True} if self._gathers() else {}
        scores, cand_ids, labels, log_q = self.candidates(
            query, positives, positive_ids, extra, extra_ids, similarity=self.similarity,
            **gathered)
        cand_ids = tf.cast(cand_ids, tf.int64)
        positive_ids = tf.cast(positive_ids, tf.int64)
        masks = []
        if self.remove_accidental_hits:
            masks.append(L.accidental_hit_mask(cand_ids, positive_ids, labels))
        if self.padding_id is not None:
            pad = L.padding_mask(cand_ids, self.padding_id, tf.shape(scores)[0])
            is_label = tf.one_hot(labels, tf.shape(scores)[1], on_value=True,
                                  off_value=False, dtype=tf.bool)
            masks.append(tf.logical_and(pad, tf.logical_not(is_label)))
        if query_ids is not None:
            masks.append(L.id_mask(cand_ids, tf.cast(query_ids, tf.int64), labels))
        if self.logq == "corrected":
            log_q = self._corrected_log_q(log_q, labels, masks, tf.shape(scores)[1])
        z = L.adjust_logits(scores, temperature=tf.cast(self.temperature, scores.dtype),
                            log_q=log_q if self.logq else None)
        for mask in masks:
            z = L.mask_logits(z, mask)
        if self.num_hard_negatives is not None:
            z, labels = top_m_negatives(z, labels, self.num_hard_negatives)
        return z, labels

    def _corrected_log_q(self, log_q, labels, masks, num_cols):
        """log Q̃ of logits.corrected_log_q: the kept negatives are the columns that are
        neither the label nor masked; Q counts C draws (in-batch, mixed) or C − 1 (sampled:
        the positive's column is not a draw)."""
        kept = tf.logical_not(tf.one_hot(labels, num_cols, on_value=True, off_value=False,
                                         dtype=tf.bool))
        for mask in masks:
            kept = tf.logical_and(kept, tf.logical_not(mask))
        num_draws = num_cols if self.candidates.positive_drawn else num_cols - 1
        return L.corrected_log_q(log_q, labels, kept, num_draws)

    def call(self, query, positives, positive_ids, extra=None, extra_ids=None,
             query_ids=None):
        if self.hierarchical:
            return self.head(_as_float32(query, "query"), tf.convert_to_tensor(positive_ids))
        z, labels = self.logits(query, positives, positive_ids, extra, extra_ids, query_ids)
        return self.head.per_example(z, labels)

    def get_config(self):
        config = super().get_config()
        config.update(
            head=tf.keras.utils.serialize_keras_object(self.head),
            candidates=(None if self.candidates is None
                        else tf.keras.layers.serialize(self.candidates)),
            temperature=self.initial_temperature, learn_temperature=self.learn_temperature,
            similarity=self.similarity, logq=self.logq,
            remove_accidental_hits=self.remove_accidental_hits,
            num_hard_negatives=self.num_hard_negatives, padding_id=self.padding_id,
            cross_replica=self.cross_replica)
        return config


def _as_float32(embeddings, name):
    """Embeddings as float32 tensors. float64 (numpy's default) and float16/bfloat16
    (mixed precision) towers are cast: the loss is computed in float32 whatever the
    towers' dtype, because MASK (−1e9) overflows float16 and the heads' reductions want
    float32's range; Keras itself casts only a layer's first input to its compute dtype,
    so mixed dtypes would otherwise meet in one matmul. Non-float embeddings are refused."""
    if embeddings is None:
        return None
    t = embeddings if tf.is_tensor(embeddings) else tf.convert_to_tensor(embeddings)
    if not t.dtype.is_floating:
        raise ValueError(f"{name} embeddings must be floating point (float16/32/64), got "
                         f"dtype {t.dtype.name}")
    return tf.cast(t, tf.float32)


def _check_embeddings(query, positives, extra):
    """Static shape checks that name the argument and the shape received."""
    if query.shape.rank != 2:
        raise ValueError(f"query embeddings must have rank 2 [batch, dim], got shape {query.shape}")
    if positives is not None:
        if positives.shape.rank != 2:
            raise ValueError(f"positive item embeddings must have rank 2 [batch, dim], got "
                             f"shape {positives.shape}")
        if query.shape[-1] is not None and positives.shape[-1] not in (None, query.shape[-1]):
            raise ValueError(f"query and item towers disagree on the dimension: query dim "
                             f"{query.shape[-1]}, item dim {positives.shape[-1]}")
        if query.shape[0] == 0:
            raise ValueError("empty batch: query embeddings have shape "
                             f"{query.shape}; a retrieval loss needs at least one example")
    if extra is not None and query.shape[-1] is not None and extra.shape[-1] not in (
            None, query.shape[-1]):
        raise ValueError(f"candidate embeddings have dim {extra.shape[-1]}, query dim "
                         f"{query.shape[-1]}")
