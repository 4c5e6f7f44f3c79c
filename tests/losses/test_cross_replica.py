"""Global negatives under MirroredStrategy on 2 logical CPU devices (issue 10 §1).

One training step on a global batch of 2B under the strategy must equal the same step on
one device over the same 2B examples: the loss, the gradients (read off SGD(lr=1) as the
weight change) and the streaming estimator's state, for every head × candidate source,
with ids repeated across the two replicas (accidental hits). The trap is the label offset
(replica r's row i is column r·B + i of the gathered candidates).

Logical devices must be configured before TensorFlow initialises its devices. When this
module is collected after other tests already ran TensorFlow, it runs itself again in a
fresh process (test_in_fresh_process).
"""

import os
import subprocess
import sys

import twotower  # noqa: F401  (Keras 2 before TensorFlow)
import numpy as np
import pytest
import tensorflow as tf


def _two_logical_cpus():
    cpus = tf.config.list_physical_devices("CPU")
    try:
        tf.config.set_logical_device_configuration(
            cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2)
    except RuntimeError:  # devices already initialised in this process
        pass
    return len(tf.config.list_logical_devices("CPU")) >= 2


TWO_CPUS = _two_logical_cpus()
CHILD = "TWOTOWER_CROSS_REPLICA_CHILD"

from twotower.data.frequency import StreamingFrequencyEstimator  # noqa: E402
from twotower.data.samplers import UniformSampler  # noqa: E402
from twotower.losses import (AllItems, InBatch, MixedNegatives, RetrievalLoss,  # noqa: E402
                             SampledNegatives, Triplet)
from twotower.towers.id_tower import IDTower  # noqa: E402
from twotower.towers.two_tower_model import TwoTowerModel  # noqa: E402

N_ITEMS, N_USERS, DIM, B = 12, 8, 4, 4
# replica 0 gets rows 0..3, replica 1 rows 4..7: items 1 and 0 appear on both replicas,
# item 1 twice on replica 1 (accidental hits within and across replicas)
ITEMS = np.array([0, 1, 2, 3, 1, 4, 0, 1], np.int64)
USERS = np.arange(2 * B, dtype=np.int64)
QUERY_ITEMS = np.array([5, 2, 7, 1, 3, 4, 8, 9], np.int64)  # i2i: own id among candidates
COUNTS = np.arange(1, N_ITEMS + 1, dtype=np.float64)
FIXED_DRAWS = np.array([1, 7, 9, 2, 11], np.int64)  # includes batch positives: hits


def _fixed_shared(shape, seed=None):
    return tf.constant(FIXED_DRAWS[:shape[0]])


def _per_example_draw(positive_ids, training=False, query_ids=None):
    """Deterministic per-row negatives, a function of the row's positive only."""
    ids = tf.cast(positive_ids, tf.int64)[:, tf.newaxis]
    return (ids * 5 + tf.range(3, dtype=tf.int64)[tf.newaxis, :] + 1) % N_ITEMS


def _sampled(shared):
    source = SampledNegatives(UniformSampler(N_ITEMS), 3, shared=shared)
    if shared:
        source.sampler.sample_tf = _fixed_shared
    else:
        source.draw = _per_example_draw
    return source


def _mixed(frequencies):
    source = MixedNegatives(3, N_ITEMS, frequencies=frequencies)
    source.sampler.sample_tf = _fixed_shared
    return source


def _streaming():
    return StreamingFrequencyEstimator(num_buckets=N_ITEMS, alpha=0.2)


