"""twotower.losses — one logit pipeline, many heads (docs/formulation.md).

Pure functions on (logits [B, C], labels [B]): softmax_loss, corrected_logq_softmax_loss,
sigmoid_loss, triplet_loss, hierarchical_softmax_loss. Keras heads: Softmax,
CorrectedLogQSoftmax (the corrected logQ of Khrylchenko et al. 2025, chosen by
RetrievalLoss(logq="corrected")), NegativeSampling, NCE, Triplet, HierarchicalSoftmax.
Candidate sources: CandidateSource (their abstract base class: ``draw`` and ``call``),
InBatch, SampledNegatives (over any twotower.data.samplers.Sampler), MixedNegatives,
AllItems, GroupNegatives, ConcatNegatives. Composed: RetrievalLoss.
"""

from twotower.losses.candidates import (AllItems, CandidateSource, ConcatNegatives,
                                        GroupNegatives, InBatch, MixedNegatives,
                                        SampledNegatives)
from twotower.losses.hard_negatives import top_m_negatives
from twotower.losses.hierarchical_softmax import (HierarchicalSoftmax,
                                                  hierarchical_softmax_loss,
                                                  leaf_log_probabilities)
from twotower.losses.logits import MASK, adjust_logits, scores
from twotower.losses.retrieval import RetrievalLoss
from twotower.losses.sigmoid import NCE, NegativeSampling, sigmoid_loss
from twotower.losses.softmax import (CorrectedLogQSoftmax, Softmax,
                                     corrected_logq_softmax_loss, softmax_loss)
from twotower.losses.triplet import Triplet, triplet_loss

__all__ = [
    "AllItems", "CandidateSource", "ConcatNegatives", "GroupNegatives", "InBatch", "MixedNegatives", "SampledNegatives",
    "HierarchicalSoftmax", "hierarchical_softmax_loss", "leaf_log_probabilities",
    "MASK", "adjust_logits", "scores", "RetrievalLoss", "NCE", "NegativeSampling",
    "sigmoid_loss", "Softmax", "softmax_loss", "CorrectedLogQSoftmax",
    "corrected_logq_softmax_loss", "Triplet", "triplet_loss", "top_m_negatives",
]
