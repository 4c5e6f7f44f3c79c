"""Choose ScaNN's knobs for a target recall at the least serving cost, measured against
brute force.

For sample queries Q (|Q| = n), the tuner computes the exact top-k with numpy; for a
setting, each query's recall is r_q = |ScaNN_k(q) ∩ exact_k(q)| / k. A setting meets the
target when the one-sided lower confidence bound on the mean recall does (normal /
central-limit bound on the per-query mean):

    LB = r̄ − z_c · s / √n,    r̄ = mean_q r_q,   s = sample std of r_q (ddof = 1),
    z_c = Φ⁻¹(c)  (c = ``confidence``, 0.95 → z = 1.645)

so that the figure on held-out queries from the same distribution clears the target
too. ``confidence=None`` uses r̄ itself.

Search-time knobs. With >= 20 queries every other one is held back. For each
leaves-to-search value from few to many, the tuner finds on the other half the smallest
reorder size (never below k: the reorder stage must hold the k served) whose bound
reaches the target (a grid, then bisection), then raises it until the bound also reaches
the target on the held-back half and on all queries. Choosing the smallest setting that
passes on a sample favours lucky samples (0.947 on fresh queries for a bound of 0.950 at
1M cosine); the held-back half never influenced the choice, so its bound is an honest
check. The scan stops once more leaves no longer let the reorder shrink. Those few
candidates are then timed in interleaved rounds (load from other processes falls on all
of them alike), each pass after the CPU caches were flushed (:class:`CacheEvictor`: no
pass inherits what the one before it cached for the same queries), and ranked by the
objective:

* ``objective="latency"`` (the default): what serving does -- the median seconds of one
  ``index.search(q, k)`` call, one query per call (the path `twotower serve` takes for
  /u2i and /i2i); batched queries/second (``index.search(Q, k)``) decides between
  settings within 3% of the fastest.
* ``objective="batch"``: batched queries/second only.

When no setting reaches the target, the most accurate one seen is kept, with
``met_target=False``.

Build-time knobs (``build_grid``): the number of leaves, dimensions per AH block, the
anisotropic threshold and SOAR spilling change the built index, so each variant is a
rebuild over the index's own vectors (the full corpus: the leaves and reorder a recall
needs depend on its size) with the variant's knobs set on top of the best build so far
(a coordinate search: a knob that won stays for the next variant), tuned as above, then
timed against the best so far in interleaved rounds. A variant that meets the target beats one that does not; otherwise
the objective decides. ``build_grid="auto"`` takes a small grid from size rules
(:func:`build_candidates`). ``budget_s`` bounds the whole tuning: a rebuild is started only
while the time left covers the longest build-and-tune so far (the index as given counted
as one). ``TuneResult.tuning_seconds``
records what tuning took.

Tune for the k that will be served (the server's largest k): the index records it
(``config.tuned_k``) and warns when a search asks for more. This is what TFRS's ScaNN
layer leaves to the user; its fixed defaults reach recall@10 of 0.36–0.55 on 100k–1M
clustered corpora.
"""

import dataclasses
import math
import os
import statistics
import time
from typing import List, Optional

import numpy as np


@dataclasses.dataclass
class TuneResult:
    """What the tuner chose and what it measured at the choice.

    ``recall`` is the mean per-query recall@k over all tuning queries at the choice,
    ``recall_lower_bound`` its bound, ``met_target`` whether the bound reached the target.
    ``qps`` is the objective's figure: single queries per second through ``index.search``
    (1 / the median latency) for ``objective="latency"``, batched queries per second for
    ``"batch"``; ``latency_ms`` (median single query) and ``batch_qps`` are both kept.
    ``build`` holds the build-time knobs of the chosen index, ``build_seconds`` what
    building it took, ``builds`` one summary per index tried (the first is the index as
    given; a variant left out for the budget has ``skipped="budget"``, one that changes
    nothing on the best build so far ``skipped="same"``),
    ``tuning_seconds`` the whole tuning. ``trials`` lists every search-time setting whose
    recall was measured.
    """

    num_leaves_to_search: int
    reorder: int
    recall: float
    qps: float
    target_recall: float
    k: int
    met_target: bool
    trials: List[dict]
    recall_lower_bound: float = float("nan")
    confidence: Optional[float] = None
    num_queries: int = 0
    objective: str = "latency"
    latency_ms: float = float("nan")
    batch_qps: float = float("nan")
    build: Optional[dict] = None
    build_seconds: float = float("nan")
    builds: List[dict] = dataclasses.field(default_factory=list)
    tuning_seconds: float = float("nan")

    def to_dict(self):
        d = dataclasses.asdict(self)
        d.pop("trials")
        return d


