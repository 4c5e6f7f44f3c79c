"""twotower.data.skipgram: reduced windows, sentence boundaries, SG pairs and CBOW contexts."""

import collections

import numpy as np
import pytest

from twotower.data.skipgram import PAD, cbow_examples, reduced_windows, skipgram_pairs


def reference_pairs(ids, sids, b):
    """word2vec.c's loop, written plainly."""
    out = []
    for i in range(len(ids)):
        for j in range(i - b[i], i + b[i] + 1):
            if j != i and 0 <= j < len(ids) and sids[j] == sids[i]:
                out.append((ids[i], ids[j]))
    return collections.Counter(out)


def test_full_window_pairs_match_reference():
    ids = np.arange(7)
    sids = np.array([0, 0, 0, 0, 1, 1, 1])
    c, x = skipgram_pairs(ids, sids, 2, np.random.default_rng(0), reduced=False)
    assert collections.Counter(zip(c.tolist(), x.tolist())) == reference_pairs(
        ids, sids, np.full(7, 2))
    assert not any(a < 4 <= b or b < 4 <= a for a, b in zip(c, x))  # never across sentences


def test_reduced_windows_match_reference():
    ids = np.arange(30) % 11
    sids = np.repeat([0, 1, 2], 10)
    c, x = skipgram_pairs(ids, sids, 4, np.random.default_rng(3))
    b = reduced_windows(30, 4, np.random.default_rng(3))
    assert set(b.tolist()) <= {1, 2, 3, 4}
    assert collections.Counter(zip(c.tolist(), x.tolist())) == reference_pairs(ids, sids, b)


def test_cbow_contexts_match_pairs():
    ids = np.arange(12) + 100
    sids = np.repeat([0, 1], 6)
    ctx, centre = cbow_examples(ids, sids, 3, np.random.default_rng(5))
    c, x = skipgram_pairs(ids, sids, 3, np.random.default_rng(5))
    from_cbow = collections.Counter((int(t), int(w)) for row, t in zip(ctx, centre)
                                    for w in row if w != PAD)
    assert from_cbow == collections.Counter(zip(c.tolist(), x.tolist()))
    assert ctx.shape[1] == 6


def test_bad_window_and_short_corpus():
    with pytest.raises(ValueError, match="window must be >= 1, got 0"):
        skipgram_pairs([1, 2], [0, 0], 0, np.random.default_rng(0))
    c, x = skipgram_pairs([1], [0], 5, np.random.default_rng(0))
    assert len(c) == 0 and len(x) == 0
