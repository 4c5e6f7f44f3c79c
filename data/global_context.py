"""A global context: one item that is a positive context of every centre of its sentence.

Airbnb's listing embeddings (Grbovic & Cheng, "Real-time Personalization using
Embeddings for Search Ranking at Airbnb", KDD 2018, §3.1, Figure 2) add the session's
booked listing l_b to the context of every central listing l of a booked session, however
far apart they are, so the objective gains the term

    − log σ(<v_l, v'_{l_b}>)          for every centre l of a booked session (l ≠ l_b)

(its negatives are drawn as for any other pair). :class:`GlobalContext` produces those
(centre, l_b) pairs for each epoch of data/word2vec_examples.py's ``extra_pairs`` hook,
from the epoch's kept (subsampled) tokens — a centre dropped by subsampling gets no
booking pair either, as a centre that is not in the sliding window.
"""

import numpy as np


class GlobalContext:
    """``extra_pairs`` callback adding (centre, global context of its sentence) pairs.

    Args:
      context_of_sentence: int [num_sentences], the global context id of each sentence
        (in the same id space as the encoded corpus), or -1 for none (an unbooked
        session, or a booked item outside the vocabulary).
      include_self: also pair the global context with itself (default False: a centre
        equal to the booked item gets no booking pair, as it is not its own context).
    """

    def __init__(self, context_of_sentence, include_self=False):
        ctx = np.asarray(context_of_sentence)
        if ctx.ndim != 1 or not np.issubdtype(ctx.dtype, np.integer):
            raise ValueError(f"context_of_sentence must be a 1-D int array (-1 = none), got "
                             f"dtype {ctx.dtype} shape {ctx.shape}")
        if ctx.size and ctx.min() < -1:
            raise ValueError(f"context_of_sentence holds ids >= 0 or -1 for none, got "
                             f"{int(ctx.min())}")
        self.context_of_sentence = ctx.astype(np.int64)
        self.include_self = bool(include_self)

    @property
    def num_with_context(self):
        return int((self.context_of_sentence >= 0).sum())

    def __call__(self, epoch, rng, ids, sentence_ids):
        """(centres, contexts) for the kept tokens ``ids`` of sentences ``sentence_ids``."""
        ids = np.asarray(ids)
        sids = np.asarray(sentence_ids, dtype=np.int64)
        if sids.size and sids.max() >= self.context_of_sentence.size:
            raise ValueError(f"sentence id {int(sids.max())} has no entry in "
                             f"context_of_sentence (size {self.context_of_sentence.size})")
        ctx = self.context_of_sentence[sids]
        keep = ctx >= 0
        if not self.include_self:
            keep &= ctx != ids
        return ids[keep], ctx[keep].astype(ids.dtype)


__all__ = ["GlobalContext"]
