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

``corrected_logq_softmax_loss`` is the corrected logQ of Khrylchenko et al. (RecSys 2025):
the positive is not treated as a draw of the sampler (see its docstring).
"""

import tensorflow as tf

from twotower.losses._head import Head, check_logits_labels
from twotower.losses.logits import MASK


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


def corrected_logq_softmax_loss(logits, labels):
    """Per-example softmax loss with the corrected logQ (Khrylchenko, Baikalov, Makeev,
    Matveev & Liamaev, "Correcting the LogQ Correction: Revisiting Sampled Softmax for
    Large-Scale Retrieval", RecSys 2025, arXiv:2507.09331).

    The logits are those of ``logits.corrected_log_q``: the positive's is uncorrected and
    the kept negatives N carry −log Q̃ (Q̃ = n·q(c)/(1 − q(c⁺)), the expected count among
    the n negatives once the positive is excluded); masked columns are at MASK.

        ℓ̃  = log Σ_{c ∈ N} exp z(c) − z(c⁺)        the positive is NOT in the denominator
        P̂  = exp z(c⁺) / (exp z(c⁺) + Σ_{c ∈ N} exp z(c)) = σ(−ℓ̃)
        ℓ  = sg(1 − P̂) · ℓ̃ = sg(σ(ℓ̃)) · ℓ̃             (sg: stop-gradient)

    P̂ estimates the full-softmax probability of the positive, Σ_N exp z(c) being the
    importance-sampling estimate of Σ_{c ≠ c⁺} exp s(c)/τ over the catalogue, so the
    weight 1 − P̂ is the model's probability of misclassifying the example.

    Source: the authors' reference code (github.com/NonameUntitled/logq,
    train_in_batch_logq_new.py and train_mns_log_new.py) and the paper's abstract; the
    paper's full text could not be read here, so the derivation below is our own. It
    agrees with that code. The full softmax gradient factors as

        ∇ℓ_full = −∇s⁺ + Σ_c P(c) ∇s(c) = (1 − P(c⁺)) · [−∇s⁺ + Σ_{c ≠ c⁺} P(c | c ≠ c⁺) ∇s(c)]

    (s in units of τ). The positive is always in the candidate set, with probability 1,
    so only the expectation over c ≠ c⁺ is sampled: self-normalised importance sampling
    with the sampler conditioned on c ≠ c⁺ as proposal estimates that sum by
    Σ_N softmax_N(z)(c) ∇s(c), so the bracket is estimated by ∇ℓ̃; and 1 − P(c⁺), a
    factor outside the gradient, by sg(1 − P̂). The standard
    logQ (Yi et al., RecSys 2019) instead puts the positive into the sampled sum with its
    own −log Q(c⁺), as if it had been drawn.

    Properties (tests/losses/test_corrected_logq.py):
      - the gradient w.r.t. the logits equals that of ``softmax_loss`` on the same logits
        (d softplus(ℓ̃) = σ(ℓ̃) dℓ̃): the correction lives in the logits, the weight is
        what a softmax's own denominator does to its gradient. The value differs:
        (1 − P̂)·ℓ̃ is negative once P̂ > 1/2 (never below −0.279).
      - the authors' code writes ℓ̃ with the per-draw Q' = q/(1 − q(c⁺)) instead of the
        count n·Q', so its value is this one plus sg(1 − P̂)·log n: the same gradient.
      - P̂ → 1 gives weight 0; no kept negative (the positive alone) gives P̂ = 1, ℓ = 0.
      - under a uniform sampler Q̃ is one constant per row, and the gradient is the
        plain sampled softmax's times (1 − P̂)/(1 − P̃), P̃ the positive's probability
        within the sample; with every other item drawn exactly once, P̂ = P̃ and it is the
        full softmax's gradient.

    Args:
      logits: [B, C] float, masked entries at logits.MASK.
      labels: [B] int, column of each row's positive.

    Returns:
      [B] losses.

    Example: logits [[2, 0, 0]], labels [0] → ℓ̃ = log 2 − 2 ≈ −1.3069,
    1 − P̂ = 2/(e² + 2) ≈ 0.2130, ℓ ≈ −0.2784.
    """
    logits = tf.convert_to_tensor(logits)
    labels = tf.cast(tf.convert_to_tensor(labels), tf.int32)
    check_logits_labels(logits, labels)
    is_label = tf.one_hot(labels, tf.shape(logits)[1], dtype=logits.dtype)
    positive = tf.gather(logits, labels[:, tf.newaxis], axis=1, batch_dims=1)[:, 0]
    # the positive out of the denominator; with no kept negative the sum is ~MASK, so
    # ℓ̃ ≈ −1e9, the weight σ(ℓ̃) is exactly 0 and so is the loss
    negatives = tf.reduce_logsumexp(logits + tf.cast(MASK, logits.dtype) * is_label, axis=1)
    unweighted = negatives - positive
    weight = tf.stop_gradient(tf.sigmoid(unweighted))
    return weight * unweighted


@tf.keras.utils.register_keras_serializable(package="twotower")
class CorrectedLogQSoftmax(Head):
    """Keras head for ``corrected_logq_softmax_loss``: the softmax head of
    ``RetrievalLoss(..., logq="corrected")``, which builds its logits (positive
    uncorrected, negatives at −log Q̃; losses/logits.py ``corrected_log_q``)."""

    uses_logq = True

    def __init__(self, name="corrected_logq_softmax", **kwargs):
        super().__init__(name=name, **kwargs)

    def per_example(self, logits, labels):
        return corrected_logq_softmax_loss(logits, labels)
