"""training/optimizer_choice.py: which Adam the recipes' fit compiles with."""

import numpy as np
import pytest
import tensorflow as tf

import twotower  # noqa: F401  (Keras 2 before TensorFlow)
from twotower.training.lazy_adam import LazyAdam
from twotower.training.optimizer_choice import (ROWS_PER_EXAMPLE, choose_optimizer,
                                                table_rows)
from twotower.training.xla_adam import XLAAdam


def test_auto_takes_lazy_adam_above_rows_per_example_times_the_batch():
    at = ROWS_PER_EXAMPLE * 256
    big = choose_optimizer("auto", at + 1, jit=True, batch_size=256)
    assert (big.name, big.jit) == ("lazy_adam", True) and "XLA" in big.reason
    assert "auto" in big.reason and f"{at + 1:,}" in big.reason
    small = choose_optimizer("auto", at, jit=True, batch_size=256)
    assert (small.name, small.jit) == ("adam", True)
    # a larger batch amortises the dense update over more examples
    assert choose_optimizer("auto", at + 1, jit=True, batch_size=1024).name == "adam"
    assert choose_optimizer("auto", 10, jit=False, batch_size=1).jit is False
    assert choose_optimizer("auto", 11, jit=True, batch_size=1,
                            rows_per_example=10).name == "lazy_adam"


def test_a_forced_choice_ignores_the_table_size():
    assert choose_optimizer("lazy_adam", 5, jit=True, batch_size=8).name == "lazy_adam"
    assert choose_optimizer("lazy_adam", 5, jit=True, batch_size=8).jit is True
    assert choose_optimizer("lazy_adam", 5, jit=False, batch_size=8).jit is False
    forced = choose_optimizer("adam", 10 ** 7, jit=True, batch_size=8)
    assert (forced.name, forced.jit) == ("adam", True) and "--optimizer adam" in forced.reason
    with pytest.raises(ValueError, match="--optimizer must be one of"):
        choose_optimizer("sgd", 5, jit=True, batch_size=8)


def test_make_builds_the_optimizer_each_choice_stands_for():
    assert type(choose_optimizer("lazy_adam", 5, jit=True, batch_size=8).make(0.1)) is LazyAdam
    assert type(choose_optimizer("adam", 5, jit=True, batch_size=8).make(0.1)) is XLAAdam
    plain = choose_optimizer("adam", 5, jit=False, batch_size=8).make(0.1)
    assert type(plain) is tf.keras.optimizers.Adam
    assert np.isclose(float(plain.learning_rate.numpy()), 0.1)


def test_table_rows_sums_the_two_dimensional_variables():
    variables = [tf.Variable(tf.zeros([7, 3])), tf.Variable(tf.zeros([3])),
                 tf.Variable(tf.zeros([120, 2])), tf.Variable(tf.zeros([4, 4, 4]))]
    assert table_rows(variables) == 127
    assert table_rows([tf.Variable(1.0)]) == 0
