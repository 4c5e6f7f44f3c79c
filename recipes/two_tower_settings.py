"""The two-tower recipes' settings, in three groups, and their flags, declared once.

``DataSettings`` say what is read and how it is cut, ``ModelSettings`` the towers,
``RunSettings`` how training runs and what is written. ``RecipeConfig`` is the three
together, flat (``RecipeConfig(epochs=1, interactions="log.csv")``); a recipe subclasses
it with its own knobs. :func:`add_common_arguments` declares every shared flag.
"""

import dataclasses

from twotower.data.retrieval_task import RetrievalConfig
from twotower.training.distribute import STRATEGIES
from twotower.training.optimizer_choice import OPTIMIZERS, ROWS_PER_EXAMPLE


HISTORY_POOLINGS = ("mean", "attention")


@dataclasses.dataclass
class DataSettings:
    """What is read and how it is cut: MovieLens (``source``: folder, zip, "recbole",
    "url" or "auto") or a user's own log (``interactions``, with ``items`` / ``users``
    feature tables and their column kinds), ``min_rating``, ``split``,
    ``history_length``; ``read_memory_gb``: the memory the out-of-core grouping of a log
    may take (data/streamed_log_task.py), the rest spilling to disk."""

    source: str = "auto"
    min_rating: float | None = None
    split: str = "leave_last_out"
    history_length: int = 20
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
    read_memory_gb: float = 2.0


@dataclasses.dataclass
class ModelSettings:
    """The towers: embedding ``dim``, ``hidden`` MLP widths, ``oov_rate`` (training-time
    id dropout into the OOV bucket), ``history_pooling`` ("mean" or "attention": the
    most recent item attends over the others, with learned positions)."""

    dim: int = 32
    hidden: tuple = (64,)
    oov_rate: float = 0.02
    history_pooling: str = "mean"


@dataclasses.dataclass
class RunSettings:
    """How training runs and what is written: epochs, batch_size, lr, seed; ``out``
    (None: no files) and ``overwrite``; ``checkpoint_dir`` / ``checkpoint_every``;
    ``strategy`` (tf.distribute: "none", "mirrored", "multi-worker"); ``target_recall``
    of the exported index and ``export``; ``verbose`` (Keras fit's; None: a bar on a
    terminal, a line an epoch otherwise) and ``quiet`` (no progress at all);
    ``optimizer`` ("auto", "adam", "lazy_adam": training/optimizer_choice.py);
    ``exact_eval_items`` / ``eval_users`` (exact evaluation up to that many items, else
    a sample of test users through ScaNN: recipes/two_tower_kit.py ``evaluate``); the
    compiled step's ``jit_compile`` and ``steps_per_execution``; ``warm_start``: an
    earlier run's ``--out`` folder to start from (training/warm_start.py)."""

    epochs: int = 3
    batch_size: int = 256
    lr: float = 0.005
    seed: int = 0
    out: str | None = None
    overwrite: bool = False
    checkpoint_dir: str | None = None
    checkpoint_every: int = 50
    strategy: str = "none"
    target_recall: float = 0.95
    export: bool = True
    verbose: int | None = None
    quiet: bool = False
    optimizer: str = "auto"
    exact_eval_items: int = 200_000
    eval_users: int = 20_000
    jit_compile: bool = True
    steps_per_execution: int = 32
    warm_start: str | None = None


