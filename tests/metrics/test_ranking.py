import numpy as np
import pytest

from twotower.metrics.ranking import (evaluate, popularity_scores, positive_ranks,
                                        retrieval_metrics, top_k)
from twotower.metrics.retrieval_report import retrieval_report

Q = np.array([[1.0, 0.0], [0.0, 1.0]], np.float32)
V = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]], np.float32)


def test_metrics_worked_by_hand():
    # query 0: positive 1 (score .9), item 0 excluded → rank 1.
    # query 1: positives {3, 2}, scores .9 and 1.0 → ranks 2 and 1; item 2 is a positive,
    # so with repeats="all" it is not excluded even though listed.
    m = retrieval_metrics(Q, V, [1, [3, 2]], ks=(1, 2), exclude=[[0], [2]], repeats="all")
    assert m["recall@1"] == pytest.approx((1 + 0.5) / 2)
    assert m["recall@2"] == pytest.approx(1.0)
    assert m["mrr"] == pytest.approx(1.0)
    ids, scores = top_k(Q, V, 2, exclude=[[0], []])
    np.testing.assert_array_equal(ids, [[1, 3], [2, 3]])


def test_popularity_scores_break_ties_by_index():
    s = popularity_scores([5, 5, 1])[:, 0]
    assert s[0] > s[1] > s[2]
    # the tied item 1 ranks second, not first
    assert positive_ranks(np.ones((1, 1), np.float32), s[:, None], [1])[0][0] == 2


def test_bad_input_is_named():
    with pytest.raises(ValueError, match=r"positives must have one entry per query \(2\), got 5"):
        retrieval_metrics(Q, V, np.arange(5))
    with pytest.raises(ValueError, match=r"exclude must hold item ids in \[0, 4\), got -1"):
        top_k(Q, V, 1, exclude=[[-1], []])
    with pytest.raises(ValueError, match=r"k must be an int in \[1, num_items=4\], got 5"):
        top_k(Q, V, 5)


def test_repeat_consumption_worked_by_hand():
    # query 0: positives {0, 1}, item 0 already seen (a repeat); scores 1.0, .9, 0, .1.
    # query 1: positive 2, items 2 and 3 seen: its only positive is a repeat.
    positives, seen = [[0, 1], [2]], [[0], [2, 3]]
    ks = (1, 2)
    every = evaluate(Q, V, positives, exclude=seen, ks=ks, repeats="all")
    # "all": repeats stay rankable. q0 ranks (1, 2), q1 rank 1 (item 3 still excluded)
    assert every["recall@1"] == pytest.approx((0.5 + 1.0) / 2)
    assert every["recall@2"] == pytest.approx(1.0) and every["mrr"] == pytest.approx(1.0)
    assert (every["num_queries"], every["num_positives"]) == (2, 3)
    new = evaluate(Q, V, positives, exclude=seen, ks=ks)  # default: what serving returns
    # "new": q0 keeps item 1, ranked with item 0 excluded → rank 1; q1 has nothing new
    assert new["repeats"] == "new"
    assert new["recall@1"] == pytest.approx(1.0) and new["mrr"] == pytest.approx(1.0)
    assert (new["num_queries"], new["num_positives"], new["num_repeats"]) == (1, 1, 2)
    miss = evaluate(Q, V, positives, exclude=seen, ks=ks, repeats="miss")
    # "miss": q0 ranks (inf, 1), q1 rank inf
    assert miss["recall@1"] == pytest.approx((0.5 + 0.0) / 2)
    assert miss["recall@2"] == pytest.approx(0.25)
    assert miss["ndcg@2"] == pytest.approx((1.0 / (1.0 + 1.0 / np.log2(3))) / 2)
    assert miss["mrr"] == pytest.approx(0.5)
    both = evaluate(Q, V, positives, exclude=seen, ks=ks, repeats=("new", "all"))
    assert both["new"] == new and both["all"] == every
    assert retrieval_metrics(Q, V, positives, exclude=seen, ks=ks) == {
        k: v for k, v in new.items() if k.startswith(("recall", "ndcg", "mrr"))}
    with pytest.raises(ValueError, match=r"repeats must be one of .*got 'seen'"):
        evaluate(Q, V, positives, exclude=seen, repeats="seen")


def test_retrieval_report_leaves_repeat_targets_out_by_default():
    # q0's target 1 is new (rank 1 with item 0 excluded); q1's target 2 was already seen
    head = np.array([True, True, False, False])
    new = retrieval_report(Q, V, [1, 2], [[0], [2]], head, k_cov=2, k_split=2)
    assert new["num_queries"] == 1 and new["repeat_targets"] == 1
    assert new["recall@10"] == 1.0 and new["head_recall@2"] == 1.0
    assert np.isnan(new["tail_recall@2"])
    every = retrieval_report(Q, V, [1, 2], [[0], [2]], head, k_cov=2, k_split=2,
                             repeats="all")
    assert every["num_queries"] == 2 and every["recall@10"] == 1.0
    assert every["tail_recall@2"] == 1.0
    miss = retrieval_report(Q, V, [1, 2], [[0], [2]], head, k_cov=2, k_split=2,
                            repeats="miss")
    assert miss["num_queries"] == 2 and miss["recall@10"] == 0.5 and miss["mrr"] == 0.5
    assert new["coverage@2"] == every["coverage@2"] == miss["coverage@2"]


def test_top_k_in_item_blocks_equals_one_block(monkeypatch):
    from twotower.metrics import ranking as evaluation

    rng = np.random.default_rng(5)
    q = rng.normal(size=(37, 8)).astype(np.float32)
    v = rng.normal(size=(1000, 8)).astype(np.float32)
    exclude = [list(rng.integers(0, 1000, size=rng.integers(0, 30))) for _ in range(37)]
    want = evaluation.top_k(q, v, 10, exclude=exclude)
    monkeypatch.setattr(evaluation, "MAX_SCORES", 37 * 64)     # item blocks of 64
    got = evaluation.top_k(q, v, 10, exclude=exclude)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_allclose(got[1], want[1], rtol=1e-5)   # BLAS blocks round differently
    with pytest.raises(ValueError, match=r"exclude must hold item ids in \[0, 1000\)"):
        evaluation.top_k(q[:1], v, 10, exclude=[[1000]])
