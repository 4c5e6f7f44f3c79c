"""Item-to-item evaluation of item embeddings: next-item hit rate and neighbour purity.

Next item (Barkan & Koenigstein's item2vec protocol, as Airbnb and EGES evaluate): each
held-out (query item q, next item t, seen items S) is answered by ranking every item
c ∉ S ∪ {q} by cos(w_q, w_c) (or by the two-tower score <W[q], W'[c]>); the rank of t
gives HR@k = 1[rank <= k] and NDCG@k = 1[rank <= k] / log2(1 + rank), averaged over the
held-out pairs (metrics/ranking.py computes the exact ranks). A pair whose query or
target has no vector counts as a miss.

Group purity (Airbnb's market check, KDD 2018 §4.1): for every item v with a group g(v),
the share of its k nearest cosine neighbours u with g(u) = g(v), averaged over items.

Co-occurrence agreement: how far an item's k nearest cosine neighbours are the items
that users actually consume near it. From training sequences, c(i, j) counts the pairs
(i, j) that occur within ``window`` positions of each other in one user's sequence, and
the reference neighbours of i are its top k by the cosine-normalised count
c(i, j) / √(c(i)·c(j)) (c(i) = Σ_j c(i, j); Salton's cosine, which does not reward an item
for being popular as the raw count does). Agreement@k is |top-k by embedding ∩ top-k by
co-occurrence| / k, averaged over items with at least ``min_count`` co-occurrences.
"""

import numpy as np

from twotower.metrics.ranking import metrics_from_ranks, popularity_scores, positive_ranks


def _unit(x):
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def next_item_metrics(vocab, vectors, held, k=10, output_vectors=None):
    """HR@k and NDCG@k of held-out next items (module docstring).

    Args:
      vocab: a Vocabulary whose tokens are the item ids in ``held``; row i of ``vectors``
        is ``vocab.words[i]``.
      vectors: [V, d] input vectors W, ranked by cosine (i2i).
      held: list of (query item, held-out item, seen items) in token space.
      k: the cut-off.
      output_vectors: [V, d] W'; also rank by <W[q], W'[c]> ("hr@k_two_tower").

    Returns a flat dict: hr@k, ndcg@k, popularity_hr@k, popularity_ndcg@k (ranking by
    training count), eval_users (pairs), eval_users_target_oov (held-out items with no
    vector: misses), [hr@k_two_tower, ndcg@k_two_tower].
    """
    if not held:
        raise ValueError("held is empty: no held-out pair to evaluate")
    unit = _unit(vectors)
    n = len(vocab)
    rows = [(vocab.index.get(q), vocab.index.get(t),
             [vocab.index[s] for s in seen if s in vocab.index]) for q, t, seen in held]
    known = [r for r in rows if r[0] is not None and r[1] is not None]
    misses = [np.array([n + 1])] * (len(rows) - len(known))
    out = {"eval_users": len(rows), "eval_users_target_oov": len(misses)}
    if not known:
        out.update({f"hr@{k}": 0.0, f"ndcg@{k}": 0.0, f"popularity_hr@{k}": 0.0,
                    f"popularity_ndcg@{k}": 0.0})
        return out
    positives = [r[1] for r in known]
    exclude = [r[2] + [r[0]] for r in known]
    ranks = positive_ranks(unit[[r[0] for r in known]], unit, positives,
                           exclude=exclude) + misses
    pop = positive_ranks(np.ones((len(known), 1), np.float32), popularity_scores(vocab.counts),
                         positives, exclude=exclude) + misses
    ours, base = metrics_from_ranks(ranks, ks=(k,)), metrics_from_ranks(pop, ks=(k,))
    out.update({f"hr@{k}": ours[f"recall@{k}"], f"ndcg@{k}": ours[f"ndcg@{k}"],
                f"popularity_hr@{k}": base[f"recall@{k}"],
                f"popularity_ndcg@{k}": base[f"ndcg@{k}"]})
    if output_vectors is not None:
        tt = positive_ranks(np.asarray(vectors, np.float32)[[r[0] for r in known]],
                            output_vectors, positives, exclude=exclude) + misses
        m = metrics_from_ranks(tt, ks=(k,))
        out.update({f"hr@{k}_two_tower": m[f"recall@{k}"],
                    f"ndcg@{k}_two_tower": m[f"ndcg@{k}"]})
    return out


