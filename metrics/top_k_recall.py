"""TopKRecall: full-catalogue recall@K as a Keras metric, for ``model.fit(validation_data=…)``
and ``model.evaluate``.

For a query u with held-out item p, excluded (seen) items X and catalogue embeddings V,

    rank(p) = 1 + #{c ∉ X, c ≠ p : <u, v_c> > <u, v_p>}       recall@K = mean[rank(p) <= K]

— the same exact, whole-catalogue rank as metrics/ranking.py (ties in the positive's
favour, a repeat handled as ``repeats`` says), so the numbers match ``twotower.evaluate``
on the same embeddings. This is the metric TFRS's ``tfrs.metrics.FactorizedTopK`` gives
(top-K categorical accuracy over all candidates); it goes past it in four ways:

* the catalogue is re-embedded with the current item tower at the start of every
  ``evaluate`` (and so every validation pass of ``fit``) and cached in a variable, instead
  of an index the user must rebuild by hand each epoch;
* seen items can be excluded per query (a batch key ``"exclude"``, padded with -1), with
  the repeat rule of metrics/ranking.py, which FactorizedTopK has no notion of;
* the exact path counts the items scored above the positive chunk by chunk (a batched
  matmul against ``chunk_size`` items at a time), so memory stays batch × chunk however
  large the catalogue, and no top-k sort is needed for an exact rank;
* it is a ``tf.keras.metrics.Metric`` whose results appear in the logs as ``recall@K``
  (``val_recall@K`` during fit).

For large catalogues pass ``searcher=``: either a TFRS top-k layer
(``tfrs.layers.factorized_top_k.ScaNN`` / ``BruteForce`` / ``Streaming``, indexed with the
item ids; excluded ids go through its ``query_with_exclusions``), or any object with a
``search(queries, k)`` method returning ``(ids [Q, k], scores [Q, k])`` — a twotower
ScaNN index is one (its ``exclude=`` argument is used when it has one). Like
FactorizedTopK's id-based mode, a hit is the positive's id among the first K returned
ids; the searcher is used as given (build it from the trained item tower).
"""

import inspect

import numpy as np
import tensorflow as tf

from twotower.metrics.ranking import REPEATS


def pad_exclusions(exclude, width=None, pad=-1):
    """Per-query lists of excluded item ids → an int64 array [Q, width] padded with ``pad``
    (-1), the form a batch's ``"exclude"`` key takes. ``width`` defaults to the longest
    list; a longer list raises ValueError."""
    lists = [np.asarray(e, np.int64).reshape(-1) for e in exclude]
    longest = max((len(e) for e in lists), default=0)
    width = longest if width is None else int(width)
    if longest > width:
        raise ValueError(f"width={width} is shorter than the longest exclude list ({longest})")
    out = np.full((len(lists), max(width, 1)), pad, np.int64)
    for i, e in enumerate(lists):
        out[i, :len(e)] = e
    return out


def _is_tfrs_top_k(obj):
    try:
        import tensorflow_recommenders as tfrs
    except ImportError:  # pragma: no cover - a dependency
        return False
    return isinstance(obj, tfrs.layers.factorized_top_k.TopK)


