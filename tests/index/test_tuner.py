import statistics
import warnings

import numpy as np
import pytest

import twotower  # noqa: F401
from twotower.index.brute_force import recall_at_k
from twotower.index.builder import build_index
from twotower.index.tuner import per_query_recall, recall_bound, tune


def test_tuner_reaches_the_target_and_applies_it(corpus):
    items, queries = corpus
    index = build_index(items, distance="cosine", num_leaves=60, num_leaves_to_search=1,
                        reorder=10, brute_force=False)
    result = tune(index, queries, target_recall=0.95, k=10, repeats=1, progress=False)
    assert result.met_target and result.recall >= 0.95 and result.qps > 0
    assert (index.config.num_leaves_to_search, index.config.reorder) == \
        (result.num_leaves_to_search, result.reorder)
    # the recall it reports is the recall the index now gives on those queries
    ids, _ = index.search(queries, 10)
    truth, _ = index.exact_search(queries, 10)
    assert recall_at_k(ids, truth) == pytest.approx(result.recall)
    # a stricter target never picks fewer leaves-and-reorder work than a looser one
    loose = tune(index, queries, target_recall=0.5, k=10, repeats=1, progress=False,
                 apply=False)
    assert loose.recall >= 0.5
    assert len(loose.trials) <= len(result.trials)


def test_unreachable_target_reports_best_effort(corpus):
    items, queries = corpus
    index = build_index(items, num_leaves=60, num_leaves_to_search=1, reorder=10,
                        brute_force=False)
    result = tune(index, queries, target_recall=1.0, leaves_grid=[1], reorder_grid=[10],
                  repeats=1, progress=False)
    assert not result.met_target and result.recall < 1.0


def test_bad_arguments(corpus):
    items, queries = corpus
    index = build_index(items[:500])
    with pytest.raises(ValueError, match="target_recall must be in \\(0, 1\\], got 1.5"):
        tune(index, queries, target_recall=1.5)
    with pytest.raises(ValueError, match=r"k must be an int in \[1, 500\], got 0"):
        tune(index, queries, k=0)


def test_tuned_for_k_never_reorders_fewer_and_warns_beyond_it(corpus):
    items, queries = corpus
    index = build_index(items, distance="cosine", num_leaves=60, num_leaves_to_search=1,
                        reorder=10, brute_force=False)
    result = tune(index, queries, target_recall=0.9, k=50, reorder_grid=[5, 20, 60, 200],
                  repeats=1, progress=False)
    assert result.k == 50 and result.reorder >= 50
    assert all(t["reorder"] >= 50 for t in result.trials)  # grid values below k raised
    assert index.config.tuned_k == 50
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        index.search(queries[:2], 50)  # up to the tuned k: silent
    with pytest.warns(UserWarning, match="k=60 on an index tuned for k=50"):
        index.search(queries[:2], 60)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        index.search(queries[:2], 60)  # once per k
    with pytest.warns(UserWarning, match="k=70"):
        index.search(queries[:2], 70)


def test_the_bound_is_the_one_sided_normal_bound_and_holds_out_of_sample(
        corpus_with_held_out):
    items, queries = corpus_with_held_out
    tune_q, held_q = queries[:400], queries[400:]
    index = build_index(items, distance="cosine", num_leaves=80, num_leaves_to_search=1,
                        reorder=10, brute_force=False)
    result = tune(index, tune_q, target_recall=0.9, k=10, repeats=1, progress=False)
    # the reported bound is r̄ − Φ⁻¹(0.95)·s/√n of the chosen setting's per-query recalls
    ids, _ = index.search(tune_q, 10)
    truth, _ = index.exact_search(tune_q, 10)
    r = per_query_recall(ids, truth)
    z = statistics.NormalDist().inv_cdf(0.95)
    assert result.recall == pytest.approx(r.mean())
    assert result.recall_lower_bound == pytest.approx(r.mean() - z * r.std(ddof=1) / 20.0)
    assert result.met_target and result.recall_lower_bound >= 0.9
    assert (result.confidence, result.num_queries) == (0.95, 400)
    assert result.recall - result.recall_lower_bound > 0  # a real margin
    # the margin is what lets the held-out figure clear the target
    held_ids, _ = index.search(held_q, 10)
    held_truth, _ = index.exact_search(held_q, 10)
    held = per_query_recall(held_ids, held_truth)
    # the held-out mean is itself a sample (ScaNN's tree training is not seeded): allow two
    # of its standard errors below the target, no more (one run measured 0.8995)
    assert recall_at_k(held_ids, held_truth) >= 0.9 - 2 * held.std(ddof=1) / np.sqrt(len(held))
    # without a margin, at the same leaves, the tuner needs no larger reorder (recall
    # only grows with the reorder; the held-back check raises it in 15% steps)
    plain = tune(index, tune_q, target_recall=0.9, k=10, confidence=None, repeats=1,
                 progress=False, apply=False, leaves_grid=[result.num_leaves_to_search])
    assert plain.recall_lower_bound == plain.recall
    assert plain.reorder <= 1.15 * result.reorder + 2


