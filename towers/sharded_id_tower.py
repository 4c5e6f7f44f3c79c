"""ShardedIDTower: an ID tower whose table W ∈ R^{V × d} is split over parameter servers.

For tables larger than one device (10⁸ users × 64 floats = 25.6 GB), the table is
created under a ``tf.distribute.ParameterServerStrategy`` with a ``variable_partitioner``
and becomes a ``ShardedVariable``: rows [0, V₁) on ps 0, [V₁, V₁ + V₂) on ps 1, ...
A lookup ``u = W[id]`` is ``tf.nn.embedding_lookup``, which TensorFlow dispatches on a
ShardedVariable to a gather on each shard holding some of the ids (partition strategy
"div", the partitioner's row ranges) — the whole table never travels to a worker. This
is TensorFlow's own sharded-embedding path (the one Keras' Embedding layer takes); the
tower adds it to twotower's IDTower contract (ids checked, get_config, vocab_size).

Outside a ParameterServerStrategy (or with a partitioner that gives one shard) the table
is an ordinary variable and the tower is an IDTower. A checkpoint of a sharded table
restores into an unsharded one and back (ShardedVariable saves the full-table slices).

    strategy = parameter_server_strategy(resolver, num_shards=2)
    with strategy.scope():
        model = TwoTowerModel(ShardedIDTower(num_users, 64), IDTower(num_items, 64), loss)
        model.compile(optimizer="adam")
    model.fit(tf.keras.utils.experimental.DatasetCreator(dataset_fn), epochs=...,
              steps_per_epoch=...)
"""

import numpy as np
import tensorflow as tf

from twotower.data.ids import check_ids_in_range
from twotower.towers.id_tower import EmbeddingTable


@tf.keras.utils.register_keras_serializable(package="twotower")
class ShardedIDTower(EmbeddingTable):
    """Embedding lookup through ``tf.nn.embedding_lookup`` (a ShardedVariable-aware
    gather). Args as :class:`twotower.towers.IDTower`."""

    def call(self, ids):
        if self.validate_ids:
            ids = check_ids_in_range(ids, self.vocab_size, f"ShardedIDTower {self.name!r}")
        return tf.nn.embedding_lookup(self.embeddings, ids)

    @property
    def shards(self):
        """The table's shards, in row order (one variable when it is not sharded)."""
        return list(getattr(self.embeddings, "variables", [self.embeddings]))

    def table(self):
        """The whole table W [V, d] as numpy: the shards' values concatenated in row
        order (read from the parameter servers)."""
        return np.concatenate([np.asarray(s.numpy()) for s in self.shards], axis=0)


def parameter_server_strategy(cluster_resolver=None, *, num_shards=None,
                              min_shard_bytes=256 << 10):
    """A ``tf.distribute.ParameterServerStrategy`` that shards large variables.

    Args:
      cluster_resolver: a ``tf.distribute.cluster_resolver.ClusterResolver``; default
        ``TFConfigClusterResolver()`` (the cluster in TF_CONFIG: chief, worker, ps).
      num_shards: at most this many shards per variable (default: one per ps).
      min_shard_bytes: variables smaller than this stay whole (TensorFlow's
        ``MinSizePartitioner``), so only the big tables are split.
    """
    if cluster_resolver is None:
        cluster_resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
    num_ps = len(cluster_resolver.cluster_spec().as_dict().get("ps", []))
    if num_ps < 1:
        raise ValueError(f"cluster_resolver has no 'ps' tasks: "
                         f"{cluster_resolver.cluster_spec().as_dict()}")
    num_shards = num_ps if num_shards is None else num_shards
    if isinstance(num_shards, bool) or not isinstance(num_shards, int) or num_shards < 1:
        raise ValueError(f"num_shards must be an int >= 1, got {num_shards!r}")
    partitioner = tf.distribute.experimental.partitioners.MinSizePartitioner(
        min_shard_bytes=int(min_shard_bytes), max_shards=num_shards)
    return tf.distribute.ParameterServerStrategy(cluster_resolver,
                                                 variable_partitioner=partitioner)