@dataclasses.dataclass
class RecipeConfig(RunSettings, ModelSettings, DataSettings):
    """Every setting a two-tower recipe takes, flat (the three groups above); a recipe
    subclasses it with its knobs."""

    def validate(self):
        for name in ("epochs", "batch_size", "dim", "checkpoint_every", "steps_per_execution",
                     "exact_eval_items", "eval_users"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                if not (name == "epochs" and v == 0 and not isinstance(v, bool)
                        and self.warm_start):  # --epochs 0: the empty day
                    raise ValueError(f"{name} must be an int >= 1, got {v!r}")
        if self.warm_start and not self.interactions:
            raise ValueError(f"--warm-start {self.warm_start!r} needs --interactions (the "
                             "new day's log)")
        if self.warm_start and self.checkpoint_dir:
            raise ValueError(f"--warm-start {self.warm_start!r} with --checkpoint-dir is not "
                             "supported (a resumed run would count the carried optimizer "
                             "steps as its own)")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr!r}")
        if isinstance(self.read_memory_gb, bool) or not isinstance(
                self.read_memory_gb, (int, float)) or not self.read_memory_gb >= 0.1:
            raise ValueError(f"--read-memory-gb must be a number >= 0.1, got "
                             f"{self.read_memory_gb!r}")
        if not 0.0 <= self.oov_rate < 1.0:
            raise ValueError(f"oov_rate must be in [0, 1), got {self.oov_rate!r}")
        if not 0.0 < self.target_recall <= 1.0:
            raise ValueError(f"target_recall must be in (0, 1], got {self.target_recall!r}")
        if self.history_pooling not in HISTORY_POOLINGS:
            raise ValueError(f"history_pooling must be one of {HISTORY_POOLINGS}, got "
                             f"{self.history_pooling!r}")
        RetrievalConfig(min_rating=self.min_rating, split=self.split,
                        history_length=self.history_length)
        for flag in ("items", "users"):
            if getattr(self, flag) and not self.interactions:
                raise ValueError(f"--{flag} {getattr(self, flag)!r} needs --interactions "
                                 "(feature tables go with your own log)")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"--optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.verbose is not None and self.verbose not in (0, 1, 2):
            raise ValueError(f"--verbose must be 0, 1 or 2, got {self.verbose!r}")
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
    g.add_argument("--verbose", type=int, choices=(0, 1, 2), default=d.verbose,
                   help="Keras fit verbosity: 0 none, 1 a progress bar (examples/s, ETA), 2 "
                   "one line an epoch (default: 1 on a terminal, 2 when the output goes to "
                   "a file or pipe, 0 with --quiet)")
    g.add_argument("--quiet", action="store_true",
                   help="no progress bars or phase lines: only the results table and errors")
    g.add_argument("--optimizer", choices=OPTIMIZERS, default=d.optimizer,
                   help="auto (default): LazyAdam, which updates only the embedding rows a "
                   "batch uses, when the embedding tables have more rows in all "
                   f"than {ROWS_PER_EXAMPLE} × --batch-size (the step's cost then follows the "
                   "rows a batch uses, not the tables' sizes), else Adam, which updates every "
                   "row at every step (as fast on small tables); both compile with XLA on "
                   "one device; adam or lazy_adam force one")
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
    g.add_argument("--warm-start", default=d.warm_start, metavar="PREV_OUT",
                   help="start from the model an earlier run of this recipe wrote to its "
                   "--out (PREV_OUT/warm_start/), trained on another --interactions log: ids "
                   "of both logs keep their rows, new ids get fresh rows, the frequency "
                   "estimator and Adam's moments carry on. Refused for another recipe, other "
                   "--dim/--hidden/--history-pooling or other feature columns. With --epochs "
                   "0 nothing trains: the previous model re-exported for the new log, new "
                   "ids in the OOV bucket (embedded from their features) (default: start "
                   "from scratch)")
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
    g.add_argument("--exact-eval-items", type=int, default=d.exact_eval_items, metavar="N",
                   help="catalogues of up to N items are evaluated exactly (every test user "
                   "ranks every item); larger ones on a uniform sample of --eval-users test "
                   "users through a tuned ScaNN index, said in the output and in "
                   "metrics.json (exact 0, evaluated_users) (default %(default)s)")
    g.add_argument("--eval-users", type=int, default=d.eval_users, metavar="N",
                   help="test users sampled when the catalogue is larger than "
                   "--exact-eval-items (default %(default)s)")
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
    g.add_argument("--read-memory-gb", type=float, default=d.read_memory_gb, metavar="GB",
                   help="memory the grouping of --interactions by user may take (DuckDB, out "
                   "of core: the rest spills to a work folder under $TWOTOWER_DATA or the "
                   "system's temporary folder); more reads a large log faster "
                   "(default %(default)s)")
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
