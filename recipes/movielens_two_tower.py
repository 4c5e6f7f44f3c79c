"""What the MovieLens two-tower recipes (dssm, youtube, mns, ebr) share: data, towers,
the input pipeline, training with a throughput measurement, full-corpus evaluation and
the report. A recipe is a RetrievalLoss plus a few tower choices over this module.

    data   = load_data(config)                         # MovieLens -> retrieval task
    q, i   = build_towers(data, config, history=...)   # FeatureTowers (cold start by features)
    model  = TwoTowerModel(q, i, loss, item_features=data.items)
    stats  = fit(model, data, config)                  # resumable (--checkpoint-dir)
    report = evaluate(model, data)                     # whole corpus, seen items excluded
    export = export_retriever(model, data)             # tuned ScaNN index + user table
    write_serving(folder, export, model, data)         # OUT/index (twotower serve), OUT/saved_model

Outputs are safe (issue: nothing lost): ``check_outputs(config)`` refuses a bad ``--out``
or ``--checkpoint-dir`` right after parsing, before data is loaded, and ``report`` writes
``--out`` through ``twotower.artifacts.atomic_directory`` (replacing only an earlier
twotower output, and only with ``--overwrite``).
"""

import argparse
import dataclasses
import json
import os
import time

import numpy as np

import twotower  # noqa: F401  (Keras 2 before TensorFlow)
import tensorflow as tf

from twotower.artifacts import (OutputPathError, atomic_directory, atomic_write_json,
                                check_output_dir)
from twotower.data import movielens
from twotower.reporting import format_table, plot_curves, twotower_command, write_metrics
from twotower.towers import feature_tower as ft
from twotower.metrics.retrieval_report import KS, popularity_report, retrieval_report
from twotower.towers.two_tower_model import TwoTowerModel
from twotower.training.xla_adam import XLAAdam

ITEM_FEATURES = ("item_id", "title", "year", "genres")
STRATEGIES = ("none", "mirrored", "multi-worker")
HISTORY_POOLINGS = ("mean", "attention")


@dataclasses.dataclass
class RecipeConfig:
    """Options every MovieLens recipe takes (a recipe subclasses this with its knobs).

    Data: source (folder, zip, "recbole", "url" or "auto"), min_rating, split,
    history_length. Model: dim, hidden (MLP widths). Runtime: epochs, batch_size, lr,
    seed, out (None: no files written), overwrite (replace an earlier twotower output at
    out), checkpoint_dir (None: no checkpoints) and checkpoint_every (steps between
    checkpoints), target_recall (recall@10 vs brute force the exported ScaNN index is
    tuned to), export (write the index and SavedModel to out, not only the metrics),
    verbose.
    """

    epochs: int = 3
    batch_size: int = 256
    lr: float = 0.005
    dim: int = 32
    hidden: tuple = (64,)
    seed: int = 0
    out: str | None = None
    source: str = "auto"
    min_rating: float | None = None
    split: str = "leave_last_out"
    history_length: int = 20
    # how history towers pool the history: "mean" (order-blind) or "attention" (the most
    # recent item attends over the others, with learned positions)
    history_pooling: str = "mean"
    # a user's own log instead of MovieLens (twotower.data.interactions / feature_table)
    interactions: str | None = None
    items: str | None = None
    users: str | None = None
    user_col: str = "user_id"
    item_col: str = "item_id"
    time_col: str = "timestamp"
    item_categorical: tuple = ()
    item_text: tuple = ()
    item_numeric: tuple = ()
    item_multi_hot: tuple = ()
    user_categorical: tuple = ()
    user_text: tuple = ()
    user_numeric: tuple = ()
    user_multi_hot: tuple = ()
    infer_features: bool = True
    oov_rate: float = 0.02
    overwrite: bool = False
    checkpoint_dir: str | None = None
    checkpoint_every: int = 50
    # tf.distribute: "none", "mirrored" (the GPUs of one machine) or "multi-worker"
    # (one process per machine, TF_CONFIG); see make_strategy
    strategy: str = "none"
    target_recall: float = 0.95
    export: bool = True
    verbose: int = 0
    # the compiled training step (see fit): XLA, and steps run per call into TensorFlow
    jit_compile: bool = True
    steps_per_execution: int = 32

    def validate(self):
        for name in ("epochs", "batch_size", "dim", "checkpoint_every", "steps_per_execution"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be an int >= 1, got {v!r}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr!r}")
        if not 0.0 <= self.oov_rate < 1.0:
            raise ValueError(f"oov_rate must be in [0, 1), got {self.oov_rate!r}")
        if not 0.0 < self.target_recall <= 1.0:
            raise ValueError(f"target_recall must be in (0, 1], got {self.target_recall!r}")
        if self.history_pooling not in HISTORY_POOLINGS:
            raise ValueError(f"history_pooling must be one of {HISTORY_POOLINGS}, got "
                             f"{self.history_pooling!r}")
        movielens.RetrievalConfig(min_rating=self.min_rating, split=self.split,
                                  history_length=self.history_length)
        for flag in ("items", "users"):
            if getattr(self, flag) and not self.interactions:
                raise ValueError(f"--{flag} {getattr(self, flag)!r} needs --interactions "
                                 "(feature tables go with your own log)")
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}, got {self.strategy!r}")
        return self