def same_group_share(vectors, groups, k=10, candidates=None):
    """Mean over items with a group (>= 0) of the share of their k nearest cosine
    neighbours (among ``candidates``, default all rows; never the item itself) that share
    its group (module docstring). ``groups`` [V] aligned with ``vectors`` rows."""
    groups = np.asarray(groups)
    unit = _unit(vectors)
    if groups.shape != (len(unit),):
        raise ValueError(f"groups must have one entry per vector ({len(unit)}), got shape "
                         f"{groups.shape}")
    cand = np.arange(len(unit)) if candidates is None else np.asarray(candidates, np.int64)
    if not 1 <= k < len(cand):
        raise ValueError(f"k must be in [1, {len(cand) - 1}] (candidates - 1), got {k!r}")
    shares = []
    for start in range(0, len(unit), 1024):
        rows = np.arange(start, min(start + 1024, len(unit)))
        rows = rows[groups[rows] >= 0]
        if rows.size == 0:
            continue
        sims = unit[rows] @ unit[cand].T
        sims[rows[:, None] == cand[None, :]] = -np.inf
        top = cand[np.argpartition(-sims, k - 1, axis=1)[:, :k]]
        shares.append((groups[top] == groups[rows][:, None]).mean(axis=1))
    if not shares:
        raise ValueError("no item has a group (all groups < 0)")
    return float(np.concatenate(shares).mean())


def _check_item_vectors(vectors):
    v = np.asarray(vectors, dtype=np.float32)
    if v.ndim != 2 or v.shape[0] < 2:
        raise ValueError(f"vectors must be a 2-D array [num_items >= 2, dim], got shape "
                         f"{v.shape}")
    return v


def i2i_hit_rate(vectors, queries, targets, exclude=None, k=10, item_counts=None):
    """Next-item HR@k and NDCG@k of item-to-item retrieval on item indexes (the module
    docstring's protocol, for vectors indexed by item, e.g. an item tower's embedding of
    the whole catalogue): query i is answered by ranking every item c ∉ exclude[i] ∪
    {queries[i]} by cos(v_q, v_c); a query or target whose vector is all zeros (no vector)
    counts as a miss.

    Args:
      vectors: [N, d] item vectors.
      queries: [Q] item index of each query (e.g. the user's last item before the target).
      targets: [Q] item index of the next item.
      exclude: None or, per query, the item indexes not to rank (the user's seen items).
      k: cut-off.
      item_counts: [N] training counts; when given, the popularity baseline's HR@k and
        NDCG@k on the same queries and exclusions are added.

    Returns {hr@k, ndcg@k, eval_queries, eval_queries_no_vector[, popularity_hr@k,
    popularity_ndcg@k]}.
    """
    v = _check_item_vectors(vectors)
    n = v.shape[0]
    queries = np.asarray(queries, np.int64).reshape(-1)
    targets = np.asarray(targets, np.int64).reshape(-1)
    if queries.shape != targets.shape or queries.size == 0:
        raise ValueError(f"queries and targets must be non-empty and of one length, got "
                         f"{queries.size} and {targets.size}")
    for name, ids in (("queries", queries), ("targets", targets)):
        if ids.min() < 0 or ids.max() >= n:
            raise ValueError(f"{name} must be item indexes in [0, {n}), got "
                             f"{int(ids.min() if ids.min() < 0 else ids.max())}")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k < n:
        raise ValueError(f"k must be an int in [1, {n - 1}], got {k!r}")
    if exclude is not None and len(exclude) != len(queries):
        raise ValueError(f"exclude must have one entry per query ({len(queries)}), got "
                         f"{len(exclude)}")
    has = np.linalg.norm(v, axis=1) > 0
    known = np.flatnonzero(has[queries] & has[targets])
    excl = [sorted(set(np.asarray(exclude[i], np.int64).tolist()) - {int(targets[i])}
                   | {int(queries[i])}) if exclude is not None else [int(queries[i])]
            for i in known]
    misses = [np.array([n + 1])] * (len(queries) - len(known))
    unit = _unit(v)
    out = {"eval_queries": int(len(queries)), "eval_queries_no_vector": len(misses)}
    ranks = (positive_ranks(unit[queries[known]], unit, targets[known].tolist(),
                            exclude=excl) if len(known) else []) + misses
    m = metrics_from_ranks(ranks, ks=(k,))
    out.update({f"hr@{k}": m[f"recall@{k}"], f"ndcg@{k}": m[f"ndcg@{k}"]})
    if item_counts is not None:
        excl_all = [sorted(set(np.asarray(exclude[i], np.int64).tolist())
                           - {int(targets[i])} | {int(queries[i])})
                    if exclude is not None else [int(queries[i])] for i in range(len(queries))]
        pop = positive_ranks(np.ones((len(queries), 1), np.float32),
                             popularity_scores(item_counts), targets.tolist(), exclude=excl_all)
        b = metrics_from_ranks(pop, ks=(k,))
        out.update({f"popularity_hr@{k}": b[f"recall@{k}"],
                    f"popularity_ndcg@{k}": b[f"ndcg@{k}"]})
    return out


