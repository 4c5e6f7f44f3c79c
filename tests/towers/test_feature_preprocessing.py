"""Tests for FeatureTower.preprocess: strings -> ids once, a numeric (XLA-compilable) tower
call on the result, and the raw path kept for serving."""

import numpy as np
import pytest

import twotower  # noqa: F401  (Keras 2)
import tensorflow as tf

from twotower.losses import InBatch, RetrievalLoss
from twotower.towers import feature_tower as ft
from twotower.towers.two_tower_model import TwoTowerModel



def test_the_tower_gives_the_same_output_on_raw_and_preprocessed_inputs(
        feature_specs, feature_inputs):
    tower = ft.FeatureTower(feature_specs(), output_dim=5, hidden_units=(8,))
    raw = feature_inputs()
    pre = tower.preprocess(raw)
    assert sorted(pre) == sorted(ft.preprocessed_key(f["name"]) for f in tower.features)
    assert not any(v.dtype == tf.string for v in pre.values())  # numbers only
    assert tower.is_preprocessed(pre) and not tower.is_preprocessed(raw)
    np.testing.assert_allclose(tower(pre).numpy(), tower(raw).numpy(), rtol=1e-6)


def test_preprocess_puts_unseen_values_in_the_oov_bucket_and_keeps_named_inputs(
        feature_specs, feature_inputs):
    tower = ft.FeatureTower(feature_specs(), output_dim=2)
    pre = tower.preprocess(feature_inputs(), keep=("user_id",))
    ids = pre[ft.preprocessed_key("user_id")].numpy()
    assert ids[2] == 0 and ids[0] > 0 and ids[1] > 0  # 999 unseen: OOV bucket 0
    assert pre[ft.preprocessed_key("gender")].numpy()[2] == 0  # "X" unseen
    np.testing.assert_array_equal(pre["user_id"].numpy(), [3, 7, 999])  # kept raw
    tokens = pre[ft.preprocessed_key("title")].numpy()
    assert tokens.shape == (3, 5) and (tokens[2][:3] == 1).all()  # [UNK] tokens
    assert pre[ft.preprocessed_key("genres")].shape == (3, 4)  # OOV + 3 genres


def test_oov_rate_drops_preprocessed_ids_in_training_only():
    tower = ft.FeatureTower([ft.categorical("u", vocabulary=[1, 2, 3], dim=4, oov_rate=0.5)],
                            output_dim=4, hidden_units=())
    raw = {"u": tf.constant([1, 2, 3] * 200, tf.int64)}
    pre = tower.preprocess(raw)
    eval_out = tower(pre, training=False).numpy()
    oov = tower({"u": tf.constant([99], tf.int64)}).numpy()[0]
    tf.random.set_seed(0)
    train_out = tower(pre, training=True).numpy()
    dropped = np.all(np.isclose(train_out, oov, atol=1e-6), axis=1)
    kept = np.all(np.isclose(train_out, eval_out, atol=1e-6), axis=1)
    assert np.all(dropped | kept)
    assert 0.35 < dropped.mean() < 0.65


def test_the_preprocessed_step_compiles_with_xla_and_matches(feature_specs, feature_inputs):
    tower = ft.FeatureTower(feature_specs(oov_rate=0.1), output_dim=5, hidden_units=(8,))
    pre = tower.preprocess(feature_inputs())
    tower(pre)

    def step(x):
        with tf.GradientTape() as tape:
            out = tower(x, training=False)
            loss = tf.reduce_sum(out ** 2)
        grads = tape.gradient(loss, tower.trainable_variables)
        return out, [tf.convert_to_tensor(g) for g in grads]

    got, got_grads = tf.function(step, jit_compile=True)(pre)
    want, want_grads = step(pre)
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-5, atol=1e-6)
    for g, w in zip(got_grads, want_grads):
        np.testing.assert_allclose(g.numpy(), w.numpy(), rtol=1e-4, atol=1e-6)
    # the training call (oov_rate drops) compiles too
    tf.function(lambda x: tower(x, training=True), jit_compile=True)(pre)


def test_a_missing_preprocessed_input_is_named():
    tower = ft.FeatureTower([ft.hashed("a", 4), ft.hashed("b", 4)], output_dim=2)
    pre = tower.preprocess({"a": tf.constant(["x"]), "b": tf.constant(["y"])})
    del pre[ft.preprocessed_key("b")]
    with pytest.raises(ValueError, match=r"missing inputs \['b'\]"):
        tower(pre)
    with pytest.raises(ValueError, match=r"missing inputs \['c'\]"):
        tower.preprocess({"a": tf.constant(["x"]), "b": tf.constant(["y"])}, keep=("c",))


def test_a_model_trained_on_preprocessed_inputs_saves_and_serves_raw_ones(tmp_path):
    """The training table and batches are preprocessed; the saved towers, reloaded, still
    take raw features (what the index and `twotower serve` feed them)."""
    items = {"item_id": np.arange(6, dtype=np.int64),
             "title": np.array(["red one", "red two", "blue one", "blue two", "gold",
                                "gold two"], object)}
    item_tower = ft.FeatureTower([ft.categorical("item_id", vocabulary=list(range(6)), dim=4),
                                  ft.text("title", items["title"], dim=4)],
                                 output_dim=4, name="item_tower")
    query_tower = ft.FeatureTower([ft.categorical("user", vocabulary=[0, 1, 2], dim=4)],
                                  output_dim=4, name="query_tower")
    table = {k: np.asarray(v) for k, v in item_tower.preprocess(items, keep=("item_id",)).items()}
    model = TwoTowerModel(query_tower, item_tower, RetrievalLoss("softmax", InBatch()),
                          item_features=table)
    users = np.array([0, 1, 2, 0, 1, 2], np.int64)
    rows = np.array([0, 2, 4, 1, 3, 5])
    query = {k: np.asarray(v) for k, v in query_tower.preprocess({"user": users}).items()}
    ds = tf.data.Dataset.from_tensor_slices(
        {"query": query, "item": {k: v[rows] for k, v in table.items()}}).batch(3)
    model.compile(optimizer=tf.keras.optimizers.Adam(0.01), jit_compile=True)
    model.fit(ds, epochs=2, verbose=0)
    want = item_tower(items).numpy()
    np.testing.assert_allclose(model.item_embeddings(), want, rtol=1e-5)  # the table
    path = str(tmp_path / "model.keras")
    model.save(path)
    reloaded = tf.keras.models.load_model(path)
    np.testing.assert_allclose(reloaded.item_tower(items).numpy(), want, rtol=1e-5)
    np.testing.assert_allclose(reloaded.query_tower({"user": users}).numpy(),
                               query_tower({"user": users}).numpy(), rtol=1e-5)
