"""What the MovieLens two-tower recipes (dssm, youtube, mns, ebr) share: data, towers,
the input pipeline, training with a throughput measurement, full-corpus evaluation and
the report. A recipe is a RetrievalLoss plus a few tower choices over this module.

    data   = load_data(config)                         # MovieLens -> retrieval task
    q, i   = build_towers(data, config, history=...)   # FeatureTowers (cold start by features)
    model  = TwoTowerModel(q, i, loss, item_features=data.items)
    stats  = fit(model, data, config)                  # examples/sec after the first step
    report = evaluate(model, data)                     # whole corpus, seen items excluded
"""

import argparse
import dataclasses
import os
import time

import numpy as np

import twotower  # noqa: F401  (Keras 2 before TensorFlow)
import tensorflow as tf

from twotower.artifacts import atomic_directory
from twotower.data import movielens
from twotower.reporting import format_table, plot_curves, write_metrics
from twotower.towers import feature_tower as ft
from twotower.towers.retrieval_report import KS, popularity_report, retrieval_report
from twotower.towers.two_tower_model import TwoTowerModel

ITEM_FEATURES = ("item_id", "title", "year", "genres")


@dataclasses.dataclass
class RecipeConfig:
    """Options every MovieLens recipe takes (a recipe subclasses this with its knobs).

    Data: source (folder, zip, "recbole", "url" or "auto"), min_rating, split,
    history_length. Model: dim, hidden (MLP widths). Runtime: epochs, batch_size, lr,
    seed, out (None: no files written), verbose.
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
    verbose: int = 0

    def validate(self):
        for name in ("epochs", "batch_size", "dim"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be an int >= 1, got {v!r}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr!r}")
        if not 0.0 <= self.oov_rate < 1.0:
            raise ValueError(f"oov_rate must be in [0, 1), got {self.oov_rate!r}")
        movielens.RetrievalConfig(min_rating=self.min_rating, split=self.split,
                                  history_length=self.history_length)
        for flag in ("items", "users"):
            if getattr(self, flag) and not self.interactions:
                raise ValueError(f"--{flag} {getattr(self, flag)!r} needs --interactions "
                                 "(feature tables go with your own log)")
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
    g.add_argument("--out", default=d.out, help="folder for metrics.json and recall_at_k.png "
                   "(written atomically)")
    g.add_argument("--verbose", type=int, default=d.verbose, help="Keras fit verbosity 0/1/2")
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
                   "(twotower.data.interactions.csv_to_parquet). A 'rating' column is used "
                   "by --min-rating")
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


def _log_towers(data, config, history, l2_normalize):
    """FeatureTowers for a user's own log: user id + history + user-table columns;
    item id + item-table columns."""
    train = data.train
    q_specs = [ft.categorical("user_id", train.query["user_id"], dim=config.dim,
                              oov_rate=config.oov_rate)]
    q_specs += _table_specs(data.users, data.user_kinds or {}, config.dim)
    if history and data.config.history_length > 0:
        q_specs.append(ft.sequence("history", data.num_items + 1, dim=config.dim,
                                   validate_ids=False))
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
        # history ids come from data/movielens.py, always in range: no per-step assertion
        q_specs.append(ft.sequence("history", data.num_items + 1, dim=config.dim,
                                   validate_ids=False))
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


def training_dataset(data, config, split=None):
    """tf.data of {"query": user features + history, "item": item features}, shuffled."""
    split = split or data.train
    q = query_inputs(data, split)
    feats = item_inputs(data, split.item)
    ds = tf.data.Dataset.from_tensor_slices({"query": q, "item": feats})
    ds = ds.shuffle(min(len(split), 200_000), seed=config.seed, reshuffle_each_iteration=True)
    return ds.batch(config.batch_size).prefetch(tf.data.AUTOTUNE)


# ----------------------------------------------------------------------------- training

class Throughput(tf.keras.callbacks.Callback):
    """Training examples per second, timed from the end of the first step (so tracing
    and graph building are not counted) to the end of training."""

    def __init__(self, batch_size, num_examples, epochs):
        super().__init__()
        self.batch_size, self.num_examples, self.epochs = batch_size, num_examples, epochs
        self.start = None
        self.steps = 0

    def on_train_batch_end(self, batch, logs=None):
        if self.start is None:
            self.start = time.perf_counter()
        else:
            self.steps += 1

    def on_train_end(self, logs=None):
        self.seconds = time.perf_counter() - (self.start or time.perf_counter())
        total = self.num_examples * self.epochs - min(self.batch_size, self.num_examples)
        self.examples_per_sec = total / self.seconds if self.seconds > 0 else float("nan")


def fit(model, data, config):
    """Compiles with Adam(lr) and fits on the training split; returns a dict of
    loss_first_epoch, loss_last_epoch, train_seconds, examples_per_sec."""
    tf.keras.utils.set_random_seed(config.seed)
    model.compile(optimizer=tf.keras.optimizers.Adam(config.lr))
    meter = Throughput(config.batch_size, len(data.train), config.epochs)
    hist = model.fit(training_dataset(data, config), epochs=config.epochs,
                     verbose=config.verbose, callbacks=[meter])
    losses = hist.history.get("loss", [float("nan")])
    return {"loss_first_epoch": float(losses[0]), "loss_last_epoch": float(losses[-1]),
            "train_seconds": float(meter.seconds),
            "examples_per_sec": float(meter.examples_per_sec)}


def evaluate_towers(query_tower, item_tower, data, split=None):
    """Full-corpus metrics of two towers on a split (test by default)."""
    from twotower.towers.two_tower_model import embed

    split = split if split is not None else data.test
    u = embed(query_tower, query_inputs(data, split))
    v = embed(item_tower, item_inputs(data))
    return retrieval_report(u, v, split.item, data.exclusions(split), data.head_items())


def evaluate(model, data, split=None):
    """Full-corpus metrics of a TwoTowerModel (see towers/retrieval_report.py)."""
    return evaluate_towers(model.query_tower, model.item_tower, data, split)


def popularity(data, split=None):
    """The popularity baseline's metrics on the same split and exclusions."""
    split = split if split is not None else data.test
    return popularity_report(data.item_counts, split.item, data.exclusions(split),
                             data.head_items())


