"""Sparse per-example SGD for ID towers: word2vec's optimiser for any TwoTowerModel.

word2vec's quality comes from plain SGD on every (query, item) example with a learning
rate that decays linearly from α to α_min over the whole run, touching only the rows an
example uses (Mikolov et al. 2013; word2vec.c). Keras ``fit`` with a batch-mean loss and
Adam (the old TensorFlow tutorial) is a different optimiser, and both slower and worse
here. This trainer keeps the model — query tower, item tower, RetrievalLoss of
twotower.losses — and replaces only the update:

    per batch of B examples with progress p_i ∈ [0, 1) (fraction of the run done):
      lr_i = α − (α − α_min) · p_i
      L    = Σ_i lr_i · ℓ_i                    (a SUM over the batch, not a mean)
      W   −= ∂L/∂W                             (IndexedSlices → scatter_sub on the rows used)

Summing per-example gradients of a batch and applying them at once is word2vec's Hogwild
(Recht et al. 2011) with a larger stride; it equals B sequential updates to first order.
Gathers give IndexedSlices gradients, so each step writes only the rows it read:
O(B·(1+k)·d) per step, independent of the vocabulary size.

CBOW's query tower is a PooledIDTower (mean of the context, 0 = padding). word2vec.c and
gensim (cbow_mean=1) give every context word the full gradient of the mean, not 1/|S| of
it; ``pooled_gradient="sum"`` reproduces that, "mean" keeps the autodiff gradient.
"""

import time

import numpy as np
import tensorflow as tf
from tqdm.auto import tqdm

from twotower.towers.pooled_id_tower import PooledIDTower

POOLED_GRADIENTS = ("sum", "mean")