def add_common_arguments(parser, defaults=None):
    """Adds the shared flags to an argparse parser (defaults from a RecipeConfig)."""
    d = defaults or RecipeConfig()
    g = parser.add_argument_group("training")
    g.add_argument("--epochs", type=int, default=d.epochs, help="passes over the training "
                   f"interactions (default {d.epochs})")
    g.add_argument("--batch-size", type=int, default=d.batch_size, help="examples per step; "
                   f"also the number of in-batch candidates (default {d.batch_size})")
    g.add_argument("--lr", type=float, default=d.lr, help=f"Adam learning rate (default {d.lr})")
    g.add_argument("--dim", type=int, default=d.dim, help="embedding size of both towers "
                   f"(default {d.dim})")
    g.add_argument("--hidden", type=int, nargs="*", default=list(d.hidden),
                   help=f"hidden ReLU layer widths of each tower (default {list(d.hidden)})")
    g.add_argument("--seed", type=int, default=d.seed, help=f"random seed (default {d.seed})")
    g.add_argument("--oov-rate", type=float, default=d.oov_rate,
                   help="training-time rate of replacing a user/item id by the OOV bucket, "
                   "which teaches the cold-start embedding (default %(default)s)")
    g.add_argument("--verbose", type=int, default=d.verbose, help="Keras fit verbosity 0/1/2")
    g.add_argument("--steps-per-execution", type=int, default=d.steps_per_execution,
                   help="training steps per call into TensorFlow (Keras compile's "
                   "steps_per_execution; under XLA they run as one compiled program; 1 "
                   "while checkpointing) (default %(default)s)")
    g.add_argument("--no-jit", dest="jit_compile", action="store_false",
                   help="run the training step without XLA (default: compiled with XLA "
                   "once features are preprocessed to ids)")
    g.add_argument("--checkpoint-dir", default=d.checkpoint_dir,
                   help="folder for training checkpoints (Keras BackupAndRestore: weights, "
                   "optimizer slots, the frequency estimator, the input position); after a "
                   "crash or kill, the same command resumes from the last one. Removed when "
                   "training completes (default: no checkpoints)")
    g.add_argument("--checkpoint-every", type=int, default=d.checkpoint_every,
                   help="training steps between checkpoints (default %(default)s)")
    g.add_argument("--strategy", choices=STRATEGIES, default=d.strategy,
                   help="tf.distribute strategy: none (one device), mirrored (every GPU of "
                   "this machine, MirroredStrategy), multi-worker (one process per machine, "
                   "MultiWorkerMirroredStrategy; the cluster comes from TF_CONFIG). "
                   "--batch-size is the global batch; in-batch and mixed negatives are "
                   "gathered over replicas (default %(default)s)")
    g = parser.add_argument_group("output")
    g.add_argument("--out", default=d.out,
                   help="output folder: index/ (the trained towers and the tuned ScaNN "
                   "index, and every user as the whole log leaves them: features, history "
                   "up to their last interaction, every item of their log excluded from "
                   "their answers; the towers are those trained on the training split, not "
                   "refit on held-out rows: `twotower serve OUT/index`), "
                   "saved_model/ (query tower + index in one SavedModel), metrics.json, "
                   "recall_at_k.png. Written atomically; a folder twotower did not write is "
                   "never replaced (default: print only, write nothing)")
    g.add_argument("--overwrite", action="store_true",
                   help="replace an earlier twotower output at --out")
    g.add_argument("--target-recall", type=float, default=d.target_recall,
                   help="recall@10 against brute force that the exported ScaNN index is "
                   "tuned to (default %(default)s)")
    g.add_argument("--no-export", dest="export", action="store_false",
                   help="write only metrics.json and the plot to --out (no index/, no "
                   "saved_model/): for quick experiments")
    g = parser.add_argument_group("data")
    g.add_argument("--data", dest="source", default=d.source,
                   help="MovieLens source: a folder (u.data/u.item/u.user, ratings.dat, or "
                   "ratings.csv + movies.csv), a zip, a release downloaded once into "
                   "$TWOTOWER_DATA (ml-100k, ml-1m, ml-10m, ml-20m, ml-25m, "
                   "ml-latest-small), 'url' (GroupLens ml-100k.zip, cached), 'recbole' (the "
                   "offline recbole 1.2.1 wheel), or 'auto' (default). Ignored with "
                   "--interactions")
    g.add_argument("--interactions", default=d.interactions, metavar="FILE",
                   help="your own interaction log instead of MovieLens: a CSV with a header "
                   "(user_id,item_id,timestamp; string or integer ids; timestamps in Unix "
                   "seconds or ISO-8601), a Parquet file, or a folder of Parquet shards "
                   "(`twotower convert`). A 'rating' column is used by --min-rating")
    g.add_argument("--items", default=d.items, metavar="FILE",
                   help="item feature table (CSV with a header) keyed by the log's item "
                   "column; items only in it are in the corpus too (cold start by features)")
    g.add_argument("--users", default=d.users, metavar="FILE",
                   help="user feature table (CSV with a header) keyed by the log's user column")
    g.add_argument("--user-col", default=d.user_col,
                   help="the log's user column (default %(default)s; userId is also accepted)")
    g.add_argument("--item-col", default=d.item_col,
                   help="the log's item column (default %(default)s; movieId, itemId, "
                   "product_id are also accepted)")
    g.add_argument("--time-col", default=d.time_col,
                   help="the log's timestamp column (default %(default)s)")
    for side in ("item", "user"):
        for kind, what in (("categorical", "categorical (embedding per value)"),
                           ("text", "free text (token embeddings, mean-pooled)"),
                           ("numeric", "numeric (standardised)"),
                           ("multi-hot", "'|'-separated sets (mean of token embeddings)")):
            g.add_argument(f"--{side}-{kind}", type=_column_list, metavar="COLS",
                           default=getattr(d, f"{side}_{kind.replace('-', '_')}"),
                           help=f"comma-separated --{side}s columns to use as {what}")
    g.add_argument("--no-infer-features", dest="infer_features", action="store_false",
                   help="use only the feature columns named by --item-*/--user-* (default: "
                   "every other column of --items/--users gets a kind inferred from its "
                   "values, printed in a summary: numbers -> numeric, '|' -> multi-hot, long "
                   "or multi-word mostly distinct text -> text, else categorical)")
    g.add_argument("--min-rating", type=float, default=d.min_rating,
                   help="keep ratings >= this as positives (default: every rating)")
    g.add_argument("--split", choices=("leave_last_out", "temporal"), default=d.split,
                   help="leave_last_out: each user's last item is test, second-last "
                   "validation; temporal: a global cut by time (default %(default)s)")
    g.add_argument("--history-length", type=int, default=d.history_length,
                   help="items of watch history fed to history towers (default %(default)s)")
    g.add_argument("--history-pooling", choices=HISTORY_POOLINGS, default=d.history_pooling,
                   help="how history towers pool the history: mean (order-blind) or "
                   "attention (the most recent item attends over the others, with learned "
                   "positions; towers/attention_id_tower.py) (default %(default)s)")
    return parser


