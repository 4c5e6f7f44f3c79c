"""Streaming item-frequency estimation (Yi et al., "Sampling-Bias-Corrected Neural Modeling
for Large Corpus Item Recommendations", RecSys 2019, Algorithm 2).

Two arrays indexed by a hash h(y) of the item id: A[h] holds the last global step at
which y was seen and B[h] an estimate of δ, the number of steps between two sightings.
At global step t, for every distinct y in the batch:

    B[h(y)] ← (1 − α) · B[h(y)] + α · (t − A[h(y)])
    A[h(y)] ← t

and the estimate of y's per-batch sampling probability is p̂(y) = 1 / B[h(y)].

Conventions kept here: an id seen several times in one batch counts once (δ is the gap
between batches that contain y, so p̂ estimates P(y in batch), which is ≈ B·p(y) when that
is small). At the first sighting of a bucket, B is set to t (the gap since the stream
began: the only evidence so far) rather than mixed with an arbitrary initial value.
h(y) = y mod num_buckets: collision-free for ids below num_buckets.
"""

import tensorflow as tf


@tf.keras.utils.register_keras_serializable(package="twotower")
class StreamingFrequencyEstimator(tf.keras.layers.Layer):
    """TF state updated inside train_step; ``call(ids)`` returns p̂(ids) = 1/δ̂.

    Args:
      num_buckets: size H of the hash arrays A and B.
      alpha: learning rate α of the moving average of δ (paper: 0.01 .. 0.1).
      min_probability: p̂ for ids never seen (and the floor of any estimate).
    """

    def __init__(self, num_buckets=1 << 20, alpha=0.01, min_probability=1e-6, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(num_buckets, int) or num_buckets < 1:
            raise ValueError(f"num_buckets must be an int >= 1, got {num_buckets!r}")
        if not 0.0 < alpha <= 1.0:
            raise ValueError(f"alpha must be in (0, 1], got {alpha!r}")
        if not 0.0 < min_probability <= 1.0:
            raise ValueError(f"min_probability must be in (0, 1], got {min_probability!r}")
        self.num_buckets = num_buckets
        self.alpha = float(alpha)
        self.min_probability = float(min_probability)
        self.step = self.add_weight(name="step", shape=[], dtype=tf.int64,
                                    initializer="zeros", trainable=False)
        self.last_seen = self.add_weight(name="last_seen", shape=[num_buckets], dtype=tf.int64,
                                         initializer="zeros", trainable=False)
        self.delta = self.add_weight(name="delta", shape=[num_buckets], dtype=tf.float32,
                                     initializer="zeros", trainable=False)

    def _buckets(self, ids):
        return tf.math.floormod(tf.cast(ids, tf.int64), self.num_buckets)

    def update(self, ids):
        """Records one batch of item ids (one global step). Returns the new step."""
        t = self.step.assign_add(1)
        buckets, _ = tf.unique(tf.reshape(self._buckets(ids), [-1]))
        a = tf.gather(self.last_seen, buckets)
        b = tf.gather(self.delta, buckets)
        gap = tf.cast(t - a, tf.float32)
        new_b = tf.where(a > 0, (1.0 - self.alpha) * b + self.alpha * gap, gap)
        self.delta.scatter_update(tf.IndexedSlices(new_b, buckets))
        self.last_seen.scatter_update(
            tf.IndexedSlices(tf.fill(tf.shape(buckets), t), buckets))
        return t

    def call(self, ids):
        delta = tf.gather(self.delta, self._buckets(ids))
        p = tf.math.divide_no_nan(1.0, delta)
        return tf.clip_by_value(tf.where(delta > 0, p, self.min_probability),
                                self.min_probability, 1.0)

    def get_config(self):
        config = super().get_config()
        config.update(num_buckets=self.num_buckets, alpha=self.alpha,
                      min_probability=self.min_probability)
        return config
