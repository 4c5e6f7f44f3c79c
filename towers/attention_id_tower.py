"""AttentionPooledIDTower: a sequence of ids pooled by attention, with their positions.

A user's history s_0, s_1, …, s_{L−1} (s_0 the most recent item, 0 = padding) is encoded
as one Transformer block whose single query is the most recent item, as in the
self-attentive sequential recommender (Kang & McAuley, "Self-Attentive Sequential
Recommendation", ICDM 2018: the output at the last position predicts the next item) with
the attention of Vaswani et al. ("Attention Is All You Need", NeurIPS 2017):

    e_j = W[s_j] + P[j]                          item embedding + learned position j
    m_j = [s_j ≠ 0]                              padding never attended to
    a   = MultiHead(query=e_0, keys=values=e_{0..L−1}, mask=m)
    h   = LayerNorm(e_0 + a)
    u   = LayerNorm(h + W_2 ReLU(W_1 h)) · [Σ_j m_j > 0]      an empty history gives 0

Unlike the mean of PooledIDTower, the output depends on the order: which item was
watched last, and how long ago the others were. Only the most recent position is
computed (one query row), so the cost is O(L·d) per head and row, not O(L²·d).

The attention is Keras's MultiHeadAttention; the block around it (residuals, layer norms,
the position table and the empty-history rule) is written here because Keras has no
layer that pools a padded id sequence into one vector this way.
"""

import tensorflow as tf

from twotower.towers.id_tower import EmbeddingTable, check_positive_int


@tf.keras.utils.register_keras_serializable(package="twotower")
class AttentionPooledIDTower(EmbeddingTable):
    """Args: vocab_size (ids in [0, V), 0 = padding), dim, max_length (the longest
    sequence; column j of the input is position j, 0 = the most recent), num_heads,
    embeddings_initializer, validate_ids (as IDTower).

    Call with int ids [B, L] (ragged rows are padded with 0; of a row longer than
    max_length only its max_length most recent items are read). Returns [B, dim].
    """

    def __init__(self, vocab_size, dim, max_length, num_heads=2,
                 embeddings_initializer="uniform", validate_ids=True, **kwargs):
        super().__init__(vocab_size, dim, embeddings_initializer, validate_ids, **kwargs)
        check_positive_int(max_length, "max_length")
        check_positive_int(num_heads, "num_heads")
        self.max_length = int(max_length)
        self.num_heads = int(num_heads)
        key_dim = max(1, self.dim // self.num_heads)
        self._attention = tf.keras.layers.MultiHeadAttention(
            num_heads=self.num_heads, key_dim=key_dim, name="attention")
        self._norm_attention = tf.keras.layers.LayerNormalization(name="norm_attention")
        self._ffn_hidden = tf.keras.layers.Dense(self.dim, activation="relu", name="ffn_hidden")
        self._ffn_out = tf.keras.layers.Dense(self.dim, name="ffn_out")
        self._norm_ffn = tf.keras.layers.LayerNormalization(name="norm_ffn")

    def build(self, input_shape):
        self.positions = self.add_weight(
            name="positions", shape=[self.max_length, self.dim],
            initializer=tf.keras.initializers.RandomUniform(-0.05, 0.05), trainable=True)
        super().build(input_shape)

    def call(self, ids, training=None):
        ids = self._id_rows(ids)
        # positions beyond max_length were never trained: a longer sequence keeps its
        # max_length most recent items (column 0 is the most recent)
        ids = ids[:, :self.max_length]
        length = tf.shape(ids)[1]
        e = tf.gather(self.embeddings, ids) + self.positions[tf.newaxis, :length]   # [B, L, d]
        present = tf.not_equal(ids, 0)                                              # [B, L]
        query = e[:, :1]                                                            # [B, 1, d]
        a = self._attention(query, e, e, attention_mask=present[:, tf.newaxis, :],
                            training=training)
        h = self._norm_attention(query + a)
        u = self._norm_ffn(h + self._ffn_out(self._ffn_hidden(h)))[:, 0]            # [B, d]
        any_present = tf.reduce_any(present, axis=1, keepdims=True)
        return u * tf.cast(any_present, u.dtype)

    def get_config(self):
        config = super().get_config()
        config.update(max_length=self.max_length, num_heads=self.num_heads)
        return config