class SparseSGDTrainer:
    """Trains a TwoTowerModel with per-example sparse SGD and linear learning-rate decay.

    Args:
      model: a twotower.towers.TwoTowerModel whose towers take ids (IDTower /
        PooledIDTower) and whose loss is a RetrievalLoss (any head, any sampled source).
      alpha: initial learning rate α (word2vec: 0.025 skip-gram, gensim uses it for CBOW too).
      min_alpha: final learning rate α_min.
      pooled_gradient: "sum" (word2vec.c's CBOW update) or "mean" (autodiff), see above.
      query_is_item: the query is an item id of the same catalogue (item2vec, Airbnb,
        EGES): it is passed as "query_id" to the model's step.

    Batches are dicts {"query", "item", "progress"} (data/word2vec_examples.py), one
    batch ([B] leading dim) or a stack of S batches ([S, B]) per element.
    """

    def __init__(self, model, *, alpha=0.025, min_alpha=1e-4, pooled_gradient="sum",
                 query_is_item=False):
        if not (alpha > 0 and np.isfinite(alpha)):
            raise ValueError(f"alpha must be a finite number > 0, got {alpha!r}")
        if not (0 <= min_alpha <= alpha):
            raise ValueError(f"min_alpha must be in [0, alpha={alpha}], got {min_alpha!r}")
        if pooled_gradient not in POOLED_GRADIENTS:
            raise ValueError(f"pooled_gradient must be one of {POOLED_GRADIENTS}, got "
                             f"{pooled_gradient!r}")
        self.model = model
        self.alpha = float(alpha)
        self.min_alpha = float(min_alpha)
        self.pooled_gradient = pooled_gradient
        self.query_is_item = bool(query_is_item)
        # XLA fuses the gathers, the loss and its gradient into a few loops: 2-3x faster
        # than op-by-op on CPU. The loop over the S steps of an element is compiled too (one
        # launch per S steps, ~10% less CPU per step than a graph loop around a compiled
        # step). XLA compiles once per shape, so every element is cut or padded to the
        # first one's [S, B]: a loop runs only its real steps (a dynamic trip count), and
        # an epoch's short last batch is padded with repeats of its own examples at
        # learning rate 0 (op by op it cost ~20x a full step).
        # AutoGraph is off: converting the model's Keras calls took 1.8 s of the first
        # call's 2.7 s (word2vec, enwiki) and the step has no Python control flow on
        # tensors; a model that needs it gets AutoGraph back (see _run_steps).
        self._steps_xla = tf.function(self._train_steps, jit_compile=True, autograph=False)
        self._step_graph = tf.function(self._train_step, reduce_retracing=True)
        self._batch_size = None
        self._stack = None

    def _train_steps(self, query, item, progress, num_steps, valid):
        """Steps 0 .. num_steps − 1 of a padded [S, B] stack whose batches hold ``valid``
        real examples each (the padding gets weight 0)."""
        weight = tf.cast(tf.range(tf.shape(item)[1]) < valid, tf.float32)

        def body(i, loss, count):
            step_loss, n = self._train_step(query[i], item[i], progress[i], weight)
            return i + 1, loss + step_loss, count + n

        _, loss, count = tf.while_loop(lambda i, loss, count: i < num_steps, body,
                                       (tf.constant(0), tf.constant(0.0), tf.constant(0.0)))
        return loss, count

    def _step(self, query, item, progress):
        """One batch ([B] ids) or a stack of S batches ([S, B]); returns (loss, count)."""
        query, item, progress = (tf.convert_to_tensor(x) for x in (query, item, progress))
        if item.shape.rank == 1:
            query, item, progress = query[tf.newaxis], item[tf.newaxis], progress[tf.newaxis]
        steps, n = int(item.shape[0]), int(item.shape[1])
        if self._batch_size is None:
            self._batch_size, self._stack = n, steps
        if n > self._batch_size:  # larger than the compiled batch: op by op
            out = [self._step_graph(query[i], item[i], progress[i]) for i in range(steps)]
            return tf.add_n([o[0] for o in out]), tf.add_n([o[1] for o in out])
        loss, count = tf.constant(0.0), tf.constant(0.0)
        for start in range(0, steps, self._stack):
            chunk = [query, item, progress]
            if steps > self._stack:
                chunk = [x[start:start + self._stack] for x in chunk]
            num_steps = int(chunk[1].shape[0])
            if num_steps != self._stack or n != self._batch_size:
                chunk = _pad_stack(chunk, self._stack, self._batch_size)
            l, c = self._run_steps(*chunk, tf.constant(num_steps), tf.constant(n))
            loss, count = loss + l, count + c
        return loss, count

    def _run_steps(self, *args):
        try:
            return self._steps_xla(*args)
        except tf.errors.OperatorNotAllowedInGraphError:
            # Raised while tracing (nothing ran yet): Python control flow on a tensor
            # somewhere in the model; trace again with AutoGraph.
            self._steps_xla = tf.function(self._train_steps, jit_compile=True)
            return self._steps_xla(*args)

    def per_example_loss(self, query, item):
        """[B] losses ℓ_i of the model's RetrievalLoss for a batch (no reduction): the
        model's own step (TwoTowerModel.per_example_losses). With query_is_item, the query
        id is also passed as the batch's "query_id" (own-id mask, query-anchored
        negatives such as GroupNegatives)."""
        batch = {"query": query, "item": item}
        if self.query_is_item:
            batch["query_id"] = query
        return self.model.per_example_losses(batch, training=True)

    def _train_step(self, query, item, progress, weight=None):
        lr = self.alpha - (self.alpha - self.min_alpha) * tf.cast(progress, tf.float32)
        if weight is not None:  # 0 on padding
            lr = lr * weight
        with tf.GradientTape() as tape:
            per_example = self.per_example_loss(query, item)
            total = tf.reduce_sum(per_example * lr)
        variables = self.model.trainable_variables
        grads = tape.gradient(total, variables)
        pooled = self.model.query_tower
        for var, grad in zip(variables, grads):
            if grad is None:
                continue
            if isinstance(grad, tf.IndexedSlices):
                values = grad.values
                if (self.pooled_gradient == "sum" and isinstance(pooled, PooledIDTower)
                        and pooled.pooling == "mean" and var is pooled.embeddings):
                    # The gather of ids [B, L] yields one gradient row per (row, slot), in
                    # row-major order; undo the 1/|S| of the mean for each.
                    ids = tf.convert_to_tensor(query)
                    count = tf.reduce_sum(tf.cast(tf.not_equal(ids, 0), values.dtype), axis=1)
                    scale = tf.repeat(tf.maximum(count, 1.0), tf.shape(ids)[1])
                    values = values * scale[:, tf.newaxis]
                var.scatter_sub(tf.IndexedSlices(values, grad.indices, grad.dense_shape))
            else:
                var.assign_sub(grad)
        if weight is None:
            return tf.reduce_sum(per_example), tf.cast(tf.shape(per_example)[0], tf.float32)
        return tf.reduce_sum(per_example * weight), tf.reduce_sum(weight)

    def train_step(self, batch):
        """One sparse SGD step on a batch dict; returns the batch's summed loss (float)."""
        loss, _ = self._step(batch["query"], batch["item"], batch["progress"])
        return float(loss)

    def _check_finite(self, loss, examples_so_far):
        if not np.isfinite(loss):
            raise FloatingPointError(
                f"the loss became {loss} after about {int(examples_so_far)} examples: the "
                f"summed per-example updates of a batch diverged; use a smaller batch size "
                f"(this one: {self._batch_size}) or a smaller alpha ({self.alpha})")

    def fit(self, dataset, *, total_batches=None, progress=True, description="training",
            log_every=200):
        """Runs every batch of ``dataset``; returns a dict with examples, seconds, mean loss.

        ``total_batches`` sizes the progress bar (None: unknown). The loss shown is the
        running mean per example over the last ``log_every`` batches (elements). Raises
        FloatingPointError, naming the batch size and alpha, when the loss diverges (too
        many summed updates land on the same frequent rows: 16384-example batches on the
        enwiki extract do; 4096 do not).
        """
        start = time.perf_counter()
        examples, loss_sum, recent = 0.0, 0.0, []
        bar = tqdm(total=total_batches, desc=description, unit="batch", disable=not progress,
                   mininterval=1.0)
        for i, batch in enumerate(dataset):
            loss, n = self._step(batch["query"], batch["item"], batch["progress"])
            recent.append((loss, n))
            bar.update(1)
            if len(recent) >= log_every:
                ls = float(tf.add_n([r[0] for r in recent]))
                ns = float(tf.add_n([r[1] for r in recent]))
                self._check_finite(ls, examples)
                loss_sum += ls
                examples += ns
                bar.set_postfix(loss=f"{ls / max(ns, 1):.4f}")
                recent = []
        if recent:
            ls = float(tf.add_n([r[0] for r in recent]))
            self._check_finite(ls, examples)
            loss_sum += ls
            examples += float(tf.add_n([r[1] for r in recent]))
        bar.close()
        seconds = time.perf_counter() - start
        return {"examples": int(examples), "seconds": seconds,
                "mean_loss": loss_sum / max(examples, 1.0)}


def _pad_stack(chunk, steps, batch_size):
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
