"""TwoTowerModel end to end: every head × candidate source learns a planted data set.

Data: 400 users, 300 items, 30 draws per user from P(i|u) ∝ π_i exp(8 <x_u, y_i>) with
Zipf(0.5) popularity π (data/synthetic.py). Each user's last draw is held out. On this
set recall@10 is 0.033 by chance, 0.27 for the 10 most popular items, and 0.73 for the
planted model itself (measured with the same seed: see test_reference_levels).
"""

import numpy as np
import pytest
import tensorflow as tf

from twotower.data.frequency import StreamingFrequencyEstimator
from twotower.data.samplers import UnigramSampler
from twotower.data.synthetic import PlantedConfig, planted_interactions
from twotower.losses import (AllItems, HierarchicalSoftmax, InBatch, MixedNegatives,
                             RetrievalLoss, SampledNegatives, Triplet)
from twotower.towers import IDTower, TwoTowerModel
from twotower.metrics.ranking import metrics_from_ranks, retrieval_metrics

CONFIG = PlantedConfig(num_users=400, num_items=300, interactions_per_user=30,
                       zipf_exponent=0.5, seed=0)
DATA = planted_interactions(CONFIG)
TRAIN, TEST = DATA.split_last()
COUNTS = np.bincount(DATA.items[TRAIN], minlength=CONFIG.num_items).astype(float) + 1.0
N = CONFIG.num_items


def _dataset(batch_size=128):
    return (tf.data.Dataset.from_tensor_slices(
        {"query": DATA.users[TRAIN], "item": DATA.items[TRAIN]})
        .shuffle(20_000, seed=0).batch(batch_size, drop_remainder=True))


def _train(loss, epochs=6, lr=0.05, dim=16):
    tf.keras.utils.set_random_seed(0)
    model = TwoTowerModel(IDTower(CONFIG.num_users, dim, name="user"),
                          IDTower(N, dim, name="item"), loss)
    model.compile(optimizer=tf.keras.optimizers.Adam(lr))
    history = model.fit(_dataset(), epochs=epochs, verbose=0)
    return model, history


def _recall10(model):
    u = model.query_embeddings(DATA.users[TEST])
    if model.retrieval_loss.hierarchical:
        scores = model.retrieval_loss.head.log_probabilities(tf.constant(u)).numpy()
        pos = DATA.items[TEST]
        ranks = [np.array([1 + (row > row[p]).sum()]) for row, p in zip(scores, pos)]
        return metrics_from_ranks(ranks, ks=(10,))["recall@10"]
    v = model.item_embeddings(np.arange(N))
    return retrieval_metrics(u, v, DATA.items[TEST], ks=(10,))["recall@10"]


def test_reference_levels():
    s = CONFIG.beta * DATA.user_factors @ DATA.item_factors.T + np.log(DATA.popularity)
    top = np.argsort(-s, axis=1)[:, :10]
    oracle = np.mean([DATA.items[i] in top[DATA.users[i]] for i in TEST])
    popular = np.argsort(-COUNTS)[:10]
    pop = np.mean([DATA.items[i] in popular for i in TEST])
    assert oracle == pytest.approx(0.73, abs=0.02) and pop == pytest.approx(0.27, abs=0.02)


HEADS = {
    # name: (loss factory, minimum recall@10; chance is 0.033, popularity 0.27)
    "in-batch softmax": (lambda: RetrievalLoss("softmax", InBatch()), 0.45),
    "in-batch softmax, logQ from counts": (
        lambda: RetrievalLoss("softmax", InBatch(frequencies=COUNTS)), 0.45),
    "in-batch softmax, streaming logQ": (
        lambda: RetrievalLoss("softmax", InBatch(StreamingFrequencyEstimator(1024, 0.05))), 0.45),
    "sampled softmax (unigram, shared)": (
        lambda: RetrievalLoss("softmax", SampledNegatives(UnigramSampler(COUNTS), 64)), 0.45),
    "full softmax": (lambda: RetrievalLoss("softmax", AllItems(N)), 0.45),
    "NEG (per-example, k=5)": (
        lambda: RetrievalLoss("neg", SampledNegatives(UnigramSampler(COUNTS), 5, shared=False)),
        0.40),
    "NCE (k=16)": (
        lambda: RetrievalLoss("nce", SampledNegatives(UnigramSampler(COUNTS), 16)), 0.40),
    "triplet, cosine, semi-hard": (
        lambda: RetrievalLoss(Triplet(margin=0.3, mining="semi-hard"), InBatch(),
                              similarity="cosine"), 0.35),
    "mixed negatives (MNS)": (
        lambda: RetrievalLoss("softmax", MixedNegatives(32, N, frequencies=COUNTS)), 0.45),
    "in-batch softmax, 8 hard negatives, τ=0.5": (
        # hard negatives alone train worse (EBR mixes them with easy ones): measured 0.37
        lambda: RetrievalLoss("softmax", InBatch(), num_hard_negatives=8, temperature=0.5),
        0.30),
    "hierarchical softmax": (
        lambda: RetrievalLoss(HierarchicalSoftmax(COUNTS, 16), candidates=None), 0.40),
}


