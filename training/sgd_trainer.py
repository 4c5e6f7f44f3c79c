"""Sparse per-example SGD for ID towers: word2vec's optimiser for any TwoTowerModel.

word2vec's quality comes from plain SGD on every (query, item) example with a learning
rate that decays linearly from α to α_min over the whole run, touching only the rows an
example uses (Mikolov et al. 2013; word2vec.c). This trainer keeps the model — query
tower, item tower, RetrievalLoss — and replaces only the update, in one of two engines:

  hogwild (word2vec's own models, their default): each example applied on its own, in
    text order, by several threads over shared numpy copies of the tables
    (training/hogwild.py; written back to the variables at each checkpoint and the end).
  batched (any model): a compiled TensorFlow step a batch,

    lr_i = α − (α − α_min) · p_i                      (p_i: fraction of the run done)
    g_r  = Σ_{i touches row r} lr_i · ∂ℓ_i/∂W_r        (a sum over the batch, not a mean)
    W_r −= g_r / max(1, n_r / c)                       (count bound, c = ``row_step_cap``)
    W_r −= g_r / max(1, T_r / τ)                       (curvature bound, τ = ``curvature_cap``)

  with n_r the updates landing on row r and T_r = Σ lr_i·σ'(z_i)·|x_i|² their summed
  Gauss-Newton curvature (x_i the vector across the dot product z_i). Summing a batch's
  per-example steps is Hogwild (Recht et al. 2011) with a stride of B; a row that many
  examples hit would move n·lr along a stale gradient and diverge, and the bound turns
  its step into at most a Newton step (curvature; word2vec's own models) or c times its
  mean gradient (count; any other model), leaving rare rows and small batches at the
  plain sum. NEG / NCE in the compiled word2vec step draw each negative once for a block
  of ``negative_block`` consecutive examples (HogBatch: Ji et al. 2016).

Cost: gathers give IndexedSlices gradients, so a step writes only the rows it read —
O(B·(1+k)·d), independent of the vocabulary. Measurements of both bounds and engines:
docs/benchmarks.md.

Negatives of the fast engines come from the sampler's alias table
(``Sampler.alias_table``), so any sampler with one works; one without it makes the
trainer warn and run the autodiff step ("auto" / "batched") or refuse ("hogwild").

CBOW's query tower is a PooledIDTower (mean of the context, 0 = padding);
``pooled_gradient="sum"`` gives every context word the full gradient of the mean, as
word2vec.c and gensim (cbow_mean=1) do.

Checkpoints (``checkpoint_dir``, tf.train.CheckpointManager): every model variable, the
step / element / example counters, the running loss, the learning-rate position and the
RNG position; a resumed run skips the elements already consumed (the input stream is a
function of (seed, epoch)). The compiled word2vec step's negatives are stateless draws
keyed by (seed, step), so a resumed run draws exactly what the uninterrupted one drew;
other models' samplers are reseeded from (seed, step): the same run statistically.
"""

import itertools
import json
import math
import os
import time
import warnings

import numpy as np
import tensorflow as tf
from tqdm.auto import tqdm

from twotower.towers.pooled_id_tower import PooledIDTower
from twotower.training.word2vec_kernels import HogwildRun, Word2VecKernel, pad_stack

POOLED_GRADIENTS = ("sum", "mean")

