"""training/resumable_fit.py: what the recipes' fit is and is not."""

import twotower  # noqa: F401  (Keras 2 before TensorFlow)
import tensorflow as tf

from twotower.training import resumable_fit


def test_fit_is_a_function_not_a_keras_serializable():
    assert tf.keras.utils.get_registered_object("twotower>fit") is None
    assert callable(resumable_fit.fit)


def test_steps_per_epoch_counts_the_last_partial_batch():
    assert resumable_fit.steps_per_epoch(10, 4) == 3
    assert resumable_fit.steps_per_epoch(8, 4) == 2
