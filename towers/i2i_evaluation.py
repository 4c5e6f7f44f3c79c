"""Item-to-item evaluation of item embeddings: next-item hit rate and neighbour purity.

Next item (Barkan & Koenigstein's item2vec protocol, as Airbnb and EGES evaluate): each
held-out (query item q, next item t, seen items S) is answered by ranking every item
c ∉ S ∪ {q} by cos(w_q, w_c) (or by the two-tower score <W[q], W'[c]>); the rank of t
gives HR@k = 1[rank <= k] and NDCG@k = 1[rank <= k] / log2(1 + rank), averaged over the
held-out pairs (towers/evaluation.py computes the exact ranks). A pair whose query or
target has no vector counts as a miss.

Group purity (Airbnb's market check, KDD 2018 §4.1): for every item v with a group g(v),
the share of its k nearest cosine neighbours u with g(u) = g(v), averaged over items.
"""

import numpy as np

from twotower.towers.evaluation import metrics_from_ranks, popularity_scores, positive_ranks


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


__all__ = ["next_item_metrics", "same_group_share"]