def cooccurrence_scores(sequences, num_items, window=5):
    """[N, N] float64 cosine-normalised co-occurrence c(i, j)/√(c(i)·c(j)) of items within
    ``window`` positions of each other in one sequence (module docstring); the diagonal
    is 0. Dense: for catalogues of thousands of items (MovieLens), not millions."""
    if isinstance(window, bool) or not isinstance(window, (int, np.integer)) or window < 1:
        raise ValueError(f"window must be an int >= 1, got {window!r}")
    if isinstance(num_items, bool) or not isinstance(num_items, (int, np.integer)) \
            or num_items < 2:
        raise ValueError(f"num_items must be an int >= 2, got {num_items!r}")
    c = np.zeros((num_items, num_items), np.float64)
    for seq in sequences:
        seq = np.asarray(seq, np.int64)
        if seq.size and (seq.min() < 0 or seq.max() >= num_items):
            raise ValueError(f"sequences must hold item indexes in [0, {num_items}), got "
                             f"{int(seq.min() if seq.min() < 0 else seq.max())}")
        for d in range(1, min(window, len(seq) - 1) + 1):
            np.add.at(c, (seq[:-d], seq[d:]), 1.0)
            np.add.at(c, (seq[d:], seq[:-d]), 1.0)
    np.fill_diagonal(c, 0.0)
    total = c.sum(axis=1)
    norm = np.sqrt(np.outer(total, total))
    return np.divide(c, norm, out=np.zeros_like(c), where=norm > 0), total


def cooccurrence_agreement(vectors, sequences, k=10, window=5, min_count=20):
    """Agreement@k of embedding neighbours with co-occurrence neighbours (module
    docstring): mean over items with >= ``min_count`` co-occurrences of
    |top-k cosine ∩ top-k co-occurrence| / k. Items without a vector (all zeros) are
    neither queried nor returned as neighbours.

    Returns {agreement@k, agreement_items, popularity_agreement@k} — the last ranks every
    item's neighbours by training frequency (the same list for every item), the baseline
    an embedding must beat."""
    v = _check_item_vectors(vectors)
    n = v.shape[0]
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k < n:
        raise ValueError(f"k must be an int in [1, {n - 1}], got {k!r}")
    co, total = cooccurrence_scores(sequences, n, window)
    has = np.linalg.norm(v, axis=1) > 0
    # an item needs k distinct co-occurring items for a top-k reference list
    items = np.flatnonzero((total >= min_count) & has & ((co > 0).sum(axis=1) >= k))
    if items.size == 0:
        raise ValueError(f"no item has >= min_count={min_count} co-occurrences with >= k={k} "
                         "distinct items and a vector")
    unit = _unit(v)
    freq = np.zeros(n)
    for seq in sequences:
        np.add.at(freq, np.asarray(seq, np.int64), 1.0)
    freq_order = np.argsort(-freq, kind="stable")
    emb_hits, pop_hits = [], []
    for start in range(0, len(items), 512):
        rows = items[start:start + 512]
        sims = unit[rows] @ unit.T
        sims[:, ~has] = -np.inf
        sims[np.arange(len(rows)), rows] = -np.inf
        emb_top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        ref = co[rows].copy()
        ref[np.arange(len(rows)), rows] = -np.inf
        ref_top = np.argpartition(-ref, k - 1, axis=1)[:, :k]
        for i, r in enumerate(rows):
            want = set(ref_top[i].tolist())
            emb_hits.append(len(want & set(emb_top[i].tolist())) / k)
            pop = [j for j in freq_order[:k + 1] if j != r][:k]
            pop_hits.append(len(want & set(pop)) / k)
    return {f"agreement@{k}": float(np.mean(emb_hits)), "agreement_items": int(len(items)),
            f"popularity_agreement@{k}": float(np.mean(pop_hits))}


__all__ = ["cooccurrence_agreement", "cooccurrence_scores", "i2i_hit_rate",
           "next_item_metrics", "same_group_share"]