def test_recall_bound_formula():
    mean, bound = recall_bound([1.0, 0.8, 0.9, 0.7], 0.95)
    s = np.std([1.0, 0.8, 0.9, 0.7], ddof=1)
    assert mean == pytest.approx(0.85)
    assert bound == pytest.approx(0.85 - 1.6448536269514722 * s / 2)
    assert recall_bound([1.0, 1.0], 0.99) == (1.0, 1.0)
    assert recall_bound([0.5, 1.0], None) == (0.75, 0.75)
    with pytest.raises(ValueError, match=r"confidence must be in \(0.5, 1\) or None, got 1.2"):
        tune(build_index(np.eye(4, dtype=np.float32)), np.eye(4, dtype=np.float32), k=2,
             confidence=1.2)


# -- what serving does: latency objective, build-time knobs, budget --------------------------
def test_exact_config_tuned_equals_brute_force(corpus):
    items, queries = corpus
    index = build_index(items, distance="cosine", brute_force=True)
    result = tune(index, queries, target_recall=0.99, k=10, repeats=1, progress=False,
                  build_grid="auto")
    assert result.met_target and result.recall == 1.0
    assert len(result.builds) == 1  # nothing to rebuild for an exact index
    assert index.config.brute_force
    got, got_scores = index.search(queries, 10)
    want, want_scores = index.exact_search(queries, 10)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_allclose(got_scores, want_scores, rtol=1e-5, atol=1e-5)
    for q, row in zip(queries[:20], want[:20]):  # the one-query (serving) path too
        np.testing.assert_array_equal(index.search(q, 10)[0][0], row)


def test_build_grid_choice_meets_the_held_out_target(corpus_with_held_out):
    items, queries = corpus_with_held_out
    tune_q, held_q = queries[:400], queries[400:]
    index = build_index(items, distance="cosine", num_leaves=80, num_leaves_to_search=1,
                        reorder=10, brute_force=False)
    result = tune(index, tune_q, target_recall=0.9, k=10, repeats=1, progress=False,
                  build_grid="auto", budget_s=120, timing_queries=50)
    assert result.met_target and result.recall_lower_bound >= 0.9
    assert result.objective == "latency" and result.latency_ms > 0 and result.batch_qps > 0
    assert result.qps == pytest.approx(1e3 / result.latency_ms)
    assert result.tuning_seconds > 0
    tried = [b for b in result.builds if "skipped" not in b]
    assert len(tried) == 8  # the index as given + the 7 size-rule variants
    assert {b["num_leaves"] for b in tried} == {40, 80, 160}
    # the index now is the chosen build, tuned as reported
    assert {k: getattr(index.config, k) for k in result.build} == result.build
    assert (index.config.num_leaves_to_search, index.config.reorder, index.config.tuned_k) \
        == (result.num_leaves_to_search, result.reorder, 10)
    ids, _ = index.search(tune_q, 10)
    truth, _ = index.exact_search(tune_q, 10)
    assert recall_at_k(ids, truth) == pytest.approx(result.recall)
    # held out: the bound's promise, within two standard errors (training is not seeded)
    held_ids, _ = index.search(held_q, 10)
    held_truth, _ = index.exact_search(held_q, 10)
    held = per_query_recall(held_ids, held_truth)
    assert held.mean() >= 0.9 - 2 * held.std(ddof=1) / np.sqrt(len(held))
    # every build tried met the target on its own, or says it did not
    assert all(isinstance(b["met_target"], bool) for b in tried)


