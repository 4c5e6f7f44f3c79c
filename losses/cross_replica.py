"""Global candidate sets under a tf.distribute strategy (data parallel, N replicas).

With MirroredStrategy / MultiWorkerMirroredStrategy every replica runs the training step
on its own slice of the global batch. In-batch and mixed candidates should still be the
global batch's, not the replica's (docs/formulation.md, "Past one replica"):

    candidates  = all_gather over replicas of (v⁺, ids⁺)      [B_global, d], [B_global]
    label(i)    = offset_r + i,  offset_r = Σ_{r' < r} B_r'   (replica r, local row i)
    Q(c)        = B_global · p(c)                             (in-batch)
    masks       against the global ids (accidental hits, own id, padding)
    ℓ_r         = Σ_{i in replica r} ℓ_i / B_global           (one lr for any N)

``ReplicaContext.all_gather`` is TensorFlow's collective (NCCL / ring / gRPC; no
home-made transport); its gradient sums the upstream gradients over replicas and hands
each replica the slice of its own rows, so a positive's embedding receives the gradient
of every replica's loss it appears in — the same gradient a single device computes on
the global batch, once Keras sums the replicas' weight gradients.

TFRS defines such a cross-replica concat but its Retrieval task no longer calls it (its
negatives stay per replica); sentence-transformers' gathered in-batch negatives are the
same with torch collectives, and the bug its PR 3453 fixed is the label offset (r·B + i)
written here.
"""

import tensorflow as tf


def replica_context():
    """The current ReplicaContext when a step runs under a strategy with more than one
    replica in sync; None otherwise (no strategy, one replica, or cross-replica
    context)."""
    ctx = tf.distribute.get_replica_context()
    if ctx is None or ctx.num_replicas_in_sync <= 1:
        return None
    return ctx


def num_replicas():
    """Replicas in sync of the current context (1 outside any strategy)."""
    ctx = tf.distribute.get_replica_context()
    if ctx is not None:
        return int(ctx.num_replicas_in_sync)
    return int(tf.distribute.get_strategy().num_replicas_in_sync)


def resolve(cross_replica):
    """The flag of a loss resolved in the current context: None (auto) means True under
    more than one replica; True outside a multi-replica step is a no-op."""
    if cross_replica is None or cross_replica:
        return replica_context() is not None
    return False


def _placed(value):
    """``value`` with a device. MultiWorkerMirroredStrategy runs a worker's one replica
    without a device scope, and its all_gather refuses a tensor whose device is empty
    ("destinations can not be empty"): place it on the worker's one device."""
    value = tf.convert_to_tensor(value)
    devices = tf.distribute.get_strategy().extended.worker_devices
    if value.device or len(devices) != 1:
        return value
    with tf.device(devices[0]):
        return tf.identity(value)


def all_gather(value):
    """Concatenation over replicas along axis 0 (replica order), differentiable."""
    ctx = replica_context()
    if ctx is None:
        return value
    return ctx.all_gather(_placed(value), axis=0)


def batch_offset(local_batch):
    """(offset of this replica's rows in the global batch, global batch size), int32.
    Replicas may hold different numbers of rows (the last batch of an epoch)."""
    ctx = replica_context()
    local_batch = tf.cast(local_batch, tf.int32)
    if ctx is None:
        return tf.constant(0, tf.int32), local_batch
    sizes = ctx.all_gather(_placed(tf.reshape(local_batch, [1])), axis=0)
    replica = tf.cast(ctx.replica_id_in_sync_group, tf.int32)
    offset = tf.reduce_sum(sizes[:replica])
    return offset, tf.reduce_sum(sizes)


def global_batch_size(local_batch):
    """Σ over replicas of the local batch sizes (the local size with one replica)."""
    ctx = replica_context()
    local_batch = tf.cast(local_batch, tf.float32)
    if ctx is None:
        return local_batch
    return ctx.all_reduce(tf.distribute.ReduceOp.SUM, local_batch)


def first_replica(value):
    """Replica 0's value on every replica (ids drawn once per global step): an
    all_gather of the replicas' values, sliced to the first one's rows. No gradient
    (used for sampled ids)."""
    ctx = replica_context()
    if ctx is None:
        return value
    value = tf.stop_gradient(value)
    n = tf.shape(value)[0]
    return ctx.all_gather(_placed(value), axis=0)[:n]


def gather_candidates(positives, positive_ids):
    """The global batch's positives: (embeddings [B_global, d], ids [B_global], labels
    [B_local] = offset + range(B_local), B_global)."""
    batch = tf.shape(positive_ids)[0]
    offset, total = batch_offset(batch)
    labels = offset + tf.range(batch, dtype=tf.int32)
    return all_gather(positives), all_gather(positive_ids), labels, total
