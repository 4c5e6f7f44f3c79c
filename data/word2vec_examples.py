"""word2vec's example stream as a tf.data pipeline: subsample, reduced windows, shuffle, batch.

Every epoch is drawn afresh (a new subsampling draw and new reduced windows, as
word2vec.c does on every pass) by vectorised numpy (data/subsample.py,
data/skipgram.py) running inside tf.data (``py_function`` in a ``flat_map``), so the
next epoch is built while the current one trains, and batches are prefetched.

Each batch is a dict:
  "query": centre ids [B] (skip-gram), or for CBOW the context ids + 1 [B, 2·window]
    with 0 = padding (PooledIDTower's convention: its row w + 1 is word w),
  "item": the id to predict [B] (the context word for skip-gram, the centre for CBOW),
  "progress": [B] float32 in [0, 1): the fraction of all training done at this
    example (epoch + position in epoch) / epochs, from which a trainer draws
    word2vec's linearly decaying learning rate.

Examples are shuffled within an epoch: with per-pair SGD applied to a large batch at
once, a batch of consecutive text would repeat the same centre word 2·b times.
"""

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
    """

    def __init__(self, ids, sentence_ids, counts, *, arch="sg", window=5, sample=1e-3, seed=0,
                 extra_pairs=None):
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

    def epoch(self, epoch):
        """(query, item) numpy arrays of epoch ``epoch``, shuffled; deterministic in (seed, epoch)."""
        rng = np.random.default_rng([self.seed, epoch])
        keep = subsample(self.ids, self.keep_prob, rng)
        ids, sids = self.ids[keep], self.sentence_ids[keep]
        if self.arch == "sg":
            query, item = skipgram_pairs(ids, sids, self.window, rng)
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
        order = rng.permutation(len(item))
        return query[order], item[order]

    def dataset(self, epochs, batch_size, *, steps_per_element=1, prefetch=2):
        """The tf.data pipeline over ``epochs`` epochs; see the module docstring.

        With ``steps_per_element`` = S > 1 each element stacks up to S full batches
        ([S', B] leading dims, S' <= S) so that a trainer can run S steps per call; an
        epoch's last, short batch comes alone as [1, t] (t < B).

        The stream is a deterministic function of (seed, epochs, batch_size,
        steps_per_element): epoch e is ``epoch(e)``, drawn from a generator seeded by
        (seed, e) alone, so a resumed trainer that skips the elements it already consumed
        (towers/sgd_trainer.py) sees exactly the rest of the uninterrupted stream.
        """
        for name, value in (("epochs", epochs), ("batch_size", batch_size),
                            ("steps_per_element", steps_per_element)):
            if not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        qshape = [None] if self.arch == "sg" else [None, 2 * self.window]
        keys = ("query", "item", "progress")
        stack = steps_per_element > 1

        def make(e):
            query, item = self.epoch(int(e))
            n = max(len(item), 1)
            progress = ((int(e) + np.arange(len(item)) / n) / epochs).astype(np.float32)
            return query, item, progress

        def one_epoch(e):
            query, item, progress = tf.numpy_function(make, [e], [tf.int32, tf.int32, tf.float32],
                                                      stateful=False)
            query.set_shape(qshape)
            item.set_shape([None])
            progress.set_shape([None])
            # Batches are cut with reshapes, not by slicing examples one by one: tf.data's
            # element-wise batch() costs ~10 ms per 8k-example batch here, this ~0.1 ms.
            n = tf.shape(item)[0]
            full = n // batch_size * batch_size

            def cut(x):
                head = tf.reshape(x[:full], tf.concat([[-1, batch_size], tf.shape(x)[1:]], 0))
                return head, x[full:]

            parts = dict(zip(keys, (cut(x) for x in (query, item, progress))))
            heads = tf.data.Dataset.from_tensor_slices({k: p[0] for k, p in parts.items()})
            tail = {k: p[1][tf.newaxis] for k, p in parts.items()}
            if stack:
                heads = heads.batch(steps_per_element)
                tail = {k: v[tf.newaxis] for k, v in tail.items()}
            tail_ds = tf.data.Dataset.from_tensor_slices(tail).filter(
                lambda b: tf.size(b["item"]) > 0)
            return heads.concatenate(tail_ds)

        ds = tf.data.Dataset.range(epochs).flat_map(one_epoch)
        return ds.prefetch(prefetch)


__all__ = ["Word2VecExamples", "ARCHS"]
