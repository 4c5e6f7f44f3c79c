"""PooledIDTower: the mean (or sum) of the embeddings of a bag of ids.

u = (1/|S|) Σ_{i ∈ S} W[i]   (pooling="mean"),   u = Σ_{i ∈ S} W[i]   (pooling="sum")

S is the non-padding ids of a row: word2vec's CBOW context (Mikolov et al. 2013), or a
user's watch history (Covington et al., "Deep Neural Networks for YouTube
Recommendations", 2016). Id 0 is padding and is never counted; ragged rows work too. An
empty row gives the zero vector.
"""

import tensorflow as tf

from twotower.towers.id_tower import EmbeddingTable

POOLINGS = ("mean", "sum")


@tf.keras.utils.register_keras_serializable(package="twotower")
class PooledIDTower(EmbeddingTable):
    """Args: vocab_size (ids in [0, V), 0 = padding), dim, pooling "mean" | "sum",
    embeddings_initializer, validate_ids (as IDTower)."""

    def __init__(self, vocab_size, dim, pooling="mean", embeddings_initializer="uniform",
                 validate_ids=True, **kwargs):
        super().__init__(vocab_size, dim, embeddings_initializer, validate_ids, **kwargs)
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        self.pooling = pooling

    def call(self, ids):
        ids = self._id_rows(ids)
        mask = tf.cast(tf.not_equal(ids, 0), self.compute_dtype)[..., tf.newaxis]
        summed = tf.reduce_sum(tf.gather(self.embeddings, ids) * mask, axis=1)
        if self.pooling == "sum":
            return summed
        return summed / tf.maximum(tf.reduce_sum(mask, axis=1), 1.0)

    def get_config(self):
        config = super().get_config()
        config["pooling"] = self.pooling
        return config