BUILD_KNOBS = ("num_leaves", "dimensions_per_block", "anisotropic_threshold", "soar_lambda")
OBJECTIVES = ("latency", "batch")
TIE = 0.03  # latencies within 3% of the fastest are a tie, broken by batched QPS
STRONG_THRESHOLD = 0.4  # the anisotropic threshold build_candidates tries beside 0.2


def _grid_leaves(num_leaves):
    if not num_leaves:
        return [0]
    fractions = [0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.04, 0.05,
                 0.07, 0.1, 0.15, 0.2, 0.3, 0.5]
    return sorted({max(1, min(num_leaves, int(round(f * num_leaves)))) for f in fractions})


def _grid_reorder(config, k, n):
    if config.brute_force:
        return [0]
    # up to 3,200: at 10⁷ × 64 (cosine, clustered) the bound stopped at 0.949 with 800;
    # the larger values are only tried where the smaller ones miss the target
    base = [2 * k, 3 * k, 30, 40, 60, 80, 100, 150, 200, 300, 400, 800, 1600, 3200]
    return sorted({min(n, max(k, r)) for r in base})


def per_query_recall(found, truth):
    """r_q = |found_q ∩ truth_q| / |truth_q| for each query (-1 entries ignored) [Q]."""
    out = np.empty(len(truth), dtype=np.float64)
    for j, (f, t) in enumerate(zip(np.asarray(found), np.asarray(truth))):
        t = t[t != -1]
        out[j] = np.isin(f[f != -1], t).sum() / t.size if t.size else 1.0
    return out


def recall_bound(recalls, confidence):
    """(mean, one-sided lower bound) of per-query recalls: r̄ − Φ⁻¹(c)·s/√n (see the
    module docstring); the bound is r̄ itself when ``confidence`` is None."""
    r = np.asarray(recalls, dtype=np.float64)
    mean = float(r.mean())
    if confidence is None or len(r) < 2:
        return mean, mean
    z = statistics.NormalDist().inv_cdf(confidence)
    return mean, mean - z * float(r.std(ddof=1)) / float(np.sqrt(len(r)))


def build_candidates(config, n):
    """Build-time variants worth a rebuild for ``n`` items, in the order tried (size rules;
    the index as given is always tried first and is not listed). Each is a set of
    absolute knob values, applied on top of the best build so far (so wins compound).

    Ordered by what paid off in measurements (docs/benchmarks.md), so that a budget cuts
    the least promising: with a tree (n >= 100k by the size rules), SOAR spilling toggled
    (on by default from 1M: off builds faster and scores each point once), then 1
    dimension per AH block (a finer first pass: at 1M × 64 it cut the reorder a recall of
    0.95 needs from ~150 to ~30 candidates on unit-norm data, and most of a query's cost is
    fetching those from memory), a stronger anisotropic threshold (0.4: more weight on the
    parallel error, which decides the ranking), half and twice the leaves (fewer centroids
    to score per query vs fewer points per leaf searched), 4 dimensions per AH block (half
    the LUT16 work, a coarser first pass) and plain PQ (no threshold). Without a tree: the
    AH knobs only. Brute force: nothing.
    """
    if config.brute_force:
        return []
    out = []
    if config.num_leaves:
        out.append(dict(soar_lambda=None if config.soar_lambda is not None else 1.0))
    if config.dimensions_per_block != 1:
        out.append(dict(dimensions_per_block=1))
    if config.anisotropic_threshold != STRONG_THRESHOLD:
        out.append(dict(anisotropic_threshold=STRONG_THRESHOLD))
    if config.num_leaves:
        for leaves in (config.num_leaves // 2, min(n, 2 * config.num_leaves)):
            if leaves >= 2 and leaves != config.num_leaves:
                out.append(dict(num_leaves=leaves))
    if config.dimensions_per_block != 4:
        out.append(dict(dimensions_per_block=4))
    if config.anisotropic_threshold is not None:
        out.append(dict(anisotropic_threshold=None))
    return out


def rank(measured):
    """Position of the best of ``measured`` [(latency_s or None, batch_qps)]: the lowest
    latency, settings within ``TIE`` of it going to the higher batched QPS; batched QPS
    alone when there are no latencies (objective "batch")."""
    if measured[0][0] is None:
        return max(range(len(measured)), key=lambda j: measured[j][1])
    fastest = min(m[0] for m in measured)
    near = [j for j, m in enumerate(measured) if m[0] <= fastest * (1 + TIE)]
    return max(near, key=lambda j: measured[j][1])


def last_level_cache_bytes(default=32 << 20):
    """The CPU's last-level cache size in bytes from sysfs (``default`` where unknown)."""
    base = "/sys/devices/system/cpu/cpu0/cache"
    best = 0
    try:
        for entry in os.listdir(base):
            try:
                with open(os.path.join(base, entry, "size")) as f:
                    text = f.read().strip().upper()
            except OSError:
                continue
            mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:], 1)
            try:
                best = max(best, int(text.rstrip("KMG")) * mult)
            except ValueError:
                continue
    except OSError:
        pass
    return best or default


