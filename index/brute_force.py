"""Exact maximum-inner-product top-k in numpy: the reference every index is measured by.

top_k(q) = argsort_desc(<q, x_i>)[:k] over all items i not excluded for that query,
computed in chunks of queries so memory stays at chunk × N floats.
"""

import numpy as np


def exact_top_k(queries, items, k, *, exclude=None, chunk_size=256):
    """Exact top-k rows of ``items`` by inner product with each query.

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
    queries = np.asarray(queries, dtype=np.float32)
    items = np.asarray(items, dtype=np.float32)
    if queries.ndim != 2 or items.ndim != 2 or queries.shape[1] != items.shape[1]:
        raise ValueError(f"queries {queries.shape} and items {items.shape} must be 2-D "
                         "with the same dimension")
    n = items.shape[0]
    if not 1 <= k <= n:
        raise ValueError(f"k must be in [1, {n}], got {k!r}")
    if exclude is not None and len(exclude) != len(queries):
        raise ValueError(f"exclude must have one entry per query ({len(queries)}), "
                         f"got {len(exclude)}")
    out_pos = np.empty((len(queries), k), dtype=np.int64)
    out_score = np.empty((len(queries), k), dtype=np.float32)
    for start in range(0, len(queries), chunk_size):
        scores = queries[start:start + chunk_size] @ items.T
        if exclude is not None:
            for row, ex in enumerate(exclude[start:start + chunk_size]):
                ex = np.fromiter(ex, dtype=np.int64) if not isinstance(ex, np.ndarray) else ex
                if ex.size:
                    scores[row, ex] = -np.inf
        part = np.argpartition(-scores, k - 1, axis=1)[:, :k] if k < n else \
            np.tile(np.arange(n), (len(scores), 1))
        part_scores = np.take_along_axis(scores, part, axis=1)
        order = np.argsort(-part_scores, axis=1, kind="stable")
        pos = np.take_along_axis(part, order, axis=1)
        sc = np.take_along_axis(part_scores, order, axis=1)
        pos[np.isneginf(sc)] = -1
        out_pos[start:start + chunk_size] = pos
        out_score[start:start + chunk_size] = sc
    return out_pos, out_score


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