def test_budget_and_apply_false_leave_the_index_alone(corpus):
    items, queries = corpus
    index = build_index(items, distance="dot", num_leaves=60, num_leaves_to_search=1,
                        reorder=10, brute_force=False)
    searcher, config = index.searcher, index.config
    r = tune(index, queries, target_recall=0.8, repeats=1, progress=False,
             build_grid="auto", budget_s=0)
    assert [b.get("skipped") for b in r.builds[1:]] == ["budget"] * 7
    assert index.searcher is searcher and index.config.num_leaves == 60
    r = tune(index, queries, target_recall=0.8, repeats=1, progress=False, apply=False,
             build_grid=[{"num_leaves": 30}, {"dimensions_per_block": 1}])
    assert len(r.builds) == 3
    assert index.searcher is searcher and index.config.num_leaves == config.num_leaves
    assert r.build["num_leaves"] in (30, 60)
    r = tune(index, queries, target_recall=0.8, repeats=1, progress=False,
             objective="batch")
    assert r.objective == "batch" and r.qps == r.batch_qps > 0


def test_new_arguments_are_checked(corpus):
    items, queries = corpus
    index = build_index(items[:500])
    with pytest.raises(ValueError, match="objective must be 'latency' or 'batch'"):
        tune(index, queries, objective="qps")
    with pytest.raises(ValueError, match="build_grid must be None, 'auto'"):
        tune(index, queries, build_grid="all")
    with pytest.raises(ValueError, match="build_grid entries may change"):
        tune(index, queries, build_grid=[{"reorder": 5}])
    with pytest.raises(ValueError, match="budget_s must be"):
        tune(index, queries, budget_s=-1)


def test_build_candidates_follow_the_size_rules():
    from twotower.index import config as config_lib
    from twotower.index.tuner import build_candidates

    assert build_candidates(config_lib.for_size(5_000), 5_000) == []
    big = build_candidates(config_lib.for_size(1_000_000), 1_000_000)
    # most promising first (a budget cuts the tail): SOAR off, a finer AH pass, a
    # stronger anisotropic threshold, then the leaves, then the coarser AH variants
    assert big == [{"soar_lambda": None}, {"dimensions_per_block": 1},
                   {"anisotropic_threshold": 0.4}, {"num_leaves": 500},
                   {"num_leaves": 2000}, {"dimensions_per_block": 4},
                   {"anisotropic_threshold": None}]
    mid = build_candidates(config_lib.for_size(300_000), 300_000)
    assert {"soar_lambda": 1.0} in mid
    flat = build_candidates(config_lib.for_size(50_000), 50_000)
    assert all("num_leaves" not in c and "soar_lambda" not in c for c in flat)
    assert {"dimensions_per_block": 1} in flat
    # a knob already at the value a variant sets is not rebuilt for
    fine = config_lib.for_size(1_000_000, dimensions_per_block=1, anisotropic_threshold=0.4)
    assert {"dimensions_per_block": 1} not in build_candidates(fine, 1_000_000)
    assert {"anisotropic_threshold": 0.4} not in build_candidates(fine, 1_000_000)


def test_rebuilds_go_on_from_the_best_build_so_far(corpus):
    """A coordinate search: a variant's knobs are set on top of the best build so far,
    so a knob that won stays; a variant that changes nothing on it is not rebuilt."""
    items, queries = corpus
    index = build_index(items, distance="dot", num_leaves=60, num_leaves_to_search=1,
                        reorder=10, brute_force=False)

    def timer(idx, leaves, reorder):  # fewer leaves and a finer AH pass each pay off
        c = idx.config
        s = 1e-3 - (5e-4 if c.num_leaves == 30 else 0) \
            - (2e-4 if c.dimensions_per_block == 1 else 0)
        return s, 1.0 / s

    result = tune(index, queries, target_recall=0.3, k=10, repeats=1, progress=False,
                  build_grid=[{"num_leaves": 30}, {"dimensions_per_block": 1},
                              {"num_leaves": 30}], timer=timer)
    given, fewer, finer, same = result.builds
    assert (given["num_leaves"], given["dimensions_per_block"]) == (60, 2)
    assert (fewer["num_leaves"], fewer["dimensions_per_block"]) == (30, 2)
    assert (finer["num_leaves"], finer["dimensions_per_block"]) == (30, 1)  # on the winner
    assert same["skipped"] == "same" and "met_target" not in same
    assert all(b["met_target"] for b in (given, fewer, finer))
    assert result.build["num_leaves"] == 30 and result.build["dimensions_per_block"] == 1
    assert (index.config.num_leaves, index.config.dimensions_per_block) == (30, 1)
    ids, _ = index.search(queries, 10)
    truth, _ = index.exact_search(queries, 10)
    assert recall_at_k(ids, truth) == pytest.approx(result.recall)


