"""The shared shape of a head: a tf.keras Loss on (labels, logits).

y_true is labels [B] (int column of each row's positive) and y_pred is logits [B, C]
(already z = s/τ − log Q with masks applied, see losses/logits.py). ``loss_fn`` is the
pure tensor function returning the per-example loss [B]; Keras reduces it.
"""

import tensorflow as tf


class Head(tf.keras.losses.Loss):
    """Base for heads. Subclasses set ``uses_logq`` (the default of RetrievalLoss(logq=None))
    and implement ``per_example(logits, labels)``."""

    uses_logq = False

    def call(self, y_true, y_pred):
        labels = tf.cast(tf.reshape(y_true, [-1]), tf.int32)
        return self.per_example(y_pred, labels)

    def per_example(self, logits, labels):  # pragma: no cover - abstract
        raise NotImplementedError


def check_logits_labels(logits, labels):
    """Raises ValueError naming the argument when ranks disagree with [B, C] and [B]."""
    if logits.shape.rank is not None and logits.shape.rank != 2:
        raise ValueError(f"logits must have rank 2 [batch, candidates], got shape {logits.shape}")
    if labels.shape.rank is not None and labels.shape.rank != 1:
        raise ValueError(f"labels must have rank 1 [batch], got shape {labels.shape}")
    if (logits.shape[0] is not None and labels.shape[0] is not None
            and logits.shape[0] != labels.shape[0]):
        raise ValueError(f"logits and labels disagree on the batch size: logits shape "
                         f"{logits.shape}, labels shape {labels.shape}")