class CacheEvictor:
    """Calling it writes a buffer of twice the last-level cache (16-256 MiB), so that what
    an earlier timing pass left in the CPU caches is gone before the next pass starts.

    Why: at 10⁶ items a pass over the same queries right after another pass over them
    finds their leaves and reorder vectors still cached and runs measurably faster per
    query (docs/benchmarks.md has the figures); a pass that follows its twin would win on
    cache state, not on its setting. Evicting before every pass gives each one the same
    start: the state a server is in when new queries arrive after other work.
    """

    def __init__(self, nbytes=None):
        if nbytes is None:
            nbytes = min(256 << 20, max(16 << 20, 2 * last_level_cache_bytes()))
        self._buf = np.zeros(int(nbytes), dtype=np.uint8)

    @property
    def nbytes(self):
        return self._buf.nbytes

    def __call__(self):
        self._buf += 1  # a write to every cache line of the buffer


_DEFAULT = object()


class SearchTimer:
    """Times a setting the way it is served: ``(latency_s, batch_qps)`` where latency_s is
    the median seconds of one ``index.search(q, k)`` call over ``singles``, one [1, d]
    query per call with the knobs set on the index (None for objective "batch"; a median
    of calls, so that a call preempted by another process does not count), and batch_qps
    the queries per second of ``index.search(queries, k)`` in one call. Each pass starts
    after ``evict()`` (default a :class:`CacheEvictor`; None: no eviction), so that no
    setting inherits the caches another setting warmed over the same queries. The tuner
    takes the median over interleaved rounds; a test may pass any callable of the same
    signature."""

    def __init__(self, queries, singles, k, objective, evict=_DEFAULT):
        self.queries, self.singles, self.k, self.objective = queries, singles, k, objective
        self.evict = CacheEvictor() if evict is _DEFAULT else evict

    def _evict(self):
        if self.evict is not None:
            self.evict()

    def __call__(self, index, leaves, reorder):
        latency = None
        if self.objective == "latency":
            self._evict()
            config = index.config
            index.set_search_params(num_leaves_to_search=leaves or None, reorder=reorder)
            try:
                search, k, clock = index.search, self.k, time.perf_counter
                calls = []
                for v in self.singles:
                    t0 = clock()
                    search(v, k)
                    calls.append(clock() - t0)
                latency = float(np.median(calls))
            finally:
                index.config = config
        self._evict()
        t0 = time.perf_counter()
        index.search(self.queries, self.k, num_leaves_to_search=leaves or None,
                     reorder=reorder)
        return latency, len(self.queries) / (time.perf_counter() - t0)


def _measure(setups, timer, repeats):
    """Interleaved rounds over ``setups`` [(activate, leaves, reorder)], each
    ``activate()`` returning the index to time: per setup the median latency (or None)
    and median batched QPS."""
    lat = [[] for _ in setups]
    bqps = [[] for _ in setups]
    for _ in range(max(1, repeats)):
        for j, (activate, leaves, reorder) in enumerate(setups):
            latency, qps = timer(activate(), leaves, reorder)
            if latency is not None:
                lat[j].append(latency)
            bqps[j].append(qps)
    return [(float(np.median(a)) if a else None, float(np.median(b)))
            for a, b in zip(lat, bqps)]


