import numpy as np
import pytest
import tensorflow as tf

import twotower  # noqa: F401
from twotower.index import towers_io
from twotower.towers import IDTower, PooledIDTower
from twotower.towers import feature_tower as ft


def test_signatures_come_from_the_towers_own_configuration():
    assert towers_io.input_spec(IDTower(5, 2)) == tf.TensorSpec([None], tf.int64)
    assert towers_io.input_spec(PooledIDTower(5, 2)) == tf.TensorSpec([None, None], tf.int64)
    tower = ft.FeatureTower([
        ft.categorical("user_id", np.array([3, 5])), ft.categorical("city", ["a", "b"]),
        ft.text("title", ["a b"]), ft.multi_hot("genres", [["x", "y"]]),
        ft.dense("age", [1.0, 2.0]), ft.dense("xy", np.array([[1.0, 2.0], [3.0, 5.0]])),
        ft.sequence("history", 10)])
    spec = towers_io.input_spec(tower)  # never called
    assert spec == {"user_id": tf.TensorSpec([None], tf.int64),
                    "city": tf.TensorSpec([None], tf.string),
                    "title": tf.TensorSpec([None], tf.string),
                    "genres": tf.TensorSpec([None, None], tf.string),
                    "age": tf.TensorSpec([None], tf.float32),
                    "xy": tf.TensorSpec([None, 2], tf.float32),
                    "history": tf.TensorSpec([None, None], tf.int64)}
    inputs = tf.keras.Input([3], dtype=tf.float32)
    functional = tf.keras.Model(inputs, tf.keras.layers.Dense(2)(inputs))
    assert towers_io.input_spec(functional) == tf.TensorSpec([None, 3], tf.float32)
    assert towers_io.takes_ids(IDTower(5, 2)) and not towers_io.takes_ids(tower)


def test_a_hashed_feature_needs_an_example():
    tower = ft.FeatureTower([ft.hashed("zip", 8)], output_dim=2)
    tower({"zip": tf.constant(["85", "94"])})  # a layer's call records no signature
    with pytest.raises(ValueError, match="hashed feature takes ints or strings alike.*pass "
                                         "an example batch"):
        towers_io.input_spec(tower)
    assert towers_io.input_spec(tower, {"zip": np.array([1, 2])}) == \
        {"zip": tf.TensorSpec([None], tf.int64)}


def test_a_loaded_tower_saves_again_and_checks_its_inputs(tmp_path):
    tf.keras.utils.set_random_seed(0)
    tower = IDTower(7, 3)
    towers_io.save_tower(tower, str(tmp_path / "a"))
    loaded = towers_io.load_tower(str(tmp_path / "a"))
    assert loaded.vocab_size == 7 and towers_io.id_range(loaded) == 7
    towers_io.save_tower(loaded, str(tmp_path / "b"))
    again = towers_io.load_tower(str(tmp_path / "b"))
    assert again.vocab_size == 7
    np.testing.assert_allclose(again(np.arange(7, dtype=np.int32)), tower(np.arange(7)).numpy())
    with pytest.raises(ValueError, match="takes one tensor"):
        again({"user_id": np.arange(2)})
    dict_tower = ft.FeatureTower([ft.categorical("city", ["a", "b"])], output_dim=2)
    towers_io.save_tower(dict_tower, str(tmp_path / "c"))
    loaded_dict = towers_io.load_tower(str(tmp_path / "c"))
    assert loaded_dict.vocab_size is None
    out = loaded_dict({"city": np.array(["a", "b"], object), "other": np.arange(2)})
    np.testing.assert_allclose(out, dict_tower({"city": tf.constant(["a", "b"])}).numpy(),
                               rtol=1e-6)
    with pytest.raises(ValueError, match=r"miss features \['city'\]"):
        loaded_dict({"town": np.array(["a"])})