# -- the objective's choice, with a fake timer (no timing is asserted) ----------------------
def test_rank_takes_the_lowest_latency_and_breaks_near_ties_by_batched_qps():
    from twotower.index.tuner import TIE, rank

    assert rank([(2e-4, 9e3), (1e-4, 1e3), (3e-4, 5e4)]) == 1
    # within TIE of the fastest: the higher batched QPS wins
    assert rank([(1e-4, 1e3), (1e-4 * (1 + TIE / 2), 2e3), (1e-4 * (1 + 2 * TIE), 9e3)]) == 1
    assert rank([(None, 1e3), (None, 3e3), (None, 2e3)]) == 1  # objective "batch"


class FakeTimer:
    """Latency = a fixed cost per leaf searched + per reordered point (a model of ScaNN's
    work), batched QPS its inverse; every call recorded."""

    def __init__(self, per_leaf, per_reorder, objective="latency"):
        self.per_leaf, self.per_reorder, self.objective = per_leaf, per_reorder, objective
        self.calls = []

    def cost(self, leaves, reorder):
        return 1e-6 * (5 + self.per_leaf * leaves + self.per_reorder * reorder)

    def __call__(self, index, leaves, reorder):
        self.calls.append((leaves, reorder, index.searcher))
        s = self.cost(leaves, reorder)
        return (s if self.objective == "latency" else None), 1.0 / s


@pytest.mark.parametrize("per_leaf,per_reorder", [(50.0, 0.01), (0.01, 50.0)])
def test_the_choice_is_the_cheapest_candidate_by_the_timer(corpus, per_leaf, per_reorder):
    """Leaves expensive: the fewest leaves that reach the target win; reorder expensive:
    the smallest reorder wins. Either way the choice met the target and is applied."""
    items, queries = corpus
    index = build_index(items, distance="cosine", num_leaves=60, num_leaves_to_search=1,
                        reorder=10, brute_force=False)
    timer = FakeTimer(per_leaf, per_reorder)
    result = tune(index, queries, target_recall=0.9, k=10, repeats=2, progress=False,
                  timer=timer)
    assert result.met_target and result.recall_lower_bound >= 0.9
    timed = sorted({(leaves, reorder) for leaves, reorder, _ in timer.calls})
    assert timed and all(c[1] >= 10 for c in timed)
    best = min(timed, key=lambda c: timer.cost(*c))
    assert (result.num_leaves_to_search, result.reorder) == best
    assert result.latency_ms == pytest.approx(timer.cost(*best) * 1e3)
    assert result.qps == pytest.approx(1.0 / timer.cost(*best))
    assert (index.config.num_leaves_to_search, index.config.reorder) == best
    # every timed setting met the target on all the queries and the held-back half
    validated = [t for t in result.trials if t["stage"] == "validate"
                 and (t["num_leaves_to_search"], t["reorder"]) in timed]
    assert validated and all(t["recall_lower_bound"] >= 0.9 and
                             t["held_back_lower_bound"] >= 0.9 for t in validated)
    if len(timed) > 1:  # more leaves were only kept where they let the reorder shrink
        leaves_order = sorted(timed)
        assert all(a[1] > b[1] for a, b in zip(leaves_order, leaves_order[1:]))


