"""ShardedIDTower: an IDTower on one device; under ParameterServerStrategy, a table
sharded over 2 parameter-server processes, trained by 2 worker processes with model.fit
(ClusterCoordinator), on loopback (issue 10 §3).

Run as a script this file is one task of the loopback cluster:
``python test_sharded_id_tower.py server JOB INDEX CLUSTER`` or ``... chief CLUSTER OUT``.
"""

import json
import os
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

N_USERS, N_ITEMS, DIM, BATCH = 400, 40, 8, 64


def _data():
    """Users of 4 tastes, each liking 10 of the 40 items: a learnable in-batch task."""
    rng = np.random.default_rng(0)
    users = rng.integers(0, N_USERS, 4096)
    items = (users % 4) * 10 + rng.integers(0, 10, users.size)
    return users, items


def test_one_device_lookup_is_an_id_tower():
    import twotower  # noqa: F401
    import tensorflow as tf

    from twotower.towers.id_tower import IDTower
    from twotower.towers.sharded_id_tower import ShardedIDTower, parameter_server_strategy

    tower = ShardedIDTower(10, 3)
    ids = tf.constant([0, 9, 3, 3])
    out = tower(ids).numpy()
    np.testing.assert_array_equal(out, tower.embeddings.numpy()[[0, 9, 3, 3]])
    assert len(tower.shards) == 1 and tower.table().shape == (10, 3)
    with pytest.raises(Exception, match="ShardedIDTower"):
        tower(tf.constant([10]))
    same = ShardedIDTower.from_config(tower.get_config())
    assert (same.vocab_size, same.dim) == (10, 3)
    plain = IDTower(10, 3)
    plain(ids)
    plain.embeddings.assign(tower.embeddings)
    np.testing.assert_array_equal(plain(ids).numpy(), out)
    resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(
        tf.train.ClusterSpec({"worker": ["127.0.0.1:1"]}), rpc_layer="grpc")
    with pytest.raises(ValueError, match="ps"):
        parameter_server_strategy(resolver)


def _free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


@pytest.mark.slow
def test_parameter_server_training_on_loopback(tmp_path):
    import twotower  # noqa: F401
    import tensorflow as tf

    from twotower.towers.sharded_id_tower import ShardedIDTower

    ports = _free_ports(5)
    cluster = {"chief": [f"127.0.0.1:{ports[0]}"],
               "worker": [f"127.0.0.1:{p}" for p in ports[1:3]],
               "ps": [f"127.0.0.1:{p}" for p in ports[3:5]]}
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    env.pop("TF_CONFIG", None)
    servers = [subprocess.Popen([sys.executable, __file__, "server", job, str(i),
                                 json.dumps(cluster)], env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
               for job in ("worker", "ps") for i in range(2)]
    out = str(tmp_path / "chief.npz")
    try:
        chief = subprocess.run([sys.executable, __file__, "chief", json.dumps(cluster), out],
                               env=env, capture_output=True, text=True, timeout=400)
    finally:
        for p in servers:
            p.kill()
            p.wait()
    assert chief.returncode == 0, chief.stdout[-2000:] + chief.stderr[-4000:]
    r = np.load(out)
    losses = r["losses"]
    assert losses[-1] < losses[0] - 0.1, losses  # it learns
    assert list(r["shard_rows"]) == [N_USERS // 2, N_USERS // 2]  # split over the 2 ps
    assert not np.allclose(r["table"], r["initial"])  # trained
    np.testing.assert_allclose(r["table"], r["lookup"], atol=0)  # shards = lookups of all ids
    # the checkpoint of the sharded table restores into a table on one device
    tower = ShardedIDTower(N_USERS, DIM)
    tower(tf.constant([0]))
    tf.train.Checkpoint(tower=tower).read(str(tmp_path / "ckpt")).expect_partial()
    assert len(tower.shards) == 1
    np.testing.assert_array_equal(tower.table(), r["table"])


def _serve(job, index, cluster):
    import twotower  # noqa: F401
    import tensorflow as tf

    threading.Timer(420, lambda: os._exit(0)).start()  # stops by itself
    config = tf.compat.v1.ConfigProto()
    config.inter_op_parallelism_threads = 4
    tf.distribute.Server(tf.train.ClusterSpec(cluster), job_name=job, task_index=index,
                         protocol="grpc", config=config, start=True).join()


def _chief(cluster, out):
    import twotower  # noqa: F401
    import tensorflow as tf

    from twotower.losses import InBatch, RetrievalLoss
    from twotower.towers.id_tower import IDTower
    from twotower.towers.sharded_id_tower import ShardedIDTower, parameter_server_strategy
    from twotower.towers.two_tower_model import TwoTowerModel

    resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(
        tf.train.ClusterSpec(cluster), rpc_layer="grpc")
    # the user table (400 × 8 floats, 12.8 KB) is split in 2; the item table stays whole
    strategy = parameter_server_strategy(resolver, min_shard_bytes=4 << 10)
    users, items = _data()

    def dataset_fn(context):
        ds = tf.data.Dataset.from_tensor_slices({"query": users, "item": items})
        ds = ds.shard(context.num_input_pipelines, context.input_pipeline_id)
        return ds.shuffle(4096, seed=0).batch(BATCH).repeat()

    with strategy.scope():
        tower = ShardedIDTower(N_USERS, DIM)
        model = TwoTowerModel(tower, IDTower(N_ITEMS, DIM),
                              RetrievalLoss("softmax", InBatch(), temperature=0.2,
                                            similarity="cosine"))
        model.compile(optimizer=tf.keras.optimizers.Adam(0.05))
        model({"query": users[:2], "item": items[:2]})
    initial = tower.table()
    history = model.fit(tf.keras.utils.experimental.DatasetCreator(dataset_fn), epochs=6,
                        steps_per_epoch=30, verbose=0)
    lookup = tower(tf.range(N_USERS)).numpy()
    tf.train.Checkpoint(tower=tower).write(os.path.join(os.path.dirname(out), "ckpt"))
    np.savez(out, losses=np.array(history.history["loss"]), table=tower.table(),
             initial=initial, lookup=lookup,
             shard_rows=np.array([s.shape[0] for s in tower.shards]))


if __name__ == "__main__":
    if sys.argv[1] == "server":
        _serve(sys.argv[2], int(sys.argv[3]), json.loads(sys.argv[4]))
    else:
        started = time.time()
        _chief(json.loads(sys.argv[2]), sys.argv[3])
        print(f"chief done in {time.time() - started:.1f} s")
