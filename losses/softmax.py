"""Softmax cross-entropy over a candidate set: full, sampled, in-batch, mixed.

For one query with logits z over candidates C (z = s/τ − log Q, losses/logits.py) and the
positive c⁺:

    ℓ = −z(c⁺) + log Σ_{c ∈ C} exp z(c)

With C = all items and no logQ this is the full softmax. With C a sample and logQ it is
sampled softmax (Jean et al., "On Using Very Large Target Vocabulary for Neural Machine
Translation", 2015; Bengio & Senécal 2008); with C the batch's positives it is in-batch
softmax with the sampling-bias correction of Yi et al., RecSys 2019; with τ it is DSSM's
smoothed softmax (Huang et al., CIKM 2013, γ = 1/τ); with C = batch ∪ uniform index
negatives it is mixed negative sampling (Yang et al., WWW 2020).
"""

import tensorflow as tf

from twotower.losses._head import Head, check_logits_labels


def softmax_loss(logits, labels):
    """Per-example softmax cross-entropy.

    Args:
      logits: [B, C] float, masked entries at logits.MASK.
      labels: [B] int, column of each row's positive.

    Returns:
      [B] losses.

    Example: logits [[2, 0, 0]], labels [0] → −2 + log(e² + 2) ≈ 0.2395.
    """
    logits = tf.convert_to_tensor(logits)
    labels = tf.cast(tf.convert_to_tensor(labels), tf.int32)
    check_logits_labels(logits, labels)
    return tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)


@tf.keras.utils.register_keras_serializable(package="twotower")
class Softmax(Head):
    """Keras head for ``softmax_loss``; applies logQ by default when the candidates give Q."""

    uses_logq = True

    def __init__(self, name="softmax", **kwargs):
        super().__init__(name=name, **kwargs)

    def per_example(self, logits, labels):
        return softmax_loss(logits, labels)
