"""Tests for twotower.towers.feature_tower.FeatureTower."""

import os
import textwrap

import numpy as np
import pytest

import twotower  # noqa: F401  (Keras 2)
import tensorflow as tf

from twotower.towers import feature_tower as ft


def test_shapes_normalisation_and_cold_start(feature_specs, feature_inputs):
    tower = ft.FeatureTower(feature_specs(0.1), output_dim=8, hidden_units=(16,), l2_normalize=True)
    out = tower(feature_inputs()).numpy()
    assert out.shape == (3, 8)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, rtol=1e-5)
    assert np.all(np.isfinite(out))  # unseen id, gender, words and an empty history


def test_vocabularies_put_unseen_values_in_the_oov_bucket():
    spec = ft.categorical("movie", np.array([4, 4, 8]))
    assert spec["vocabulary"] == [4, 8] and spec["dtype"] == "int64"
    tower = ft.FeatureTower([spec], output_dim=2, hidden_units=())
    idx = tower._pre["movie"](tf.constant([4, 8, 5], tf.int64)).numpy()
    assert idx.tolist() == [1, 2, 0]


def test_text_mean_ignores_padding_and_unknown_tokens():
    tower = ft.FeatureTower([ft.text("t", vocabulary=["a", "b"], dim=3)], output_dim=2,
                            hidden_units=())
    tower({"t": tf.constant(["a"])})
    emb = tower._emb["t"].embeddings.numpy()  # rows: pad, [UNK], a, b
    got = tower._embed(tower.features[0], tf.constant(["a b zz", "zz"]), False).numpy()
    np.testing.assert_allclose(got[0], (emb[2] + emb[3]) / 2, rtol=1e-6)
    np.testing.assert_allclose(got[1], 0.0)


def test_multi_hot_is_the_mean_of_present_token_embeddings():
    tower = ft.FeatureTower([ft.multi_hot("g", vocabulary=["x", "y", "z"], dim=2)],
                            output_dim=2, hidden_units=())
    tower({"g": tf.constant([["x", ""]])})
    w = tower._emb["g"].kernel.numpy()  # rows: OOV, x, y, z
    got = tower._embed(tower.features[0], tf.constant([["x", "z"], ["", ""]]), False).numpy()
    np.testing.assert_allclose(got[0], (w[1] + w[3]) / 2, rtol=1e-6)
    np.testing.assert_allclose(got[1], 0.0)


def test_dense_is_standardised():
    tower = ft.FeatureTower([ft.dense("y", np.array([1.0, 3.0]))], output_dim=1, hidden_units=())
    got = tower._embed(tower.features[0], tf.constant([1.0, 2.0, 3.0]), False).numpy()
    np.testing.assert_allclose(got[:, 0], [-1.0, 0.0, 1.0], atol=1e-5)


def test_oov_rate_only_acts_in_training():
    spec = ft.categorical("u", vocabulary=[1, 2], dim=2, oov_rate=0.99)
    tower = ft.FeatureTower([spec], output_dim=2, hidden_units=())
    x = {"u": tf.constant([1] * 64, tf.int64)}
    assert np.ptp(tower(x, training=False).numpy(), axis=0).max() == 0
    tf.random.set_seed(0)
    train_out = tower(x, training=True).numpy()
    np.testing.assert_allclose(train_out[0], tower({"u": tf.constant([42], tf.int64)})[0],
                               rtol=1e-6)  # mostly replaced by the OOV embedding


def test_get_config_round_trip(feature_specs, feature_inputs):
    tower = ft.FeatureTower(feature_specs(0.1), output_dim=8, hidden_units=(16, 8), dropout=0.1,
                            l2_normalize=True, name="q")
    tower(feature_inputs())
    clone = ft.FeatureTower.from_config(tower.get_config())
    assert clone.get_config() == tower.get_config()
    clone(feature_inputs())
    clone.set_weights(tower.get_weights())
    np.testing.assert_allclose(clone(feature_inputs()).numpy(),
                               tower(feature_inputs()).numpy(), rtol=1e-6)


def test_save_and_load_model(tmp_path, feature_specs, feature_inputs):
    inputs = feature_inputs()
    keras_inputs = {k: tf.keras.Input(shape=v.shape[1:], dtype=v.dtype, name=k)
                    for k, v in inputs.items()}
    tower = ft.FeatureTower(feature_specs(0.1), output_dim=8, hidden_units=(16,))
    model = tf.keras.Model(keras_inputs, tower(keras_inputs))
    expected = model(inputs).numpy()
    path = os.path.join(tmp_path, "tower.keras")
    model.save(path)
    loaded = tf.keras.models.load_model(path)
    np.testing.assert_allclose(loaded(inputs).numpy(), expected, rtol=1e-5)


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="kind must be one of"):
        ft.FeatureTower([{"name": "a", "kind": "image"}])
    with pytest.raises(ValueError, match="unique"):
        ft.FeatureTower([ft.hashed("a", 4), ft.hashed("a", 4)])
    with pytest.raises(ValueError, match="num_bins must be >= 1, got 0"):
        ft.hashed("a", 0)
    tower = ft.FeatureTower([ft.hashed("a", 4), ft.hashed("b", 4)], output_dim=2)
    with pytest.raises(ValueError, match=r"missing inputs \['b'\]"):
        tower({"a": tf.constant(["x"])})


def test_the_docstring_example_runs_on_own_columns():
    # FeatureTower's docstring example, run as written on a small "CSV" with string ids
    doc = ft.FeatureTower.__doc__
    start = doc.index("        import numpy as np")
    end = doc.index("\n", doc.index("item_tower(item_features)"))
    code = textwrap.dedent(doc[start:end])
    items_csv = {"item_id": np.array(["i17", "i3", "i42", "i5"], object),
                 "category": np.array(["book", "film", "film", "game"], object),
                 "title": np.array(["The Hobbit", "Heat", "Heat 2", "Tetris!"], object),
                 "price": np.array([9.5, 3.0, 4.0, 1.0])}
    scope = {"items_csv": items_csv}
    exec(compile(code, "FeatureTower docstring", "exec"), scope)
    assert scope["vocab"].tolist() == ["i17", "i3", "i42", "i5"]
    out = scope["item_tower"](scope["item_features"]).numpy()
    assert out.shape == (4, 32) and np.all(np.isfinite(out))


def test_specs_are_feature_tower_static_methods():
    import twotower

    assert twotower.FeatureTower is ft.FeatureTower
    for kind in ft.KINDS:
        assert getattr(twotower.FeatureTower, kind) is getattr(ft, kind)
