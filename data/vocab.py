"""A word (or item) vocabulary: counts, min_count, max_vocab_size, ids by frequency.

Ids are 0..V−1 in order of decreasing count (ties: first seen first), as word2vec.c and
gensim sort their vocabularies, so id 0 is the most frequent token. A vocabulary grown by
new text (:meth:`Vocabulary.grown`) keeps the old ids first and appends the new words.
"""

import collections

import numpy as np


class Vocabulary:
    """Tokens kept by ``min_count`` (and the ``max_vocab_size`` most frequent), with counts.

    Attributes:
      words: list of str, id → token.
      counts: int64 array [V], id → corpus count.
      index: dict token → id.
    """

    def __init__(self, words, counts):
        counts = np.asarray(counts, dtype=np.int64)
        if len(words) != len(counts):
            raise ValueError(f"words and counts must have the same length, got "
                             f"{len(words)} and {len(counts)}")
        self.words = list(words)
        self.counts = counts
        self.index = {w: i for i, w in enumerate(self.words)}

    @classmethod
    def build(cls, sentences, *, min_count=5, max_vocab_size=None):
        """Counts tokens over ``sentences`` (iterable of token lists) and keeps the frequent ones.

        Raises ValueError when the corpus is empty or when ``min_count`` leaves no token.
        """
        if min_count < 1:
            raise ValueError(f"min_count must be >= 1, got {min_count!r}")
        if max_vocab_size is not None and max_vocab_size < 1:
            raise ValueError(f"max_vocab_size must be >= 1 or None, got {max_vocab_size!r}")
        counter = collections.Counter()
        for sentence in sentences:
            counter.update(sentence)
        if not counter:
            raise ValueError("the corpus is empty: no tokens to build a vocabulary from")
        kept = [(w, c) for w, c in counter.items() if c >= min_count]
        if not kept:
            raise ValueError(f"min_count={min_count} leaves no vocabulary: the most frequent "
                             f"token {counter.most_common(1)[0][0]!r} occurs "
                             f"{counter.most_common(1)[0][1]} times")
        kept.sort(key=lambda wc: -wc[1])  # stable: ties keep first-seen order
        if max_vocab_size is not None:
            kept = kept[:max_vocab_size]
        return cls([w for w, _ in kept], [c for _, c in kept])

    def grown(self, sentences, *, min_count=5, max_vocab_size=None):
        """This vocabulary grown by new text, as gensim's ``build_vocab(sentences,
        update=True)``: every word keeps its id and adds its count in ``sentences``; the
        new text's words not yet known that occur >= ``min_count`` times in it are
        appended, most frequent first (ties: first seen), up to ``max_vocab_size`` words
        in all. Returns a new Vocabulary; the first ``len(self)`` ids are this one's."""
        if min_count < 1:
            raise ValueError(f"min_count must be >= 1, got {min_count!r}")
        counter = collections.Counter()
        for sentence in sentences:
            counter.update(sentence)
        counts = self.counts.copy()
        for w, c in counter.items():
            if w in self.index:
                counts[self.index[w]] += c
        new = [(w, c) for w, c in counter.items() if w not in self.index and c >= min_count]
        new.sort(key=lambda wc: -wc[1])  # stable: ties keep first-seen order
        if max_vocab_size is not None:
            new = new[:max(0, max_vocab_size - len(self))]
        return type(self)(self.words + [w for w, _ in new],
                          np.concatenate([counts, np.asarray([c for _, c in new], np.int64)]))

    def __len__(self):
        return len(self.words)

    def __contains__(self, word):
        return word in self.index

    def encode(self, sentences):
        """Token lists → (ids int32 [N], sentence_ids int32 [N]); out-of-vocabulary tokens dropped.

        Dropping happens before windows are drawn, as in word2vec.c and gensim.
        """
        index = self.index
        ids, sids = [], []
        for s, sentence in enumerate(sentences):
            enc = [index[w] for w in sentence if w in index]
            ids.extend(enc)
            sids.extend([s] * len(enc))
        return np.asarray(ids, dtype=np.int32), np.asarray(sids, dtype=np.int32)
