"""twotower.metrics.word_vectors: Spearman, word-pair similarity, 3CosAdd analogies."""

import numpy as np
import pytest

from twotower.metrics.word_vectors import (analogy_accuracy, read_analogies, read_word_pairs,
                                     spearman, word_similarity)


def test_spearman_with_ties():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # ranks x: 1, 2.5, 2.5, 4; y: 1, 2, 3, 4 → Pearson of ranks = 4.5 / sqrt(4.5 · 5)
    assert spearman([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(4.5 / np.sqrt(4.5 * 5))


def test_similarity_skips_oov_and_lowercases(tmp_path):
    p = tmp_path / "ws.tsv"
    p.write_text("# header\nA\tb\t9\na\tc\t1\na\tzzz\t5\nb\tc\t4\n")
    pairs = read_word_pairs(str(p))
    words = ["a", "b", "c"]
    vecs = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])
    rho, used, skipped = word_similarity(words, vecs, pairs)
    assert (used, skipped) == (3, 1)
    assert rho == pytest.approx(1.0)   # cos: a·b 0.99 > b·c 0.11 > a·c 0


def test_analogy_3cosadd(tmp_path):
    p = tmp_path / "q.txt"
    p.write_text(": caps\nParis France Rome Italy\nParis France Rome Spain\nParis France Oslo Norway\n")
    questions = read_analogies(str(p))
    words = ["paris", "france", "rome", "italy", "spain"]
    # planted offset: country = city + (1, 0, 0)
    vecs = np.array([[0, 1, 0], [1, 1, 0], [0, 0, 1], [1, 0, 1], [1, -1, 0.2]], float)
    acc, in_vocab, total = analogy_accuracy(words, vecs, questions)
    assert (in_vocab, total) == (2, 3)
    assert acc == pytest.approx(0.5)   # "italy" is right, "spain" is not


def test_split_by_support_marks_scores_on_few_items():
    from twotower.metrics.word_vectors import MIN_SUPPORT, split_by_support

    results = {"ws353_spearman": 1.0, "ws353_pairs": 4,
               "simlex_spearman": 0.31, "simlex_pairs": 120,
               "analogy_accuracy": float("nan"), "analogy_in_vocab": 0, "analogy_total": 50}
    headline, too_few, not_computed = split_by_support(results)
    assert MIN_SUPPORT == 20
    assert too_few == {"ws353_spearman": (1.0, 4)}
    assert headline == {"ws353_pairs": 4, "simlex_spearman": 0.31, "simlex_pairs": 120,
                        "analogy_in_vocab": 0, "analogy_total": 50}
    assert not_computed == ["analogy_accuracy"]
    headline, too_few, _ = split_by_support(results, min_support=4)
    assert headline["ws353_spearman"] == 1.0 and not too_few
    with pytest.raises(ValueError, match="min_support must be an int >= 1, got 0"):
        split_by_support(results, min_support=0)