def _check_args(index, target_recall, k, confidence, objective, budget_s, build_grid):
    if isinstance(target_recall, bool) or not isinstance(target_recall, (int, float)) \
            or not 0 < target_recall <= 1:
        raise ValueError(f"target_recall must be in (0, 1], got {target_recall!r}")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= index.size:
        raise ValueError(f"k must be an int in [1, {index.size}], got {k!r}")
    if confidence is not None and (isinstance(confidence, bool)
                                   or not isinstance(confidence, (int, float))
                                   or not 0.5 < confidence < 1):
        raise ValueError(f"confidence must be in (0.5, 1) or None, got {confidence!r}")
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be 'latency' or 'batch', got {objective!r}")
    if budget_s is not None and (isinstance(budget_s, bool)
                                 or not isinstance(budget_s, (int, float)) or budget_s < 0):
        raise ValueError(f"budget_s must be a number of seconds >= 0, got {budget_s!r}")
    if build_grid is None:
        return []
    if isinstance(build_grid, str):
        if build_grid != "auto":
            raise ValueError(f"build_grid must be None, 'auto' or a list of dicts, "
                             f"got {build_grid!r}")
        return build_candidates(index.config, index.size)
    changes = [dict(c) for c in build_grid]
    for c in changes:
        bad = sorted(set(c) - set(BUILD_KNOBS))
        if bad:
            raise ValueError(f"build_grid entries may change {BUILD_KNOBS}, got {bad}")
    return [] if index.config.brute_force else changes


