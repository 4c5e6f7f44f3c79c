"""word2vec's example stream as a tf.data pipeline: subsample, reduced windows, shuffle, batch.

Every epoch is drawn afresh (a new subsampling draw and new reduced windows, as
word2vec.c does on every pass) by vectorised numpy (data/subsample.py,
data/skipgram.py), the next epoch in a background thread while the current one trains.
``batches`` yields numpy dicts (for a trainer that needs no TensorFlow: the hogwild
engine), ``dataset`` the same stream as a prefetched tf.data pipeline.

Each batch is a dict:
  "query": centre ids [B] (skip-gram; in text order the context ids, see ``epoch``), or
    for CBOW the context ids + 1 [B, 2·window]
    with 0 = padding (PooledIDTower's convention: its row w + 1 is word w),
  "item": the id to predict [B] (the context word for skip-gram — the centre in text
    order — and the centre for CBOW),
  "progress": [B] float32 in [0, 1): the fraction of all training done at this
    example (epoch + position in epoch) / epochs, from which a trainer draws
    word2vec's linearly decaying learning rate.

Examples are shuffled within an epoch (``shuffle=True``): with per-pair SGD applied to a
large batch at once, a batch of consecutive text would repeat the same centre word 2·b
times. A trainer that applies the examples one by one (training/hogwild.py) takes them in
text order instead (``shuffle=False``), as word2vec.c does: a centre's pairs follow each
other, so its row stays in cache.
"""

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import tensorflow as tf

from twotower.data.skipgram import cbow_examples, skipgram_pairs
from twotower.data.subsample import keep_probabilities, subsample

ARCHS = ("sg", "cbow")


