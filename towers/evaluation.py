"""Exact retrieval evaluation by scoring the whole item corpus (brute force, numpy).

For each query q with positives P(q) and excluded items X(q) (e.g. items seen in
training), every item c ∉ X(q) is scored s(q, c) = <u_q, v_c>; the rank of a positive p
is 1 + #{c ∉ X(q) : s(q, c) > s(q, p)} (ties resolved in the positive's favour). Then

    recall@k  = |{p ∈ P : rank(p) <= k}| / |P|
    ndcg@k    = Σ_{p ∈ P, rank(p) <= k} 1/log2(1 + rank(p))  /  Σ_{i=1}^{min(|P|, k)} 1/log2(1 + i)
    mrr       = 1 / min_{p ∈ P} rank(p)

averaged over queries (Järvelin & Kekäläinen 2002 for nDCG). Positives are never excluded.
This is the honest counterpart of sampled metrics: no candidate is left out.
"""

import numpy as np


def _as_lists(values, n, name):
    if values is None:
        return [()] * n
    if len(values) != n:
        raise ValueError(f"{name} must have one entry per query ({n}), got {len(values)}")
    if isinstance(values, np.ndarray) and values.ndim == 1 and np.issubdtype(values.dtype,
                                                                              np.integer):
        return [(int(v),) for v in values]
    values = list(values)
    out = []
    for v in values:
        if np.isscalar(v):
            out.append((int(v),))
        else:
            out.append(tuple(int(x) for x in v))
    return out


def _check(query_embeddings, item_embeddings):
    q = np.asarray(query_embeddings, dtype=np.float32)
    v = np.asarray(item_embeddings, dtype=np.float32)
    if q.ndim != 2 or v.ndim != 2:
        raise ValueError(f"query_embeddings and item_embeddings must be 2-D; got shapes "
                         f"{q.shape} and {v.shape}")
    if q.shape[1] != v.shape[1]:
        raise ValueError(f"query dim {q.shape[1]} != item dim {v.shape[1]}")
    if v.shape[0] == 0:
        raise ValueError("item_embeddings is empty")
    return q, v


def _masked_scores(q, v, excludes, start):
    scores = q @ v.T
    rows = [i for i, ex in enumerate(excludes[start:start + len(q)]) for _ in ex]
    cols = [c for ex in excludes[start:start + len(q)] for c in ex]
    if rows:
        bad = [c for c in cols if not 0 <= c < v.shape[0]]
        if bad:  # -1 would silently exclude the last item
            raise ValueError(f"exclude must hold item ids in [0, {v.shape[0]}), got {bad[0]}")
        scores[rows, cols] = -np.inf
    return scores


def popularity_scores(item_counts):
    """[N, 1] item "embeddings" scoring by popularity, ties broken by item index so that
    every item has a distinct score (a tie would otherwise be resolved in the positive's
    favour by ``positive_ranks``). Pair with a query embedding of ones."""
    counts = np.asarray(item_counts, np.float64)
    order = np.argsort(-counts, kind="stable")
    score = np.empty(len(counts), np.float32)
    score[order] = len(counts) - np.arange(len(counts))
    return score[:, np.newaxis]


def top_k(query_embeddings, item_embeddings, k, exclude=None, batch_size=1024):
    """Exact top-k item ids and scores per query, skipping ``exclude[i]`` for query i.

    Returns (ids [Q, k] int64, scores [Q, k] float32), best first.
    """
    q, v = _check(query_embeddings, item_embeddings)
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= v.shape[0]:
        raise ValueError(f"k must be an int in [1, num_items={v.shape[0]}], got {k!r}")
    excludes = _as_lists(exclude, len(q), "exclude")
    ids = np.empty((len(q), k), dtype=np.int64)
    out = np.empty((len(q), k), dtype=np.float32)
    for start in range(0, len(q), batch_size):
        s = _masked_scores(q[start:start + batch_size], v, excludes, start)
        part = np.argpartition(-s, k - 1, axis=1)[:, :k]
        part_scores = np.take_along_axis(s, part, axis=1)
        order = np.argsort(-part_scores, axis=1, kind="stable")
        ids[start:start + len(s)] = np.take_along_axis(part, order, axis=1)
        out[start:start + len(s)] = np.take_along_axis(part_scores, order, axis=1)
    return ids, out


def positive_ranks(query_embeddings, item_embeddings, positives, exclude=None,
                   batch_size=1024):
    """Exact rank (1 = best) of every positive of every query: a list of int arrays."""
    q, v = _check(query_embeddings, item_embeddings)
    pos = _as_lists(positives, len(q), "positives")
    excludes = _as_lists(exclude, len(q), "exclude")
    excludes = [tuple(c for c in ex if c not in set(p)) for ex, p in zip(excludes, pos)]
    ranks = []
    for start in range(0, len(q), batch_size):
        s = _masked_scores(q[start:start + batch_size], v, excludes, start)
        for i, row in enumerate(s):
            p = np.asarray(pos[start + i], dtype=np.int64)
            if p.size and (p.min() < 0 or p.max() >= v.shape[0]):
                raise ValueError(f"positives of query {start + i} must be item ids in "
                                 f"[0, {v.shape[0]}), got {p.tolist()}")
            ranks.append(1 + (row[np.newaxis, :] > row[p][:, np.newaxis]).sum(axis=1))
    return ranks


def retrieval_metrics(query_embeddings, item_embeddings, positives, *, ks=(10, 50, 100),
                      exclude=None, batch_size=1024):
    """recall@k and ndcg@k for each k, and mrr (module docstring), as a flat dict."""
    ranks = positive_ranks(query_embeddings, item_embeddings, positives, exclude, batch_size)
    return metrics_from_ranks(ranks, ks)


def metrics_from_ranks(ranks, ks=(10, 50, 100)):
    """The metrics of ``retrieval_metrics`` from precomputed positive ranks."""
    ranks = [np.asarray(r) for r in ranks if len(r)]
    if not ranks:
        raise ValueError("no query has a positive: cannot compute retrieval metrics")
    out = {}
    for k in ks:
        recall, ndcg = [], []
        for r in ranks:
            hit = r <= k
            recall.append(hit.mean())
            idcg = (1.0 / np.log2(2 + np.arange(min(len(r), k)))).sum()
            ndcg.append((1.0 / np.log2(1 + r[hit])).sum() / idcg)
        out[f"recall@{k}"] = float(np.mean(recall))
        out[f"ndcg@{k}"] = float(np.mean(ndcg))
    out["mrr"] = float(np.mean([1.0 / r.min() for r in ranks]))
    return out
