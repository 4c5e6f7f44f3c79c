"""One XLA program for all the steps of an execution (Keras' ``steps_per_execution``).

Keras 2 with ``compile(jit_compile=True, steps_per_execution=K)`` runs a TensorFlow loop
of K steps and compiles each step on its own, so every step is a separate XLA launch,
whose fixed cost (a launch takes the batch and every variable as arguments) can exceed
the step's computation for a small model. This module compiles the loop itself: the K
batches of an execution are fetched from the iterator first (outside XLA, which cannot
read an iterator), stacked, and handed to one compiled program that runs ``train_step``
on each in turn. The steps, their order and their updates are those of Keras' loop; only
where the loop runs changes (measured: docs/benchmarks.md).

It is part of the model (the body of ``TwoTowerModel.make_train_function``), so it lives
beside it. Used when the model is compiled with ``jit_compile=True`` and
``steps_per_execution`` > 1 and its batches all have one static shape (a dataset batched
with ``drop_remainder=True``); otherwise Keras' own loop runs.
"""

import tensorflow as tf


def has_static_shapes(element_spec):
    """Whether every tensor of a dataset element has a fully known shape, so that the
    batches of one execution can be stacked and compiled once."""
    specs = tf.nest.flatten(element_spec)
    return bool(specs) and all(isinstance(s, tf.TensorSpec) and s.shape.is_fully_defined()
                               for s in specs)


def compiled_train_function(model, capacity, logs):
    """A train function for ``model`` that runs up to ``capacity`` steps in one XLA launch.

    Each call reads n = min(model's steps_per_execution variable, capacity) batches —
    Keras lowers the variable for an epoch's last, partial execution — and runs
    ``model.train_step`` on each inside one compiled while loop, adding one to Keras' train
    counter per step as Keras' own loop does. The batches are stacked into arrays of
    ``capacity`` rows (rows past n stay zero and are not run), so that the program is
    compiled for one shape. An iterator that runs out mid-execution ends it as in Keras'
    loop: the steps read so far are run, then the iterator's ``OutOfRangeError`` is
    raised, on which Keras' fit stops.

    ``logs``: a function of no arguments giving what ``train_step`` returns, read after
    the last step (TwoTowerModel's ``_logs``: its metrics' results), so that the loop
    carries no step output and the step is compiled once, in the loop's body."""
    capacity = int(capacity)

    @tf.function(jit_compile=True, reduce_retracing=True)
    def run_steps(stacked, count):
        # ``while``, not ``for k in tf.range(count)``: XLA would need the range's trip
        # count as a constant and compile anew for each partial execution
        k = tf.constant(0, tf.int32)
        while k < count:
            outputs = model.train_step(tf.nest.map_structure(lambda x: x[k], stacked))
            deps = [t for t in tf.nest.flatten(outputs) if not isinstance(t, tf.Variable)]
            with tf.control_dependencies(deps[:1]):
                model._train_counter.assign_add(1)
            k += 1
        return logs()

    @tf.function(reduce_retracing=True)
    def train_function(iterator):
        first = next(iterator)  # raises OutOfRangeError at the end of the data
        flat = tf.nest.flatten(first)
        arrays = [tf.TensorArray(x.dtype, size=capacity, element_shape=x.shape).write(0, x)
                  for x in flat]
        limit = tf.minimum(tf.cast(model._steps_per_execution, tf.int32), capacity)
        count = tf.constant(1, tf.int32)
        while count < limit:
            batch = iterator.get_next_as_optional()
            if not batch.has_value():
                break
            values = tf.nest.flatten(batch.get_value())
            arrays = [a.write(count, v) for a, v in zip(arrays, values)]
            count += 1
        stacked = tf.nest.pack_sequence_as(first, [a.stack() for a in arrays])
        logs = run_steps(stacked, count)
        if count < limit:
            # the data ran out: after its steps, end the execution as Keras' loop does,
            # with the iterator's OutOfRangeError (Keras stops the fit on it)
            with tf.control_dependencies(tf.nest.flatten(logs)):
                next(iterator)
        return logs

    return train_function