def _variant(config, change):
    """``config`` with the build-time ``change``; a new leaf count starts the search at
    1/30 of its leaves (the tuner replaces it)."""
    change = dict(change)
    if change.get("num_leaves"):
        change.setdefault("num_leaves_to_search",
                          max(1, min(change["num_leaves"], change["num_leaves"] // 30)))
    return dataclasses.replace(config, **change)


def _build_knobs(config):
    return {name: getattr(config, name) for name in BUILD_KNOBS}


class _SearchTuning:
    """Phase 1 (recall only, untimed) over one built index: the candidate settings that
    meet the target, each validated on the held-back queries (module docstring)."""

    def __init__(self, q, truth, k, target, confidence, leaves_grid, reorder_grid, trials):
        self.q, self.truth, self.k = q, truth, k
        self.target, self.confidence = target, confidence
        self.leaves_grid, self.reorder_grid, self.trials = leaves_grid, reorder_grid, trials
        if len(q) >= 20:  # every other query held back
            self.sel, self.val = np.arange(0, len(q), 2), np.arange(1, len(q), 2)
        else:
            self.sel, self.val = np.arange(len(q)), None

    def recalls(self, index, rows, leaves, reorder, label, stage):
        ids, _ = index.search(self.q[rows], self.k, num_leaves_to_search=leaves or None,
                              reorder=reorder)
        r = per_query_recall(ids, self.truth[rows])
        mean, bound = recall_bound(r, self.confidence)
        self.trials.append(dict(num_leaves_to_search=leaves, reorder=reorder, recall=mean,
                                recall_lower_bound=bound, build=label, stage=stage))
        return r, mean, bound

    def smallest_reorder(self, index, leaves, grid_r, label):
        """The smallest reorder whose bound on the selection half reaches the target: the
        first grid value that does, then bisection down to within 5% (staying above
        k - 1); None when no grid value does."""
        low, high = self.k - 1, None
        for reorder in grid_r:
            if self.recalls(index, self.sel, leaves, reorder, label, "select")[2] \
                    >= self.target:
                high = reorder
                break
            low = reorder
        if high is None:
            return None
        while high > 0 and high - low > max(2, 0.05 * high):
            mid = (low + high) // 2
            if self.recalls(index, self.sel, leaves, mid, label, "select")[2] >= self.target:
                high = mid
            else:
                low = mid
        return high

    def validated(self, index, leaves, reorder, limit, label):
        """(reorder, mean, bound over all queries) at the smallest reorder from ``reorder``
        up (15% steps) whose bound reaches the target on the held-back half and on all
        queries, or None below ``limit``."""
        while True:
            r, mean, bound = self.recalls(index, slice(None), leaves, reorder, label,
                                          "validate")
            held = bound if self.val is None else recall_bound(r[self.val],
                                                               self.confidence)[1]
            self.trials[-1]["held_back_lower_bound"] = held
            if bound >= self.target and held >= self.target:
                return reorder, mean, bound
            if reorder == 0 or reorder >= limit:
                return None
            reorder = min(limit, max(reorder + 2, int(math.ceil(reorder * 1.15))))

    def __call__(self, index, label, progress):
        """(met_target, [(leaves, reorder, mean, bound)]): the candidates that met the
        target, or the most accurate setting seen when none did."""
        from tqdm.auto import tqdm

        config, n = index.config, index.size
        grid_l = [0] if not config.num_leaves else (
            list(self.leaves_grid) if self.leaves_grid is not None
            else _grid_leaves(config.num_leaves))
        if config.brute_force:
            grid_r = [0]
        elif self.reorder_grid is not None:
            grid_r = sorted({min(n, max(self.k, int(r))) for r in self.reorder_grid})
        else:
            grid_r = _grid_reorder(config, self.k, n)
        first = len(self.trials)
        candidates = []
        # leave=True, and the total cut to the leaves actually tried: the bar ends
        # complete on its own line, so the next printed line never lands on it
        bar = tqdm(total=len(grid_l), desc="tuning ScaNN", disable=not progress, leave=True)
        for leaves in grid_l:
            bar.update(1)
            reorder = self.smallest_reorder(index, leaves, grid_r, label)
            if reorder is None:
                continue  # more leaves may reach it
            found = self.validated(index, leaves, reorder,
                                   min(n, max(grid_r[-1], 4 * reorder)), label)
            if found is None:
                continue
            if candidates and found[0] >= candidates[-1][1]:
                break  # more leaves no longer lets the reorder shrink: only slower
            candidates.append((leaves,) + found)
            if found[0] <= self.k or len(candidates) >= 4:
                break
        bar.total = bar.n
        bar.refresh()
        bar.close()
        if candidates:
            return True, candidates
        best = max(self.trials[first:], key=lambda t: (t["recall_lower_bound"], t["recall"]))
        _, mean, bound = self.recalls(index, slice(None), best["num_leaves_to_search"],
                                      best["reorder"], label, "validate")
        return False, [(best["num_leaves_to_search"], best["reorder"], mean, bound)]


def tune(index, queries, *, target_recall=0.95, k=10, confidence=0.95, leaves_grid=None,
         reorder_grid=None, repeats=3, apply=True, progress=True, objective="latency",
         build_grid=None, budget_s=None, timing_queries=200, timer=None):
    """Picks the knobs whose recall@``k`` bound reaches the target at the least serving cost.

    Args:
      index: a ScannIndex.
      queries: sample query embeddings [Q, d] (a few hundred to a few thousand; more
        queries tighten the bound, so less margin is needed).
      target_recall: recall@k against exact search to reach, in (0, 1].
      k: the k that will be served (e.g. the server's largest k); recall@k is measured
        at it, the reorder size is never below it, and the index records it.
      confidence: one-sided level c of the lower bound r̄ − Φ⁻¹(c)·s/√n that must reach
        the target (module docstring), in (0.5, 1); None tunes on the sample mean.
      leaves_grid, reorder_grid: override the candidate values (reorder values below k
        are raised to k).
      repeats: interleaved timing rounds per comparison (median taken).
      apply: set the chosen knobs (and ``tuned_k = k``) on ``index``; a rebuild that won
        replaces the index's searcher (same items, same positions). False leaves the
        index as it was.
      progress: a progress bar.
      objective: "latency" (median single-query latency through ``index.search``, then
        batched QPS) or "batch" (batched QPS), see the module docstring.
      build_grid: None (search-time knobs only), "auto" (:func:`build_candidates`), or a
        list of dicts of build-time fields (``num_leaves``, ``dimensions_per_block``,
        ``anisotropic_threshold``, ``soar_lambda``) to try as rebuilds.
      budget_s: seconds the whole tuning may take when rebuilding (None: 600); a rebuild
        whose expected build-and-tune time no longer fits is not started.
      timing_queries: queries timed one at a time per setting and round.
      timer: what measures a setting, a callable ``(index, leaves, reorder) ->
        (latency_s or None, batch_qps)``; None: :class:`SearchTimer` over the queries.

    Returns:
      A TuneResult (see its docstring).
    """
    started = time.perf_counter()
    changes = _check_args(index, target_recall, k, confidence, objective, budget_s,
                          build_grid)
    k = int(k)
    index.prepare_queries(queries)  # validates shape, dtype and emptiness before any work
    q = np.ascontiguousarray(queries, dtype=np.float32)
    if q.ndim == 1:
        q = q[None, :]
    if timer is None:
        singles = [q[j:j + 1] for j in range(max(1, min(len(q), int(timing_queries))))]
        timer = SearchTimer(q, singles, k, objective)
    truth, _ = index.exact_search(q, k)
    trials = []
    search_tuning = _SearchTuning(q, truth, k, target_recall, confidence, leaves_grid,
                                  reorder_grid, trials)

    def tuned(label, build_seconds):
        """The current index's best setting: a dict (searcher and config included)."""
        met, candidates = search_tuning(index, label, progress)
        measured = _measure([(lambda: index, c[0], c[1]) for c in candidates], timer,
                            repeats)
        j = rank(measured)
        c = candidates[j]
        return dict(num_leaves_to_search=c[0], reorder=c[1], recall=c[2],
                    recall_lower_bound=c[3], met_target=met, latency_s=measured[j][0],
                    batch_qps=measured[j][1], searcher=index.searcher, config=index.config,
                    build_seconds=build_seconds)

    given = (index.searcher, index.config)
    t0 = time.perf_counter()
    best = tuned("given", float(getattr(index, "build_seconds", float("nan"))))
    # what a rebuild is expected to take before one was timed: the given index's build
    # (when known) and its tuning (the exact top-k, computed once above, not included)
    spent = [time.perf_counter() - t0 + (0.0 if math.isnan(best["build_seconds"])
                                         else best["build_seconds"])]
    builds = [dict(_build_knobs(given[1]), build_seconds=best["build_seconds"],
                   **_summary(best))]
    budget = 600.0 if budget_s is None else float(budget_s)
    for change in changes:
        # on top of the best build so far: a knob that paid off stays for the next one
        config = _variant(best["config"], change)
        if _build_knobs(config) == _build_knobs(best["config"]):
            builds.append(dict(_build_knobs(config), skipped="same"))
            continue
        elapsed = time.perf_counter() - started
        if elapsed + max(spent) > budget:
            builds.append(dict(_build_knobs(config), skipped="budget"))
            continue
        from twotower.index.builder import build_searcher

        t0 = time.perf_counter()
        index._replace_searcher(build_searcher(index._vectors, config), config)
        build_s = time.perf_counter() - t0
        cand = tuned(_build_knobs(config), build_s)
        spent.append(time.perf_counter() - t0)
        # the duel: best so far against this build, interleaved, through index.search
        pair = [best, cand]

        def activate(entry):
            def go():
                index._replace_searcher(entry["searcher"], entry["config"])
                return index
            return go

        measured = _measure([(activate(e), e["num_leaves_to_search"], e["reorder"])
                             for e in pair], timer, repeats)
        for e, m in zip(pair, measured):
            e["latency_s"], e["batch_qps"] = m
        builds.append(dict(_build_knobs(config), build_seconds=build_s,
                           tune_seconds=spent[-1] - build_s, **_summary(cand)))
        if cand["met_target"] != best["met_target"]:
            best = cand if cand["met_target"] else best
        else:
            best = pair[rank(measured)]
        del pair, cand  # the loser's searcher is freed now, not at the next build

    latency = best["latency_s"]
    result = TuneResult(
        num_leaves_to_search=best["num_leaves_to_search"], reorder=best["reorder"],
        recall=best["recall"],
        qps=1.0 / latency if (objective == "latency" and latency) else best["batch_qps"],
        target_recall=target_recall, k=k, met_target=best["met_target"], trials=trials,
        recall_lower_bound=best["recall_lower_bound"], confidence=confidence,
        num_queries=len(q), objective=objective,
        latency_ms=latency * 1e3 if latency else float("nan"),
        batch_qps=best["batch_qps"], build=_build_knobs(best["config"]),
        build_seconds=best["build_seconds"], builds=builds,
        tuning_seconds=time.perf_counter() - started)
    if apply:
        index._replace_searcher(best["searcher"], best["config"])
        if best["searcher"] is not given[0]:
            index.build_seconds = best["build_seconds"]
        index.set_search_params(num_leaves_to_search=result.num_leaves_to_search or None,
                                reorder=result.reorder, tuned_k=k)
    else:
        index._replace_searcher(*given)
    return result


def _summary(entry):
    return dict(num_leaves_to_search=entry["num_leaves_to_search"], reorder=entry["reorder"],
                recall=entry["recall"], recall_lower_bound=entry["recall_lower_bound"],
                met_target=entry["met_target"],
                latency_ms=(entry["latency_s"] * 1e3 if entry["latency_s"] else None),
                batch_qps=entry["batch_qps"])
