"""Training examples from reduced random windows: skip-gram pairs and CBOW contexts.

word2vec.c draws, for every centre position i, an effective window b_i uniform in
{1, …, window} ("reduced window": near words are used more often than far ones) and uses
the tokens at offsets ±1 … ±b_i inside the same sentence. Skip-gram turns each into a
(centre → context) pair; CBOW predicts the centre from the mean of all of them.

Tokens dropped by subsampling are removed before windows are drawn (so windows reach
further), as in word2vec.c and gensim. Everything here is vectorised numpy, one loop
over the ``window`` offsets.
"""

import numpy as np

PAD = -1  # CBOW context padding


def _check(ids, sentence_ids, window):
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window!r}")
    if len(ids) != len(sentence_ids):
        raise ValueError(f"ids and sentence_ids must have the same length, got "
                         f"{len(ids)} and {len(sentence_ids)}")


def reduced_windows(n, window, rng):
    """b_i ~ uniform{1..window} for n positions (word2vec.c: window − rand() % window)."""
    return rng.integers(1, window + 1, size=n, dtype=np.int32)


def skipgram_pairs(ids, sentence_ids, window, rng, *, reduced=True, text_order=False):
    """All (centre, context) id pairs of one pass over a corpus.

    Args:
      ids: int [N] token ids (after subsampling).
      sentence_ids: int [N] sentence of each token; windows never cross sentences.
      window: maximum distance.
      rng: numpy Generator for the reduced windows.
      reduced: draw b_i (word2vec); False uses the full window everywhere.
      text_order: order the pairs by their centre's position in the corpus (word2vec.c's
        order: a centre's pairs are consecutive, nearest context first, left before
        right), instead of grouped by offset.

    Returns:
      (centres, contexts), int32 arrays [P], grouped by offset (shuffle before batching)
      or in text order.
    """
    _check(ids, sentence_ids, window)
    ids = np.asarray(ids, dtype=np.int32)
    sentence_ids = np.asarray(sentence_ids)
    n = len(ids)
    b = reduced_windows(n, window, rng) if reduced else np.full(n, window, np.int32)
    centres, contexts, positions = [], [], []
    span = 2 * window + 1  # text-order key: centre position, then context offset −b .. +b
    for o in range(1, min(window, n - 1) + 1):
        same = sentence_ids[:n - o] == sentence_ids[o:]
        fwd = np.flatnonzero(same & (b[:n - o] >= o))   # centre i, context i + o
        bwd = np.flatnonzero(same & (b[o:] >= o))       # centre i + o, context i
        centres += [ids[fwd], ids[bwd + o]]
        contexts += [ids[fwd + o], ids[bwd]]
        if text_order:
            positions += [fwd.astype(np.int64) * span + (window + o),
                          (bwd + o).astype(np.int64) * span + (window - o)]
    if not centres:
        return np.zeros(0, np.int32), np.zeros(0, np.int32)
    centres, contexts = np.concatenate(centres), np.concatenate(contexts)
    if text_order:
        order = np.argsort(np.concatenate(positions))
        centres, contexts = centres[order], contexts[order]
    return centres, contexts


def cbow_examples(ids, sentence_ids, window, rng, *, reduced=True):
    """CBOW examples of one pass: (contexts int32 [M, 2·window] padded with PAD, centres [M]).

    Positions whose window holds no other token of their sentence are left out.
    """
    _check(ids, sentence_ids, window)
    ids = np.asarray(ids, dtype=np.int32)
    sentence_ids = np.asarray(sentence_ids)
    n = len(ids)
    b = reduced_windows(n, window, rng) if reduced else np.full(n, window, np.int32)
    ctx = np.full((n, 2 * window), PAD, dtype=np.int32)
    for o in range(1, min(window, n - 1) + 1):
        same = sentence_ids[:n - o] == sentence_ids[o:]
        fwd = np.flatnonzero(same & (b[:n - o] >= o))   # centre i sees i + o
        ctx[fwd, window + o - 1] = ids[fwd + o]
        bwd = np.flatnonzero(same & (b[o:] >= o))       # centre i + o sees i
        ctx[bwd + o, window - o] = ids[bwd]
    has = (ctx != PAD).any(axis=1)
    return ctx[has], ids[has]
