"""The recipes' training loop around ``model.fit``: resumable, measured, compiled.

:func:`fit` compiles a TwoTowerModel (dense Adam — XLAAdam under XLA — for small
tables, LazyAdam for large ones: training/optimizer_choice.py), streams every epoch's
batches from :func:`resumable_dataset` — each epoch a stateless shuffle of (seed, epoch),
so a resumed run draws exactly the batches the interrupted one would have — and with a
checkpoint folder saves weights, optimizer slots, the frequency estimator and the input
position every few steps (Keras ``BackupAndRestore``). It returns the loss history and
the training throughput.

Settings are read by name from one object (the recipes' RecipeConfig): epochs,
batch_size, lr, seed, verbose, quiet, checkpoint_dir, checkpoint_every, jit_compile,
steps_per_execution, optimizer.
"""

import dataclasses
import json
import os
import sys
import time

import numpy as np
import tensorflow as tf

from twotower.artifacts import OutputPathError, atomic_write_json, check_output_dir
from twotower.data.retrieval_task import example_inputs, item_inputs, query_inputs
from twotower.data.sharded_split import ShardedSplit
from twotower.towers.feature_tower import preprocessed_key
from twotower.towers.retrieval_towers import item_table, preprocessed
from twotower.training.optimizer_choice import choose_optimizer, table_rows

RUN_FILE = "twotower-run.json"
# fields that may change between a run and its resumption (they do not change the result)
_RESUME_FREE = ("out", "overwrite", "verbose", "quiet", "checkpoint_dir", "checkpoint_every",
                "read_memory_gb",
                "target_recall", "export", "exact_eval_items", "eval_users")


def check_checkpoint_dir(path):
    """Checks that ``--checkpoint-dir`` may be used; returns its absolute path.

    Allowed: a missing folder (its parent creatable), an empty one, or one that holds a
    twotower training run (its ``twotower-run.json``). Anything else is refused with
    OutputPathError before work starts: the checkpoint folder is deleted when training
    completes, and twotower never deletes what it did not write.
    """
    if not isinstance(path, (str, os.PathLike)) or not str(path).strip():
        raise OutputPathError(f"--checkpoint-dir must be a folder path, got {path!r}")
    target = os.path.abspath(os.path.expanduser(os.fspath(path)))
    if os.path.isdir(target) and not os.path.islink(target) and os.listdir(target) \
            and os.path.isfile(os.path.join(target, RUN_FILE)):
        return target
    # missing or empty: the same rules as an output folder
    return check_output_dir(target, flag="--checkpoint-dir")


def training_dataset(data, config, split=None, *, towers=None):
    """tf.data of {"query": user features + history, "item": item features}, shuffled: one
    epoch per iteration, for a plain ``model.fit(ds, epochs=...)`` (the TFRS comparison in
    benchmarks/). The recipes' :func:`fit` uses :func:`resumable_dataset` instead.

    With ``towers`` = (query tower, item tower), the features are those towers'
    preprocessed inputs (:func:`preprocessed`; computed once for the split and, for the
    items, once per item), so the training step does only numeric work."""
    split = split or data.train
    if isinstance(split, ShardedSplit):
        raise ValueError("training_dataset takes a split held in memory; this log's training "
                         "split is streamed from shards (load_log_task): train it with "
                         "fit(), or build the task in memory with log_task()")
    q = query_inputs(data, split)
    if towers is not None:
        q = preprocessed(towers[0], q)
        feats = {k: v[np.asarray(split.item)] for k, v in item_table(towers[1], data).items()}
    else:
        feats = item_inputs(data, split.item)
    ds = tf.data.Dataset.from_tensor_slices({"query": q, "item": feats})
    ds = ds.shuffle(min(len(split), 200_000), seed=config.seed, reshuffle_each_iteration=True)
    return ds.batch(config.batch_size).prefetch(tf.data.AUTOTUNE)


