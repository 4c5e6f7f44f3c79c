"""Full-corpus retrieval metrics for next-item evaluation, with the numbers a recipe reports
beyond recall: catalog coverage and head / tail recall.

For each test query q with one held-out target t, every item of the corpus is scored
(brute force, exact), the items q's user saw before (training history) are excluded, and
the target's rank r (1 = best; metrics/ranking.py, ties in the target's favour)
gives

    recall@K = mean[r <= K]       ndcg@K = mean[r <= K] / log2(r + 1)       mrr = mean 1/r

With a single relevant item per query recall@K is the hit rate and ndcg@K its
position-discounted version (Järvelin & Kekäläinen, 2002). Coverage@K is the fraction of
the corpus that appears in at least one query's top K (Ge, Delgado-Battenfeld & Jannach,
"Beyond accuracy", RecSys 2010). Head / tail recall@K splits the queries by whether the
target is in the top fraction of items by training popularity (Yi et al. 2019 and Yang et
al. 2020 report tail quality separately for the same reason: logQ and index negatives
exist to help the tail). Ranks and top-k lists come from metrics/ranking.py (exact brute
force); this module adds the one-target-per-query summary, coverage and the head / tail
split. A target the user had already consumed (repeat consumption) is handled as
``repeats`` says (metrics/ranking.py): by default such queries are left out, since
serving, which excludes seen items, can never return the target.
"""

import numpy as np

from twotower.metrics.ranking import (count_repeats, metrics_from_ranks, popularity_scores,
                                      positive_ranks, top_k)

KS = (1, 5, 10, 20, 50, 100)


def coverage(top_k, num_items):
    """Fraction of the corpus appearing in at least one top-k list."""
    return float(len(np.unique(top_k)) / num_items)


def retrieval_report(query_emb, item_emb, targets, exclusions, head_items, *, k_cov=50,
                     k_split=50, repeats="new"):
    """Every number a recipe reports, as a flat dict of numbers.

    Keys: recall@10/20/50/100, ndcg@10/50, mrr, coverage@{k_cov},
    head_recall@{k_split}, tail_recall@{k_split}, num_queries (queries counted),
    repeat_targets (test targets the user had already consumed, i.e. in its exclusions).
    head_items: boolean [N], True for head (popular) items.
    repeats: what a repeat target counts as (metrics/ranking.py): "new" (default, what
      serving can return: such queries are left out, every seen item excluded), "miss"
      (a miss) or "all" (still rankable, the behaviour before this argument existed).
      Coverage is over every query's top list, whatever the mode.
    """
    targets = np.asarray(targets, np.int64)
    ranks = positive_ranks(query_emb, item_emb, targets, exclusions, repeats=repeats)
    kept = np.array([len(r) == 1 for r in ranks], bool)
    ranks = np.concatenate([r for r in ranks if len(r)]).astype(np.float64)
    if not len(ranks):
        raise ValueError("every test target was already consumed by its user: nothing to "
                         "report with repeats='new'")
    top, _ = top_k(query_emb, item_emb, min(k_cov, len(item_emb)), exclude=exclusions)
    out = metrics_from_ranks(ranks[:, None], ks=KS)  # one target a query
    out[f"coverage@{k_cov}"] = coverage(top, len(item_emb))
    head = np.asarray(head_items, bool)[targets[kept]]
    for name, mask in (("head", head), ("tail", ~head)):
        out[f"{name}_recall@{k_split}"] = (float(np.mean(ranks[mask] <= k_split))
                                           if mask.any() else float("nan"))
    out["num_queries"] = int(len(ranks))
    out["repeat_targets"] = int(count_repeats(targets, exclusions)[1])
    return out


def popularity_report(item_counts, targets, exclusions, head_items, *, repeats="new"):
    """The popularity baseline through the same metric code: score(q, c) = count(c)."""
    query_emb = np.ones((len(targets), 1), np.float32)
    return retrieval_report(query_emb, popularity_scores(item_counts), targets, exclusions,
                            head_items, repeats=repeats)
