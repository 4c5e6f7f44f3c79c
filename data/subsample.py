"""Subsampling of frequent tokens, redrawn every epoch (Mikolov et al. 2013, word2vec.c).

Keep probability of a token with relative frequency f = count / total and threshold t:

    p_keep(f) = (√(f / t) + 1) · t / f        (clipped to 1)

This is word2vec.c's formula (and gensim's), not the paper's 1 − √(t/f) discard
probability: word2vec.c keeps a token when p_keep >= a uniform draw. Tokens rarer than
about t·(1+√5)/2 relative frequency are always kept. t = 0 turns subsampling off.
"""

import numpy as np


def keep_probabilities(counts, sample):
    """p_keep for each id of a vocabulary with ``counts`` ([V]) at threshold ``sample``."""
    if sample < 0:
        raise ValueError(f"sample must be >= 0, got {sample!r}")
    counts = np.asarray(counts, dtype=np.float64)
    if sample == 0:
        return np.ones_like(counts)
    threshold = sample * counts.sum()
    with np.errstate(divide="ignore"):
        p = (np.sqrt(counts / threshold) + 1.0) * threshold / counts
    return np.minimum(p, 1.0)


def subsample(ids, keep_prob, rng):
    """Boolean mask [N] of the tokens ``ids`` kept in this epoch's draw."""
    return rng.random(len(ids)) < keep_prob[ids]