def test_a_rebuild_that_meets_the_target_beats_a_faster_one_that_does_not(corpus):
    """The duel: the index as given cannot reach the target (1 of 60 leaves searched) but
    is timed as the fastest; the rebuild with a single leaf (every item searched, exact
    with reorder 3000) reaches it and wins anyway. With both meeting it, the timer
    decides."""
    items, queries = corpus
    index = build_index(items, distance="dot", num_leaves=60, num_leaves_to_search=1,
                        reorder=10, brute_force=False)
    given = index.searcher

    def timer(idx, leaves, reorder):
        s = 1e-6 if idx.searcher is given else 1e-3
        return s, 1.0 / s

    result = tune(index, queries, target_recall=0.97, k=10, repeats=1, progress=False,
                  leaves_grid=[1], reorder_grid=[10, 3000], build_grid=[{"num_leaves": 1}],
                  timer=timer)
    first, second = result.builds
    assert not first["met_target"] and first["num_leaves"] == 60
    assert second["num_leaves"] == 1 and second["met_target"] is True
    assert result.met_target and result.build["num_leaves"] == 1
    assert index.searcher is not given and index.config.num_leaves == 1
    ids, _ = index.search(queries, 10)
    truth, _ = index.exact_search(queries, 10)
    assert recall_at_k(ids, truth) == pytest.approx(result.recall)
    # both meet a loose target: the faster (the given index, by this timer) stays
    index = build_index(items, distance="dot", num_leaves=60, num_leaves_to_search=1,
                        reorder=10, brute_force=False)
    given = index.searcher
    result = tune(index, queries, target_recall=0.3, k=10, repeats=1, progress=False,
                  build_grid=[{"num_leaves": 30}], timer=timer)
    assert [b["met_target"] for b in result.builds] == [True, True]
    assert result.build["num_leaves"] == 60 and index.searcher is given


def test_the_default_timer_times_the_serving_path(corpus):
    from twotower.index.tuner import SearchTimer

    items, queries = corpus
    index = build_index(items, distance="cosine", num_leaves=60, num_leaves_to_search=2,
                        reorder=30, brute_force=False)
    calls = []
    search = index.search

    def spy(q, k, **kw):
        calls.append((np.shape(q), k, kw, index.config.num_leaves_to_search,
                      index.config.reorder))
        return search(q, k, **kw)

    index.search = spy
    singles = [queries[j:j + 1] for j in range(5)]
    latency, qps = SearchTimer(queries, singles, 10, "latency")(index, 7, 40)
    assert latency > 0 and qps > 0
    # one [1, d] query per call with the knobs set on the index (as a server calls it),
    # then one batched call with the knobs as arguments; the index's knobs are restored
    assert calls[:5] == [((1, 16), 10, {}, 7, 40)] * 5
    assert calls[5] == ((100, 16), 10, dict(num_leaves_to_search=7, reorder=40), 2, 30)
    assert (index.config.num_leaves_to_search, index.config.reorder) == (2, 30)
    latency, qps = SearchTimer(queries, singles, 10, "batch")(index, 7, 40)
    assert latency is None and qps > 0 and len(calls) == 7


def test_every_timing_pass_starts_with_the_caches_flushed(corpus):
    from twotower.index.tuner import CacheEvictor, SearchTimer, last_level_cache_bytes

    items, queries = corpus
    index = build_index(items, distance="cosine", num_leaves=60, num_leaves_to_search=2,
                        reorder=30, brute_force=False)
    events = []
    search = index.search
    index.search = lambda q, k, **kw: (events.append("search"), search(q, k, **kw))[1]
    singles = [queries[j:j + 1] for j in range(3)]
    SearchTimer(queries, singles, 10, "latency",
                evict=lambda: events.append("evict"))(index, 2, 30)
    # the flush precedes the single-query pass and the batched call, never inside a pass
    assert events == ["evict", "search", "search", "search", "evict", "search"]
    events.clear()
    SearchTimer(queries, singles, 10, "batch", evict=None)(index, 2, 30)
    assert events == ["search"]
    # the default evictor spans twice the last-level cache (16-256 MiB) and writes it all
    evict = SearchTimer(queries, singles, 10, "latency").evict
    assert isinstance(evict, CacheEvictor)
    assert evict.nbytes == min(256 << 20, max(16 << 20, 2 * last_level_cache_bytes()))
    small = CacheEvictor(4096)
    small()
    small()
    assert (small._buf == 2).all()