CASES = {
    "softmax/in-batch": lambda: RetrievalLoss("softmax", InBatch()),
    "softmax/in-batch/logq-counts": lambda: RetrievalLoss(
        "softmax", InBatch(frequencies=COUNTS), temperature=0.5),
    "softmax/in-batch/logq-streaming": lambda: RetrievalLoss(
        "softmax", InBatch(frequencies=_streaming()), temperature=0.5, similarity="cosine"),
    "softmax/in-batch/hard-negatives": lambda: RetrievalLoss(
        "softmax", InBatch(), num_hard_negatives=3),
    "softmax/in-batch/learned-temperature": lambda: RetrievalLoss(
        "softmax", InBatch(), learn_temperature=True, temperature=0.7),
    "softmax/sampled-shared": lambda: RetrievalLoss("softmax", _sampled(True)),
    "softmax/sampled-per-example": lambda: RetrievalLoss("softmax", _sampled(False)),
    "softmax/mixed/logq-counts": lambda: RetrievalLoss("softmax", _mixed(COUNTS)),
    "softmax/mixed/logq-streaming": lambda: RetrievalLoss("softmax", _mixed(_streaming())),
    "softmax/all-items": lambda: RetrievalLoss("softmax", AllItems(N_ITEMS)),
    # corrected logQ: n (kept negatives) and the M draws are the global batch's
    "softmax/in-batch/logq-corrected": lambda: RetrievalLoss(
        "softmax", InBatch(frequencies=COUNTS), temperature=0.5, logq="corrected"),
    "softmax/mixed/logq-corrected-streaming": lambda: RetrievalLoss(
        "softmax", _mixed(_streaming()), logq="corrected"),
    "neg/in-batch": lambda: RetrievalLoss("neg", InBatch()),
    "neg/sampled-per-example": lambda: RetrievalLoss("neg", _sampled(False)),
    "nce/sampled-shared": lambda: RetrievalLoss("nce", _sampled(True)),
    "nce/in-batch/logq-counts": lambda: RetrievalLoss("nce", InBatch(frequencies=COUNTS)),
    "triplet/in-batch": lambda: RetrievalLoss(Triplet(margin=0.3), InBatch(),
                                              similarity="cosine"),
    "triplet/in-batch/semi-hard": lambda: RetrievalLoss(
        Triplet(margin=0.5, mining="semi-hard"), InBatch(), similarity="cosine"),
    "triplet/mixed": lambda: RetrievalLoss(Triplet(margin=0.3, mining="hardest"),
                                           _mixed(None), similarity="cosine"),
    "softmax/in-batch/i2i-own-id": lambda: RetrievalLoss("softmax", InBatch()),
}


def _initial_weights():
    rng = np.random.default_rng(0)
    return (rng.normal(size=(N_USERS, DIM)).astype(np.float32),
            rng.normal(size=(N_ITEMS, DIM)).astype(np.float32))


def _dataset(case):
    batch = {"query": USERS, "item": ITEMS}
    if "i2i" in case:
        batch["query_id"] = QUERY_ITEMS
    return tf.data.Dataset.from_tensor_slices(batch).batch(2 * B)


def _estimator_state(model):
    est = getattr(model.retrieval_loss.candidates, "frequency_estimator", None)
    if est is None:
        return None
    return {v.name.split("/")[-1].split(":")[0]: np.asarray(v.numpy()) for v in est.weights}


def _one_step(case, strategy):
    """(loss, gradient of each weight, estimator state) of one fit step of SGD(1)."""
    with strategy.scope():
        wq, wi = _initial_weights()
        model = TwoTowerModel(IDTower(N_USERS, DIM), IDTower(N_ITEMS, DIM), CASES[case]())
        model({"query": USERS[:2], "item": ITEMS[:2]})
        model.query_tower.embeddings.assign(wq)
        model.item_tower.embeddings.assign(wi)
        before = [v.numpy() for v in model.trainable_variables]
        model.compile(optimizer=tf.keras.optimizers.SGD(1.0))
    history = model.fit(_dataset(case), epochs=1, verbose=0)
    grads = [b - v.numpy() for b, v in zip(before, model.trainable_variables)]
    return history.history["loss"][0], grads, _estimator_state(model)


_STRATEGY = []


def _mirrored():
    """One MirroredStrategy for the whole module: collective instance keys restart with
    each new strategy, and a second one in the same process can meet the first one's
    cached collective of another type."""
    if not _STRATEGY:
        cpus = [d.name for d in tf.config.list_logical_devices("CPU")[:2]]
        _STRATEGY.append(tf.distribute.MirroredStrategy(cpus))
    return _STRATEGY[0]


# run by default; the other cases are marked slow (each traces two fit steps)
FAST = {"softmax/in-batch/logq-streaming", "softmax/mixed/logq-streaming",
        "softmax/in-batch/logq-corrected",
        "softmax/in-batch/i2i-own-id", "nce/sampled-shared", "triplet/in-batch"}