class Word2VecExamples:
    """Skip-gram or CBOW examples over an encoded corpus, redrawn every epoch.

    Args:
      ids: int [N] token ids of the corpus (data/vocab.py ``encode``).
      sentence_ids: int [N] sentence of each token.
      counts: int [V] vocabulary counts (for subsampling).
      arch: "sg" or "cbow".
      window: maximum window (reduced windows drawn in 1..window).
      sample: subsampling threshold t (0 = off).
      seed: seeds the subsampling / window / shuffle draws.
      extra_pairs: optional ``extra_pairs(epoch, rng, ids, sentence_ids) -> (query, item)``
        int arrays of pairs added to every epoch before the shuffle, given the epoch's
        kept (subsampled) tokens and their sentences — e.g. Airbnb's booked listing as a
        global context of every centre of a booked session (recipes/airbnb.py).
        Skip-gram only (a CBOW query is a context, not one id).
      shuffle: shuffle each epoch's examples (True), or keep them in text order (False;
        extra pairs then follow the text's).
    """

    def __init__(self, ids, sentence_ids, counts, *, arch="sg", window=5, sample=1e-3, seed=0,
                 extra_pairs=None, shuffle=True):
        if arch not in ARCHS:
            raise ValueError(f"arch must be one of {ARCHS}, got {arch!r}")
        if extra_pairs is not None and (arch != "sg" or not callable(extra_pairs)):
            raise ValueError(f"extra_pairs must be a callable, with arch='sg'; got "
                             f"{extra_pairs!r} with arch={arch!r}")
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window!r}")
        ids = np.asarray(ids, np.int32)
        if ids.size < 2:
            raise ValueError(f"the encoded corpus has {ids.size} in-vocabulary tokens; "
                             f"at least 2 are needed to form a window")
        self.ids = ids
        self.sentence_ids = np.asarray(sentence_ids, np.int32)
        self.keep_prob = keep_probabilities(counts, sample)
        self.arch, self.window, self.sample, self.seed = arch, window, sample, seed
        self.extra_pairs = extra_pairs
        self.shuffle = bool(shuffle)

    def epoch(self, epoch):
        """(query, item) numpy arrays of epoch ``epoch``, shuffled or in text order;
        deterministic in (seed, epoch)."""
        rng = np.random.default_rng([self.seed, epoch])
        keep = subsample(self.ids, self.keep_prob, rng)
        ids, sids = self.ids[keep], self.sentence_ids[keep]
        if self.arch == "sg":
            centre, context = skipgram_pairs(ids, sids, self.window, rng,
                                             text_order=not self.shuffle)
            # Shuffled: the centre predicts each context. In text order, word2vec.c's roles:
            # each context predicts its centre, so the centre's output row (or HS path)
            # stays in cache over its window. Either way the same pairs in expectation:
            # (a → b) and (b → a) are kept with the same probability, the reduced window
            # of either end being drawn alike.
            query, item = (centre, context) if self.shuffle else (context, centre)
        else:
            query, item = cbow_examples(ids, sids, self.window, rng)
            query = query + 1  # PAD (-1) → 0, word w → w + 1
        if self.extra_pairs is not None:
            eq, ei = self.extra_pairs(epoch, rng, ids, sids)
            eq, ei = np.asarray(eq, query.dtype), np.asarray(ei, item.dtype)
            if eq.shape != ei.shape or eq.ndim != 1:
                raise ValueError(f"extra_pairs must return two 1-D arrays of one length, got "
                                 f"shapes {eq.shape} and {ei.shape}")
            query, item = np.concatenate([query, eq]), np.concatenate([item, ei])
        if not self.shuffle:
            return query, item
        order = rng.permutation(len(item))
        return query[order], item[order]

    def batches(self, epochs, batch_size, *, steps_per_element=1, prefetch=True):
        """The example stream over ``epochs`` epochs as numpy dicts, without TensorFlow.

        Each element holds ``steps_per_element`` = S full batches ([S', B] leading dims,
        S' <= S; with S = 1 a plain [B] batch); an epoch's last, short batch comes alone
        ([1, t], or [t] with S = 1). With ``prefetch`` the next epoch is drawn in a
        background thread while this one is consumed.

        The stream is a deterministic function of (seed, epochs, batch_size,
        steps_per_element): epoch e is ``epoch(e)``, drawn from a generator seeded by
        (seed, e) alone, so a resumed trainer that skips the elements it already consumed
        (training/sgd_trainer.py) sees exactly the rest of the uninterrupted stream.
        """
        for name, value in (("epochs", epochs), ("batch_size", batch_size),
                            ("steps_per_element", steps_per_element)):
            if not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        return self._batches(int(epochs), int(batch_size), int(steps_per_element), prefetch)

    def _arrays(self, epoch, epochs):
        query, item = self.epoch(epoch)
        n = max(len(item), 1)
        progress = ((epoch + np.arange(len(item)) / n) / epochs).astype(np.float32)
        return {"query": query, "item": item, "progress": progress}

    def _batches(self, epochs, batch_size, steps, prefetch):
        pool = ThreadPoolExecutor(1) if prefetch and epochs > 1 else None
        try:
            upcoming = None
            for e in range(epochs):
                arrays = upcoming.result() if upcoming is not None else self._arrays(e, epochs)
                upcoming = (pool.submit(self._arrays, e + 1, epochs)
                            if pool is not None and e + 1 < epochs else None)
                n = len(arrays["item"])
                full = n // batch_size
                # Batches are cut with reshapes, not example by example.
                heads = {k: v[:full * batch_size].reshape((full, batch_size) + v.shape[1:])
                         for k, v in arrays.items()}
                if steps == 1:
                    for b in range(full):
                        yield {k: v[b] for k, v in heads.items()}
                else:
                    for b in range(0, full, steps):
                        yield {k: v[b:b + steps] for k, v in heads.items()}
                if n > full * batch_size:
                    tail = {k: v[full * batch_size:] for k, v in arrays.items()}
                    yield tail if steps == 1 else {k: v[np.newaxis] for k, v in tail.items()}
        finally:
            if pool is not None:
                pool.shutdown(cancel_futures=True)

    def dataset(self, epochs, batch_size, *, steps_per_element=1, prefetch=2):
        """The same stream as :meth:`batches` as a tf.data pipeline (``from_generator``:
        the next epoch is drawn while the current one trains), with ``prefetch`` elements
        ready ahead."""
        self.batches(epochs, batch_size, steps_per_element=steps_per_element)  # checks
        lead = [None] if steps_per_element == 1 else [None, None]
        qshape = lead if self.arch == "sg" else lead + [2 * self.window]
        signature = {"query": tf.TensorSpec(qshape, tf.int32),
                     "item": tf.TensorSpec(lead, tf.int32),
                     "progress": tf.TensorSpec(lead, tf.float32)}
        ds = tf.data.Dataset.from_generator(
            lambda: self.batches(epochs, batch_size, steps_per_element=steps_per_element),
            output_signature=signature)
        return ds.prefetch(prefetch)


__all__ = ["Word2VecExamples", "ARCHS"]
