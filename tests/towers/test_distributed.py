"""TwoTowerModel under MultiWorkerMirroredStrategy: 2 worker processes on loopback.

Two processes with TF_CONFIG on 127.0.0.1 train the same small model (in-batch softmax
with the streaming logQ estimator, global negatives) for 2 epochs; both end with the same
weights and estimator state, equal to one process training on the same global batches.
Run as a script, this file is one worker: ``python test_distributed.py OUT.npz``.
"""

import json
import os
import socket
import subprocess
import sys

import numpy as np

GLOBAL_BATCH, EPOCHS = 16, 2


def train_small(strategy):
    """Fits the small model under ``strategy``; returns {name: array} of its weights
    (towers and estimator; not the optimizer's or the metrics')."""
    import twotower  # noqa: F401
    import tensorflow as tf

    from twotower.data.frequency import StreamingFrequencyEstimator
    from twotower.losses import InBatch, RetrievalLoss
    from twotower.towers.id_tower import IDTower
    from twotower.towers.two_tower_model import TwoTowerModel

    rng = np.random.default_rng(0)
    users, items = rng.integers(0, 20, 64), rng.integers(0, 12, 64)  # repeats across workers
    init = tf.keras.initializers.RandomNormal
    with strategy.scope():
        model = TwoTowerModel(
            IDTower(20, 4, embeddings_initializer=init(seed=1)),
            IDTower(12, 4, embeddings_initializer=init(seed=2)),
            RetrievalLoss("softmax", InBatch(frequencies=StreamingFrequencyEstimator(12)),
                          temperature=0.5))
        model.compile(optimizer=tf.keras.optimizers.Adam(0.05))
    ds = tf.data.Dataset.from_tensor_slices({"query": users, "item": items}).batch(GLOBAL_BATCH)
    options = tf.data.Options()  # every worker reads its share of each global batch
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    model.fit(ds.with_options(options), epochs=EPOCHS, verbose=0)
    est = model.retrieval_loss.candidates.frequency_estimator
    out = {"query": model.query_tower.embeddings.numpy(),
           "item": model.item_tower.embeddings.numpy()}
    out.update({v.name.split("/")[-1].split(":")[0]: v.numpy() for v in est.weights})
    return out


def _free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def test_two_workers_train_like_one_process(tmp_path):
    import twotower  # noqa: F401
    import tensorflow as tf

    ports = _free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    procs = []
    for i in range(2):
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="",
                   TF_CONFIG=json.dumps({"cluster": cluster,
                                         "task": {"type": "worker", "index": i}}))
        procs.append(subprocess.Popen([sys.executable, __file__, str(tmp_path / f"w{i}.npz")],
                                      env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True))
    try:
        logs = [p.communicate(timeout=240)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for p, log in zip(procs, logs):
        assert p.returncode == 0, log[-3000:]
    w0, w1 = (np.load(tmp_path / f"w{i}.npz") for i in range(2))
    single = train_small(tf.distribute.get_strategy())
    assert set(w0.files) == set(single)
    for k in single:
        np.testing.assert_array_equal(w0[k], w1[k], err_msg=k)  # the same on both workers
        np.testing.assert_allclose(w0[k], single[k], atol=1e-5, err_msg=k)  # as one process
    assert int(w0["step"]) == EPOCHS * 4 and int(w0["occurrences"]) == EPOCHS * 64


if __name__ == "__main__":
    import twotower  # noqa: F401
    import tensorflow as tf

    weights = train_small(tf.distribute.MultiWorkerMirroredStrategy())
    np.savez(sys.argv[1], **weights)