@pytest.mark.parametrize("name", list(HEADS))
def test_each_head_learns_the_planted_model(name):
    factory, minimum = HEADS[name]
    model, history = _train(factory())
    losses = history.history["loss"]
    if "hard negatives" not in name:
        # With top-m mining the loss is measured on ever harder negatives as the model
        # sharpens, so it need not fall; everywhere else it must.
        assert losses[-1] < losses[0]
    recall = _recall10(model)
    print(f"{name}: recall@10 = {recall:.3f}")
    assert recall > minimum, f"{name}: recall@10 {recall:.3f} <= {minimum}"


def test_streaming_estimator_is_updated_inside_train_step():
    est = StreamingFrequencyEstimator(1024, 0.05)
    model, _ = _train(RetrievalLoss("softmax", InBatch(est)), epochs=2)
    steps = 2 * (TRAIN.size // 128)
    assert int(est.step.numpy()) == steps
    # the most trained item gets the largest estimate
    p_hat = est(tf.range(N)).numpy()
    assert np.argmax(p_hat) in np.argsort(-COUNTS)[:3]
    model.evaluate(_dataset().take(2), verbose=0)
    assert int(est.step.numpy()) == steps  # evaluation does not update the estimate


def test_save_reload_and_config_round_trip(tmp_path):
    loss = RetrievalLoss("softmax", InBatch(frequencies=COUNTS), temperature=0.2,
                         learn_temperature=True)
    model, history = _train(loss, epochs=1)
    assert "temperature" in history.history
    ids = tf.constant([0, 5, 9])
    before = model({"query": ids, "item": ids})
    model.save(tmp_path / "saved")
    reloaded = tf.keras.models.load_model(tmp_path / "saved")
    after = reloaded({"query": ids, "item": ids})
    np.testing.assert_allclose(after["query"], before["query"], rtol=1e-6)
    np.testing.assert_allclose(after["item"], before["item"], rtol=1e-6)
    assert isinstance(reloaded, TwoTowerModel)
    reloaded.compile(optimizer=tf.keras.optimizers.Adam(0.01))
    reloaded.fit(_dataset().take(2), verbose=0)  # trains on after reload
    clone = TwoTowerModel.from_config(model.get_config())
    assert clone.get_config() == model.get_config()
    model.save_weights(tmp_path / "ckpt")
    clone({"query": ids, "item": ids})
    clone.load_weights(tmp_path / "ckpt")
    np.testing.assert_allclose(clone({"query": ids})["query"], before["query"], rtol=1e-6)


def test_evaluate_and_callbacks_work():
    model, _ = _train(RetrievalLoss(), epochs=1)
    seen = []
    cb = tf.keras.callbacks.LambdaCallback(on_epoch_end=lambda e, logs: seen.append(logs["loss"]))
    model.fit(_dataset().take(3), epochs=2, verbose=0, callbacks=[cb])
    assert len(seen) == 2
    result = model.evaluate(_dataset().take(3), verbose=0, return_dict=True)
    assert np.isfinite(result["loss"])


def test_feature_dict_items_and_item_features_table():
    # item tower over a dict of features: sampled negatives are embedded through the table
    class ItemTower(tf.keras.layers.Layer):
        def __init__(self, **kw):
            super().__init__(**kw)
            self.ids = IDTower(N, 8)

        def call(self, features):
            return self.ids(features["item_id"])

    table = {"item_id": np.arange(N)}
    loss = RetrievalLoss("softmax", SampledNegatives(UnigramSampler(COUNTS), 16))
    model = TwoTowerModel(IDTower(CONFIG.num_users, 8), ItemTower(), loss, item_features=table)
    model.compile(optimizer=tf.keras.optimizers.Adam(0.05))
    ds = tf.data.Dataset.from_tensor_slices(
        {"query": DATA.users[TRAIN], "item": {"item_id": DATA.items[TRAIN]}}).batch(256)
    history = model.fit(ds, epochs=2, verbose=0)
    assert history.history["loss"][1] < history.history["loss"][0]
    assert model.item_embeddings().shape == (N, 8)


def test_bad_batches_are_named():
    model = TwoTowerModel(IDTower(5, 4), IDTower(6, 3), RetrievalLoss())
    with pytest.raises(ValueError, match="query and item towers disagree on the dimension"):
        model.compute_retrieval_loss({"query": tf.constant([0, 1]), "item": tf.constant([0, 1])})
    with pytest.raises(ValueError, match="needs keys 'query' and 'item'; missing \\['item'\\]"):
        model.compute_retrieval_loss({"query": tf.constant([0])})
    with pytest.raises(ValueError, match="loss must be a twotower.losses.RetrievalLoss"):
        TwoTowerModel(IDTower(5, 4), IDTower(5, 4), "softmax")
    model = TwoTowerModel(IDTower(5, 4), IDTower(5, 4), RetrievalLoss())
    with pytest.raises(ValueError, match=r"ids must be in \[0, vocab_size=5\), got 7"):
        model.compute_retrieval_loss({"query": tf.constant([0, 7]), "item": tf.constant([0, 1])})
    with pytest.raises(ValueError, match=r"ids must be in \[0, vocab_size=5\), got -1"):
        model.compute_retrieval_loss({"query": tf.constant([0, 1]), "item": tf.constant([-1, 1])})


def test_train_on_batch_takes_a_dict_batch():
    # Keras packs a batch without labels as (x,); the model unwraps it
    model = TwoTowerModel(IDTower(5, 4), IDTower(5, 4), RetrievalLoss())
    model.compile(optimizer=tf.keras.optimizers.Adam(0.1))
    logs = model.train_on_batch({"query": np.arange(4), "item": np.arange(4)}, return_dict=True)
    assert np.isfinite(logs["loss"])
    assert int(model.optimizer.iterations.numpy()) == 1


def test_item_features_table_and_streaming_state_survive_save_and_reload(tmp_path):
    est = StreamingFrequencyEstimator(1024, 0.05)
    loss = RetrievalLoss("softmax", MixedNegatives(16, N, frequencies=est))
    # the item tower takes ids; the table maps an item id to the tower's input (here the
    # id itself), and is what sampled index negatives are embedded through
    model = TwoTowerModel(IDTower(CONFIG.num_users, 8), IDTower(N, 8), loss,
                          item_features=np.arange(N))
    model.compile(optimizer=tf.keras.optimizers.Adam(0.05))
    model.fit(_dataset().take(5), verbose=0)
    assert int(est.step.numpy()) == 5
    model.save(tmp_path / "saved")
    reloaded = tf.keras.models.load_model(tmp_path / "saved")
    np.testing.assert_array_equal(reloaded._item_features.numpy(), np.arange(N))
    np.testing.assert_allclose(reloaded.item_embeddings(), model.item_embeddings(), rtol=1e-6)
    reloaded_est = reloaded.retrieval_loss.candidates.frequency_estimator
    assert int(reloaded_est.step.numpy()) == 5
    np.testing.assert_allclose(reloaded_est.delta.numpy(), est.delta.numpy())


def test_zero_counts_never_make_the_loss_nan():
    # item 0 never seen when the counts were taken: log Q is floored, the loss is finite
    loss = RetrievalLoss("softmax", InBatch(frequencies=[0, 5, 5, 5]))
    values = loss(tf.ones([3, 2]), tf.ones([3, 2]), tf.constant([0, 1, 2])).numpy()
    assert np.all(np.isfinite(values))
    sampled = RetrievalLoss("nce", SampledNegatives(UnigramSampler([0, 1, 1]), 2))
    values = sampled(tf.ones([2, 2]), tf.ones([2, 2]), tf.constant([0, 1]),
                     tf.ones([2, 2]), tf.constant([1, 2])).numpy()
    assert np.all(np.isfinite(values))
