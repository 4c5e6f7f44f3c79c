import numpy as np
import pytest

from twotower.metrics.item_to_item import (cooccurrence_agreement, cooccurrence_scores,
                                            i2i_hit_rate)


def test_i2i_hit_rate_worked_by_hand():
    v = np.array([[1, 0], [0.9, 0.1], [0, 1], [0.1, 0.9], [0, 0]], np.float32)
    # query 0 → target 1: its nearest (cos .99), rank 1. Query 2 → target 1, item 3
    # excluded: cos(2, 1) = .11 > cos(2, 0) = 0, rank 1. Query 2 → target 4: no vector, a miss.
    m = i2i_hit_rate(v, [0, 2, 2], [1, 1, 4], exclude=[[], [3], []], k=1,
                     item_counts=[5, 1, 1, 9, 0])
    assert m["hr@1"] == pytest.approx(2 / 3)
    assert m["eval_queries_no_vector"] == 1
    # popularity answers 3 (the most counted) to queries 0 and 2, and 0 when 3 is excluded
    assert m["popularity_hr@1"] == 0.0
    # neighbours of 0: 1 (cos .99), 3 (.11), then 2 and 4 (0): target 3 has rank 2
    assert i2i_hit_rate(v, [0], [3], k=1)["hr@1"] == 0.0
    assert i2i_hit_rate(v, [0], [3], k=2)["hr@2"] == 1.0


def test_i2i_hit_rate_against_a_numpy_reference(rng):
    v = rng.normal(size=(30, 4))
    queries = rng.integers(0, 30, size=40)
    targets = rng.integers(0, 30, size=40)
    targets = np.where(targets == queries, (targets + 1) % 30, targets)
    exclude = [rng.choice(30, size=5, replace=False) for _ in range(40)]
    unit = v / np.linalg.norm(v, axis=1, keepdims=True)
    hits = 0
    for q, t, ex in zip(queries, targets, exclude):
        s = unit @ unit[q]
        s[[e for e in ex if e != t] + [q]] = -np.inf
        hits += (s > s[t]).sum() < 5
    assert i2i_hit_rate(v, queries, targets, exclude, k=5)["hr@5"] == pytest.approx(hits / 40)


def test_cooccurrence_scores_and_agreement():
    seqs = [[0, 1, 2, 3], [0, 1, 4], [2, 3, 4]]
    co, total = cooccurrence_scores(seqs, 5, window=1)
    c = np.zeros((5, 5))
    for s in seqs:
        for a, b in zip(s[:-1], s[1:]):
            c[a, b] += 1
            c[b, a] += 1
    ref = c / np.sqrt(np.outer(c.sum(1), c.sum(1)))
    np.testing.assert_allclose(co, ref)
    np.testing.assert_allclose(total, c.sum(1))
    # vectors that put each item next to its strongest co-occurring item agree perfectly
    best = ref.argmax(axis=1)
    v = np.eye(5) + 0.9 * np.eye(5)[best]
    m = cooccurrence_agreement(v, seqs, k=1, window=1, min_count=1)
    assert m["agreement@1"] == pytest.approx(np.mean(
        [np.argmax(np.where(np.arange(5) == i, -np.inf, (v / np.linalg.norm(v, axis=1,
         keepdims=True)) @ (v[i] / np.linalg.norm(v[i])))) == best[i] for i in range(5)]))
    assert 0.0 <= m["popularity_agreement@1"] <= 1.0 and m["agreement_items"] == 5


def test_bad_input_is_named():
    v = np.eye(3)
    with pytest.raises(ValueError, match="queries must be item indexes in \\[0, 3\\), got 7"):
        i2i_hit_rate(v, [7], [0])
    with pytest.raises(ValueError, match="k must be an int in \\[1, 2\\], got 3"):
        i2i_hit_rate(v, [0], [1], k=3)
    with pytest.raises(ValueError, match="window must be an int >= 1, got 0"):
        cooccurrence_scores([[0, 1]], 3, window=0)
    with pytest.raises(ValueError, match="vectors must be a 2-D array"):
        cooccurrence_agreement(np.ones(3), [[0, 1]])
