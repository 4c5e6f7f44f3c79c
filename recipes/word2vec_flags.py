"""The word2vec family's training flags, declared once for word2vec, item2vec, airbnb and
eges: the fields of :class:`twotower.training.word2vec_trainer.TrainConfig`."""

from twotower.training.word2vec_trainer import ENGINES, TrainConfig


def add_training_arguments(parser, *, epochs, batch_size, batch_help=None):
    """The flags of TrainConfig (--epochs, --alpha, --min-alpha, --engine, --batch-size,
    --seed, --threads, --curvature-cap, --row-step-cap, --negative-block, --checkpoint-dir,
    --checkpoint-every) as
    a "training" group of an argparse parser; returns the group."""
    t = TrainConfig()
    g = parser.add_argument_group("training")
    g.add_argument("--epochs", type=int, default=epochs, help="passes (default %(default)s)")
    g.add_argument("--alpha", type=float, default=t.alpha,
                   help="initial learning rate, decayed linearly (default %(default)s)")
    g.add_argument("--min-alpha", type=float, default=t.min_alpha,
                   help="final learning rate (default %(default)s)")
    g.add_argument("--engine", choices=ENGINES, default=t.engine,
                   help="hogwild: word2vec.c's update, each example applied on its own, in "
                        "text order, by --threads threads over shared tables (word2vec's "
                        "own models: NEG/NCE/HS over ID towers); batched: a compiled step "
                        "applies the summed update of each --batch-size examples, with the "
                        "row bounds below (any model); auto: hogwild where it applies "
                        "(default %(default)s)")
    g.add_argument("--batch-size", type=int, default=batch_size,
                   help=(batch_help or "examples per sparse SGD step") + "; with the "
                        "hogwild engine only the unit of progress and checkpoints (its "
                        "threads take shares of at least 2^21 examples a call) "
                        "(default %(default)s)")
    g.add_argument("--seed", type=int, default=t.seed, help="random seed (default %(default)s)")
    g.add_argument("--threads", type=int, default=t.threads,
                   help="CPU threads: hogwild's training threads, and TensorFlow's "
                        "(default %(default)s)")
    g.add_argument("--curvature-cap", type=float, default=t.curvature_cap,
                   help="tau, batched engine: word2vec's own models (NEG/NCE/HS heads over ID towers) scale "
                        "a row's summed step of a batch by 1/max(1, T/tau), T = sum of "
                        "lr*sigmoid'(z)*|x|^2 over the batch's updates of that row (its "
                        "curvature), so that a row many examples hit cannot overshoot; this "
                        "keeps every batch size stable; 'inf' = the plain sum "
                        "(default %(default)s)")
    g.add_argument("--row-step-cap", type=float, default=t.row_step_cap,
                   help="c, batched engine: with other models (custom towers or candidates, sampled "
                        "softmax) a row that n > c examples of one batch update moves by c/n "
                        "of their summed step; 'inf' = the plain sum (default %(default)s)")
    g.add_argument("--negative-block", type=int, default=t.negative_block,
                   help="b, batched engine: consecutive examples of a batch that share one draw of the "
                        "negatives (HogBatch; 1 = each example draws its own, as word2vec.c; "
                        "larger is faster) (default %(default)s)")
    g.add_argument("--checkpoint-dir", default=t.checkpoint_dir,
                   help="save training state here (tf.train.CheckpointManager) and resume "
                        "from it: after a crash or kill, run the same command again "
                        "(default: no checkpoints)")
    g.add_argument("--checkpoint-every", type=int, default=t.checkpoint_every,
                   help="SGD steps between checkpoints (default %(default)s)")
    return g


def training_config(args):
    """TrainConfig from the flags of ``add_training_arguments``."""
    t = TrainConfig
    return TrainConfig(args.epochs, args.alpha, args.min_alpha, args.batch_size,
                       getattr(args, "steps_per_call", t.steps_per_call), args.seed,
                       args.threads, getattr(args, "row_step_cap", t.row_step_cap),
                       getattr(args, "negative_block", t.negative_block),
                       getattr(args, "checkpoint_dir", t.checkpoint_dir),
                       getattr(args, "checkpoint_every", t.checkpoint_every),
                       getattr(args, "curvature_cap", t.curvature_cap),
                       getattr(args, "engine", t.engine))


def add_vector_arguments(group, *, dim, window, sample, window_help="maximum window",
                         sample_help="subsampling threshold of frequent ids; 0 = off"):
    """--dim, --window and --sample, the shape of every word2vec-family model, added to
    ``group`` with the recipe's defaults; returns the group."""
    group.add_argument("--dim", type=int, default=dim, help="vector size (default %(default)s)")
    group.add_argument("--window", type=int, default=window,
                       help=window_help + " (default %(default)s)")
    group.add_argument("--sample", type=float, default=sample,
                       help=sample_help + " (default %(default)s)")
    return group
