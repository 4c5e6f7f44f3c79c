"""Choose ScaNN's search-time knobs for a target recall, measured against brute force.

For sample queries Q, the tuner computes the exact top-k with numpy, then, for each
leaves-to-search value from few to many, finds the smallest reorder size whose

    recall@k = mean_q |ScaNN_k(q) ∩ exact_k(q)| / k

reaches the target (a grid, then bisection), stopping once more leaves no longer lets
the reorder shrink. Those few candidates are then timed in interleaved rounds (ScaNN's
batched search) and the one with the highest median queries/second is kept (when none
reaches the target, the most accurate setting, with ``met_target=False``). This is what TFRS's ScaNN layer
leaves to the user; its fixed defaults reach recall@10 of 0.36–0.55 (DESIGN.md §3).
"""

import dataclasses
import time
from typing import List

import numpy as np

from twotower.index.brute_force import recall_at_k


@dataclasses.dataclass
class TuneResult:
    """What the tuner chose and what it measured (recall and QPS at the choice)."""

    num_leaves_to_search: int
    reorder: int
    recall: float
    qps: float
    target_recall: float
    k: int
    met_target: bool
    trials: List[dict]

    def to_dict(self):
        d = dataclasses.asdict(self)
        d.pop("trials")
        return d


def _grid_leaves(num_leaves):
    if not num_leaves:
        return [0]
    fractions = [0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.04, 0.05, 0.07, 0.1,
                 0.15, 0.2, 0.3, 0.5]
    out = sorted({max(1, min(num_leaves, int(round(f * num_leaves)))) for f in fractions})
    return out


def _grid_reorder(config, k, n):
    if config.brute_force:
        return [0]
    base = [2 * k, 30, 40, 60, 80, 100, 150, 200, 300, 400, 800]
    return sorted({min(n, max(k, r)) for r in base})


def _timed_search(index, queries, k, leaves, reorder, repeats):
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        ids, _ = index.search(queries, k, num_leaves_to_search=leaves or None,
                              reorder=reorder)
        times.append(time.perf_counter() - t0)
    return ids, len(queries) / float(np.median(times))


def tune(index, queries, *, target_recall=0.95, k=10, leaves_grid=None, reorder_grid=None,
         repeats=3, apply=True, progress=True):
    """Picks leaves-to-search and reorder size reaching ``target_recall`` at top-``k``.

    Args:
      index: a ScannIndex.
      queries: sample query embeddings [Q, d] (a few hundred to a few thousand).
      target_recall: recall@k against exact search to reach, in (0, 1].
      k: the k of recall@k.
      leaves_grid, reorder_grid: override the candidate values.
      repeats: timing repeats per setting (median taken).
      apply: set the chosen knobs on ``index``.

    Returns:
      A TuneResult (``.trials`` lists every setting measured).
    """
    from tqdm.auto import tqdm

    if not 0 < target_recall <= 1:
        raise ValueError(f"target_recall must be in (0, 1], got {target_recall!r}")
    if not isinstance(k, int) or not 1 <= k <= index.size:
        raise ValueError(f"k must be an int in [1, {index.size}], got {k!r}")
    index.prepare_queries(queries)  # validates shape and dtype before any work
    q = np.asarray(queries, dtype=np.float32)
    truth, _ = index.exact_search(q, k)
    config = index.config
    leaves_grid = list(leaves_grid) if leaves_grid is not None else _grid_leaves(config.num_leaves)
    reorder_grid = (list(reorder_grid) if reorder_grid is not None
                    else _grid_reorder(config, k, index.size))
    trials = []

    def recall_of(leaves, reorder):
        ids, _ = index.search(q, k, num_leaves_to_search=leaves or None, reorder=reorder)
        r = recall_at_k(ids, truth)
        trials.append(dict(num_leaves_to_search=leaves, reorder=reorder, recall=r))
        return r

    # Phase 1 (recall only, untimed): per leaves value, the smallest reorder reaching the
    # target -- the first grid value that does, then bisection down to within 5%.
    candidates = []
    bar = tqdm(total=len(leaves_grid), desc="tuning ScaNN", disable=not progress, leave=False)
    for leaves in leaves_grid:
        bar.update(1)
        low, met = k - 1, None
        for reorder in reorder_grid:
            r = recall_of(leaves, reorder)
            if r >= target_recall:
                met = (reorder, r)
                break
            low = reorder
        if met is None:
            continue  # more leaves may reach it
        high, high_recall = met
        while high > 0 and high - low > max(2, 0.05 * high):
            mid = (low + high) // 2
            r = recall_of(leaves, mid)
            if r >= target_recall:
                high, high_recall = mid, r
            else:
                low = mid
        if candidates and high >= candidates[-1][1]:
            break  # more leaves no longer lets the reorder shrink: only slower from here
        candidates.append((leaves, high, high_recall))
        if high <= k or len(candidates) >= 4:
            break
    bar.close()

    # Phase 2 (timed): the candidates in interleaved rounds, so that load from other
    # processes falls on all of them alike; the highest median QPS wins.
    if candidates:
        times = {c: [] for c in candidates}
        for _ in range(max(1, repeats)):
            for c in candidates:
                times[c].append(_timed_search(index, q, k, c[0], c[1], 1)[1])
        qps = {c: float(np.median(v)) for c, v in times.items()}
        leaves, reorder, recall = max(candidates, key=lambda c: qps[c])
        choice = dict(num_leaves_to_search=leaves, reorder=reorder, recall=recall,
                      qps=qps[(leaves, reorder, recall)])
        meeting = True
    else:
        best = max(trials, key=lambda t: t["recall"])
        _, best_qps = _timed_search(index, q, k, best["num_leaves_to_search"],
                                    best["reorder"], max(1, repeats))
        choice = dict(best, qps=best_qps)
        meeting = False
    result = TuneResult(num_leaves_to_search=choice["num_leaves_to_search"],
                        reorder=choice["reorder"], recall=choice["recall"], qps=choice["qps"],
                        target_recall=target_recall, k=k, met_target=meeting,
                        trials=trials)
    if apply:
        index.set_search_params(num_leaves_to_search=result.num_leaves_to_search or None,
                                reorder=result.reorder)
    return result
