"""An execution's steps compiled as one XLA program train as Keras' own loop does."""

import numpy as np
import tensorflow as tf

import twotower  # noqa: F401
from twotower.data.frequency import StreamingFrequencyEstimator
from twotower.losses import InBatch, RetrievalLoss
from twotower.towers import IDTower, TwoTowerModel
from twotower.towers import compiled_execution
from twotower.training.xla_adam import XLAAdam

USERS, ITEMS, BATCH = 50, 40, 16
RNG = np.random.default_rng(0)
QUERY = RNG.integers(0, USERS, size=BATCH * 10)
ITEM = RNG.integers(0, ITEMS, size=BATCH * 10)


def _dataset(drop_remainder=True, rows=None):
    rows = slice(None) if rows is None else slice(0, rows)
    return tf.data.Dataset.from_tensor_slices(
        {"query": QUERY[rows], "item": ITEM[rows]}).batch(BATCH, drop_remainder=drop_remainder)


def _model(steps_per_execution):
    tf.keras.utils.set_random_seed(0)
    freq = StreamingFrequencyEstimator(num_buckets=ITEMS, alpha=0.1)
    loss = RetrievalLoss("softmax", InBatch(frequencies=freq), temperature=0.2,
                         similarity="cosine")
    model = TwoTowerModel(IDTower(USERS, 8, name="user"), IDTower(ITEMS, 8, name="item"), loss)
    model.compile(optimizer=XLAAdam(0.05), jit_compile=True,
                  steps_per_execution=steps_per_execution)
    return model


def _weights(model):
    return [v.numpy() for v in model.variables]


def _counting(monkeypatch):
    """Counts the calls of the compiled train function TwoTowerModel makes."""
    calls = []
    make = compiled_execution.compiled_train_function

    def counted(model, capacity, logs):
        fn = make(model, capacity, logs)

        def call(iterator):
            calls.append(capacity)
            return fn(iterator)
        return call

    monkeypatch.setattr(compiled_execution, "compiled_train_function", counted)
    return calls


def _fit(steps_per_execution, dataset, **kwargs):
    model = _model(steps_per_execution)
    seen = []

    class Batches(tf.keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            seen.append((batch, float(logs["loss"])))

    model.fit(dataset, verbose=0, callbacks=[Batches()], **kwargs)
    return model, seen


def test_static_shapes_are_recognised():
    assert compiled_execution.has_static_shapes(_dataset(True).element_spec)
    assert not compiled_execution.has_static_shapes(_dataset(False).element_spec)


def test_compiled_execution_trains_as_keras_per_step_loop(monkeypatch):
    # 10 batches an epoch, 4 steps an execution: two full executions and a partial one
    # (Keras lowers steps_per_execution to 2 for it), over two epochs
    calls = _counting(monkeypatch)
    reference, _ = _fit(1, _dataset(), epochs=2)
    assert calls == []  # one step an execution: Keras' function
    model, seen = _fit(4, _dataset(), epochs=2)
    assert calls == [4] * 6
    assert int(model.optimizer.iterations.numpy()) == 20
    assert int(model._train_counter.numpy()) == 20
    for got, want in zip(_weights(model), _weights(reference)):
        np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-5)
    # Keras' callbacks still see one call per execution, at its last step
    assert [b for b, _ in seen] == [3, 7, 9] * 2
    assert all(np.isfinite(loss) for _, loss in seen)
    # the streaming estimator, updated inside the compiled loop, moved off its start
    assert any(not np.allclose(w, 0) for w in _weights(model.retrieval_loss))


def test_data_running_out_mid_execution_trains_every_batch(monkeypatch):
    # 6 batches but steps_per_epoch=8, 4 steps an execution: the second execution finds
    # only 2 batches, trains both and raises the iterator's end, on which fit stops
    # (Keras' "ran out of data" warning), as Keras' own loop does
    calls = _counting(monkeypatch)
    reference, _ = _fit(1, _dataset(rows=BATCH * 6), epochs=2, steps_per_epoch=8)
    model, _ = _fit(4, _dataset(rows=BATCH * 6), epochs=2, steps_per_epoch=8)
    assert len(calls) == 2
    assert int(model.optimizer.iterations.numpy()) == 6
    for got, want in zip(_weights(model), _weights(reference)):
        np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-5)


def test_batches_of_changing_shape_take_keras_loop(monkeypatch):
    # batches of 16 without drop_remainder: the batch dimension is unknown, so Keras'
    # loop (one launch a step) trains it
    calls = _counting(monkeypatch)
    model, _ = _fit(4, _dataset(False), epochs=1)
    assert int(model.optimizer.iterations.numpy()) == 10
    assert calls == []
