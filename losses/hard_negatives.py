"""Hard-negative selection: keep the positive and the m largest negative logits.

This is TFRS's ``num_hard_negatives`` (tfrs.tasks.Retrieval), written here as a pure
function on the shared (logits, labels) representation so that every head and every
candidate source can use it. After selection the positive is column 0. Selection runs on
the final logits (after τ, logQ and masks), so a masked candidate is never "hard".
"""

import tensorflow as tf

from twotower.losses.logits import MASK, mask_logits


def top_m_negatives(logits, labels, num_hard_negatives):
    """Returns (logits [B, 1 + m], labels zeros [B]) with the m hardest negatives.

    Args:
      logits: [B, C] final logits.
      labels: [B] int column of each row's positive.
      num_hard_negatives: m >= 1; if m >= C − 1 every negative is kept (sorted).
    """
    if num_hard_negatives < 1:
        raise ValueError(f"num_hard_negatives must be >= 1, got {num_hard_negatives!r}")
    num_cols = tf.shape(logits)[1]
    is_label = tf.one_hot(labels, num_cols, on_value=True, off_value=False, dtype=tf.bool)
    positive = tf.gather(logits, labels, batch_dims=1)[:, tf.newaxis]
    negatives = mask_logits(logits, is_label)
    m = tf.minimum(num_hard_negatives, num_cols - 1)
    hardest, _ = tf.math.top_k(negatives, k=m)
    new_logits = tf.concat([positive, hardest], axis=1)
    return new_logits, tf.zeros_like(labels)


__all__ = ["top_m_negatives", "MASK"]
