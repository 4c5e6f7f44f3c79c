"""LazyAdam against a plain-numpy Adam: rows touched follow Adam, the rest stay put."""

import numpy as np
import pytest
import tensorflow as tf

import twotower  # noqa: F401
from twotower.training.lazy_adam import LazyAdam


def numpy_lazy_adam(theta, grads, lr=0.01, b1=0.9, b2=0.999, eps=1e-7):
    """grads: list of (indices, values) per step; duplicates summed, as a gather's
    gradient is."""
    theta = theta.copy()
    m, v = np.zeros_like(theta), np.zeros_like(theta)
    for t, (idx, vals) in enumerate(grads, start=1):
        g = np.zeros_like(theta)
        np.add.at(g, idx, vals)
        rows = np.unique(idx)
        m[rows] = b1 * m[rows] + (1 - b1) * g[rows]
        v[rows] = b2 * v[rows] + (1 - b2) * g[rows] ** 2
        alpha = lr * np.sqrt(1 - b2 ** t) / (1 - b1 ** t)
        theta[rows] -= alpha * m[rows] / (np.sqrt(v[rows]) + eps)
    return theta


def _run(optimizer, theta, grads):
    var = tf.Variable(theta)
    for idx, vals in grads:
        optimizer.apply_gradients([(tf.IndexedSlices(tf.constant(vals), tf.constant(idx),
                                                     tf.constant(theta.shape)), var)])
    return var.numpy()


def test_matches_the_numpy_reference_with_duplicate_rows():
    rng = np.random.default_rng(0)
    theta = rng.normal(size=(20, 3)).astype(np.float32)
    grads = [(rng.integers(0, 20, 6).astype(np.int64), rng.normal(size=(6, 3)).astype(np.float32))
             for _ in range(5)]
    grads[0] = (np.array([3, 3, 3, 7], np.int64), np.ones((4, 3), np.float32))
    got = _run(LazyAdam(0.01), theta, grads)
    np.testing.assert_allclose(got, numpy_lazy_adam(theta, grads), rtol=1e-5, atol=1e-6)
    untouched = sorted(set(range(20)) - set(np.concatenate([g[0] for g in grads])))
    np.testing.assert_array_equal(got[untouched], theta[untouched])


def test_equals_adam_when_every_row_is_in_every_step():
    rng = np.random.default_rng(1)
    theta = rng.normal(size=(6, 4)).astype(np.float32)
    grads = [(np.arange(6, dtype=np.int64), rng.normal(size=(6, 4)).astype(np.float32))
             for _ in range(4)]
    lazy = _run(LazyAdam(0.05), theta, grads)
    var = tf.Variable(theta)
    adam = tf.keras.optimizers.Adam(0.05)
    for _, vals in grads:
        adam.apply_gradients([(tf.constant(vals), var)])
    np.testing.assert_allclose(lazy, var.numpy(), rtol=1e-5, atol=1e-6)


def test_dense_gradients_are_plain_adam_and_config_round_trips():
    opt = LazyAdam(0.02, beta_1=0.8)
    again = LazyAdam.from_config(opt.get_config())
    assert again.get_config()["beta_1"] == 0.8 and again.name == "LazyAdam"
    var, ref = tf.Variable([1.0, 2.0]), tf.Variable([1.0, 2.0])
    opt.apply_gradients([(tf.constant([0.5, -0.5]), var)])
    tf.keras.optimizers.Adam(0.02, beta_1=0.8).apply_gradients([(tf.constant([0.5, -0.5]), ref)])
    np.testing.assert_allclose(var.numpy(), ref.numpy())
    with pytest.raises(ValueError, match="amsgrad=True is not supported"):
        LazyAdam(amsgrad=True)


def test_trains_an_id_tower_model_through_fit():
    from twotower import IDTower, InBatch, RetrievalLoss, TwoTowerModel

    tf.keras.utils.set_random_seed(0)
    model = TwoTowerModel(IDTower(50, 8), IDTower(40, 8), RetrievalLoss("softmax", InBatch()))
    model.compile(optimizer=LazyAdam(0.05))
    users = np.arange(2000) % 50
    ds = tf.data.Dataset.from_tensor_slices({"query": users, "item": users % 40}).batch(64)
    before = model.item_tower(np.arange(40)).numpy()
    hist = model.fit(ds, epochs=3, verbose=0)
    assert hist.history["loss"][-1] < hist.history["loss"][0]
    assert not np.allclose(before, model.item_tower(np.arange(40)).numpy())


def test_compiled_with_xla_matches_the_numpy_reference_with_duplicate_rows(tmp_path):
    rng = np.random.default_rng(2)
    theta = rng.normal(size=(30, 4)).astype(np.float32)
    # K = 8 rows a step with repeats, as a pooled history's gradient has
    grads = [(rng.integers(0, 12, 8).astype(np.int64), rng.normal(size=(8, 4)).astype(np.float32))
             for _ in range(6)]
    grads[0] = (np.array([5, 5, 5, 5, 1, 1, 9, 5], np.int64), np.ones((8, 4), np.float32))
    var, opt = tf.Variable(theta), LazyAdam(0.01)
    opt.build([var])

    @tf.function(jit_compile=True)
    def step(idx, vals):
        opt.apply_gradients([(tf.IndexedSlices(vals, idx, tf.constant(theta.shape,
                                                                       tf.int64)), var)])

    for idx, vals in grads:
        step(tf.constant(idx), tf.constant(vals))
    want = numpy_lazy_adam(theta, grads)
    np.testing.assert_allclose(var.numpy(), want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(var.numpy(), _run(LazyAdam(0.01), theta, grads),
                               rtol=1e-6, atol=1e-7)
    # one int32 scratch slot per table row, not optimizer state: neither saved nor listed
    assert [tuple(v.shape) for v in opt._scratch] == [(30,)]
    assert not [v for v in opt.variables if v.dtype == tf.int32]
    names = [n for n, _ in tf.train.list_variables(
        tf.train.Checkpoint(optimizer=opt).write(str(tmp_path / "ckpt")))]
    assert names and not any("scratch" in n for n in names)


def test_a_step_with_no_rows_changes_nothing():
    theta = np.ones((4, 2), np.float32)
    got = _run(LazyAdam(0.1), theta, [(np.zeros([0], np.int64), np.zeros([0, 2], np.float32))])
    np.testing.assert_array_equal(got, theta)
