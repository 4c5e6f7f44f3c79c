"""Exact retrieval evaluation by scoring the whole item corpus (brute force, numpy).

For each query q with positives P(q) and excluded items X(q) (e.g. items seen in
training), every item c ∉ X(q) is scored s(q, c) = <u_q, v_c>; the rank of a positive p
is 1 + #{c ∉ X(q) : s(q, c) > s(q, p)} (ties resolved in the positive's favour). Then

    recall@k  = |{p ∈ P : rank(p) <= k}| / |P|
    ndcg@k    = Σ_{p ∈ P, rank(p) <= k} 1/log2(1 + rank(p))  /  Σ_{i=1}^{min(|P|, k)} 1/log2(1 + i)
    mrr       = 1 / min_{p ∈ P} rank(p)

averaged over queries (Järvelin & Kekäläinen 2002 for nDCG). This is the honest
counterpart of sampled metrics: no candidate is left out.

Repeat consumption. A held-out positive p the user had already consumed (p ∈ X(q)) can
never be served: serving excludes seen items. ``repeats`` says what such a positive
counts as (``evaluate``, ``retrieval_metrics``, ``positive_ranks``):

* ``"new"`` — the positives not already seen, ranked with every seen item excluded: what
  the server can return, scored over what it could get right. Repeats are left out of
  P(q) (a query left with none is not counted). The default of ``evaluate`` and
  ``retrieval_metrics``.
* ``"miss"`` — every seen item excluded and a repeat counts as a miss (rank ∞): the hit
  rate of the served lists against the whole held-out log.
* ``"all"`` — a positive stays rankable even when seen (it alone is not excluded): the
  behaviour of this module before ``repeats`` existed, and ``positive_ranks``'s default.

On a log with many repeats "all" can be far above what serving reaches (an issue report
measured recall@50 0.396 under "all" against 0.212 for the served lists).
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


# Scores held in memory at once (float32): 2**25 = 128 MiB. A [1024 × 10⁷] block would be
# 40 GB, so large catalogues are scored in item blocks with a running top-k.
MAX_SCORES = 1 << 25


def _top_k_of(scores, k, offset=0):
    """(positions + offset, scores) of each row's k largest entries, best first; of equal
    scores the lower position first."""
    # TensorFlow's top_k (one pass a row, rows in parallel), not NumPy's argpartition:
    # the exact ground truth of an index's tuning was most of an export at 10⁶ items
    import tensorflow as tf

    found = tf.math.top_k(tf.convert_to_tensor(scores), k=int(k), sorted=True)
    return (found.indices.numpy().astype(np.int64) + offset,
            found.values.numpy().astype(scores.dtype, copy=False))


def top_k(query_embeddings, item_embeddings, k, exclude=None, batch_size=1024):
    """Exact top-k item ids and scores per query, skipping ``exclude[i]`` for query i.

    Memory stays bounded (about ``MAX_SCORES`` floats) whatever the catalogue size: when
    a [batch × N] score block would be larger, items are scored in blocks and each
    block's top-k merged into a running top-k (ties keep the lower item index).

    Returns (ids [Q, k] int64, scores [Q, k] float32), best first.
    """
    q, v = _check(query_embeddings, item_embeddings)
    n = v.shape[0]
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= n:
        raise ValueError(f"k must be an int in [1, num_items={n}], got {k!r}")
    excludes = _as_lists(exclude, len(q), "exclude")
    ids = np.empty((len(q), k), dtype=np.int64)
    out = np.empty((len(q), k), dtype=np.float32)
    batch = max(1, min(batch_size, len(q)))
    block = max(k, MAX_SCORES // batch)
    for start in range(0, len(q), batch):
        qb = q[start:start + batch]
        if n <= block:
            ids[start:start + len(qb)], out[start:start + len(qb)] = _top_k_of(
                _masked_scores(qb, v, excludes, start), k)
            continue
        best_ids = best = None
        for lo in range(0, n, block):
            hi = min(n, lo + block)
            s = qb @ v[lo:hi].T
            for row, ex in enumerate(excludes[start:start + len(qb)]):
                cols = [c - lo for c in ex if lo <= c < hi]
                if cols:
                    s[row, cols] = -np.inf
            bi, bs = _top_k_of(s, min(k, hi - lo), lo)
            if best is None:
                best_ids, best = bi, bs
            else:
                best_ids = np.concatenate([best_ids, bi], axis=1)
                best = np.concatenate([best, bs], axis=1)
                keep = np.argsort(-best, axis=1, kind="stable")[:, :k]
                best_ids = np.take_along_axis(best_ids, keep, axis=1)
                best = np.take_along_axis(best, keep, axis=1)
        bad = [c for ex in excludes[start:start + len(qb)] for c in ex if not 0 <= c < n]
        if bad:  # -1 would silently exclude the last item
            raise ValueError(f"exclude must hold item ids in [0, {n}), got {bad[0]}")
        ids[start:start + len(qb)], out[start:start + len(qb)] = best_ids, best
    return ids, out


REPEATS = ("new", "miss", "all")


def _check_repeats(repeats):
    if repeats not in REPEATS:
        raise ValueError(f"repeats must be one of {REPEATS}, got {repeats!r}")


def positive_ranks(query_embeddings, item_embeddings, positives, exclude=None,
                   batch_size=1024, *, repeats="all"):
    """Exact rank (1 = best) of every positive of every query: a list of arrays.

    ``repeats`` (module docstring) decides a positive that is also in ``exclude``: "all"
    ranks it as if it were not excluded (int ranks), "new" drops it from its query's
    array, "miss" gives it rank ``inf`` (float array).
    """
    _check_repeats(repeats)
    q, v = _check(query_embeddings, item_embeddings)
    pos = _as_lists(positives, len(q), "positives")
    excludes = _as_lists(exclude, len(q), "exclude")
    if repeats == "all":
        excludes = [tuple(c for c in ex if c not in set(p)) for ex, p in zip(excludes, pos)]
    ranks = []
    for start in range(0, len(q), batch_size):
        s = _masked_scores(q[start:start + batch_size], v, excludes, start)
        for i, row in enumerate(s):
            p = np.asarray(pos[start + i], dtype=np.int64)
            if p.size and (p.min() < 0 or p.max() >= v.shape[0]):
                raise ValueError(f"positives of query {start + i} must be item ids in "
                                 f"[0, {v.shape[0]}), got {p.tolist()}")
            r = 1 + (row[np.newaxis, :] > row[p][:, np.newaxis]).sum(axis=1)
            if repeats != "all":
                seen = np.isin(p, np.asarray(excludes[start + i], np.int64))
                r = r[~seen] if repeats == "new" else np.where(seen, np.inf, r)
            ranks.append(r)
    return ranks


def count_repeats(positives, exclude):
    """(number of positives, number of them already in their query's exclude list)."""
    n = len(positives)
    pos = _as_lists(positives, n, "positives")
    excludes = _as_lists(exclude, n, "exclude")
    total = sum(len(p) for p in pos)
    repeated = sum(sum(1 for c in p if c in set(ex)) for p, ex in zip(pos, excludes))
    return total, repeated


def evaluate(query_embeddings, item_embeddings, positives, *, exclude=None,
             ks=(10, 50, 100), repeats="new", batch_size=1024):
    """Full-corpus retrieval metrics of two towers' embeddings, seen items excluded.

    Every item is scored for every query, s(q, c) = <u_q, v_c> (exact brute force, no
    sampled candidates); the items in ``exclude[q]`` (a user's training history) are left
    out as serving leaves them out; recall@k, ndcg@k and mrr follow the module docstring
    (nDCG: Järvelin & Kekäläinen 2002).

        import twotower
        u = model.query_embeddings(test_users)                # [Q, d]
        v = model.item_embeddings(np.arange(num_items))       # [N, d], row = item id
        twotower.evaluate(u, v, held_out_items, exclude=seen_items_per_user, ks=(10, 50))
        # {'recall@10': ..., 'ndcg@10': ..., ..., 'mrr': ..., 'repeats': 'new',
        #  'num_queries': ..., 'num_positives': ..., 'num_repeats': ...}

    Args:
      query_embeddings: float [Q, d].
      item_embeddings: float [N, d]; row i is item id i.
      positives: per query, one held-out item id or a list of them.
      exclude: per query, the item ids to leave out (seen items), or None.
      ks: the cut-offs of recall@k and ndcg@k.
      repeats: how a held-out positive the user had already consumed counts — "new"
        (default, what serving can return: such positives are dropped, every seen item
        excluded), "miss" (they count as misses), "all" (they stay rankable). A tuple of
        modes gives one nested dict per mode, e.g. ``repeats=("new", "all")``.
      batch_size: queries scored at once (memory: batch_size × N floats).

    Returns:
      a dict of the metrics, ``repeats`` (the mode used), ``num_queries`` (queries
      counted), ``num_positives`` (positives counted) and ``num_repeats`` (held-out
      positives already in their query's exclude list, whatever the mode).
    """
    if isinstance(repeats, (tuple, list)):
        if not repeats:
            raise ValueError("repeats must name at least one mode, got ()")
        return {mode: evaluate(query_embeddings, item_embeddings, positives, exclude=exclude,
                               ks=ks, repeats=mode, batch_size=batch_size)
                for mode in repeats}
    _check_repeats(repeats)
    ranks = positive_ranks(query_embeddings, item_embeddings, positives, exclude, batch_size,
                           repeats=repeats)
    out = metrics_from_ranks(ranks, ks)
    _, repeated = count_repeats(positives, exclude)
    out.update(repeats=repeats, num_queries=sum(1 for r in ranks if len(r)),
               num_positives=int(sum(len(r) for r in ranks)), num_repeats=int(repeated))
    return out


def retrieval_metrics(query_embeddings, item_embeddings, positives, *, ks=(10, 50, 100),
                      exclude=None, batch_size=1024, repeats="new"):
    """recall@k and ndcg@k for each k, and mrr (module docstring), as a flat dict of
    floats; ``repeats`` as in :func:`evaluate` (default "new", what serving returns)."""
    ranks = positive_ranks(query_embeddings, item_embeddings, positives, exclude, batch_size,
                           repeats=repeats)
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
