"""Exact maximum-inner-product top-k in numpy: the reference every index is measured by.

top_k(q) = argsort_desc(<q, x_i>)[:k] over all items i not excluded for that query
(twotower.metrics.ranking.top_k), and recall@k of an approximate answer against it.
"""

import numpy as np

from twotower.metrics import ranking


def exact_top_k(queries, items, k, *, exclude=None, chunk_size=256):
    """Exact top-k rows of ``items`` by inner product with each query.

    Delegates the scoring to :func:`twotower.metrics.ranking.top_k` (the toolkit's one
    brute force) and marks the slots that exclusions left empty.

    Args:
      queries: float array [Q, d].
      items: float array [N, d].
      k: neighbours per query, 1 <= k <= N.
      exclude: optional sequence of Q iterables of row positions to leave out per query.
      chunk_size: queries scored at once.

    Returns:
      (positions int64 [Q, k], scores float32 [Q, k]), best first. Where exclusions leave
      fewer than k items, the tail is padded with position -1 and score -inf.
    """
    if exclude is not None:
        exclude = [np.asarray(e, dtype=np.int64).reshape(-1).tolist() for e in exclude]
    pos, scores = ranking.top_k(queries, items, k, exclude=exclude, batch_size=chunk_size)
    pos[np.isneginf(scores)] = -1
    return pos, scores


def recall_at_k(found, truth):
    """Mean over queries of |found_q ∩ truth_q| / |truth_q| (ids; -1 entries ignored)."""
    found = np.asarray(found)
    truth = np.asarray(truth)
    if found.shape[0] != truth.shape[0]:
        raise ValueError(f"found has {found.shape[0]} rows, truth has {truth.shape[0]}")
    hits = []
    for f, t in zip(found, truth):
        t = t[t != -1]
        if t.size:
            hits.append(np.isin(f[f != -1], t).sum() / t.size)
    return float(np.mean(hits)) if hits else float("nan")
