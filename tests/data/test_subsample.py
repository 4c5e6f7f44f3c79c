"""twotower.data.subsample: word2vec.c's keep probability (sqrt(f/t)+1)·t/f."""

import numpy as np
import pytest

from twotower.data.subsample import keep_probabilities, subsample


def test_keep_probability_matches_word2vec_c():
    counts = np.array([900, 90, 9, 1])
    t = 0.01
    p = keep_probabilities(counts, t)
    # word2vec.c: ran = (sqrt(cn / (sample * train_words)) + 1) * (sample * train_words) / cn
    total = counts.sum()
    ref = (np.sqrt(counts / (t * total)) + 1) * (t * total) / counts
    np.testing.assert_allclose(p, np.minimum(ref, 1.0))
    # worked by hand for the 900-count word: f = 0.9, t/f = 1/90 → (3·sqrt(10)/... )
    assert p[0] == pytest.approx((np.sqrt(90) + 1) / 90)
    assert p[2] == 1.0 and p[3] == 1.0           # rare words always kept


def test_off_and_bad_threshold():
    np.testing.assert_array_equal(keep_probabilities([5, 1], 0), [1.0, 1.0])
    with pytest.raises(ValueError, match="sample must be >= 0, got -1"):
        keep_probabilities([1], -1)


def test_redraws_follow_the_probabilities(rng):
    ids = np.zeros(20000, np.int64)
    keep = subsample(ids, np.array([0.3]), rng)
    assert abs(keep.mean() - 0.3) < 0.02
    other = subsample(ids, np.array([0.3]), rng)
    assert (keep != other).any()                  # a fresh draw each call (each epoch)
