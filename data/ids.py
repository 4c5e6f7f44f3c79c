"""Id validation shared by every layer that gathers rows by id.

A gather with an id outside [0, V) returns a silent zero row on GPU and a cryptic
GatherV2 error on CPU; these checks give an error that names the layer and the bound.
"""

import tensorflow as tf


def check_ids_in_range(ids, vocab_size, name):
    """Asserts 0 <= ids < vocab_size with a message naming the tower and the bound."""
    ids = tf.convert_to_tensor(ids)
    if not ids.dtype.is_integer:
        raise ValueError(f"{name}: ids must be integers, got dtype {ids.dtype.name}")
    if tf.executing_eagerly():
        values = ids.numpy() if not isinstance(ids, tf.RaggedTensor) else ids.flat_values.numpy()
        if values.size and (values.min() < 0 or values.max() >= vocab_size):
            bad = values[(values < 0) | (values >= vocab_size)][0]
            raise ValueError(f"{name}: ids must be in [0, vocab_size={vocab_size}), got {bad}")
        return ids
    checks = [
        tf.debugging.assert_non_negative(ids, message=f"{name}: ids must be >= 0"),
        tf.debugging.assert_less(ids, tf.cast(vocab_size, ids.dtype),
                                 message=f"{name}: ids must be < vocab_size={vocab_size}"),
    ]
    with tf.control_dependencies(checks):
        return tf.identity(ids)
