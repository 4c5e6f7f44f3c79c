"""twotower.data.vocab: counts, min_count, max_vocab_size, frequency order, encoding."""

import numpy as np
import pytest

from twotower.data.vocab import Vocabulary

SENTENCES = [["a", "b", "a", "c"], ["b", "a", "d"], ["e"]]


def test_frequency_order_and_counts():
    v = Vocabulary.build(SENTENCES, min_count=1)
    assert v.words[:2] == ["a", "b"]          # a: 3, b: 2
    assert v.counts.tolist() == [3, 2, 1, 1, 1]
    assert v.words[2:] == ["c", "d", "e"]     # ties keep first-seen order


def test_min_count_and_max_vocab_size():
    assert Vocabulary.build(SENTENCES, min_count=2).words == ["a", "b"]
    assert Vocabulary.build(SENTENCES, min_count=1, max_vocab_size=1).words == ["a"]


def test_encode_drops_oov_and_keeps_sentence_ids():
    v = Vocabulary.build(SENTENCES, min_count=2)
    ids, sids = v.encode(SENTENCES)
    assert ids.tolist() == [0, 1, 0, 1, 0]
    assert sids.tolist() == [0, 0, 0, 1, 1]
    assert ids.dtype == np.int32


def test_empty_corpus_and_min_count_leaving_nothing_are_named():
    with pytest.raises(ValueError, match="corpus is empty"):
        Vocabulary.build([])
    with pytest.raises(ValueError, match=r"min_count=4 leaves no vocabulary.*'a' occurs 3"):
        Vocabulary.build(SENTENCES, min_count=4)
    with pytest.raises(ValueError, match="min_count must be >= 1, got 0"):
        Vocabulary.build(SENTENCES, min_count=0)