@tf.keras.utils.register_keras_serializable(package="twotower")
class TopKRecall(tf.keras.metrics.Metric):
    """Whole-catalogue recall@K (module docstring) for ``TwoTowerModel.compile(metrics=…)``.

        model.compile(optimizer="adam", metrics=[twotower.TopKRecall(ks=(10, 50))])
        model.fit(train_ds, validation_data=val_ds)     # logs val_recall@10, val_recall@50
        model.evaluate(val_ds, return_dict=True)        # {'loss': …, 'recall@10': …, …}

    Args:
      ks: the cut-offs K.
      candidates: None (the model embeds its whole catalogue with the item tower at the
        start of every evaluate: its ``item_features`` table, or ids 0..V-1 of an IDTower),
        or a fixed float array [N, d] whose row i is item i.
      searcher: instead of exact scoring, a TFRS top-k layer or an object with
        ``search(queries, k) -> (ids, scores)`` (module docstring); ``max(ks)`` results
        are asked for.
      repeats: a validation positive that is in the batch's ``"exclude"`` list: "new"
        (default, left out, as serving can never return it), "miss" (a miss) or "all"
        (still rankable) — metrics/ranking.py.
      chunk_size: items scored per matmul on the exact path.

    ``update_state(query_embeddings, positive_ids, exclude=None, sample_weight=None)``;
    ``result()`` is a dict {"recall@K": …}.
    """

    def __init__(self, ks=(10, 50), candidates=None, *, searcher=None, repeats="new",
                 chunk_size=65536, name="top_k_recall", **kwargs):
        super().__init__(name=name, **kwargs)
        ks = tuple(ks) if isinstance(ks, (list, tuple)) else (ks,)
        if not ks or any(isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1
                         for k in ks):
            raise ValueError(f"ks must be ints >= 1, got {ks!r}")
        if repeats not in REPEATS:
            raise ValueError(f"repeats must be one of {REPEATS}, got {repeats!r}")
        if candidates is not None and searcher is not None:
            raise ValueError("pass candidates= or searcher=, not both")
        if searcher is not None and not (_is_tfrs_top_k(searcher)
                                         or callable(getattr(searcher, "search", None))):
            raise ValueError(f"searcher must be a tfrs.layers.factorized_top_k layer or have a "
                             f"search(queries, k) method, got {searcher!r}")
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
            raise ValueError(f"chunk_size must be an int >= 1, got {chunk_size!r}")
        self.ks = tuple(int(k) for k in ks)
        self.repeats = repeats
        self.chunk_size = chunk_size
        self.searcher = searcher
        self.hits = self.add_weight(name="hits", shape=[len(self.ks)], initializer="zeros")
        self.count = self.add_weight(name="count", shape=[], initializer="zeros")
        # Any catalogue size: a variable of unknown shape, reassigned before each evaluate
        # (the traced test function reads its current value). A cache, not state: kept
        # out of Keras's tracking so that saved models do not carry it.
        self.__dict__["_candidates"] = None
        self.fixed_candidates = candidates is not None
        if candidates is not None:
            self.set_candidates(candidates)

    @property
    def needs_candidates(self):
        """True when the model must supply the catalogue embeddings (set_candidates)."""
        return self.searcher is None and not self.fixed_candidates

    def set_candidates(self, embeddings):
        """Caches the catalogue embeddings [N, d] (row i = item i) for the exact path."""
        v = np.asarray(embeddings, np.float32)
        if v.ndim != 2 or v.shape[0] < 1:
            raise ValueError(f"candidates must be a non-empty [num_items, dim] array, got "
                             f"shape {v.shape}")
        if self._candidates is None:
            with tf.init_scope():
                self.__dict__["_candidates"] = tf.Variable(
                    v, trainable=False, shape=tf.TensorShape(None), name="candidates")
        else:
            self._candidates.assign(v, read_value=False)

    def reset_state(self):
        self.hits.assign(tf.zeros_like(self.hits))
        self.count.assign(0.0)

    # -- ranks --------------------------------------------------------------------------
    def _exact_hits(self, q, ids, ex):
        if self._candidates is None:
            raise ValueError("TopKRecall has no candidates: pass candidates=, or use it "
                             "through TwoTowerModel.compile(metrics=...), which embeds the "
                             "catalogue before each evaluate")
        # the variable's shape is open (any catalogue); give the graph its rank
        cands = tf.reshape(tf.convert_to_tensor(self._candidates), [-1, tf.shape(q)[1]])
        n = tf.shape(cands, out_type=tf.int64)[0]
        tf.debugging.assert_less(ids, n, message="TopKRecall: positive id >= num candidates")
        pos = tf.reduce_sum(q * tf.gather(cands, ids), axis=-1)  # [B]
        batch = tf.shape(q, out_type=tf.int64)[0]

        def body(start, count):
            chunk = cands[start:start + self.chunk_size]
            size = tf.shape(chunk, out_type=tf.int64)[0]
            s = tf.matmul(q, chunk, transpose_b=True)  # [B, chunk]
            cols = start + tf.range(size, dtype=tf.int64)
            above = (s > pos[:, None]) & tf.not_equal(cols[None, :], ids[:, None])
            if ex is not None:
                local = ex - start
                inside = (ex >= 0) & (local >= 0) & (local < size)
                where = tf.where(inside)  # [n_ex, 2] (row, slot)
                cells = tf.stack([where[:, 0], tf.gather_nd(local, where)], axis=1)
                masked = tf.scatter_nd(cells, tf.ones(tf.shape(cells)[:1], tf.int32),
                                       tf.stack([batch, size])) > 0
                above &= ~masked
            return start + self.chunk_size, count + tf.reduce_sum(tf.cast(above, tf.int64), 1)

        _, above = tf.while_loop(lambda start, _: start < n, body,
                                 (tf.constant(0, tf.int64), tf.zeros([batch], tf.int64)))
        rank = 1 + above
        return tf.stack([rank <= k for k in self.ks], axis=1)  # [B, len(ks)]

    def _search_hits(self, q, ids, ex):
        k = max(self.ks)
        if _is_tfrs_top_k(self.searcher):
            if ex is None:
                _, got = self.searcher(q, k=k)
            else:
                _, got = self.searcher.query_with_exclusions(q, tf.cast(ex, tf.int64), k=k)
        else:
            got = tf.numpy_function(self._python_search, [q] + ([] if ex is None else [ex]),
                                    tf.int64, stateful=True)
            got = tf.reshape(got, [-1, k])
        match = tf.equal(tf.cast(got, tf.int64), ids[:, None])
        return tf.stack([tf.reduce_any(match[:, :kk], axis=1) for kk in self.ks], axis=1)

    def _python_search(self, q, ex=None):
        k = max(self.ks)
        lists = None if ex is None else [[int(i) for i in row if i >= 0] for row in ex]
        search = self.searcher.search
        takes_exclude = "exclude" in inspect.signature(search).parameters
        if lists is None or takes_exclude:
            ids, _ = search(q, k, exclude=lists) if lists is not None else search(q, k)
            return np.asarray(ids, np.int64)
        # no exclude argument: over-fetch by the widest list, then filter
        extra = max((len(e) for e in lists), default=0)
        ids, _ = search(q, k + extra)
        out = np.full((len(q), k), -1, np.int64)
        for r, row in enumerate(np.asarray(ids, np.int64)):
            keep = [i for i in row.tolist() if i not in set(lists[r])][:k]
            out[r, :len(keep)] = keep
        return out

    def update_state(self, query_embeddings, positive_ids, exclude=None, sample_weight=None):
        q = tf.cast(query_embeddings, tf.float32)
        ids = tf.reshape(tf.cast(positive_ids, tf.int64), [-1])
        ex = None if exclude is None else tf.cast(exclude, tf.int64)
        weight = (tf.ones_like(ids, tf.float32) if sample_weight is None
                  else tf.reshape(tf.cast(sample_weight, tf.float32), [-1]))
        seen = None
        if ex is not None:
            seen = tf.reduce_any(tf.equal(ex, ids[:, None]) & (ex >= 0), axis=1)
            if self.repeats == "all":  # the positive itself stays rankable
                ex = tf.where(tf.equal(ex, ids[:, None]), tf.constant(-1, tf.int64), ex)
        hits = (self._exact_hits(q, ids, ex) if self.searcher is None
                else self._search_hits(q, ids, ex))
        if seen is not None and self.repeats == "new":
            weight *= 1.0 - tf.cast(seen, tf.float32)
        elif seen is not None and self.repeats == "miss":
            hits &= ~seen[:, None]
        self.hits.assign_add(tf.reduce_sum(tf.cast(hits, tf.float32) * weight[:, None], 0))
        self.count.assign_add(tf.reduce_sum(weight))

    def result(self):
        """{"recall@K": …} (keys prefixed with the metric's name and "_" when it was
        given another name than the default, so that several can be compiled together)."""
        share = tf.math.divide_no_nan(self.hits, self.count)
        prefix = "" if self.name == "top_k_recall" else f"{self.name}_"
        return {f"{prefix}recall@{k}": share[i] for i, k in enumerate(self.ks)}

    def get_config(self):
        """ks, repeats and chunk_size. A fixed ``candidates`` array or a ``searcher`` is
        data, not configuration, and is not part of it: a metric rebuilt from this config
        takes its candidates from the model (TwoTowerModel leaves such metrics out of its
        compile config; pass them to compile again after loading)."""
        config = super().get_config()
        config.update(ks=list(self.ks), repeats=self.repeats, chunk_size=self.chunk_size)
        return config
