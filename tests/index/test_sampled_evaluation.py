"""index/sampled_evaluation.py against the exact report of metrics/retrieval_report.py."""

import numpy as np
import pytest

from twotower.index import sampled_evaluation as sampled
from twotower.metrics.ranking import top_k
from twotower.metrics.retrieval_report import popularity_report, retrieval_report


def _task(num_queries=300, num_items=90, dim=8, seed=0):
    rng = np.random.default_rng(seed)
    u = rng.normal(size=(num_queries, dim)).astype(np.float32)
    v = rng.normal(size=(num_items, dim)).astype(np.float32)
    targets = rng.integers(0, num_items, num_queries)
    exclusions = [rng.choice(num_items, rng.integers(0, 6), replace=False)
                  for _ in range(num_queries)]
    exclusions[0] = np.array([targets[0]])  # a repeat target: left out, as exact does
    head = np.zeros(num_items, bool)
    head[: num_items // 5] = True
    return u, v, targets, exclusions, head


def test_exact_lists_give_the_exact_report():
    u, v, targets, exclusions, head = _task()
    found, _ = top_k(u, v, len(v), exclude=exclusions)  # every item ranked: nothing cut
    got = sampled.report_from_lists(found, targets, exclusions, head, len(v))
    want = retrieval_report(u, v, targets, exclusions, head)
    for key in ("recall@10", "recall@50", "ndcg@10", "mrr", "coverage@50", "head_recall@50",
                "tail_recall@50", "num_queries", "repeat_targets"):
        assert got[key] == pytest.approx(want[key], abs=1e-9), key


def test_popularity_lists_give_the_exact_popularity_report():
    _, v, targets, exclusions, head = _task()
    counts = np.random.default_rng(1).integers(0, 50, len(v))
    got = sampled.report_from_lists(sampled.popularity_lists(counts, exclusions, 100),
                                    targets, exclusions, head, len(v))
    want = popularity_report(counts, targets, exclusions, head)
    for key in ("recall@10", "recall@50", "ndcg@10", "coverage@50"):
        assert got[key] == pytest.approx(want[key], abs=1e-9), key


def test_index_report_is_close_to_exact_and_samples_are_uniform_and_seeded():
    u, v, targets, exclusions, head = _task(num_queries=600, num_items=2000, dim=16)
    got = sampled.index_report(u, v, targets, exclusions, head, target_recall=0.95,
                               progress=False)
    want = retrieval_report(u, v, targets, exclusions, head)
    assert got["index_eval_recall@10"] >= 0.9
    assert got["recall@50"] == pytest.approx(want["recall@50"], abs=0.03)
    rows = sampled.sample_queries(1000, 100, seed=3)
    assert len(set(rows.tolist())) == 100 and rows.max() < 1000
    assert np.array_equal(rows, sampled.sample_queries(1000, 100, seed=3))
    assert np.array_equal(sampled.sample_queries(50, 100), np.arange(50))


def test_index_report_searched_in_batches_is_close_to_exact(monkeypatch):
    u, v, targets, exclusions, head = _task(num_queries=600, num_items=2000, dim=16)
    monkeypatch.setattr(sampled, "SEARCH_BATCH", 7)  # 600 queries in 86 batches
    got = sampled.index_report(u, v, targets, exclusions, head, target_recall=0.95,
                               progress=False)
    want = retrieval_report(u, v, targets, exclusions, head)
    assert got["num_queries"] == want["num_queries"]
    assert got["repeat_targets"] == want["repeat_targets"]
    assert got["recall@50"] == pytest.approx(want["recall@50"], abs=0.03)
