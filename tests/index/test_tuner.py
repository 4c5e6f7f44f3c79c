import numpy as np
import pytest

import twotower  # noqa: F401
from twotower.index.brute_force import recall_at_k
from twotower.index.builder import build_index
from twotower.index.tuner import tune


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
