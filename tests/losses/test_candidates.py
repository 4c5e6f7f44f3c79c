"""Q(c) of the candidate sources and its floor, against plain numpy; the sources' contract
(CandidateSource, an ABC) and samplers inside a saved loss config."""

import json

import numpy as np
import pytest
import tensorflow as tf

from twotower.data.frequency import StreamingFrequencyEstimator
from twotower.data.samplers import Sampler, UnigramSampler
from twotower.losses import (AllItems, CandidateSource, ConcatNegatives, GroupNegatives,
                             InBatch, MixedNegatives, RetrievalLoss, SampledNegatives)
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


# ------------------------------------------------------------------ the contract (ABC)

def _built_in_sources():
    groups = [0, 0, 1, 1, -1]
    per_example = SampledNegatives(UnigramSampler([1, 1, 2, 3, 1]), 2, shared=False)
    return [InBatch(name="ib"), InBatch(frequencies=np.arange(1, 6), name="ibf"),
            SampledNegatives(UnigramSampler([1, 2, 3, 4, 5]), 3, name="sn"),
            MixedNegatives(2, 5, frequencies=[1, 2, 3, 4, 5], name="mn"),
            AllItems(5, name="ai"), GroupNegatives(groups, 2, name="gn"),
            ConcatNegatives([per_example, GroupNegatives(groups, 2, anchor="positive")],
                            name="cn")]


def test_every_built_in_source_is_a_candidate_source_and_round_trips():
    # the configs these sources wrote before CandidateSource became an ABC, verbatim
    before = {
        "ib": {"name": "ib", "trainable": True, "dtype": "float32", "frequencies": None},
        "ai": {"name": "ai", "trainable": True, "dtype": "float32", "num_items": 5},
        "gn": {"name": "gn", "trainable": True, "dtype": "float32", "groups": [0, 0, 1, 1, -1],
               "num_negatives": 2, "anchor": "query"},
        "mn": {"name": "mn", "trainable": True, "dtype": "float32", "num_index_negatives": 2,
               "num_items": 5, "frequencies": {"probabilities": [
                   0.06666667014360428, 0.13333334028720856, 0.20000000298023224,
                   0.2666666805744171, 0.3333333432674408]}},
    }
    for source in _built_in_sources():
        assert isinstance(source, CandidateSource), type(source).__name__
        config = source.get_config()
        if source.name in before:
            assert config == before[source.name]
        clone = tf.keras.layers.deserialize(json.loads(json.dumps(
            tf.keras.layers.serialize(source))))
        assert type(clone) is type(source) and clone.get_config() == config


def test_a_source_missing_an_abstract_method_cannot_be_instantiated():
    class NoCall(CandidateSource):
        def draw(self, positive_ids, training=False, query_ids=None):
            return None

    class NoDraw(CandidateSource):
        def call(self, query, positives, positive_ids, extra=None, extra_ids=None,
                 similarity="dot"):
            return None

    for cls, missing in ((NoCall, "call"), (NoDraw, "draw"), (CandidateSource, "draw")):
        with pytest.raises(TypeError, match=f"abstract.*{missing}"):
            cls()

    class Complete(NoCall):  # both steps: a source RetrievalLoss takes
        def call(self, query, positives, positive_ids, extra=None, extra_ids=None,
                 similarity="dot"):
            scores = tf.matmul(query, positives, transpose_b=True)
            return scores, positive_ids, tf.range(tf.shape(query)[0]), None

    loss = RetrievalLoss("softmax", Complete())
    q = tf.constant([[1.0, 0.0], [0.0, 1.0]])
    np.testing.assert_allclose(loss(q, q, tf.constant([0, 1])).numpy(),
                               RetrievalLoss("softmax", InBatch())(q, q, tf.constant([0, 1])))


# ------------------------------------------------------- samplers in a saved loss config

# RetrievalLoss("neg", SampledNegatives(UnigramSampler([1, 2, 3], 0.75), 2, shared=False))
# .get_config(), verbatim as written before samplers were Keras-registered
OLD_LOSS_CONFIG = json.loads("""{"name": "retrieval_loss", "trainable": true, "dtype": "float32",
 "head": {"module": "twotower.losses.sigmoid", "class_name": "NegativeSampling",
   "config": {"reduction": "auto", "name": "negative_sampling"},
   "registered_name": "twotower>NegativeSampling"},
 "candidates": {"module": "twotower.losses.candidates", "class_name": "SampledNegatives",
   "config": {"name": "sampled_negatives", "trainable": true, "dtype": "float32",
     "sampler": {"class_name": "UnigramSampler", "counts": [1.0, 2.0, 3.0], "power": 0.75},
     "num_negatives": 2, "shared": false},
   "registered_name": "twotower>SampledNegatives"},
 "temperature": 1.0, "learn_temperature": false, "similarity": "dot", "logq": false,
 "remove_accidental_hits": true, "num_hard_negatives": null, "padding_id": null,
 "cross_replica": null}""")


def test_a_loss_saved_with_the_old_sampler_config_reloads():
    loss = RetrievalLoss.from_config(OLD_LOSS_CONFIG)
    sampler = loss.candidates.sampler
    assert type(sampler) is UnigramSampler and loss.candidates.num_negatives == 2
    np.testing.assert_allclose(sampler.probabilities, UnigramSampler([1, 2, 3]).probabilities)
    # written back in Keras' form, which reloads to the same config
    config = loss.get_config()
    assert config["candidates"]["config"]["sampler"]["registered_name"] == \
        "twotower>UnigramSampler"
    assert RetrievalLoss.from_config(json.loads(json.dumps(config))).get_config() == config


def test_a_user_registered_sampler_round_trips_in_a_loss_and_a_saved_model(tmp_path):
    # Defined here, not at module level: only Keras' registry can find it again.
    @tf.keras.utils.register_keras_serializable(package="user_project")
    class Head(Sampler):
        """p over the first m ids of N, uniform."""

        def __init__(self, num_items, m, seed=None):
            super().__init__(seed)
            self.size, self.m = num_items, m

        @property
        def probabilities(self):
            return np.where(np.arange(self.size) < self.m, 1.0 / self.m, 0.0)

        def get_config(self):
            return {"num_items": self.size, "m": self.m}

    loss = RetrievalLoss("softmax", SampledNegatives(Head(6, 2), 4))
    config = json.loads(json.dumps(loss.get_config()))
    assert config["candidates"]["config"]["sampler"]["registered_name"] == "user_project>Head"
    clone = RetrievalLoss.from_config(config)
    assert type(clone.candidates.sampler) is Head and clone.candidates.sampler.m == 2
    assert clone.get_config() == loss.get_config()
    assert set(clone.candidates.draw(tf.constant([0])).numpy()) <= {0, 1}

    from twotower.towers import IDTower, TwoTowerModel
    model = TwoTowerModel(IDTower(4, 3, name="q"), IDTower(6, 3, name="i"), loss)
    model({"query": tf.constant([0, 1]), "item": tf.constant([2, 3])})
    model.save(str(tmp_path / "m.keras"))
    reloaded = tf.keras.models.load_model(str(tmp_path / "m.keras"))
    sampler = reloaded.retrieval_loss.candidates.sampler
    assert type(sampler) is Head and (sampler.size, sampler.m) == (6, 2)
    np.testing.assert_allclose(reloaded.item_embeddings(np.arange(6)),
                               model.item_embeddings(np.arange(6)))


def test_sampled_negatives_refuses_what_is_not_a_sampler():
    with pytest.raises(ValueError, match="sampler must be a twotower.data.samplers.Sampler"):
        SampledNegatives(object(), 2)
