"""Streaming item-frequency estimation (Yi et al., "Sampling-Bias-Corrected Neural Modeling
for Large Corpus Item Recommendations", RecSys 2019, Algorithm 2).

Two arrays indexed by a hash h(y) of the item id: A[h] holds the last time t at which y
was seen and B[h] an estimate of δ, the time between two sightings (the array B, not to
be confused with the batch size B below). Algorithm 2 updates once per occurrence of y:

    B[h(y)] ← (1 − α) · B[h(y)] + α · (t − A[h(y)])
    A[h(y)] ← t

Per occurrence, the clock t here counts item occurrences, not batches: the stream is
read as one long sequence of ids (a batch of B ids advances t by B, its j-th id sits at
t₀ + j), so δ estimates the mean gap, in occurrences, between two occurrences of y. For a
stream in which each position holds y with probability p(y) the gap is geometric with mean
1/p(y), hence

    p̂(y) = 1 / B[h(y)]            (the probability of y at one position of the stream)
    Q(y) = B · p̂(y)               (its expected count in a batch of B: what logQ needs)

An id that appears n times in one batch is updated n times, in the order of its positions
(the first gap is measured from A, the next ones between its positions in the batch);
the n sequential moving-average steps are applied in closed form,
B ← (1−α)ⁿ·B + Σ_k α(1−α)^(n−k)·gap_k. (Counting a batch once per id instead, as a
batch clock with de-duplication does, estimates P(y in batch) = 1 − (1 − p)^B, which
saturates at 1 for head items while B·p grows past it.)

At the first sighting of a bucket, B is set to its first gap (the position since the
stream began: the only evidence so far) rather than mixed with an arbitrary initial value.
An id never seen gets p̂ = 1 / (t + 1): at most one occurrence in the t + 1 positions so
far, i.e. a count of one, so it never looks rarer than an id seen once (see ``call``).
h(y) = y mod num_buckets: collision-free for ids below num_buckets.

Under a tf.distribute strategy (created in ``strategy.scope()``), the arrays are mirrored
variables, one copy per replica, updated in replica context without aggregation. InBatch
and MixedNegatives hand ``update`` the ids of the whole global batch (gathered over the
replicas), so every copy records the same stream once per step, and the copies stay equal:
the state is the one a single device reaches on the same global batches.
"""

import tensorflow as tf