if TWO_CPUS:

    @pytest.mark.parametrize("case", [c if c in FAST else pytest.param(c, marks=pytest.mark.slow)
                                      for c in sorted(CASES)])
    def test_one_step_under_mirrored_equals_one_device(case):
        loss1, grads1, state1 = _one_step(case, tf.distribute.get_strategy())
        loss2, grads2, state2 = _one_step(case, _mirrored())
        assert abs(loss1 - loss2) < 1e-5, (loss1, loss2)
        assert len(grads1) == len(grads2)
        assert max(float(np.max(np.abs(g))) for g in grads1) > 1e-3  # a real step
        for g1, g2 in zip(grads1, grads2):
            np.testing.assert_allclose(g2, g1, atol=1e-5)
        if state1 is not None:  # one update per step from the global batch's ids
            assert int(state2["step"]) == 1 and int(state2["occurrences"]) == 2 * B
            for k in state1:
                np.testing.assert_allclose(state2[k], state1[k], atol=1e-6, err_msg=k)

    def test_replicas_hold_the_same_estimator_state():
        strategy = _mirrored()
        with strategy.scope():
            model = TwoTowerModel(IDTower(N_USERS, DIM), IDTower(N_ITEMS, DIM),
                                  CASES["softmax/in-batch/logq-streaming"]())
            model.compile(optimizer=tf.keras.optimizers.SGD(0.1))
        model.fit(_dataset("").repeat(3), epochs=1, verbose=0)
        est = model.retrieval_loss.candidates.frequency_estimator
        for var in est.weights:
            copies = [np.asarray(v.numpy()) for v in var.values]
            assert len(copies) == 2
            np.testing.assert_array_equal(copies[0], copies[1])
        assert int(est.step.numpy()) == 3 and int(est.occurrences.numpy()) == 3 * 2 * B

    def _replica_losses(loss, strategy, u, v, ids):
        """Per-example losses of each replica's rows, concatenated in replica order."""
        def step(ctx_u, ctx_v, ctx_ids):
            return loss(ctx_u, ctx_v, ctx_ids)

        def split(x):
            return lambda ctx: x[ctx.replica_id_in_sync_group * B:
                                 (ctx.replica_id_in_sync_group + 1) * B]
        args = [strategy.experimental_distribute_values_from_function(split(x))
                for x in (u, v, ids)]
        out = strategy.run(tf.function(step), args=args)
        return np.concatenate([np.asarray(t) for t in strategy.experimental_local_results(out)])

    def test_labels_are_offset_by_the_replica_position():
        """The gathered softmax puts replica r's positive at column r·B + i: replica 1's
        losses equal the one-device ones only with the offset (sentence-transformers PR
        3453's bug scored replica 1's rows against replica 0's positives)."""
        rng = np.random.default_rng(1)
        u = tf.constant(rng.normal(size=(2 * B, DIM)), tf.float32)
        v = tf.constant(rng.normal(size=(2 * B, DIM)), tf.float32)
        ids = tf.constant(np.arange(2 * B), tf.int64)
        single = RetrievalLoss("softmax", InBatch())(u, v, ids).numpy()
        strategy = _mirrored()
        gathered = _replica_losses(RetrievalLoss("softmax", InBatch()), strategy, u, v, ids)
        np.testing.assert_allclose(gathered, single, atol=1e-5)
        local = _replica_losses(RetrievalLoss("softmax", InBatch(), cross_replica=False),
                                strategy, u, v, ids)
        per_replica = np.concatenate([RetrievalLoss("softmax", InBatch())(
            u[r * B:(r + 1) * B], v[r * B:(r + 1) * B], ids[r * B:(r + 1) * B]).numpy()
            for r in range(2)])
        np.testing.assert_allclose(local, per_replica, atol=1e-5)
        assert np.all(gathered > local)  # B more negatives per row: a larger loss

    def test_cross_replica_flag_is_checked_and_saved():
        with pytest.raises(ValueError, match="cross_replica"):
            RetrievalLoss("softmax", InBatch(), cross_replica="yes")
        loss = RetrievalLoss("softmax", InBatch(), cross_replica=False)
        assert RetrievalLoss.from_config(loss.get_config()).cross_replica is False

else:

    @pytest.mark.skipif(os.environ.get(CHILD) == "1",
                        reason="the fresh process could not make 2 logical CPUs")
    def test_in_fresh_process(request):
        """This module's tests, in a process where TensorFlow is not initialised yet
        (with this run's -m marker expression)."""
        env = dict(os.environ, **{CHILD: "1"})
        marks = request.config.getoption("markexpr")
        proc = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", marks,
             __file__],
            env=env, capture_output=True, text=True, timeout=600,
            cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
        assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
        assert " passed" in proc.stdout and "skipped" not in proc.stdout, proc.stdout[-2000:]
