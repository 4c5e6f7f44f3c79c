"""Hierarchical softmax on a Huffman tree of item counts (Morin & Bengio, AISTATS 2005;
Mikolov et al. 2013, word2vec.c's HS).

For a query embedding u and the positive item w with path points p_j and codes b_j
(data/huffman.py), with inner-node vectors θ:

    ℓ = −Σ_{j < L_w} log σ((1 − 2·b_j) · <u, θ_{p_j}>)
      =  Σ_{j < L_w} softplus(−(1 − 2·b_j) · <u, θ_{p_j}>)

The inner-node vectors replace the item tower (as syn1 replaces syn1neg in word2vec.c);
item-to-item similarity then uses the query tower's vectors, as word2vec uses syn0.
"""

import numpy as np
import tensorflow as tf

from twotower.data.huffman import HuffmanTree
from twotower.data.ids import check_ids_in_range


def hierarchical_softmax_loss(query, node_vectors, points, codes, lengths):
    """Per-example HS loss.

    Args:
      query: [B, d] query embeddings u.
      node_vectors: [N − 1, d] inner-node vectors θ.
      points: [B, L] inner-node ids along each positive's path (padded).
      codes: [B, L] turns b_j ∈ {0, 1} (padded).
      lengths: [B] path lengths.

    Returns:
      [B] losses.
    """
    theta = tf.gather(node_vectors, points)                      # [B, L, d]
    x = tf.einsum("bd,bld->bl", query, theta)
    sign = 1.0 - 2.0 * tf.cast(codes, x.dtype)
    valid = tf.sequence_mask(lengths, tf.shape(points)[1], dtype=x.dtype)
    return tf.reduce_sum(tf.nn.softplus(-sign * x) * valid, axis=1)


def leaf_log_probabilities(query, node_vectors, tree):
    """log P(w | u) for every leaf w: [B, N] (rows sum to 1 in probability)."""
    points = tf.constant(tree.points)
    codes = tf.constant(tree.codes)
    theta = tf.gather(node_vectors, points)                      # [N, L, d]
    x = tf.einsum("bd,nld->bnl", query, theta)
    sign = 1.0 - 2.0 * codes
    valid = tf.sequence_mask(tree.lengths, tree.points.shape[1], dtype=x.dtype)
    return -tf.reduce_sum(tf.nn.softplus(-sign[tf.newaxis] * x) * valid[tf.newaxis], axis=2)


@tf.keras.utils.register_keras_serializable(package="twotower")
class HierarchicalSoftmax(tf.keras.layers.Layer):
    """Owns the Huffman tree and the inner-node vectors θ; ``call(query, item_ids)``
    returns the per-example loss.

    Args:
      counts: [N] item counts that shape the tree.
      dim: embedding dimension d.
      initializer: for θ (word2vec.c starts syn1 at zero).
      validate_ids: check item ids are leaves of the tree at every call (as IDTower's;
        off in word2vec's compiled hot loop, whose ids come from its own vocabulary).
    """

    def __init__(self, counts, dim, initializer="zeros", validate_ids=True, **kwargs):
        super().__init__(**kwargs)
        counts = np.asarray(counts, dtype=np.float64)
        if not isinstance(dim, (int, np.integer)) or dim < 1:
            raise ValueError(f"dim must be an int >= 1, got {dim!r}")
        self.counts = counts
        self.dim = int(dim)
        self.initializer = tf.keras.initializers.get(initializer)
        self.validate_ids = bool(validate_ids)
        self.tree = HuffmanTree(counts)
        with tf.init_scope():
            self._points = tf.constant(self.tree.points)
            self._codes = tf.constant(self.tree.codes)
            self._lengths = tf.constant(self.tree.lengths)

    def build(self, input_shape):
        self.node_vectors = self.add_weight(
            name="node_vectors", shape=[self.tree.num_inner, self.dim],
            initializer=self.initializer, trainable=True)
        super().build(input_shape)

    def call(self, query, item_ids):
        if self.validate_ids:
            item_ids = check_ids_in_range(item_ids, self.tree.num_leaves,
                                          f"HierarchicalSoftmax {self.name!r}")
        ids = tf.cast(item_ids, tf.int32)
        return hierarchical_softmax_loss(
            query, self.node_vectors, tf.gather(self._points, ids),
            tf.gather(self._codes, ids), tf.gather(self._lengths, ids))

    def log_probabilities(self, query):
        return leaf_log_probabilities(query, self.node_vectors, self.tree)

    def get_config(self):
        config = super().get_config()
        config.update(counts=self.counts.tolist(), dim=self.dim,
                      initializer=tf.keras.initializers.serialize(self.initializer),
                      validate_ids=self.validate_ids)
        return config
