"""Fixtures the FeatureTower tests share: ``feature_specs(oov_rate)`` gives one spec of
every feature kind, ``feature_inputs()`` a raw batch with a cold-start user and unseen
values."""

import numpy as np
import pytest

import twotower  # noqa: F401  (Keras 2)
import tensorflow as tf

from twotower.towers import feature_tower as ft


def _specs(oov_rate=0.0):
    return [
        ft.categorical("user_id", np.array([3, 5, 7, 7]), dim=4, oov_rate=oov_rate),
        ft.categorical("gender", np.array(["M", "F"], object), dim=2),
        ft.hashed("zip", 16, dim=3),
        ft.text("title", np.array(["Toy Story", "Heat", "The Story of Us"], object), dim=4,
                sequence_length=5),
        ft.multi_hot("genres", np.array([["Action", ""], ["Comedy", "Drama"]], object), dim=3),
        ft.dense("year", np.array([1990.0, 1995.0, 2000.0])),
        ft.sequence("history", vocab_size=10, dim=4),
    ]


def _inputs():
    return {
        "user_id": tf.constant([3, 7, 999], tf.int64),  # 999: a cold-start user
        "gender": tf.constant(["M", "F", "X"]),
        "zip": tf.constant(["85", "94", "00"]),
        "title": tf.constant(["toy story", "heat!", "never seen words"]),
        "genres": tf.constant([["Action", ""], ["Comedy", "Drama"], ["", ""]]),
        "year": tf.constant([1995.0, 1990.0, 2010.0]),
        "history": tf.constant([[1, 2, 0], [0, 0, 0], [9, 0, 0]], tf.int64),
    }



@pytest.fixture
def feature_specs():
    return _specs


@pytest.fixture
def feature_inputs():
    return _inputs
