"""Triplet (hinge) loss with negative mining, as in Facebook's embedding-based retrieval
(Huang et al., "Embedding-based Retrieval in Facebook Search", KDD 2020) and FaceNet
(Schroff et al., CVPR 2015) for the semi-hard rule.

For one query with scores z (cosine similarity when the towers are compared by cosine;
τ = 1 and no logQ by default, so z = s), positive c⁺ and margin m:

    all:       ℓ = Σ_{c⁻} max(0, m − z(c⁺) + z(c⁻))
    hardest:   ℓ = max(0, m − z(c⁺) + max_{c⁻} z(c⁻))
    semi-hard: ℓ = max(0, m − z(c⁺) + z(c*)),
               c* = argmax { z(c⁻) : z(c⁺) − m < z(c⁻) < z(c⁺) }

FaceNet's semi-hard negatives (§3.2, written for similarities) are those scored below the
positive but inside the margin band, s⁺ − m < s⁻ < s⁺: they violate the margin without
being harder than the positive; of them the hardest is used. When a row has none:
  - if some negative scores below the positive, all of those are outside the band
    (s⁻ ≤ s⁺ − m): the margin holds for them and the loss is 0;
  - if every negative scores at or above the positive, the easiest negative (the lowest
    score) is used — the choice of tf_addons.losses.triplet_semihard_loss ("if no such
    negative exists, uses the largest negative distance instead"), which keeps a
    gradient for the row without pulling it towards the hardest negatives that FaceNet
    found to collapse training early on.
So semi-hard is, in loss value, the hardest negative below the positive if there is one,
else the easiest negative: exactly tf_addons' rule, on similarities.

Masked columns (logit MASK) never contribute and are never mined.
"""

import tensorflow as tf

from twotower.losses._head import Head, check_logits_labels
from twotower.losses.logits import MASK, mask_logits

MINING = ("all", "hardest", "semi-hard")


def _check(margin, mining):
    if mining not in MINING:
        raise ValueError(f"mining must be one of {MINING}, got {mining!r}")
    if not margin > 0:
        raise ValueError(f"margin must be > 0, got {margin!r}")


def triplet_loss(logits, labels, *, margin=0.2, mining="all"):
    """Per-example triplet loss.

    Args:
      logits: [B, C] scores, masked entries at logits.MASK.
      labels: [B] int, column of each row's positive.
      margin: m > 0.
      mining: "all", "hardest" or "semi-hard".

    Returns:
      [B] losses.

    Example: z = [[0.9, 0.8, 0.1]], label 0, m = 0.2: all → max(0, .2−.9+.8) +
    max(0, .2−.9+.1) = 0.1; hardest → 0.1; semi-hard → 0.1 (0.9 − 0.2 < 0.8 < 0.9).
    """
    _check(margin, mining)
    logits = tf.convert_to_tensor(logits)
    labels = tf.cast(tf.convert_to_tensor(labels), tf.int32)
    check_logits_labels(logits, labels)
    is_pos = tf.one_hot(labels, tf.shape(logits)[1], on_value=True, off_value=False,
                        dtype=tf.bool)
    positive = tf.gather(logits, labels, batch_dims=1)[:, tf.newaxis]
    negatives = mask_logits(logits, is_pos)
    valid = negatives > MASK / 2
    if mining == "all":
        hinge = tf.nn.relu(margin - positive + negatives)
        return tf.reduce_sum(tf.where(valid, hinge, 0.0), axis=1)
    hardest = tf.reduce_max(negatives, axis=1, keepdims=True)
    if mining == "hardest":
        chosen = hardest
    else:
        below = tf.logical_and(valid, negatives < positive)
        band = tf.logical_and(below, negatives > positive - margin)
        semi = tf.reduce_max(tf.where(band, negatives, MASK), axis=1, keepdims=True)
        easiest = tf.reduce_min(tf.where(valid, negatives, -MASK), axis=1, keepdims=True)
        # no semi-hard negative: below-positive ones all satisfy the margin (loss 0, via
        # the MASK score), else every negative is at or above the positive: the easiest
        chosen = tf.where(tf.reduce_any(band, axis=1, keepdims=True), semi,
                          tf.where(tf.reduce_any(below, axis=1, keepdims=True),
                                   tf.cast(MASK, negatives.dtype), easiest))
    has_negative = tf.reduce_any(valid, axis=1)
    loss = tf.nn.relu(margin - positive + chosen)[:, 0]
    return tf.where(has_negative, loss, 0.0)


@tf.keras.utils.register_keras_serializable(package="twotower")
class Triplet(Head):
    """Keras head for ``triplet_loss``."""

    uses_logq = False

    def __init__(self, margin=0.2, mining="all", name="triplet", **kwargs):
        _check(margin, mining)
        super().__init__(name=name, **kwargs)
        self.margin = float(margin)
        self.mining = mining

    def per_example(self, logits, labels):
        return triplet_loss(logits, labels, margin=self.margin, mining=self.mining)

    def get_config(self):
        config = super().get_config()
        config.update(margin=self.margin, mining=self.mining)
        return config