def train_recipe(config, loss, *, history=True, l2_normalize=False):
    """Loads data, builds towers and a TwoTowerModel with ``loss`` (a RetrievalLoss or a
    function data -> RetrievalLoss), fits and evaluates. Returns (model, data, metrics)."""
    config.validate()
    data = load_data(config)
    tf.keras.utils.set_random_seed(config.seed)
    if callable(loss) and not isinstance(loss, tf.keras.layers.Layer):
        loss = loss(data)
    query_tower, item_tower = build_towers(data, config, history=history,
                                           l2_normalize=l2_normalize)
    model = TwoTowerModel(query_tower, item_tower, loss, item_features=item_inputs(data))
    stats = fit(model, data, config)
    metrics = evaluate(model, data)
    metrics.update(stats)
    metrics["popularity_recall@50"] = popularity(data)["recall@50"]
    if loss.learn_temperature:
        metrics["temperature"] = float(loss.temperature.numpy())
    return model, data, metrics


# ----------------------------------------------------------------------------- report

METRIC_ROWS = ("recall@10", "recall@20", "recall@50", "recall@100", "ndcg@10", "ndcg@50",
               "mrr", "coverage@50", "head_recall@50", "tail_recall@50")


def report(name, config, metrics, data=None):
    """Prints the table and, when config.out is set, writes metrics.json and
    recall_at_k.png there atomically. Returns the table text."""
    pop = popularity(data) if data is not None else {}
    rows = [{"metric": k, name: metrics[k], **({"popularity": pop[k]} if k in pop else {})}
            for k in METRIC_ROWS if k in metrics]
    table = format_table(rows)
    extra = format_table([{"examples/sec": metrics.get("examples_per_sec", float("nan")),
                           "train seconds": metrics.get("train_seconds", float("nan")),
                           "last loss": metrics.get("loss_last_epoch", float("nan"))}])
    print(f"\n{name} on MovieLens ({data.config.split if data else ''}), full-corpus "
          f"retrieval, seen items excluded\n{table}\n{extra}")
    if config.out:
        with atomic_directory(config.out) as tmp:
            write_metrics(tmp, metrics)
            curves = {name: (list(KS), [metrics[f"recall@{k}"] for k in KS])}
            if pop:
                curves["popularity"] = (list(KS), [pop[f"recall@{k}"] for k in KS])
            plot_curves(os.path.join(tmp, "recall_at_k.png"), curves, xlabel="K",
                        ylabel="recall@K", title=f"{name}: MovieLens full-corpus recall@K")
        print(f"wrote {os.path.join(config.out, 'metrics.json')}")
    return table


def make_parser(prog, description, defaults):
    parser = argparse.ArgumentParser(prog=prog, description=description)
    add_common_arguments(parser, defaults)
    return parser
