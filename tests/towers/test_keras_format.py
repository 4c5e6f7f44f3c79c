"""Both Keras formats round-trip a TwoTowerModel: the README's ID model and a FeatureTower
dict-input model come back from ``tf.keras.models.load_model`` as the twotower classes with
the same embeddings, compiled as before, and train on."""

import functools

import numpy as np
import pytest

import twotower  # noqa: F401  (Keras 2)
import tensorflow as tf

from twotower.losses import HierarchicalSoftmax, InBatch, RetrievalLoss, SampledNegatives
from twotower.data.samplers import UnigramSampler
from twotower.metrics import TopKRecall
from twotower.towers import FeatureTower, IDTower, TwoTowerModel

RNG = np.random.default_rng(0)
USERS = RNG.integers(0, 100, size=1024)
ITEMS = (USERS * 7 + RNG.integers(0, 5, size=USERS.size)) % 50
COUNTS = np.bincount(ITEMS, minlength=50)
FORMATS = ["m.keras", "saved_model"]


@functools.lru_cache(maxsize=None)  # trained once, shared by the format cases
def _readme_model():
    tf.keras.utils.set_random_seed(0)
    model = TwoTowerModel(
        query_tower=IDTower(100, 8, name="user"), item_tower=IDTower(50, 8, name="item"),
        loss=RetrievalLoss("softmax", InBatch(frequencies=COUNTS), temperature=0.1))
    model.compile(optimizer=tf.keras.optimizers.Adam(0.01), metrics=[TopKRecall(ks=(5,))])
    ds = tf.data.Dataset.from_tensor_slices({"query": USERS, "item": ITEMS}).batch(128)
    model.fit(ds, validation_data=ds, epochs=1, verbose=0)  # the metric caches candidates
    return model, ds


def _item_table():
    ids = np.arange(50)
    return {"item_id": ids,
            "category": np.array([f"c{i % 4}" for i in ids], object),
            "title": np.array([f"film {i % 7} part {i % 3}" for i in ids], object),
            "price": (ids % 10).astype(np.float32)}


@functools.lru_cache(maxsize=None)
def _feature_model():
    tf.keras.utils.set_random_seed(0)
    table = _item_table()
    item_tower = FeatureTower([
        FeatureTower.categorical("item_id", table["item_id"], dim=4),
        FeatureTower.categorical("category", table["category"], dim=2),
        FeatureTower.text("title", table["title"], dim=3, sequence_length=4),
        FeatureTower.dense("price", table["price"]),
    ], output_dim=8, hidden_units=(8,), name="items")
    user_tower = FeatureTower([FeatureTower.categorical("user", np.arange(100), dim=8)],
                              output_dim=8, hidden_units=(), name="users")
    loss = RetrievalLoss("softmax", SampledNegatives(UnigramSampler(COUNTS + 1), 8))
    model = TwoTowerModel(user_tower, item_tower, loss, item_features=table)
    model.compile(optimizer=tf.keras.optimizers.Adam(0.01))
    item_batch = {k: v[ITEMS] for k, v in table.items()}
    ds = tf.data.Dataset.from_tensor_slices(
        {"query": {"user": USERS}, "item": item_batch}).batch(128)
    model.fit(ds, epochs=1, verbose=0)
    return model, ds


def _save_and_load(model, tmp_path, fmt):
    path = str(tmp_path / fmt)
    model.save(path)
    return tf.keras.models.load_model(path)


@pytest.mark.parametrize("fmt", FORMATS)
def test_readme_model_round_trips(tmp_path, fmt):
    model, ds = _readme_model()
    reloaded = _save_and_load(model, tmp_path, fmt)
    assert isinstance(reloaded, TwoTowerModel)
    assert isinstance(reloaded.query_tower, IDTower) and isinstance(reloaded.item_tower, IDTower)
    np.testing.assert_allclose(reloaded.query_embeddings(np.arange(100)),
                               model.query_embeddings(np.arange(100)), rtol=1e-6)
    np.testing.assert_allclose(reloaded.item_embeddings(np.arange(50)),
                               model.item_embeddings(np.arange(50)), rtol=1e-6)
    batch = next(iter(ds))  # the same loss (InBatch with the saved counts) on a batch
    np.testing.assert_allclose(reloaded.compute_retrieval_loss(batch),
                               model.compute_retrieval_loss(batch), rtol=1e-5)
    if fmt.endswith(".keras"):
        # compiled as it was: the optimizer's state and the TopKRecall metric come back
        assert int(reloaded.optimizer.iterations.numpy()) == int(model.optimizer.iterations)
        assert [m.ks for m in reloaded._retrieval_metrics] == [(5,)]
        got = reloaded.evaluate(ds, verbose=0, return_dict=True)
        want = model.evaluate(ds, verbose=0, return_dict=True)
        assert got == pytest.approx(want, rel=1e-5)
    else:
        reloaded.compile(optimizer=tf.keras.optimizers.Adam(0.01))
    history = reloaded.fit(ds, epochs=1, verbose=0)  # trains on after reload
    assert np.isfinite(history.history["loss"][0])


@pytest.mark.parametrize("fmt", FORMATS)
def test_feature_tower_dict_input_model_round_trips(tmp_path, fmt):
    model, ds = _feature_model()
    reloaded = _save_and_load(model, tmp_path, fmt)
    assert isinstance(reloaded, TwoTowerModel)
    assert isinstance(reloaded.item_tower, FeatureTower)
    assert reloaded.item_tower.get_config() == model.item_tower.get_config()
    np.testing.assert_allclose(reloaded.item_embeddings(), model.item_embeddings(), rtol=1e-5)
    users = {"user": np.array([0, 7, 99, 12345])}  # 12345: unseen, the OOV bucket
    np.testing.assert_allclose(reloaded.query_embeddings(users), model.query_embeddings(users),
                               rtol=1e-5)
    if not fmt.endswith(".keras"):
        reloaded.compile(optimizer=tf.keras.optimizers.Adam(0.01))
    history = reloaded.fit(ds, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])


def test_hierarchical_softmax_model_round_trips_as_keras(tmp_path):
    tf.keras.utils.set_random_seed(0)
    model = TwoTowerModel(IDTower(100, 8), IDTower(50, 8),
                          RetrievalLoss(HierarchicalSoftmax(COUNTS + 1, 8), candidates=None))
    model.compile(optimizer=tf.keras.optimizers.Adam(0.01))
    ds = tf.data.Dataset.from_tensor_slices({"query": USERS, "item": ITEMS}).batch(128)
    model.fit(ds, epochs=1, verbose=0)
    reloaded = _save_and_load(model, tmp_path, "hs.keras")
    u = tf.constant(model.query_embeddings(np.arange(5)))
    np.testing.assert_allclose(reloaded.retrieval_loss.head.log_probabilities(u),
                               model.retrieval_loss.head.log_probabilities(u), rtol=1e-5)
