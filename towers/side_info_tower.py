"""SideInfoTower: EGES's item embedding from its id and its side information.

Wang et al., "Billion-scale Commodity Embedding for E-commerce Recommendation in Alibaba"
(KDD 2018), §2.3: item v has n + 1 embeddings — its id's W⁰_v and one per side-information
field, W^j[s^j_v] (a multi-valued field such as genres is the mean of its values' rows) —
combined with learned per-item attention weights a_v ∈ R^{n+1}:

    H_v = Σ_j exp(a_v^j) · W^j_v  /  Σ_j exp(a_v^j)

Two cases the paper leaves open are handled by masking a slot out of the softmax:
a field the item has no value for (0 = missing), and the id slot of an item never seen in
training (``known_items``), whose id row and attention row are untrained — so a cold-start
item's embedding comes from its side information alone, which is the point of EGES.
"""

import numpy as np
import tensorflow as tf

from twotower.data.ids import check_ids_in_range
from twotower.towers.id_tower import check_positive_int


def _as_field(name, values, num_items):
    arr = np.asarray(values)
    if arr.ndim == 1:
        arr = arr[:, np.newaxis]
    if arr.ndim != 2 or arr.shape[0] != num_items:
        raise ValueError(f"side_info[{name!r}] must have one row per item ({num_items}), as "
                         f"[num_items] or [num_items, max_values]; got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.integer) or arr.min() < 0:
        raise ValueError(f"side_info[{name!r}] must hold integer codes >= 0 (0 = missing)")
    return arr.astype(np.int64)


@tf.keras.utils.register_keras_serializable(package="twotower")
class SideInfoTower(tf.keras.layers.Layer):
    """Args:
      num_items: N (item ids in [0, N)).
      dim: d.
      side_info: {field name: int codes [N] or [N, max_values]}, 0 = missing / padding.
      known_items: bool [N], items whose id embedding is trained (default: all).
      use_attention: EGES (True) or GES, the plain mean of the available slots (False).
    """

    def __init__(self, num_items, dim, side_info, known_items=None, use_attention=True,
                 **kwargs):
        super().__init__(**kwargs)
        check_positive_int(num_items, "num_items")
        check_positive_int(dim, "dim")
        if not isinstance(side_info, dict) or not side_info:
            raise ValueError(f"side_info must be a non-empty dict of fields, got {side_info!r}")
        self.num_items = int(num_items)
        self.dim = int(dim)
        self.fields = sorted(side_info)
        self.side_info = {k: _as_field(k, side_info[k], self.num_items) for k in self.fields}
        self.vocab_sizes = {k: int(v.max()) + 1 for k, v in self.side_info.items()}
        if known_items is None:
            known_items = np.ones(self.num_items, dtype=bool)
        known_items = np.asarray(known_items, dtype=bool)
        if known_items.shape != (self.num_items,):
            raise ValueError(f"known_items must have shape ({self.num_items},), got "
                             f"{known_items.shape}")
        self.known_items = known_items
        self.use_attention = bool(use_attention)
        with tf.init_scope():
            self._codes = {k: tf.constant(v) for k, v in self.side_info.items()}
            self._known = tf.constant(known_items)

    def build(self, input_shape):
        # word2vec's input-vector initialisation, one initializer per table
        init = lambda: tf.keras.initializers.RandomUniform(-0.5 / self.dim, 0.5 / self.dim)
        self.id_embeddings = self.add_weight(name="id_embeddings",
                                             shape=[self.num_items, self.dim], initializer=init())
        self.field_embeddings = {
            k: self.add_weight(name=f"{k}_embeddings", shape=[self.vocab_sizes[k], self.dim],
                               initializer=init()) for k in self.fields}
        self.attention = self.add_weight(name="attention",
                                         shape=[self.num_items, 1 + len(self.fields)],
                                         initializer="zeros",
                                         trainable=self.use_attention)
        super().build(input_shape)

    def slot_embeddings(self, ids):
        """([B, n+1, d] embeddings of the id and each field, [B, n+1] availability)."""
        ids = tf.reshape(check_ids_in_range(ids, self.num_items, f"SideInfoTower {self.name!r}"),
                         [-1])
        slots = [tf.gather(self.id_embeddings, ids)]
        available = [tf.gather(self._known, ids)]
        for k in self.fields:
            codes = tf.gather(self._codes[k], ids)                 # [B, m]
            mask = tf.cast(codes > 0, self.compute_dtype)[..., tf.newaxis]
            count = tf.reduce_sum(mask, axis=1)
            rows = tf.gather(self.field_embeddings[k], codes) * mask
            slots.append(tf.reduce_sum(rows, axis=1) / tf.maximum(count, 1.0))
            available.append(count[:, 0] > 0)
        return tf.stack(slots, axis=1), tf.stack(available, axis=1)

    def call(self, ids):
        shape = tf.shape(ids)
        slots, available = self.slot_embeddings(ids)
        flat_ids = tf.reshape(ids, [-1])
        logits = tf.gather(self.attention, flat_ids)
        logits = tf.where(available, logits, tf.cast(-1e9, logits.dtype))
        weights = tf.nn.softmax(logits, axis=1)
        weights = tf.where(available, weights, 0.0)  # an item with nothing gets zeros
        out = tf.reduce_sum(weights[..., tf.newaxis] * slots, axis=1)
        return tf.reshape(out, tf.concat([shape, [self.dim]], axis=0))

    def get_config(self):
        config = super().get_config()
        config.update(num_items=self.num_items, dim=self.dim,
                      side_info={k: v.tolist() for k, v in self.side_info.items()},
                      known_items=self.known_items.tolist(), use_attention=self.use_attention)
        return config