def _column_list(text):
    """'genre,brand' -> ('genre', 'brand')."""
    return tuple(c.strip() for c in text.split(",") if c.strip())


def config_from_args(cls, args):
    """Builds a RecipeConfig subclass from parsed args (matching field names)."""
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls)
              if hasattr(args, f.name)}
    if "hidden" in values:
        values["hidden"] = tuple(values["hidden"])
    return cls(**values).validate()


RUN_FILE = "twotower-run.json"
# fields that may change between a run and its resumption (they do not change the result)
_RESUME_FREE = ("out", "overwrite", "verbose", "checkpoint_dir", "checkpoint_every",
                "target_recall", "export")


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


def check_outputs(config):
    """Refuses a bad ``--out`` / ``--checkpoint-dir`` (OutputPathError naming the path and
    the flag) before any data is loaded. Call it right after parsing."""
    if config.out:
        check_output_dir(config.out, overwrite=config.overwrite)
    if config.checkpoint_dir:
        check_checkpoint_dir(config.checkpoint_dir)
        if config.out and os.path.abspath(config.out) == os.path.abspath(config.checkpoint_dir):
            raise OutputPathError(f"--checkpoint-dir {config.checkpoint_dir!r} must not be "
                                  "the --out folder")


# ----------------------------------------------------------------------------- data

_DATA_CACHE = {}


_KINDS = ("categorical", "text", "numeric", "multi_hot")


def load_data(config):
    """The retrieval task for ``config`` (cached per process): MovieLens (``--data``), or
    the user's own log (``--interactions`` with optional ``--items`` / ``--users``
    feature tables, twotower.data.log_retrieval), printing what was read and inferred."""
    retrieval = movielens.RetrievalConfig(min_rating=config.min_rating, split=config.split,
                                          history_length=config.history_length)
    interactions = getattr(config, "interactions", None)
    if interactions:
        kinds = {side: {k: tuple(getattr(config, f"{side}_{k}", ()) or ()) for k in _KINDS}
                 for side in ("item", "user")}
        key = ("log", interactions, config.items, config.users, config.user_col,
               config.item_col, config.time_col, repr(kinds), config.infer_features,
               config.min_rating, config.split, config.history_length)
        if key not in _DATA_CACHE:
            from twotower.data import interactions as logs
            from twotower.data.log_retrieval import load_log_task

            _DATA_CACHE[key] = load_log_task(
                interactions, retrieval, items=config.items, users=config.users,
                columns=logs.ColumnNames(config.user_col, config.item_col, config.time_col),
                item_kinds=kinds["item"], user_kinds=kinds["user"],
                infer=config.infer_features)
        return _DATA_CACHE[key]
    key = (config.source, config.min_rating, config.split, config.history_length)
    if key not in _DATA_CACHE:
        raw = movielens.load_movielens(config.source)
        _DATA_CACHE[key] = movielens.prepare_retrieval(raw, retrieval)
    return _DATA_CACHE[key]


