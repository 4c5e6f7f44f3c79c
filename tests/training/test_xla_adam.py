"""XLAAdam takes Adam's step on sparse gradients, inside an XLA-compiled function."""

import numpy as np
import tensorflow as tf

import twotower  # noqa: F401
from twotower.training.xla_adam import XLAAdam


def test_xla_adam_takes_the_same_step_as_adam_on_sparse_gradients():
    table = np.random.default_rng(0).normal(size=(6, 3)).astype(np.float32)
    ids = tf.constant([0, 2, 2, 5])
    results = []
    for cls, jit in ((tf.keras.optimizers.Adam, False), (XLAAdam, True)):
        var = tf.Variable(table)
        opt = cls(0.1)

        def step():
            with tf.GradientTape() as tape:
                loss = tf.reduce_sum(tf.gather(var, ids) ** 2)
            grad = tape.gradient(loss, var)
            assert isinstance(grad, tf.IndexedSlices)
            opt.apply_gradients([(grad, var)])

        fn = tf.function(step, jit_compile=jit)
        for _ in range(3):
            fn()
        results.append(var.numpy())
    np.testing.assert_allclose(results[1], results[0], rtol=1e-5, atol=1e-6)
    assert not np.allclose(results[0], table)