#: Default τ of the curvature bound of word2vec's compiled step (module docstring).
CURVATURE_CAP = 1.0
#: Default c of the count bound W_r −= g_r / max(1, n_r / c) of other models.
ROW_STEP_CAP = 32.0
#: Default b: examples of a batch that share one draw of k negatives (HogBatch).
NEGATIVE_BLOCK = 8
#: Default checkpoint interval, in SGD steps.
CHECKPOINT_EVERY = 2000
#: ``engine`` values of SparseSGDTrainer.
ENGINES = ("auto", "hogwild", "batched")


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
      row_step_cap: c of the per-row bound (module docstring); ``math.inf`` applies the
        plain summed update.
      negative_block: b, consecutive examples of a batch that share one draw of k
        negatives in the compiled word2vec step (1: each example draws its own, as
        word2vec.c). Must divide the batch size (else the largest divisor of it <= b is
        used).
      seed: seeds the compiled step's stateless negative draws (by (seed, step)) and the
        reseeding of other samplers at each (re)start.
      checkpoint_dir: folder for a tf.train.CheckpointManager (None: no checkpoints);
        ``fit`` resumes from its latest checkpoint.
      checkpoint_every: SGD steps between checkpoints (and one at the end).
      curvature_cap: τ of the curvature bound of the batched word2vec step (None: the
        count bound, ``math.inf``: the plain sum).
      engine: "hogwild" applies the examples one by one, in order, in ``threads``
        threads over shared tables (training/hogwild.py: word2vec.c's own update; word2vec's
        own models only); "batched" runs the compiled summed step of a batch with the
        row bound (any model); "auto" (default) is hogwild where it applies, else batched.
        With hogwild the batch size only sets how many examples a call hands to the
        threads; the bounds above (row_step_cap, curvature_cap, negative_block) are the
        batched engine's.
      threads: hogwild threads (1: deterministic; more: faster, not bitwise repeatable).

    Batches are dicts {"query", "item", "progress"} (data/word2vec_examples.py), one
    batch ([B] leading dim) or a stack of S batches ([S, B]) per element.
    """

    def __init__(self, model, *, alpha=0.025, min_alpha=1e-4, pooled_gradient="sum",
                 query_is_item=False, row_step_cap=ROW_STEP_CAP, negative_block=NEGATIVE_BLOCK,
                 seed=0, checkpoint_dir=None, checkpoint_every=CHECKPOINT_EVERY,
                 curvature_cap=CURVATURE_CAP, engine="auto", threads=2):
        if not (alpha > 0 and np.isfinite(alpha)):
            raise ValueError(f"alpha must be a finite number > 0, got {alpha!r}")
        if not (0 <= min_alpha <= alpha):
            raise ValueError(f"min_alpha must be in [0, alpha={alpha}], got {min_alpha!r}")
        if pooled_gradient not in POOLED_GRADIENTS:
            raise ValueError(f"pooled_gradient must be one of {POOLED_GRADIENTS}, got "
                             f"{pooled_gradient!r}")
        if not (isinstance(row_step_cap, (int, float, np.number)) and row_step_cap >= 1):
            raise ValueError(f"row_step_cap must be a number >= 1 (or math.inf), got "
                             f"{row_step_cap!r}")
        if not isinstance(negative_block, (int, np.integer)) or negative_block < 1:
            raise ValueError(f"negative_block must be an int >= 1, got {negative_block!r}")
        if not isinstance(seed, (int, np.integer)):
            raise ValueError(f"seed must be an int, got {seed!r}")
        if not isinstance(checkpoint_every, (int, np.integer)) or checkpoint_every < 1:
            raise ValueError(f"checkpoint_every must be an int >= 1, got {checkpoint_every!r}")
        self.model = model
        self.alpha = float(alpha)
        self.min_alpha = float(min_alpha)
        self.pooled_gradient = pooled_gradient
        self.query_is_item = bool(query_is_item)
        self.row_step_cap = float(row_step_cap)
        if curvature_cap is not None and not (
                isinstance(curvature_cap, (int, float, np.number)) and curvature_cap > 0):
            raise ValueError(f"curvature_cap must be a number > 0 (or math.inf, or None for "
                             f"the count bound), got {curvature_cap!r}")
        self.curvature_cap = None if curvature_cap is None else float(curvature_cap)
        self.negative_block = int(negative_block)
        self.seed = int(seed)
        self.checkpoint_dir = checkpoint_dir
        self.checkpoint_every = int(checkpoint_every)
        self._kernel, why_not = Word2VecKernel.for_model(model, query_is_item)
        if engine not in ENGINES:
            raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
        if engine == "hogwild" and self._kernel is None:
            raise ValueError("engine='hogwild' applies only to word2vec's own models (an "
                             "IDTower or mean PooledIDTower query tower, an IDTower item "
                             "tower, NEG / NCE over per-example negatives of a sampler "
                             "with an alias table, or hierarchical softmax)"
                             + (f"; here {why_not}" if why_not else "")
                             + "; use engine='batched' or 'auto' for this model")
        if why_not is not None:  # word2vec's model but for its sampler: never silently
            warnings.warn(
                f"SparseSGDTrainer: {why_not}, so neither fast word2vec engine (hogwild, "
                "or the batched engine's compiled word2vec step) can draw its negatives; "
                "training runs the batched engine's autodiff step instead (the same "
                "update, several times slower)", stacklevel=2)
        if not isinstance(threads, (int, np.integer)) or threads < 1:
            raise ValueError(f"threads must be an int >= 1, got {threads!r}")
        #: The engine in use: "hogwild" or "batched".
        self.engine = "hogwild" if engine != "batched" and self._kernel is not None else "batched"
        self.threads = int(threads)
        # Counters (checkpointed): SGD steps, dataset elements consumed, examples, the
        # summed loss, the progress p of the last example.
        self.steps = tf.Variable(0, dtype=tf.int64, trainable=False, name="steps")
        self.elements = tf.Variable(0, dtype=tf.int64, trainable=False, name="elements")
        self.examples = tf.Variable(0.0, dtype=tf.float64, trainable=False, name="examples")
        self.loss_sum = tf.Variable(0.0, dtype=tf.float64, trainable=False, name="loss_sum")
        self.last_progress = tf.Variable(0.0, dtype=tf.float32, trainable=False,
                                         name="last_progress")
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

    # ------------------------------------------------------------------ the update

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
                chunk = pad_stack(chunk, self._stack, self._batch_size)
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

    def _row_scale(self, indices, hits, num_rows):
        """1 / max(1, n_r / c) for each update of ``indices`` ([M]; ``hits`` [M] is 1 for
        an update that moves its row, 0 for padding), n_r the updates on its row."""
        if math.isinf(self.row_step_cap):
            return None
        counts = tf.math.unsorted_segment_sum(hits, indices, num_rows)
        n = tf.gather(counts, indices)
        return 1.0 / tf.maximum(1.0, n / self.row_step_cap)

    def _curvature_scale(self, indices, curvature, num_rows):
        """1 / max(1, T_r / τ) with T_r the summed curvature of the updates on row r."""
        total = tf.math.unsorted_segment_sum(curvature, indices, num_rows)
        if math.isinf(self.curvature_cap):
            return None
        return 1.0 / tf.maximum(1.0, tf.gather(total, indices) / self.curvature_cap)

    def _train_step(self, query, item, progress, weight=None):
        lr = self.alpha - (self.alpha - self.min_alpha) * tf.cast(progress, tf.float32)
        if weight is not None:  # 0 on padding
            lr = lr * weight
        if self._kernel is not None:
            per_example = self._kernel.step(self, query, item, lr)
        else:
            per_example = self._autodiff_step(query, item, lr)
        self.steps.assign_add(1)
        if weight is None:
            return tf.reduce_sum(per_example), tf.cast(tf.shape(per_example)[0], tf.float32)
        return tf.reduce_sum(per_example * weight), tf.reduce_sum(weight)

    def _autodiff_step(self, query, item, lr):
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
                # An update "lands" on its row when it moves it: padding slots, lr-0
                # padding examples and masked candidates have exactly zero gradient rows.
                hits = tf.cast(tf.reduce_any(tf.not_equal(values, 0), axis=1), values.dtype)
                scale = self._row_scale(grad.indices, hits, tf.shape(var, tf.int64)[0])
                if scale is not None:
                    values = values * scale[:, tf.newaxis]
                var.scatter_sub(tf.IndexedSlices(values, grad.indices, grad.dense_shape))
            else:
                var.assign_sub(grad)
        return per_example

    def train_step(self, batch):
        """One sparse SGD step on a batch dict; returns the batch's summed loss (float)."""
        loss, _ = self._step(batch["query"], batch["item"], batch["progress"])
        return float(loss)

    # ------------------------------------------------------------------ the loop

    def _check_finite(self, loss, examples_before, examples_after):
        if np.isfinite(loss):
            return
        where = (f"the loss became {loss} between examples {int(examples_before)} and "
                 f"{int(examples_after)}")
        if self.engine == "hogwild":
            raise FloatingPointError(
                f"{where}: the per-example SGD diverged; use a smaller alpha (this one: "
                f"{self.alpha})")
        raise FloatingPointError(
            f"{where}: the summed per-example updates of a batch diverged; use a smaller "
            f"alpha (this one: {self.alpha}), a smaller row_step_cap (this one: "
            f"{self.row_step_cap}) or a smaller batch size (this one: {self._batch_size})")

    def _checkpoint(self):
        ckpt = tf.train.Checkpoint(model_variables=list(self.model.variables),
                                   steps=self.steps, elements=self.elements,
                                   examples=self.examples, loss_sum=self.loss_sum,
                                   last_progress=self.last_progress)
        return tf.train.CheckpointManager(ckpt, self.checkpoint_dir, max_to_keep=2)

    def _check_settings(self, settings):
        """The run's settings beside the checkpoints: resuming with other settings (or
        another run's folder) would silently mix two runs, so it is refused."""
        path = os.path.join(self.checkpoint_dir, "trainer.json")
        if os.path.exists(path):
            with open(path) as f:
                saved = json.load(f)
            if saved != settings:
                diff = sorted(k for k in set(saved) | set(settings)
                              if saved.get(k) != settings.get(k))
                raise ValueError(
                    f"checkpoint_dir {self.checkpoint_dir!r} holds a run with other settings "
                    f"({', '.join(diff)}); use another folder or the same settings")
        else:
            os.makedirs(self.checkpoint_dir, exist_ok=True)
            with open(path + ".tmp", "w") as f:
                json.dump(settings, f, indent=2, sort_keys=True)
            os.replace(path + ".tmp", path)

    def settings(self):
        """The settings that must match for a checkpoint to be resumed."""
        return {"alpha": self.alpha, "min_alpha": self.min_alpha,
                "pooled_gradient": self.pooled_gradient, "row_step_cap": self.row_step_cap,
                "negative_block": self.negative_block, "seed": self.seed,
                "curvature_cap": self.curvature_cap, "engine": self.engine,
                "variables": [[v.name, v.shape.as_list()] for v in self.model.variables]}

    def fit(self, dataset, *, total_batches=None, progress=True, description="training",
            log_every=200, run_settings=None, batch_shape=None):
        """Runs every batch of ``dataset``; returns a dict with examples, seconds, mean
        loss, steps and resumed_from (elements skipped on resume).

        ``total_batches`` sizes the progress bar (None: unknown). The loss shown is the
        running mean per example over the last ``log_every`` batches (elements). Raises
        FloatingPointError, naming alpha (and for the batched engine the row bound and the
        batch size), when the loss diverges. With ``checkpoint_dir`` the run resumes from the latest checkpoint
        there: the first ``elements`` elements of ``dataset`` are skipped, so ``dataset``
        must yield the same elements in the same order on every run. ``run_settings``
        (a JSON-able dict, e.g. the data and model settings) joins the trainer's own in
        the check that a checkpoint belongs to this run. ``batch_shape`` = (S, B), the
        stack of the dataset's full elements, fixes the compiled shape up front (default:
        the first element's; a resumed run may start on an epoch's short last element).
        """
        if batch_shape is not None:
            self._stack, self._batch_size = int(batch_shape[0]), int(batch_shape[1])
        start = time.perf_counter()
        manager, resumed_from = None, 0
        if self.checkpoint_dir is not None:
            self._check_settings(dict(self.settings(), run=run_settings))
            manager = self._checkpoint()
            if manager.latest_checkpoint:
                manager.checkpoint.restore(manager.latest_checkpoint).assert_consumed()
                resumed_from = int(self.elements.numpy())
        # Other models' samplers draw with TF's stateful ops: reseed them by the position.
        tf.random.set_seed(self.seed * 1_000_003 + int(self.steps.numpy()))
        if resumed_from:
            if isinstance(dataset, tf.data.Dataset):
                dataset = dataset.skip(resumed_from)
            else:
                dataset = itertools.islice(dataset, resumed_from, None)
        examples, loss_sum = float(self.examples.numpy()), float(self.loss_sum.numpy())
        recent = []
        last_saved = int(self.steps.numpy())
        hogwild = HogwildRun(self) if self.engine == "hogwild" else None
        bar = tqdm(total=total_batches, initial=resumed_from, desc=description, unit="batch",
                   disable=not progress, mininterval=1.0)

        def flush():
            nonlocal examples, loss_sum, recent
            if not recent:
                return
            ls = math.fsum(float(r[0]) for r in recent)
            ns = math.fsum(float(r[1]) for r in recent)
            self._check_finite(ls, examples, examples + ns)
            loss_sum += ls
            examples += ns
            bar.set_postfix(loss=f"{ls / max(ns, 1):.4f}")
            self.examples.assign(examples)
            self.loss_sum.assign(loss_sum)
            recent = []

        def steps_done():
            return hogwild.steps if hogwild is not None else int(self.steps.numpy())

        try:
            for batch in dataset:
                if hogwild is None:
                    loss, n = self._step(batch["query"], batch["item"], batch["progress"])
                    self.elements.assign_add(1)
                else:  # counts in Python: no TensorFlow op between its kernels
                    loss, n = hogwild.train(batch)
                recent.append((loss, n))
                bar.update(1)
                if len(recent) >= log_every:
                    flush()
                if manager is not None and steps_done() - last_saved >= self.checkpoint_every:
                    flush()  # never save a diverged state
                    self.last_progress.assign(float(np.max(batch["progress"])))
                    if hogwild is not None:
                        hogwild.write_back()
                    manager.save(checkpoint_number=steps_done())
                    last_saved = steps_done()
        finally:  # the tables back into the variables, the threads stopped
            if hogwild is not None:
                hogwild.close()
        flush()
        if manager is not None and int(self.steps.numpy()) != last_saved:
            manager.save(checkpoint_number=int(self.steps.numpy()))
        bar.close()
        seconds = time.perf_counter() - start
        return {"examples": int(examples), "seconds": seconds,
                "mean_loss": loss_sum / max(examples, 1.0), "steps": int(self.steps.numpy()),
                "resumed_from": resumed_from}