def _is_log(data):
    return getattr(data, "item_kinds", None) is not None


def query_inputs(data, split):
    """The query-tower inputs of a split: user features and history."""
    return dict(split.query)


def item_inputs(data, index=None):
    """Item-tower inputs for item indexes (all items when None): MovieLens's
    ITEM_FEATURES, or a log's item_id and its feature-table columns."""
    rows = slice(None) if index is None else np.asarray(index)
    names = ("item_id", *data.item_kinds) if _is_log(data) else ITEM_FEATURES
    return {k: data.items[k][rows] for k in names}


# ----------------------------------------------------------------------------- towers

def _table_specs(table, kinds, dim):
    """FeatureTower specs for a log's feature-table columns (see data/feature_table.py)."""
    d = max(8, dim // 2)
    specs = []
    for name, kind in kinds.items():
        col = table[name]
        if kind == "numeric":
            specs.append(ft.dense(name, col))
        elif kind == "multi_hot":
            if any(str(v) for v in np.asarray(col).reshape(-1)):
                specs.append(ft.multi_hot(name, col, dim=d))
        elif kind == "text":
            if any(str(v).strip() for v in col):
                specs.append(ft.text(name, col, dim=d, sequence_length=16))
        else:
            values = [v for v in col if str(v)]
            if values:
                specs.append(ft.categorical(name, vocabulary=sorted(set(map(str, values))),
                                            dim=min(d, max(2, len(set(values))))))
    return specs


def _history_spec(data, config):
    """The query tower's watch-history feature (ids come from this toolkit's data code,
    always in range: no per-step assertion)."""
    return ft.sequence("history", data.num_items + 1, dim=config.dim, validate_ids=False,
                       pooling=config.history_pooling,
                       max_length=data.config.history_length)


def _log_towers(data, config, history, l2_normalize):
    """FeatureTowers for a user's own log: user id + history + user-table columns;
    item id + item-table columns."""
    train = data.train
    q_specs = [ft.categorical("user_id", train.query["user_id"], dim=config.dim,
                              oov_rate=config.oov_rate)]
    q_specs += _table_specs(data.users, data.user_kinds or {}, config.dim)
    if history and data.config.history_length > 0:
        q_specs.append(_history_spec(data, config))
    seen_items = np.flatnonzero(data.item_counts > 0)
    i_specs = [ft.categorical("item_id", vocabulary=seen_items.tolist(), dim=config.dim,
                              oov_rate=config.oov_rate)]
    i_specs += _table_specs(data.items, data.item_kinds or {}, config.dim)
    common = dict(output_dim=config.dim, hidden_units=tuple(config.hidden),
                  l2_normalize=l2_normalize)
    return (ft.FeatureTower(q_specs, name="query_tower", **common),
            ft.FeatureTower(i_specs, name="item_tower", **common))


def build_towers(data, config, *, history=True, l2_normalize=False):
    """Query and item FeatureTowers.

    MovieLens — query: user id (OOV bucket: a new user is embedded from the rest), age
    bucket, gender, occupation, zip prefix, and — when ``history`` — the pooled watch
    history. Item: item id (only items seen in training are in the vocabulary; a
    never-rated movie is embedded from its features), title tokens, year, genres.

    A user's own log (``--interactions``): the same id and history features, plus one
    feature per column of ``--users`` / ``--items`` by its kind (categorical, text,
    numeric, multi-hot).
    """
    if _is_log(data):
        return _log_towers(data, config, history, l2_normalize)
    train = data.train
    d = max(8, config.dim // 2)
    q_specs = [ft.categorical("user_id", train.query["user_id"], dim=config.dim,
                              oov_rate=config.oov_rate)]
    for name, dim in (("age_bucket", 4), ("gender", 2), ("occupation", 8), ("zip", 8)):
        if name in data.users:
            q_specs.append(ft.categorical(name, data.users[name], dim=dim))
    if history and data.config.history_length > 0:
        q_specs.append(_history_spec(data, config))
    seen_items = np.flatnonzero(data.item_counts > 0)
    i_specs = [
        ft.categorical("item_id", vocabulary=seen_items.tolist(), dim=config.dim,
                       oov_rate=config.oov_rate),
        ft.text("title", data.items["title"], dim=d, sequence_length=12),
        ft.dense("year", np.where(data.items["year"] > 0, data.items["year"],
                                  np.median(data.items["year"][data.items["year"] > 0]))),
        ft.multi_hot("genres", data.items["genres"], dim=d),
    ]
    common = dict(output_dim=config.dim, hidden_units=tuple(config.hidden),
                  l2_normalize=l2_normalize)
    return (ft.FeatureTower(q_specs, name="query_tower", **common),
            ft.FeatureTower(i_specs, name="item_tower", **common))


def preprocessed(tower, inputs, *, keep=()):
    """``tower.preprocess(inputs)`` as numpy arrays (strings -> ids once, outside the
    training step; towers/feature_tower.py), or ``inputs`` unchanged for a tower that
    has no preprocessing."""
    if not hasattr(tower, "preprocess"):
        return inputs
    return {k: np.asarray(v) for k, v in tower.preprocess(inputs, keep=keep).items()}


def item_table(item_tower, data):
    """The item feature table a TwoTowerModel gathers sampled items from: every item
    preprocessed once by the item tower (the raw ``item_id`` kept for the loss)."""
    return preprocessed(item_tower, item_inputs(data), keep=("item_id",))


def training_dataset(data, config, split=None, *, towers=None):
    """tf.data of {"query": user features + history, "item": item features}, shuffled: one
    epoch per iteration, for a plain ``model.fit(ds, epochs=...)`` (the TFRS comparison in
    benchmarks/). The recipes' :func:`fit` uses :func:`resumable_dataset` instead.

    With ``towers`` = (query tower, item tower), the features are those towers'
    preprocessed inputs (:func:`preprocessed`; computed once for the split and, for the
    items, once per item), so the training step does only numeric work."""
    split = split or data.train
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


# ----------------------------------------------------------------------------- training

class Throughput(tf.keras.callbacks.Callback):
    """Training examples per second, timed from the end of the first step (so tracing
    and graph building are not counted) to the end of training. A resumed run counts the
    steps it ran (``start_step``: a tf.Variable or int, read at train begin)."""

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
        self._step = done

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


def fit(model, data, config):
    """Compiles with Adam(lr) and fits on the training split; returns a dict of
    loss_first_epoch, loss_last_epoch, loss_epoch_<e>, train_seconds, examples_per_sec,
    resumed_at_step.

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
    # Strings -> ids once, outside the step: the split's query features and the item
    # table (towers/feature_tower.py FeatureTower.preprocess); the step then does only
    # numeric work and compiles with XLA.
    query = preprocessed(model.query_tower, query_inputs(data, split))
    items = preprocessed(model.item_tower, item_inputs(data), keep=("item_id",))
    spe = 1 if config.checkpoint_dir else int(getattr(config, "steps_per_execution", 1))
    # XLA for a one-device step; under a tf.distribute strategy (--strategy) the loss
    # gathers candidates over replicas with collectives, which stay uncompiled
    jit = (bool(getattr(config, "jit_compile", False)) and _numeric_step(model, query, items)
           and not tf.distribute.has_strategy())
    # steps_per_execution runs that many steps per call into TensorFlow; checkpoints
    # keep 1, as Keras' BackupAndRestore counts calls, not steps, and resumes mid-epoch
    # at a call's first step
    model.compile(optimizer=(XLAAdam if jit else tf.keras.optimizers.Adam)(config.lr),
                  jit_compile=jit, steps_per_execution=spe)
    # built before fit (with raw features first, the signature a saved tower keeps), so
    # that BackupAndRestore can restore weights and optimizer slots in place (an unbuilt
    # model would restore lazily, and Keras warns)
    example = {"query": {k: v[:2] for k, v in query_inputs(data, split).items()},
               "item": item_inputs(data, split.item[:2])}
    model(example, training=False)
    start = tf.Variable(0, dtype=tf.int64, trainable=False, name="start_step")
    # one batch shape under XLA (each shape is compiled anew: ~4 s on the youtube step, more
    # than an epoch of ML-100K): the epoch's last, smaller batch is left out
    drop = jit and len(split) >= config.batch_size
    dataset, steps = resumable_dataset(data, config, start, split, query=query, items=items,
                                       drop_remainder=drop)
    trained = steps * config.batch_size if drop else len(split)
    state = FitState(config.epochs)
    model._twotower_fit_state = state  # tracked: saved in the checkpoint with the model
    callbacks = [RecordLoss(state, every_step=bool(config.checkpoint_dir))]
    backup = None
    if config.checkpoint_dir:
        folder = _begin_checkpoints(config)
        backup = ResumableBackup(folder, save_freq=config.checkpoint_every, state=state,
                                 start_step=start, steps_per_epoch=steps)
        callbacks.append(backup)
    meter = Throughput(config.batch_size, trained, config.epochs, start_step=start)
    callbacks.append(meter)
    model.fit(dataset, epochs=config.epochs, steps_per_epoch=steps, verbose=config.verbose,
              callbacks=callbacks)
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
            "jit_compile": int(jit), "steps_per_execution": spe}


def _numeric_step(model, query, items):
    """Whether the training step sees only numbers (XLA compiles no string op): the
    batches' query and item features and the model's item table (sampled items)."""
    table = getattr(model, "_item_features", None)
    columns = [*query.values(), *items.values()]
    columns += (list(table.values()) if isinstance(table, dict)
                else [table] if table is not None else [])
    return not any(c.dtype == tf.string if isinstance(c, (tf.Tensor, tf.Variable))
                   else np.asarray(c).dtype.kind in "OUS" for c in columns)


def evaluate_towers(query_tower, item_tower, data, split=None):
    """Full-corpus metrics of two towers on a split (test by default)."""
    from twotower.towers.two_tower_model import embed

    split = split if split is not None else data.test
    u = embed(query_tower, query_inputs(data, split))
    v = embed(item_tower, item_inputs(data))
    return retrieval_report(u, v, split.item, data.exclusions(split), data.head_items())


def evaluate(model, data, split=None):
    """Full-corpus metrics of a TwoTowerModel (see metrics/retrieval_report.py)."""
    return evaluate_towers(model.query_tower, model.item_tower, data, split)


def popularity(data, split=None):
    """The popularity baseline's metrics on the same split and exclusions."""
    split = split if split is not None else data.test
    return popularity_report(data.item_counts, split.item, data.exclusions(split),
                             data.head_items())


_STRATEGIES = {}


def make_strategy(name):
    """The tf.distribute strategy of ``--strategy`` (one per process, created on first use).

    none: the default strategy (one device). mirrored: ``tf.distribute.MirroredStrategy()``
    over the GPUs of this machine (the CPU when there are none). multi-worker:
    ``tf.distribute.MultiWorkerMirroredStrategy()``, one process per machine, the cluster
    and this process's task read from the ``TF_CONFIG`` environment variable. Create it
    before any other TensorFlow work: multi-worker sets up collective ops at startup.
    """
    if name not in STRATEGIES:
        raise ValueError(f"--strategy must be one of {STRATEGIES}, got {name!r}")
    if name == "none":
        return tf.distribute.get_strategy()
    if name not in _STRATEGIES:
        if name == "multi-worker":
            check_tf_config(os.environ.get("TF_CONFIG"))
            _STRATEGIES[name] = tf.distribute.MultiWorkerMirroredStrategy()
        else:
            _STRATEGIES[name] = tf.distribute.MirroredStrategy()
    return _STRATEGIES[name]


def check_tf_config(text):
    """Raises ValueError unless ``text`` (TF_CONFIG) is JSON with a cluster holding this
    task: {"cluster": {"worker": ["host:port", ...]}, "task": {"type": "worker",
    "index": i}}."""
    if not text:
        raise ValueError("--strategy multi-worker needs TF_CONFIG, e.g. TF_CONFIG='{\"cluster\":"
                         " {\"worker\": [\"host1:12345\", \"host2:12345\"]}, \"task\": "
                         "{\"type\": \"worker\", \"index\": 0}}' (see the README)")
    try:
        tf_config = json.loads(text)
        task = tf_config["task"]
        hosts = tf_config["cluster"][task["type"]]
        if not 0 <= int(task["index"]) < len(hosts):
            raise IndexError(task["index"])
    except (ValueError, KeyError, TypeError, IndexError) as e:
        raise ValueError(f"TF_CONFIG {text!r} is not a cluster with this task in it "
                         f"({type(e).__name__}: {e})") from None
    return tf_config


def is_chief(strategy):
    """Whether this process writes outputs: always without a cluster; under
    multi-worker, the chief (worker 0 when the cluster names no chief)."""
    return bool(getattr(strategy.extended, "should_checkpoint", True))


def train_recipe(config, loss, *, history=True, l2_normalize=False):
    """Loads data, builds towers and a TwoTowerModel with ``loss`` (a RetrievalLoss or a
    function data -> RetrievalLoss), fits and evaluates. Returns (model, data, metrics)."""
    config.validate()
    check_outputs(config)
    strategy = make_strategy(config.strategy)  # first: multi-worker sets up collectives
    if strategy.num_replicas_in_sync > 1:
        # XLA compiles one device's step: a jit-compiled step over several replicas reads
        # another device's variable copy and fails (measured on 2 logical CPUs)
        config.jit_compile = False
    data = load_data(config)
    tf.keras.utils.set_random_seed(config.seed)
    # Every variable (towers, loss, estimator, optimizer) is made in the strategy's scope;
    # a loss layer made outside it is rebuilt from its config inside.
    with strategy.scope():
        if callable(loss) and not isinstance(loss, tf.keras.layers.Layer):
            loss = loss(data)
        elif config.strategy != "none":
            loss = type(loss).from_config(loss.get_config())
        query_tower, item_tower = build_towers(data, config, history=history,
                                               l2_normalize=l2_normalize)
        model = TwoTowerModel(query_tower, item_tower, loss,
                              item_features=item_table(item_tower, data))
        stats = fit(model, data, config)
    if not is_chief(strategy):
        config.out = None  # the chief writes --out; the other workers only train
    metrics = evaluate(model, data)
    metrics.update(stats)
    metrics["popularity_recall@50"] = popularity(data)["recall@50"]
    if loss.learn_temperature:
        metrics["temperature"] = float(loss.temperature.numpy())
    return model, data, metrics


# ----------------------------------------------------------------------------- export

INDEX_KS = (1, 5, 10, 20, 50, 100)


@dataclasses.dataclass
class ServingExport:
    """What :func:`export_retriever` built.

    Attributes:
      retriever: the Retriever (index + towers + user feature table + seen items).
      index: its tuned ScannIndex.
      tuned: the tuner's TuneResult (recall@10 vs brute force, queries/s, knobs).
      user_ids: the user table's user ids (internal), one per row.
      item_ids: the index's id of every item row (MovieLens movie ids, or the internal
        row numbers when the data carries an item vocabulary).
      item_keys: the ids the Retriever answers with, per item row (``item_vocab`` when
        there is one, else ``item_ids``).
      query_example, item_example: two-row input batches (the towers' signatures).
    """

    retriever: object
    index: object
    tuned: object
    user_ids: np.ndarray
    item_ids: np.ndarray
    item_keys: np.ndarray
    query_example: dict
    item_example: dict


def export_retriever(model, data, *, target_recall=0.95, k=10):
    """The serving side of a trained MovieLens model.

    1. the catalog embedded by the item tower and a ScaNN index over it (size rules of
       index/config.py; cosine when the towers L2-normalise, else dot);
    2. tuned (leaves to search, reorder) to ``target_recall`` recall@``k`` against brute
       force on the test users' query embeddings;
    3. a Retriever with the user feature store — each user as the whole log leaves them
       (``data.serving``: history up to and including the last interaction, held-out
       items too) — and every item of the user's log, excluded from u2i answers. The
       towers are not refit on the held-out rows: they are the ones the metrics measure.

    When the data carries external id vocabularies (``data.item_vocab`` /
    ``data.user_vocab``, 1-D arrays, position = internal id), the index holds internal
    rows and the Retriever gets them as ``item_vocab=`` / ``user_vocab=``, so that it is
    asked and answers in the log's own ids.
    """
    from twotower.index.builder import build_index, embed
    from twotower.index.retriever import Retriever
    from twotower.index.tuner import tune

    items = item_inputs(data)
    item_vectors = embed(model.item_tower, items)
    num_items = len(item_vectors)
    item_vocab = getattr(data, "item_vocab", None)
    user_vocab = getattr(data, "user_vocab", None)
    if item_vocab is None and "movie_id" in data.items:
        item_ids = np.asarray(data.items["movie_id"]).astype(np.int64)
    else:
        item_ids = np.arange(num_items, dtype=np.int64)
    item_keys = np.asarray(item_vocab) if item_vocab is not None else item_ids
    l2 = all(getattr(t, "l2_normalize", False) for t in (model.query_tower, model.item_tower))
    index = build_index(item_vectors, item_ids, distance="cosine" if l2 else "dot")
    test_queries = query_inputs(data, data.test)
    query_vectors = embed(model.query_tower, test_queries, desc="embedding users")
    tuned = tune(index, query_vectors, target_recall=target_recall, k=min(k, index.size))
    # the served state: every user as the whole log leaves them (history up to and
    # including their last interaction, every item of their log excluded), not the test
    # split's state before the held-out item, which is only for measuring
    serving = getattr(data, "serving", None)
    if serving is None:
        raise ValueError("the data has no serving state (RetrievalData.serving): build it "
                         "with twotower.data.movielens.retrieval_task")
    user_table = {k: np.asarray(v) for k, v in query_inputs(data, serving).items()}
    user_ids = user_table["user_id"]
    user_seen = {int(u): item_ids[np.asarray(data.seen_all[r], np.int64)]
                 for u, r in zip(user_ids.tolist(), serving.user.tolist())}
    vocabs = {}
    if item_vocab is not None:
        vocabs["item_vocab"] = np.asarray(item_vocab)
    if user_vocab is not None:
        vocabs["user_vocab"] = np.asarray(user_vocab)
    retriever = Retriever(index, model.query_tower, model.item_tower, user_table=user_table,
                          user_seen=user_seen, **vocabs)
    return ServingExport(
        retriever=retriever, index=index, tuned=tuned, user_ids=user_ids, item_ids=item_ids,
        item_keys=item_keys,
        query_example={k: v[:2] for k, v in test_queries.items()},
        item_example=item_inputs(data, [0, 1]) if num_items > 1 else item_inputs(data, [0]))


def index_recall_curve(export, data, ks=INDEX_KS):
    """recall@K of the index's own u2i answers for each test row's held-out item, the
    row's seen items excluded as in the exact evaluation: what a served model scores.
    As there (metrics/retrieval_report.py, repeats="new"), a row whose target the user
    had already seen is left out of the recall: excluded, it cannot be found.
    Returns (the ks that fit the corpus, found ids [test rows, max K], recalls)."""
    ks = [k for k in ks if k <= export.index.size]
    seen = [np.asarray(s, np.int64) for s in data.exclusions(data.test)]
    exclude = [export.item_keys[s] for s in seen]
    found, _ = export.retriever.u2i(query_inputs(data, data.test), max(ks), exclude=exclude)
    target_rows = np.asarray(data.test.item, np.int64)
    targets = export.item_keys[target_rows]
    new = np.array([t not in set(s.tolist()) for t, s in zip(target_rows, seen)], bool)
    hit_rank = np.full(len(targets), np.inf)
    for q, (row, t) in enumerate(zip(found, targets)):
        where = np.flatnonzero(row == t)
        if where.size:
            hit_rank[q] = where[0] + 1
    if not new.any():
        return ks, found, [float("nan") for _ in ks]
    return ks, found, [float(np.mean(hit_rank[new] <= k)) for k in ks]


def index_metrics(export, data):
    """metrics.json entries of an export: the index's own recall@K, its recall@10 vs
    brute force, queries/s and build time, its size."""
    ks, _, curve = index_recall_curve(export, data)
    out = {f"index_recall@{k}": v for k, v in zip(ks, curve)}
    out.update({"index_vs_exact_recall@10": float(export.tuned.recall),
                "index_qps": float(export.tuned.qps),
                "index_build_s": float(export.index.build_seconds),
                "num_items": int(export.index.size), "num_users": int(len(export.user_ids))})
    return out


def write_serving(folder, export, model, *, extra=None, k=10):
    """Writes ``folder/index`` (the index folder ``twotower serve`` takes: ScaNN index,
    both towers as SavedModels, user table, seen items, checksummed manifest) and
    ``folder/saved_model`` (query tower + ScaNN as one SavedModel answering top-``k``
    item ids for query features)."""
    from twotower.index import persistence, saved_model

    persistence.save(os.path.join(folder, "index"), export.retriever,
                     query_example=export.query_example, item_example=export.item_example,
                     extra=extra or {})
    saved_model.export(os.path.join(folder, "saved_model"), export.index, model.query_tower,
                       k=min(k, export.index.size), query_example=export.query_example)


# ----------------------------------------------------------------------------- report

METRIC_ROWS = ("recall@10", "recall@20", "recall@50", "recall@100", "ndcg@10", "ndcg@50",
               "mrr", "coverage@50", "head_recall@50", "tail_recall@50")

# settings worth keeping in the index manifest (what trained it)
_MANIFEST_CONFIG = ("epochs", "batch_size", "lr", "dim", "seed", "split", "history_length")


def report(name, config, metrics, data=None, model=None):
    """Prints the table and, when config.out is set, writes there atomically (replacing
    only an earlier twotower output, with config.overwrite): metrics.json,
    recall_at_k.png and — given the model — the tuned index folder ``index/`` and
    ``saved_model/`` (:func:`export_retriever`, :func:`write_serving`). Returns the
    table text."""
    pop = popularity(data) if data is not None else {}
    rows = [{"metric": k, name: metrics[k], **({"popularity": pop[k]} if k in pop else {})}
            for k in METRIC_ROWS if k in metrics]
    table = format_table(rows)
    extra = format_table([{"examples/sec": metrics.get("examples_per_sec", float("nan")),
                           "train seconds": metrics.get("train_seconds", float("nan")),
                           "last loss": metrics.get("loss_last_epoch", float("nan"))}])
    source = getattr(data, "name", None) or "MovieLens"
    print(f"\n{name} on {source} ({data.config.split if data else ''}), full-corpus "
          f"retrieval, seen items excluded (held-out repeats left out, as serving "
          f"excludes them)\n{table}\n{extra}")
    if config.out:
        export = None
        metrics = dict(metrics)
        if model is not None and data is not None and getattr(config, "export", True):
            print("building and tuning the ScaNN index ...", flush=True)
            export = export_retriever(model, data, target_recall=config.target_recall)
            metrics.update(index_metrics(export, data))
            print(f"ScaNN index: {export.index.size} items, recall@10 vs brute force "
                  f"{export.tuned.recall:.4f} at {export.tuned.qps:,.0f} queries/s; "
                  f"index recall@10 {metrics.get('index_recall@10', float('nan')):.4f}")
        with atomic_directory(config.out, overwrite=config.overwrite) as tmp:
            if export is not None:
                write_serving(tmp, export, model, extra={
                    "recipe": name, **{k: getattr(config, k) for k in _MANIFEST_CONFIG
                                       if hasattr(config, k)}})
            write_metrics(tmp, metrics)
            curves = {name: (list(KS), [metrics[f"recall@{k}"] for k in KS])}
            if pop:
                curves["popularity"] = (list(KS), [pop[f"recall@{k}"] for k in KS])
            plot_curves(os.path.join(tmp, "recall_at_k.png"), curves, xlabel="K",
                        ylabel="recall@K", title=f"{name}: {source} full-corpus recall@K")
        print(f"wrote {config.out}: " + (f"index/ (serve it: {twotower_command()} serve "
              f"{os.path.join(config.out, 'index')}), saved_model/, " if export else "")
              + "metrics.json, recall_at_k.png")
    return table


def make_parser(prog, description, defaults):
    parser = argparse.ArgumentParser(prog=prog, description=description)
    add_common_arguments(parser, defaults)
    return parser