def steps_per_epoch(num_examples, batch_size):
    """ceil(num_examples / batch_size): the last batch of an epoch may be smaller."""
    return -(-int(num_examples) // int(batch_size))


def epoch_order(num_examples, seed, epoch):
    """The example order of one epoch: a permutation of [0, num_examples) that is a pure
    function of (seed, epoch) (TensorFlow's stateless Philox shuffle), so that a resumed
    run draws exactly the batches the interrupted one would have."""
    key = tf.stack([tf.cast(seed, tf.int64), tf.cast(epoch, tf.int64)])
    return tf.random.experimental.stateless_shuffle(
        tf.range(num_examples, dtype=tf.int64), seed=key)


def resumable_dataset(data, config, start_step, split=None, *, query=None, items=None,
                      drop_remainder=False):
    """Every epoch's batches as one stream, starting at global step ``start_step``.

    Epoch e is :func:`epoch_order` (seed, e) cut into batches of ``config.batch_size``;
    global step s is batch s mod S of epoch s // S (S = steps per epoch). ``start_step``
    is a tf.Variable read when the iterator starts, so that a callback can set it after
    Keras' BackupAndRestore restored the optimizer's step count: Keras resumes mid-epoch
    by running only the remaining steps of that epoch but reads them from the start of
    the iterator, so the stream itself must begin at the restored position.

    ``query`` (the split's query inputs, row = example) and ``items`` (the item table,
    row = item) replace the raw features, e.g. by their preprocessed forms.
    ``drop_remainder`` leaves out each epoch's last, smaller batch (fewer than
    ``config.batch_size`` examples, other ones every epoch as the order is reshuffled),
    so that every batch has one shape: an XLA-compiled step compiles one program per
    input shape.

    Returns (dataset of {"query": ..., "item": ...} batches, steps per epoch); pass both
    to ``model.fit(ds, epochs=config.epochs, steps_per_epoch=...)``.
    """
    split = split if split is not None else data.train
    n, batch = len(split), int(config.batch_size)
    if n == 0:
        raise ValueError("the training split is empty: nothing to train on")
    full = drop_remainder and n >= batch
    steps = n // batch if full else steps_per_epoch(n, batch)
    query = query if query is not None else query_inputs(data, split)
    items = items if items is not None else item_inputs(data)
    query = {k: tf.constant(np.asarray(v)) for k, v in query.items()}
    items = {k: tf.constant(np.asarray(v)) for k, v in items.items()}
    item_rows = tf.constant(np.asarray(split.item, dtype=np.int64))
    seed = int(config.seed)

    def epoch_batches(epoch):
        order = epoch_order(n, seed, epoch)
        first = tf.maximum(start_step.read_value() - epoch * steps, 0)
        if full:  # every batch has ``batch`` rows: say so in its shape (one XLA program)
            return tf.data.Dataset.range(first, steps).map(
                lambda j: tf.reshape(order[j * batch:(j + 1) * batch], [batch]))
        return tf.data.Dataset.range(first, steps).map(
            lambda j: order[j * batch:tf.minimum((j + 1) * batch, n)])

    def features(rows):
        item = tf.gather(item_rows, rows)
        return {"query": {k: tf.gather(v, rows) for k, v in query.items()},
                "item": {k: tf.gather(v, item) for k, v in items.items()}}

    ds = tf.data.Dataset.range(int(config.epochs))
    ds = ds.filter(lambda e: (e + 1) * steps > start_step.read_value())
    if full:
        # every batch full: gather _BLOCK batches per map call ([k, B] rows) and unbatch,
        # the same stream with 1/_BLOCK of the per-call overhead (~10% of a compiled step)
        ds = ds.flat_map(epoch_batches).batch(_BLOCK).map(
            features, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).unbatch()
    else:
        ds = ds.flat_map(epoch_batches).map(features, num_parallel_calls=tf.data.AUTOTUNE,
                                            deterministic=True)
    return ds.prefetch(tf.data.AUTOTUNE), steps


_BLOCK = 32


def _user_table(query_tower, data):
    """The users table as the query tower's numeric inputs (one row per user), and the
    key under which a batch's history goes (None when the tower has no history)."""
    n = data.config.history_length
    users = {k: np.asarray(v) for k, v in data.users.items()}
    rows = len(next(iter(users.values())))
    table = preprocessed(query_tower, {**users, "history": np.zeros((rows, n), np.int64)})
    key = preprocessed_key("history") if hasattr(query_tower, "preprocess") else "history"
    if key not in table:
        return table, None
    del table[key]
    return table, key


def streamed_dataset(split, config, start_step, *, users, history_key, items,
                     drop_remainder=False):
    """Every epoch's batches of a ShardedSplit (data/sharded_split.py) as one stream,
    from global step ``start_step`` (a tf.Variable read when the iterator starts, as in
    :func:`resumable_dataset`): the rows of epoch e in the order that is a pure function
    of (seed, e), their user features and the positive's item features gathered from
    the tables ``users`` and ``items`` (row = user / item), the history from the shards
    under ``history_key``. Memory: a shard, whatever the log's length.

    Returns (dataset of {"query": ..., "item": ...} batches, steps per epoch)."""
    n, batch = len(split), int(config.batch_size)
    if n == 0:
        raise ValueError("the training split is empty: nothing to train on")
    full = drop_remainder and n >= batch
    steps = n // batch if full else steps_per_epoch(n, batch)
    epochs, seed = int(config.epochs), int(config.seed)

    def generate():
        done = int(start_step.numpy())
        for epoch in range(done // steps, epochs):
            yield from split.batches(batch, seed, epoch, first=max(done - epoch * steps, 0),
                                     drop_remainder=full)

    shape = [batch] if full else [None]
    ds = tf.data.Dataset.from_generator(generate, output_signature={
        "user": tf.TensorSpec(shape, tf.int64), "item": tf.TensorSpec(shape, tf.int64),
        "history": tf.TensorSpec(shape + [split.history_length], tf.int64)})
    users = {k: tf.constant(v) for k, v in users.items()}
    items = {k: tf.constant(np.asarray(v)) for k, v in items.items()}

    def features(b):
        query = {k: tf.gather(v, b["user"]) for k, v in users.items()}
        if history_key is not None:
            query[history_key] = b["history"]
        return {"query": query, "item": {k: tf.gather(v, b["item"]) for k, v in items.items()}}

    return ds.map(features, num_parallel_calls=tf.data.AUTOTUNE,
                  deterministic=True).prefetch(tf.data.AUTOTUNE), steps


class Throughput(tf.keras.callbacks.Callback):
    """Training examples per second, timed from the end of the first step (so tracing
    and graph building are not counted) to the end of training. A resumed run counts the
    steps it ran (``start_step``: a tf.Variable or int, read at train begin). The running
    figure goes into the batch and epoch logs as ``examples/s``, which Keras' progress
    bar prints."""

    def __init__(self, batch_size, num_examples, epochs, *, start_step=0):
        super().__init__()
        self.batch_size, self.num_examples, self.epochs = batch_size, num_examples, epochs
        self._start_step = start_step
        self._steps_per_epoch = steps_per_epoch(num_examples, batch_size)
        self.start = None
        self.steps = 0
        self.examples = 0
        self.seconds = float("nan")
        self.examples_per_sec = float("nan")

    def on_train_begin(self, logs=None):
        self._step = int(self._start_step.numpy() if hasattr(self._start_step, "numpy")
                         else self._start_step)
        self._epoch = self._step // self._steps_per_epoch

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def _rows(self, step):
        if step % self._steps_per_epoch == self._steps_per_epoch - 1:
            return self.num_examples - (self._steps_per_epoch - 1) * self.batch_size
        return self.batch_size

    def on_train_batch_end(self, batch, logs=None):
        # with steps_per_execution > 1 Keras calls back once per execution, ``batch``
        # being the index (in the epoch) of its last step
        done = max(self._epoch * self._steps_per_epoch + int(batch) + 1, self._step + 1)
        rows = sum(self._rows(s) for s in range(self._step, done))
        if self.start is None:
            self.start = time.perf_counter()
        else:
            self.steps += done - self._step
            self.examples += rows
            if logs is not None:  # shown by Keras' progress bar beside the loss and ETA
                logs["examples/s"] = self.examples / max(time.perf_counter() - self.start, 1e-9)
        self._step = done

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None and self.examples:  # the epoch's line (verbose 2)
            logs["examples/s"] = self.examples / max(time.perf_counter() - self.start, 1e-9)

    def on_train_end(self, logs=None):
        self.seconds = time.perf_counter() - (self.start or time.perf_counter())
        self.examples_per_sec = (self.examples / self.seconds if self.seconds > 0
                                 else float("nan"))


class FitState(tf.Module):
    """What Keras' BackupAndRestore does not keep but a resumed run must report: the mean
    loss of every epoch so far and the epoch's running loss (the loss tracker's total and
    count; fit resets metrics when an epoch starts, so a resumed epoch would otherwise
    average only its remaining steps). Attached to the model, so it rides in the same
    checkpoint as the weights."""

    def __init__(self, epochs):
        super().__init__(name="twotower_fit_state")
        self.epoch_loss = tf.Variable(tf.fill([int(epochs)], float("nan")), trainable=False,
                                      name="epoch_loss")
        self.loss_total = tf.Variable(0.0, trainable=False, name="loss_total")
        self.loss_count = tf.Variable(0.0, trainable=False, name="loss_count")


class RecordLoss(tf.keras.callbacks.Callback):
    """Copies the loss tracker into a :class:`FitState`: at every epoch end and, with
    ``every_step`` (when checkpointing), after every step, before a checkpoint of that
    step is written (list it before the backup callback)."""

    def __init__(self, state, *, every_step=False):
        super().__init__()
        self.state = state
        self.every_step = bool(every_step)
        self.epoch = 0

    def _record(self):
        tracker = self.model.loss_tracker
        self.state.loss_total.assign(tracker.total)
        self.state.loss_count.assign(tracker.count)
        # a whole-variable assign: a slice of a MirroredVariable (--strategy) is a tensor
        loss = self.state.epoch_loss
        loss.assign(tf.tensor_scatter_nd_update(loss, [[self.epoch]], [tracker.result()]))

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self.every_step:
            self._record()

    def on_epoch_end(self, epoch, logs=None):
        self._record()

    def _implements_train_batch_hooks(self):
        return self.every_step


class ResumableBackup(tf.keras.callbacks.BackupAndRestore):
    """``tf.keras.callbacks.BackupAndRestore`` plus the input position and the running
    epoch loss.

    The checkpoint (``DIR/chief``, written every ``save_freq`` steps and deleted when
    training completes) holds the model: tower weights, the item feature table, the
    streaming frequency estimator's arrays and step (model variables), a learned
    temperature, the optimizer's slots and step count, and the :class:`FitState`. After
    restoring it, ``start_step`` is set to the optimizer's step count, which
    :func:`resumable_dataset` starts from; at the first epoch begin, the loss tracker gets
    the restored running total back.
    """

    def __init__(self, backup_dir, *, save_freq, state, start_step, steps_per_epoch):
        super().__init__(backup_dir, save_freq=int(save_freq), delete_checkpoint=True)
        self.state, self.start_step, self.steps_per_epoch = state, start_step, steps_per_epoch
        self.resumed_at = 0
        self._pending_tracker = None

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        done = int(self.model.optimizer.iterations.numpy())
        self.resumed_at = done
        self.start_step.assign(done)
        if done % self.steps_per_epoch:
            self._pending_tracker = (self.state.loss_total.numpy(),
                                     self.state.loss_count.numpy())

    def on_epoch_begin(self, epoch, logs=None):
        super().on_epoch_begin(epoch, logs)
        if self._pending_tracker is not None:
            tracker = self.model.loss_tracker
            tracker.total.assign(self._pending_tracker[0])
            tracker.count.assign(self._pending_tracker[1])
            self._pending_tracker = None


def _run_record(config):
    fields = {k: v for k, v in dataclasses.asdict(config).items() if k not in _RESUME_FREE}
    record = {"format": "twotower-run/1", "recipe": type(config).__module__, "config": fields}
    return json.loads(json.dumps(record))


def _begin_checkpoints(config):
    """Creates (or, resuming, checks) ``--checkpoint-dir`` and its run record: a resumed
    run must be the same run (same data, model and training flags), or its input
    position and shapes would not match."""
    folder = check_checkpoint_dir(config.checkpoint_dir)
    path = os.path.join(folder, RUN_FILE)
    want = _run_record(config)
    if os.path.isfile(path):
        try:
            with open(path, encoding="utf-8") as f:
                have = json.load(f)
        except (OSError, ValueError) as e:
            raise ValueError(f"--checkpoint-dir {folder!r}: unreadable {RUN_FILE} ({e})") from None
        old = have.get("config") if isinstance(have, dict) else None
        # a setting the recorded run did not know (added since) counts as unchanged
        diff = (sorted(k for k in set(old) & set(want["config"])
                       if old[k] != want["config"][k])
                if isinstance(old, dict) else ["config"])
        if diff or have.get("recipe") != want["recipe"] or have.get("format") != want["format"]:
            shown = ", ".join(f"{k}: {old.get(k)!r} there, {want['config'].get(k)!r} now"
                              for k in diff[:5] if isinstance(old, dict)) or (
                f"recipe {have.get('recipe')!r}, not {want['recipe']!r}")
            raise ValueError(f"--checkpoint-dir {folder!r} holds the checkpoint of a different "
                             f"run ({shown}); rerun with the same flags to resume, or give a "
                             "new --checkpoint-dir")
    else:
        os.makedirs(folder, exist_ok=True)
        atomic_write_json(path, want)
    return folder


def fit(model, data, config, *, extra_callbacks=()):
    """Compiles with Adam(lr) and fits on the training split; returns a dict of
    loss_first_epoch, loss_last_epoch, loss_epoch_<e>, train_seconds, examples_per_sec,
    resumed_at_step, jit_compile, steps_per_execution, lazy_adam (1 when LazyAdam
    trained) and table_rows (the embedding tables' rows in all). ``extra_callbacks``
    (Keras callbacks) run before fit's own, e.g. warm start's CarryOptimizer
    (training/warm_start.py).

    Which Adam: ``config.optimizer`` ("auto" by default: LazyAdam when the embedding
    tables have more rows in all than ``ROWS_PER_EXAMPLE`` × the batch, else dense Adam;
    either compiled with XLA where the step allows; training/optimizer_choice.py).
    Progress: Keras' bar with examples/s on a terminal, one line an epoch otherwise,
    none with ``config.quiet`` (:func:`keras_verbose`).

    With ``config.checkpoint_dir``, training is resumable: a checkpoint every
    ``config.checkpoint_every`` steps (:class:`ResumableBackup`), and the same call
    after a kill continues from the last one. What is bit-exact after a resume: the
    weights, optimizer slots, the streaming frequency estimator, the batches of every
    remaining step (:func:`resumable_dataset`) and the loss history, so a model with no
    random op inside its training step ends with the same weights as an uninterrupted
    run (up to float reduction order). What is not: random draws made inside the
    training step by stateful TF ops — the OOV-bucket drops of ``--oov-rate``
    (towers/feature_tower.py) and the uniform index negatives of MixedNegatives /
    SampledNegatives (data/samplers.py ``sample_tf``). Their kernel state is not
    checkpointable; a resumed process draws them afresh from the op seeds, so from the
    resumed step on they are other draws from the same distribution.
    """
    tf.keras.utils.set_random_seed(config.seed)
    split = data.train
    sharded = isinstance(split, ShardedSplit)
    # Strings -> ids once, outside the step: the split's query features — or, for a split
    # streamed from shards, the users table, gathered per batch — and the item table
    # (towers/feature_tower.py FeatureTower.preprocess); the step then does only
    # numeric work and compiles with XLA.
    if sharded:
        query, history_key = _user_table(model.query_tower, data)
    else:
        query = preprocessed(model.query_tower, query_inputs(data, split))
    items = preprocessed(model.item_tower, item_inputs(data), keep=("item_id",))
    spe = 1 if config.checkpoint_dir else int(getattr(config, "steps_per_execution", 1))
    # XLA for a one-device step; under a tf.distribute strategy (--strategy) the loss
    # gathers candidates over replicas with collectives, which stay uncompiled
    jit = (bool(getattr(config, "jit_compile", False)) and _numeric_step(model, query, items)
           and not tf.distribute.has_strategy())
    # built before fit (with raw features first, the signature a saved tower keeps), so
    # that BackupAndRestore can restore weights and optimizer slots in place (an unbuilt
    # model would restore lazily, and Keras warns), and so that its tables have sizes
    example_query, example_item = example_inputs(data)
    model({"query": example_query, "item": example_item}, training=False)
    # dense Adam (XLA) for small tables, LazyAdam (rows a batch uses) for large ones
    choice = choose_optimizer(getattr(config, "optimizer", "auto"),
                              table_rows(model.trainable_variables), jit=jit,
                              batch_size=config.batch_size)
    jit = choice.jit
    if not getattr(config, "quiet", False):
        print(f"optimizer: {choice.reason}", flush=True)
    # steps_per_execution runs that many steps per call into TensorFlow; checkpoints
    # keep 1, as Keras' BackupAndRestore counts calls, not steps, and resumes mid-epoch
    # at a call's first step
    model.compile(optimizer=choice.make(config.lr), jit_compile=jit, steps_per_execution=spe)
    start = tf.Variable(0, dtype=tf.int64, trainable=False, name="start_step")
    # one batch shape under XLA (each shape is compiled anew: ~4 s on the youtube step, more
    # than an epoch of ML-100K): the epoch's last, smaller batch is left out
    drop = jit and len(split) >= config.batch_size
    if sharded:
        dataset, steps = streamed_dataset(split, config, start, users=query,
                                          history_key=history_key, items=items,
                                          drop_remainder=drop)
    else:
        dataset, steps = resumable_dataset(data, config, start, split, query=query,
                                           items=items, drop_remainder=drop)
    trained = steps * config.batch_size if drop else len(split)
    state = FitState(config.epochs)
    model._twotower_fit_state = state  # tracked: saved in the checkpoint with the model
    callbacks = [*extra_callbacks, RecordLoss(state, every_step=bool(config.checkpoint_dir))]
    backup = None
    if config.checkpoint_dir:
        folder = _begin_checkpoints(config)
        backup = ResumableBackup(folder, save_freq=config.checkpoint_every, state=state,
                                 start_step=start, steps_per_epoch=steps)
        callbacks.append(backup)
    meter = Throughput(config.batch_size, trained, config.epochs, start_step=start)
    callbacks.append(meter)
    model.fit(dataset, epochs=config.epochs, steps_per_epoch=steps,
              verbose=keras_verbose(config), callbacks=callbacks)
    if backup is not None:
        try:  # BackupAndRestore removed its checkpoint
            os.remove(os.path.join(folder, RUN_FILE))
        except FileNotFoundError:  # another worker sharing the folder removed it first
            pass
    losses = [float(x) for x in state.epoch_loss.numpy()]
    return {"loss_first_epoch": losses[0], "loss_last_epoch": losses[-1],
            **{f"loss_epoch_{e + 1}": v for e, v in enumerate(losses)},
            "train_seconds": float(meter.seconds),
            "examples_per_sec": float(meter.examples_per_sec),
            "resumed_at_step": int(backup.resumed_at) if backup is not None else 0,
            "jit_compile": int(jit), "steps_per_execution": spe,
            "lazy_adam": int(choice.name == "lazy_adam"),
            "table_rows": choice.table_rows}


def keras_verbose(config):
    """Keras fit's verbosity for ``config``: 0 with ``quiet``, else ``verbose`` when set,
    else a progress bar (1) when stdout is a terminal and one line an epoch (2) when it is
    a file or a pipe (a bar's carriage returns would fill a log)."""
    if getattr(config, "quiet", False):
        return 0
    verbose = getattr(config, "verbose", None)
    if verbose is not None:
        return int(verbose)
    return 1 if sys.stdout.isatty() else 2


def _numeric_step(model, query, items):
    """Whether the training step sees only numbers (XLA compiles no string op): the
    batches' query and item features and the model's item table (sampled items)."""
    table = getattr(model, "_item_features", None)
    columns = [*query.values(), *items.values()]
    columns += (list(table.values()) if isinstance(table, dict)
                else [table] if table is not None else [])
    return not any(c.dtype == tf.string if isinstance(c, (tf.Tensor, tf.Variable))
                   else np.asarray(c).dtype.kind in "OUS" for c in columns)
