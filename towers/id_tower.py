"""IDTower: an embedding lookup, the tower of word2vec and of ID-only two-tower models.

u = W[id], W ∈ R^{V × d}. word2vec's input vectors (syn0) are the query IDTower's W and
its output vectors (syn1neg) the item IDTower's W (Mikolov et al. 2013).
"""

import numpy as np
import tensorflow as tf

from twotower.data.ids import check_ids_in_range


class EmbeddingTable(tf.keras.layers.Layer):
    """The weight W ∈ R^{V × d} shared by IDTower and PooledIDTower: constructor
    arguments, ``build`` and ``get_config``; subclasses write ``call``."""

    def __init__(self, vocab_size, dim, embeddings_initializer="uniform", validate_ids=True,
                 **kwargs):
        super().__init__(**kwargs)
        check_positive_int(vocab_size, "vocab_size")
        check_positive_int(dim, "dim")
        self.vocab_size = int(vocab_size)
        self.dim = int(dim)
        self.embeddings_initializer = tf.keras.initializers.get(embeddings_initializer)
        self.validate_ids = bool(validate_ids)

    def build(self, input_shape):
        self.embeddings = self.add_weight(
            name="embeddings", shape=[self.vocab_size, self.dim],
            initializer=self.embeddings_initializer, trainable=True)
        super().build(input_shape)

    def _id_rows(self, ids):
        """[B, L] ids (0 = padding) of a dense or ragged input, range-checked when
        ``validate_ids``; a clear error for another rank."""
        if isinstance(ids, tf.RaggedTensor):
            ids = ids.to_tensor(default_value=0)
        ids = tf.convert_to_tensor(ids)
        what = f"{type(self).__name__} {self.name!r}"
        if ids.shape.rank != 2:
            raise ValueError(f"{what}: ids must have rank 2 [batch, length] (0 = padding), "
                             f"got shape {ids.shape}")
        if self.validate_ids:
            ids = check_ids_in_range(ids, self.vocab_size, what)
        return ids

    def get_config(self):
        config = super().get_config()
        config.update(vocab_size=self.vocab_size, dim=self.dim,
                      embeddings_initializer=tf.keras.initializers.serialize(
                          self.embeddings_initializer),
                      validate_ids=self.validate_ids)
        return config


@tf.keras.utils.register_keras_serializable(package="twotower")
class IDTower(EmbeddingTable):
    """Embedding lookup tower.

    Args:
      vocab_size: V, ids are in [0, V).
      dim: d.
      embeddings_initializer: Keras initializer for W (word2vec: uniform(−0.5/d, 0.5/d)
        for the input vectors, zeros for the output vectors).
      validate_ids: check ids are in range at every call (a clear error instead of a
        silent zero row on CPU / garbage on GPU); off saves a little time in hot loops.
    """

    def call(self, ids):
        if self.validate_ids:
            ids = check_ids_in_range(ids, self.vocab_size, f"IDTower {self.name!r}")
        return tf.gather(self.embeddings, ids)


def check_positive_int(value, name):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be an int >= 1, got {value!r}")
