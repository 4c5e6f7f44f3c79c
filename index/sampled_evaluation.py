"""Evaluation for catalogues too large to rank exactly: a uniform sample of the test
queries, answered through a tuned ScaNN index.

metrics/retrieval_report.py ranks every item for every test query (Q × N scores); at
10⁵ users × 10⁶ items that is hours. Here, as ``benchmarks/scale.py`` does:

1. ``sample`` test queries are drawn uniformly without replacement (seeded): each
   recall is then a mean of ``sample`` hits, with standard error √(r(1 − r)/sample)
   (≤ 0.0035 at 20,000);
2. a ScaNN index over the item embeddings is tuned (index/tuner.py) to
   ``target_recall`` recall@10 against exact search on some of those queries;
3. every sampled query takes its top ``k`` (100) from the index, its seen items left
   out (``ScannIndex.search``'s ``exclude``), and the target's rank is its position in
   that list (beyond ``k``: a miss).

The numbers are those of :func:`~twotower.metrics.retrieval_report.retrieval_report`
(recall@K, ndcg@K, mrr, coverage@50, head / tail recall@50, same repeat rule: a query
whose target the user had already consumed is left out), estimated: the index's own
misses (1 − its recall against exact search) lower them a little, and mrr counts ranks
beyond ``k`` as 0. The popularity baseline is scored on the same sample
(:func:`popularity_lists`), so the two stay comparable.
"""

import warnings

import numpy as np

from twotower.metrics.ranking import metrics_from_ranks
from twotower.metrics.retrieval_report import KS, coverage

SAMPLE = 20_000


def sample_queries(num_queries, sample=SAMPLE, seed=0):
    """Sorted indexes of a uniform sample (without replacement) of ``sample`` of
    ``num_queries`` queries; all of them when there are no more than ``sample``."""
    if sample >= num_queries:
        return np.arange(num_queries)
    return np.sort(np.random.default_rng(seed).choice(num_queries, sample, replace=False))


def report_from_lists(found, targets, exclusions, head_items, num_items, *, k_cov=50,
                      k_split=50):
    """Metrics from each query's retrieved list (best first, seen items already left
    out; -1 pads): the keys of ``retrieval_report``. ``found`` [Q, k], ``targets`` [Q],
    ``exclusions`` Q iterables of seen items, ``head_items`` boolean [num_items]."""
    found = np.asarray(found, np.int64)
    targets = np.asarray(targets, np.int64)
    ranks, kept = [], []
    for row, t, seen in zip(found, targets, exclusions):
        if t in set(np.asarray(seen, np.int64).tolist()):
            kept.append(False)  # a repeat target: serving can never return it
            continue
        kept.append(True)
        hit = np.flatnonzero(row == t)
        ranks.append(np.array([hit[0] + 1.0 if len(hit) else np.inf]))
    if not ranks:
        raise ValueError("every sampled test target was already consumed by its user: "
                         "nothing to report")
    kept = np.array(kept, bool)
    out = metrics_from_ranks(ranks, ks=[k for k in KS if k <= found.shape[1]])
    top = found[:, :k_cov]
    out[f"coverage@{k_cov}"] = coverage(top[top >= 0], num_items)
    r = np.concatenate(ranks)
    head = np.asarray(head_items, bool)[targets[kept]]
    for name, mask in (("head", head), ("tail", ~head)):
        out[f"{name}_recall@{k_split}"] = (float(np.mean(r[mask] <= k_split))
                                           if mask.any() else float("nan"))
    out["num_queries"] = int(len(r))
    out["repeat_targets"] = int((~kept).sum())
    return out


SEARCH_BATCH = 1024


def index_report(query_emb, item_emb, targets, exclusions, head_items, *, target_recall=0.95,
                 k=100, tune_queries=1000, progress=True):
    """The retrieval report of the given (already sampled) queries through a ScaNN index
    of ``item_emb`` tuned to ``target_recall`` recall@10 against exact search on up to
    ``tune_queries`` of them (module docstring). Adds ``index_eval_recall@10`` (the
    tuner's measured recall against exact search) and ``index_eval_build_s``."""
    from twotower.index.builder import build_index
    from twotower.index.tuner import tune

    item_emb = np.asarray(item_emb, np.float32)
    query_emb = np.asarray(query_emb, np.float32)
    k = min(int(k), len(item_emb))
    index = build_index(item_emb, np.arange(len(item_emb)), distance="dot")
    # the evaluation asks one batch of queries: tuned for batched throughput (timing
    # single queries, as serving's tuning does, costs tens of seconds at 10⁶ items)
    tuned = tune(index, query_emb[:tune_queries], target_recall=target_recall,
                 progress=progress, objective="batch")
    with warnings.catch_warnings():  # recall beyond 10 is reported as estimated (above)
        warnings.filterwarnings("ignore", message="search with k=", category=UserWarning)
        # a batch of queries at a time: the index's per-query sets of excluded ids are a
        # batch's, not every sampled user's seen items at once
        found = np.concatenate([
            index.search(query_emb[a:a + SEARCH_BATCH], k, exclude=[
                np.asarray(e, np.int64) for e in exclusions[a:a + SEARCH_BATCH]])[0]
            for a in range(0, len(query_emb), SEARCH_BATCH)] or [np.zeros((0, k), np.int64)])
    out = report_from_lists(found, targets, exclusions, head_items, len(item_emb))
    out["index_eval_recall@10"] = float(tuned.recall)
    out["index_eval_build_s"] = float(index.build_seconds)
    return out


def popularity_lists(item_counts, exclusions, k=100):
    """Popularity's top ``k`` per query (most counted first, ties to the lower index),
    each query's seen items left out: [Q, k] (-1 pads a catalogue with fewer items)."""
    counts = np.asarray(item_counts)
    order = np.argsort(-counts, kind="stable")
    out = np.full((len(exclusions), k), -1, np.int64)
    for q, seen in enumerate(exclusions):
        seen = np.asarray(seen, np.int64)
        head = order[:k + len(seen)]
        head = head[~np.isin(head, seen)][:k]
        out[q, :len(head)] = head
    return out