@tf.keras.utils.register_keras_serializable(package="twotower")
class StreamingFrequencyEstimator(tf.keras.layers.Layer):
    """TF state updated inside train_step; ``call(ids)`` returns p̂(ids) = 1/δ̂, the
    per-occurrence probability, and ``expected_count(ids, batch_size)`` returns
    Q = batch_size · p̂ (module docstring).

    Args:
      num_buckets: size H of the hash arrays A and B.
      alpha: learning rate α of the moving average of δ (paper: 0.01 .. 0.1). Per
        occurrence, a head item is updated many times a batch: its estimate averages
        over the last ~1/α occurrences.
      min_probability: None (default), or an extra absolute floor on p̂. An unseen id
        already gets p̂ = 1/(t + 1), a count of one in the stream so far.
    """

    def __init__(self, num_buckets=1 << 20, alpha=0.01, min_probability=None, **kwargs):
        super().__init__(**kwargs)
        if isinstance(num_buckets, bool) or not isinstance(num_buckets, int) or num_buckets < 1:
            raise ValueError(f"num_buckets must be an int >= 1, got {num_buckets!r}")
        if not 0.0 < alpha <= 1.0:
            raise ValueError(f"alpha must be in (0, 1], got {alpha!r}")
        if min_probability is not None and not 0.0 < min_probability <= 1.0:
            raise ValueError(f"min_probability must be None or in (0, 1], got "
                             f"{min_probability!r}")
        self.num_buckets = num_buckets
        self.alpha = float(alpha)
        self.min_probability = None if min_probability is None else float(min_probability)
        # step: batches recorded (the training step); occurrences: the clock t, item
        # occurrences recorded so far
        self.step = self.add_weight(name="step", shape=[], dtype=tf.int64,
                                    initializer="zeros", trainable=False)
        self.occurrences = self.add_weight(name="occurrences", shape=[], dtype=tf.int64,
                                           initializer="zeros", trainable=False)
        self.last_seen = self.add_weight(name="last_seen", shape=[num_buckets], dtype=tf.int64,
                                         initializer="zeros", trainable=False)
        self.delta = self.add_weight(name="delta", shape=[num_buckets], dtype=tf.float32,
                                     initializer="zeros", trainable=False)

    def _buckets(self, ids):
        return tf.math.floormod(tf.cast(ids, tf.int64), self.num_buckets)

    def update(self, ids):
        """Records one batch of item ids, once per occurrence (module docstring).
        Returns the new step (batches recorded so far); ``occurrences`` is the clock t."""
        buckets = tf.reshape(self._buckets(ids), [-1])
        n = tf.shape(buckets, out_type=tf.int64)[0]
        t0 = self.occurrences.assign_add(n) - n
        positions = t0 + 1 + tf.range(n, dtype=tf.int64)     # global position of each id
        # Occurrences grouped by bucket, in position order within a bucket (stable sort).
        # Static shapes only (no tf.unique), so the update compiles with XLA.
        order = tf.argsort(buckets, stable=True)
        b_sorted = tf.gather(buckets, order)
        pos_sorted = tf.gather(positions, order)
        size = tf.shape(b_sorted)[0]
        index = tf.range(size)
        first = tf.logical_or(tf.equal(index, 0),
                              tf.not_equal(b_sorted, tf.roll(b_sorted, shift=1, axis=0)))
        seg = tf.cumsum(tf.cast(first, tf.int32)) - 1         # bucket's segment, 0, 1, ...
        start = tf.gather(tf.math.unsorted_segment_min(index, seg, size), seg)
        count = tf.gather(tf.math.unsorted_segment_sum(tf.ones_like(seg), seg, size), seg)
        rank = index - start                                  # 0 .. n_y − 1 within a bucket
        last = tf.gather(self.last_seen, b_sorted)            # A before this batch
        seen = last > 0
        prev = tf.where(first, last, tf.roll(pos_sorted, shift=1, axis=0))
        gaps = tf.cast(pos_sorted - prev, tf.float32)
        a = tf.constant(self.alpha, tf.float32)
        # n sequential EMA steps in closed form,
        # B ← (1−α)ⁿ·B + Σ_k α(1−α)^(n−k)·gap_k,
        # a bucket's first-ever gap replacing B instead (weight (1−α)^(n−1), B·0).
        # Scatter-multiply and scatter-add combine duplicate buckets exactly.
        decay = tf.pow(1.0 - a, tf.cast(count - 1 - rank, tf.float32))
        weights = tf.where(tf.logical_and(first, tf.logical_not(seen)), decay, a * decay)
        self.delta.scatter_mul(tf.IndexedSlices(tf.where(seen, 1.0 - a, 0.0), b_sorted))
        self.delta.scatter_add(tf.IndexedSlices(weights * gaps, b_sorted))
        self.last_seen.scatter_max(tf.IndexedSlices(pos_sorted, b_sorted))
        return self.step.assign_add(1)

    def call(self, ids):
        """p̂(ids): 1/δ̂ for seen ids; 1/(t + 1) for ids never seen (a count of one: an
        unseen id is not taken for rarer than one seen once, so its −log Q cannot
        outgrow the rarest real item's and dominate a softmax)."""
        delta = tf.gather(self.delta, self._buckets(ids))
        unseen = 1.0 / (tf.cast(self.occurrences, tf.float32) + 1.0)
        p = tf.where(delta > 0, tf.math.divide_no_nan(1.0, delta), unseen)
        floor = 0.0 if self.min_probability is None else self.min_probability
        return tf.clip_by_value(p, floor, 1.0)

    def expected_count(self, ids, batch_size):
        """Q(ids) = batch_size · p̂(ids), the expected count of each id in a batch."""
        return tf.cast(batch_size, tf.float32) * self(ids)

    def get_config(self):
        config = super().get_config()
        config.update(num_buckets=self.num_buckets, alpha=self.alpha,
                      min_probability=self.min_probability)
        return config
