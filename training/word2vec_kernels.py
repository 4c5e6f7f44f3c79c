"""The fast engines' inner parts for word2vec's own models: the compiled word2vec step
(gradients written out as word2vec.c does, the curvature bound, block-shared negatives)
and a hogwild run over shared numpy tables. :class:`SparseSGDTrainer` chooses them."""

import math

import numpy as np
import tensorflow as tf

from twotower.towers.id_tower import IDTower
from twotower.towers.pooled_id_tower import PooledIDTower

class Word2VecKernel:
    """word2vec's compiled step with the gradients written out (word2vec.c's updates) for
    the models word2vec builds: query tower an IDTower (skip-gram) or a mean PooledIDTower
    (CBOW), item tower an IDTower, and a RetrievalLoss with hierarchical softmax or a
    NEG / NCE head over per-example negatives (SampledNegatives(shared=False)) of any
    sampler with an alias table (data/samplers.py ``Sampler.alias_table``: unigram^α,
    uniform, a user's sampler), from which it draws."""

    def __init__(self, model, head, sampler=None, num_negatives=0, logq=False,
                 remove_accidental_hits=True):
        self.model = model
        self.head = head  # "hs" or "sigmoid"
        self.sampler = sampler
        #: The sampler's AliasTable: the negatives of both engines are drawn from it.
        self.table = None if sampler is None else sampler.alias_table()
        self.k = num_negatives
        self.logq = logq
        self.remove_accidental_hits = remove_accidental_hits
        self.cbow = isinstance(model.query_tower, PooledIDTower)

    @classmethod
    def for_model(cls, model, query_is_item):
        """(kernel, None) when ``model`` is one of word2vec's, else (None, why_not):
        ``why_not`` is None for other models (autodiff, as documented) and a sentence
        naming the sampler when only the sampler keeps the kernel out (no alias table)."""
        from twotower.losses import HierarchicalSoftmax, RetrievalLoss, SampledNegatives
        from twotower.losses.sigmoid import NegativeSampling
        q, i = getattr(model, "query_tower", None), getattr(model, "item_tower", None)
        loss = getattr(model, "retrieval_loss", None)
        if query_is_item or model.losses or not isinstance(loss, RetrievalLoss):
            return None, None
        if not (type(q) is IDTower or (type(q) is PooledIDTower and q.pooling == "mean")):
            return None, None
        if type(i) is not IDTower:
            return None, None
        if loss.hierarchical:
            return (cls(model, "hs") if type(loss.head) is HierarchicalSoftmax else None), None
        c = loss.candidates
        plain = (float(loss.initial_temperature) == 1.0 and not loss.learn_temperature
                 and loss.similarity == "dot" and loss.num_hard_negatives is None
                 and loss.padding_id is None)
        if (plain and type(c) is SampledNegatives and not c.shared
                and isinstance(loss.head, NegativeSampling)):
            if c.sampler.alias_table() is None:
                return None, (f"the sampler {type(c.sampler).__name__} gives no alias "
                              "table (its alias_table() is None: its draws are not i.i.d. "
                              "from fixed probabilities)")
            return cls(model, "sigmoid", c.sampler, c.num_negatives, loss.logq,
                       loss.remove_accidental_hits), None
        return None, None

    def _query(self, query):
        W = self.model.query_tower.embeddings
        if not self.cbow:
            return W, query, tf.gather(W, query), None
        mask = tf.cast(tf.not_equal(query, 0), tf.float32)              # [B, L]
        size = tf.maximum(tf.reduce_sum(mask, axis=1, keepdims=True), 1.0)
        u = tf.reduce_sum(tf.gather(W, query) * mask[..., tf.newaxis], axis=1) / size
        return W, query, u, (mask, size)

    def _negatives(self, trainer, batch, block):
        """[B / block, k] stateless draws from the sampler's table keyed by (seed, step)."""
        shape = tf.stack([batch // block, self.k])
        seed = tf.stack([tf.constant(trainer.seed, tf.int64), trainer.steps])
        return self.table.draw_tf_stateless(shape, seed, dtype=tf.int32)

    def step(self, trainer, query, item, lr):
        """Applies one batch's update; returns the [B] losses before it."""
        query = tf.cast(query, tf.int32)
        item = tf.cast(item, tf.int32)
        W, qids, u, pooled = self._query(query)
        B, d = tf.shape(item)[0], tf.shape(u)[1]
        cap = trainer._row_scale
        if self.head == "hs":
            hs = self.model.retrieval_loss.head
            out = hs.node_vectors
            points = tf.gather(hs._points, item)                          # [B, L]
            codes = tf.gather(hs._codes, item)
            valid = tf.sequence_mask(tf.gather(hs._lengths, item), tf.shape(points)[1],
                                     dtype=tf.float32)
            theta = tf.gather(out, points)                                # [B, L, d]
            x = tf.reduce_sum(u[:, tf.newaxis, :] * theta, axis=2)       # [B, L]
            sign = 1.0 - 2.0 * codes
            per_example = tf.reduce_sum(tf.nn.softplus(-sign * x) * valid, axis=1)
            # word2vec.c: g = (1 − code − σ(x))·α, the ascent direction.
            g = (1.0 - codes - tf.sigmoid(x)) * valid * lr[:, tf.newaxis]
            du = tf.reduce_sum(g[..., tf.newaxis] * theta, axis=1)       # [B, d]
            out_idx = tf.reshape(points, [-1])
            out_val = tf.reshape(g[..., tf.newaxis] * u[:, tf.newaxis, :], [-1, d])
            out_hits = tf.reshape(valid * tf.cast(lr[:, tf.newaxis] > 0, tf.float32), [-1])
            # Gauss-Newton curvature of each update along its row: lr·σ'(x)·|other side|².
            h = tf.sigmoid(x) * tf.sigmoid(-x) * valid * lr[:, tf.newaxis]   # [B, L]
            out_curv = tf.reshape(h * tf.reduce_sum(u * u, axis=1, keepdims=True), [-1])
            q_curv = tf.reduce_sum(h * tf.reduce_sum(theta * theta, axis=2), axis=1)
        else:
            out = self.model.item_tower.embeddings
            batch = item.shape[0]
            block = 1 if batch is None else math.gcd(int(batch), trainer.negative_block)
            neg = self._negatives(trainer, tf.shape(item)[0], block)      # [G, k]
            pos = tf.gather(out, item)                                    # [B, d]
            rows = tf.gather(out, neg)                                    # [G, k, d]
            ub = tf.reshape(u, [-1, block, d])                            # [G, b, d]
            s_pos = tf.reduce_sum(u * pos, axis=1)                        # [B]
            # Broadcast products, not einsum: XLA on CPU fuses multiply + reduce into one
            # loop, while a dot with tiny batched matrices runs as many small calls.
            s_neg = tf.reduce_sum(ub[:, :, tf.newaxis, :] * rows[:, tf.newaxis], axis=3)
            if self.logq:
                from twotower.losses.candidates import log_expected_count
                lq = lambda ids: log_expected_count(  # noqa: E731
                    self.sampler.expected_count(ids, self.k))
                s_pos = s_pos - lq(item)
                s_neg = s_neg - lq(neg)[:, tf.newaxis, :]
            keep = tf.ones_like(s_neg)
            if self.remove_accidental_hits:
                hit = tf.equal(tf.reshape(item, [-1, block, 1]), neg[:, tf.newaxis, :])
                keep = 1.0 - tf.cast(hit, tf.float32)
            per_example = tf.nn.softplus(-s_pos) + tf.reshape(
                tf.reduce_sum(tf.nn.softplus(s_neg) * keep, axis=2), [-1])
            lr_b = tf.reshape(lr, [-1, block, 1])
            g_pos = (1.0 - tf.sigmoid(s_pos)) * lr                        # [B]
            g_neg = -tf.sigmoid(s_neg) * keep * lr_b                      # [G, b, k]
            du = g_pos[:, tf.newaxis] * pos + tf.reshape(tf.reduce_sum(
                g_neg[..., tf.newaxis] * rows[:, tf.newaxis], axis=2), [-1, d])
            d_neg = tf.reduce_sum(g_neg[..., tf.newaxis] * ub[:, :, tf.newaxis], axis=1)
            out_idx = tf.concat([item, tf.reshape(neg, [-1])], axis=0)
            out_val = tf.concat([g_pos[:, tf.newaxis] * u, tf.reshape(d_neg, [-1, d])], axis=0)
            live = tf.cast(lr > 0, tf.float32)
            neg_hits = tf.reduce_sum(keep * tf.reshape(live, [-1, block, 1]), axis=1)  # [G, k]
            out_hits = tf.concat([live, tf.reshape(neg_hits, [-1])], axis=0)
            h_pos = tf.sigmoid(s_pos) * tf.sigmoid(-s_pos) * lr                 # [B]
            h_neg = tf.sigmoid(s_neg) * tf.sigmoid(-s_neg) * keep * lr_b         # [G, b, k]
            uu = tf.reduce_sum(u * u, axis=1)                                    # [B]
            out_curv = tf.concat([h_pos * uu, tf.reshape(tf.reduce_sum(
                h_neg * tf.reshape(uu, [-1, block, 1]), axis=1), [-1])], axis=0)
            q_curv = h_pos * tf.reduce_sum(pos * pos, axis=1) + tf.reshape(tf.reduce_sum(
                h_neg * tf.reduce_sum(rows * rows, axis=2)[:, tf.newaxis], axis=2), [-1])
        if trainer.curvature_cap is not None:
            cap = trainer._curvature_scale
            out_hits = out_curv
        scale = cap(out_idx, out_hits, tf.shape(out)[0])
        if scale is not None:
            out_val = out_val * scale[:, tf.newaxis]
        # word2vec.c order: neu1e from the output rows before they move, then both.
        if pooled is None:
            q_idx, q_val = qids, du
            q_hits = tf.cast(lr > 0, tf.float32)
            if trainer.curvature_cap is not None:
                q_hits = q_curv
        else:
            mask, size = pooled
            if trainer.pooled_gradient == "mean":
                du = du / size
            q_idx = tf.reshape(qids, [-1])
            q_val = tf.reshape(du[:, tf.newaxis, :] * mask[..., tf.newaxis], [-1, d])
            q_hits = tf.reshape(mask * tf.cast(lr[:, tf.newaxis] > 0, tf.float32), [-1])
            if trainer.curvature_cap is not None:
                q_hits = tf.reshape(mask * q_curv[:, tf.newaxis], [-1])
        scale = cap(q_idx, q_hits, tf.shape(W)[0])
        if scale is not None:
            q_val = q_val * scale[:, tf.newaxis]
        out.scatter_add(tf.IndexedSlices(out_val, out_idx))
        W.scatter_add(tf.IndexedSlices(q_val, q_idx))
        del B
        return per_example


class HogwildRun:
    """One ``fit``'s hogwild engine: the tables as numpy arrays, trained in place by
    training/hogwild.py, and written back into the model's variables."""

    def __init__(self, trainer):
        from twotower.losses.candidates import log_expected_count
        from twotower.training.hogwild import HogwildWord2Vec

        kernel, model = trainer._kernel, trainer.model
        self.trainer = trainer
        query_var = model.query_tower.embeddings
        if kernel.head == "hs":
            head = model.retrieval_loss.head
            output_var, options = head.node_vectors, {"head": "hs", "tree": head.tree}
        else:
            output_var = model.item_tower.embeddings
            log_kq = None
            if kernel.logq:  # NCE: log(k·q(c)) of every id, floored as the batched step does
                q = kernel.sampler.expected_count(np.arange(kernel.sampler.num_items),
                                                  kernel.k)
                log_kq = log_expected_count(q).numpy()
            options = {"head": "sigmoid", "alias_table": kernel.table,
                       "num_negatives": kernel.k, "log_kq": log_kq,
                       "remove_accidental_hits": kernel.remove_accidental_hits}
        self.variables = (query_var, output_var)
        self.tables = [np.array(v.numpy(), dtype=np.float32, order="C") for v in self.variables]
        self.steps, self.elements = int(trainer.steps.numpy()), int(trainer.elements.numpy())
        self.engine = HogwildWord2Vec(*self.tables, cbow=kernel.cbow,
                                      pooled_sum=trainer.pooled_gradient == "sum",
                                      threads=trainer.threads, **options)

    def train(self, batch):
        """The next dataset element; its negatives are drawn from (seed, element index)."""
        item = np.asarray(batch["item"])
        loss, count = self.engine.train(
            np.asarray(batch["query"]), item, np.asarray(batch["progress"]),
            alpha=self.trainer.alpha, min_alpha=self.trainer.min_alpha,
            seed=(self.trainer.seed, self.elements))
        self.elements += 1
        self.steps += 1 if item.ndim == 1 else item.shape[0]
        return loss, float(count)

    def write_back(self):
        """The tables and the step / element counters into the trainer's variables."""
        for var, table in zip(self.variables, self.tables):
            var.assign(table)
        self.trainer.steps.assign(self.steps)
        self.trainer.elements.assign(self.elements)

    def close(self):
        self.write_back()
        self.engine.close()


def pad_stack(chunk, steps, batch_size):
    """Pads (query, item, progress) of [s, n] (s <= steps, n <= batch_size) to
    [steps, batch_size]: the last batch with repeats of its own examples (valid ids for
    any tower, e.g. a CBOW context that is not all padding), then whole batches of those."""
    s, n = int(chunk[1].shape[0]), int(chunk[1].shape[1])
    repeat = tf.range(batch_size) % n
    out = []
    for x in chunk:
        rows = tf.gather(x, repeat, axis=1) if n < batch_size else x
        if s < steps:
            rows = tf.concat([rows, tf.repeat(rows[-1:], steps - s, axis=0)], axis=0)
        out.append(rows)
    return out
