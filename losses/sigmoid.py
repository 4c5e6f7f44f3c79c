"""Binary (sigmoid) heads: word2vec's negative sampling (NEG) and NCE.

For one query with logits z, positive column c⁺ and the other columns as negatives:

    ℓ = −log σ(z(c⁺)) − Σ_{c ≠ c⁺} log σ(−z(c))
      = softplus(−z(c⁺)) + Σ_{c ≠ c⁺} softplus(z(c))

NEG (Mikolov et al., "Distributed Representations of Words and Phrases and their
Compositionality", NeurIPS 2013) uses z = s. NCE (Gutmann & Hyvärinen, AISTATS 2010; Mnih
& Teh, ICML 2012) uses z = s − log(k·q(c)) on the positive and the noise samples alike —
exactly the logQ term of losses/logits.py with Q(c) = k·q(c), so NCE is this function with
logQ on and NEG is NCE with the correction dropped. Masked columns (logit MASK) add
softplus(MASK) = 0.
"""

import tensorflow as tf

from twotower.losses._head import Head, check_logits_labels


def sigmoid_loss(logits, labels):
    """Per-example NEG/NCE loss.

    Args:
      logits: [B, C] float (z for NCE, s for NEG).
      labels: [B] int, column of each row's positive.

    Returns:
      [B] losses.

    Example: logits [[0, 0]], labels [0] → softplus(0) + softplus(0) = 2·log 2 ≈ 1.3863.
    """
    logits = tf.convert_to_tensor(logits)
    labels = tf.cast(tf.convert_to_tensor(labels), tf.int32)
    check_logits_labels(logits, labels)
    is_pos = tf.one_hot(labels, tf.shape(logits)[1], dtype=logits.dtype)
    # softplus(−z) for the positive, softplus(z) for each negative.
    signed = logits * (1.0 - 2.0 * is_pos)
    return tf.reduce_sum(tf.nn.softplus(signed), axis=1)


@tf.keras.utils.register_keras_serializable(package="twotower")
class NegativeSampling(Head):
    """word2vec's NEG head (no logQ by default)."""

    uses_logq = False

    def __init__(self, name="negative_sampling", **kwargs):
        super().__init__(name=name, **kwargs)

    def per_example(self, logits, labels):
        return sigmoid_loss(logits, labels)


@tf.keras.utils.register_keras_serializable(package="twotower")
class NCE(NegativeSampling):
    """Noise-contrastive estimation: the NEG loss on z = s − log(k·q(c)) (logQ on)."""

    uses_logq = True

    def __init__(self, name="nce", **kwargs):
        super().__init__(name=name, **kwargs)
