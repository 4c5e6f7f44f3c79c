"""What the word2vec-family recipes (word2vec, item2vec, airbnb, eges) export to --out.

    model/        the TwoTowerModel: config.json + weights.h5 (training.word2vec_trainer.save_model),
                  vocab.json (the vocabulary: words or item indexes, their counts and,
                  for items, each row's external id) and, for a custom query tower,
                  query_tower.json; training.word2vec_trainer.load_model rebuilds it, to use or to
                  train further
    vectors.txt   word2vec text format (gensim's KeyedVectors.load_word2vec_format)
    index/        a ScaNN index of the vectors for i2i (cosine), its search knobs tuned for
                  recall@k against brute force (twotower.index.tune), with the external
                  ids (the words, or the log's item ids) as its vocabulary:
                  ``twotower serve OUT/index`` answers ``/i2i {"item_ids": ["king"]}``
    metrics.json  and, where there is a curve to show, a PNG

The recipes share this composition (embedding rows → build_index → tune → Retriever →
save) so that their folders look alike. In vectors.txt a user's own item ids are the
keys as they are (``vector_keys``: whitespace, which the format cannot hold, becomes
'_'); the index answers by the exact ids.

Errors follow the CLI's one policy (twotower/cli.py): a recipe's ``main`` lets bad input
raise, and ``twotower <recipe>`` prints one line and exits 2 (``TWOTOWER_DEBUG=1``: the
traceback). ``python -m twotower.recipes.<recipe>`` goes through the same handler
(twotower/command.py).
"""

import contextlib
import inspect
import json
import math
import os
import re

import numpy as np

from twotower.artifacts import check_output_dir
from twotower.index import Retriever, build_index, save, tune
from twotower.metrics.item_to_item import next_item_metrics
from twotower.reporting import format_table, plot_curves, twotower_command
from twotower.training.word2vec_trainer import save_model


DEFAULT_TARGET_RECALL = 0.95
DEFAULT_INDEX_K = 10
TUNE_QUERIES = 1000


def add_output_arguments(parser, *, out_help="output folder (written atomically)"):
    """The "output" flags every word2vec-family recipe has: --out, --overwrite, the
    index's --target-recall / --index-k, and --quiet; returns the argparse group."""
    g = parser.add_argument_group("output")
    g.add_argument("--out", required=True,
                   help=out_help + "; it must be new, empty, or an earlier twotower output "
                        "(with --overwrite); checked before any work")
    g.add_argument("--overwrite", action="store_true",
                   help="replace an earlier twotower output at --out (never a folder or file "
                        "twotower did not write)")
    g.add_argument("--target-recall", type=float, default=DEFAULT_TARGET_RECALL,
                   help="recall@--index-k against brute force that the ScaNN index in "
                        "OUT/index is tuned to (default %(default)s)")
    g.add_argument("--index-k", type=int, default=DEFAULT_INDEX_K,
                   help="the k the index is tuned for: the neighbours per query you will "
                        "ask for (default %(default)s)")
    g.add_argument("--quiet", action="store_true", help="no progress bar")
    return g


def begin(args, check=None):
    """What every word2vec-family recipe does first, before any work: checks --out
    (returned as an absolute path), --target-recall, --index-k and, with ``check``, the
    recipe's own flags (``check(args)``); then sets --threads. Bad input raises
    (ValueError, FileNotFoundError, ...): twotower/command.py prints it as one line and
    exits 2, or shows the traceback with TWOTOWER_DEBUG=1."""
    from twotower.training.word2vec_trainer import set_threads

    out = check_output_dir(args.out, overwrite=args.overwrite)
    check_index_arguments(args)
    if check is not None:
        check(args)
    if hasattr(args, "threads"):
        set_threads(args.threads)
    return out


def parse_and_begin(parser, argv, check=None):
    """``parser.parse_args(argv)`` and :func:`begin`: returns (args, the --out path)."""
    args = parser.parse_args(argv)
    return args, begin(args, check)


def finish(out, metrics, shown=()):
    """What every word2vec-family recipe prints last: the metrics its comparison table
    did not show (``shown``: keys, or a predicate on a key), and where the output went
    with the command that serves it."""
    hide = shown if callable(shown) else set(shown).__contains__
    print(format_table([{"metric": k, "value": v} for k, v in sorted(metrics.items())
                        if not hide(k)]))
    print(f"wrote {out}  (serve the index: {twotower_command()} serve "
          f"{os.path.join(out, 'index')})")
    return 0


def check_index_arguments(args):
    """ValueErrors naming --target-recall / --index-k, before any work."""
    if not 0 < args.target_recall <= 1:
        raise ValueError(f"--target-recall must be in (0, 1], got {args.target_recall!r}")
    if isinstance(args.index_k, bool) or args.index_k < 1:
        raise ValueError(f"--index-k must be an int >= 1, got {args.index_k!r}")


def save_model_folder(folder, model, model_config, vocab, *, query_tower=None,
                      item_ids=None):
    """``folder``: save_model's config.json + weights.h5, vocab.json and, when
    ``query_tower`` is given (a Keras layer with get_config, e.g. SideInfoTower),
    query_tower.json, so that training.word2vec_trainer.load_model(folder) rebuilds the model.
    ``item_ids``: the external id of each vocabulary row (your item ids, MovieLens movie
    ids), kept in vocab.json as "item_ids" beside the row's internal "words"."""
    save_model(folder, model, model_config)
    plain = lambda values: [w.item() if isinstance(w, np.generic) else w for w in values]
    saved = {"words": plain(vocab.words), "counts": [int(c) for c in vocab.counts]}
    if item_ids is not None:
        if len(item_ids) != len(vocab):
            raise ValueError(f"item_ids must have one id per vocabulary row ({len(vocab)}), "
                             f"got {len(item_ids)}")
        saved["item_ids"] = plain(item_ids)
    with open(os.path.join(folder, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump(saved, f, ensure_ascii=False)
    if query_tower is not None:
        with open(os.path.join(folder, "query_tower.json"), "w", encoding="utf-8") as f:
            json.dump({"class_name": type(query_tower).__name__,
                       "config": query_tower.get_config()}, f)


def index_from_args(vectors, item_vocab, args, metrics):
    """:func:`build_vector_index` with the recipe's --target-recall, --index-k, --seed and
    --quiet; the index's figures are added to ``metrics``. Returns (retriever, tuned)."""
    retriever, tuned, _ = build_vector_index(vectors, item_vocab,
                                             target_recall=args.target_recall,
                                             k=args.index_k, seed=args.seed,
                                             progress=not args.quiet)
    metrics.update(index_metrics(retriever, tuned))
    return retriever, tuned


def build_vector_index(vectors, item_vocab, *, target_recall=DEFAULT_TARGET_RECALL,
                       k=DEFAULT_INDEX_K, seed=0, progress=True):
    """A cosine ScaNN index over the rows of ``vectors`` (row i = external id
    ``item_vocab[i]``), tuned for recall@k of i2i queries.

    The tuning queries are up to 1,000 of the vectors themselves (i2i asks with an
    item's own vector), drawn with ``seed``; k is clipped to the number of items. Below
    20k items the size rule chooses exact scoring, so the tuner has nothing to trade and
    reports recall 1.

    Returns (retriever, tune_result, external_ids_in_index).
    """
    vectors = np.asarray(vectors, np.float32)
    item_vocab = np.asarray(item_vocab)
    if item_vocab.shape != (len(vectors),):
        raise ValueError(f"item_vocab must have one id per vector ({len(vectors)}), got "
                         f"shape {item_vocab.shape}")
    # Retriever(item_vocab=...) maps external ids to rows. A twotower without it (an older
    # index module) gets integer external ids as the index's own ids, and row numbers for
    # string ids (then i2i takes row numbers; external_ids_in_index says so).
    takes_vocab = "item_vocab" in inspect.signature(Retriever).parameters
    external = takes_vocab or item_vocab.dtype.kind in "iu"
    ids = (item_vocab.astype(np.int64) if external and not takes_vocab
           else np.arange(len(vectors), dtype=np.int64))
    index = build_index(vectors, ids, distance="cosine")
    rng = np.random.default_rng(seed)
    sample = rng.choice(len(vectors), min(TUNE_QUERIES, len(vectors)), replace=False)
    result = tune(index, vectors[np.sort(sample)], target_recall=target_recall,
                  k=int(min(k, index.size)), progress=progress)
    retriever = Retriever(index, item_vocab=item_vocab) if takes_vocab else Retriever(index)
    return retriever, result, external


def save_vector_index(folder, retriever, tuned, extra):
    """twotower.index.save of the i2i retriever, the tuning result in the manifest."""
    save(folder, retriever, extra=dict(extra, tuned=tuned.to_dict()))


def index_metrics(retriever, tuned):
    """The index's numbers for metrics.json."""
    index = retriever.index
    return {"index_items": index.size, "index_recall_vs_exact": tuned.recall,
            "index_qps": tuned.qps, "index_tuned_k": tuned.k,
            "index_met_target": int(tuned.met_target),
            "index_build_s": float(getattr(index, "build_seconds", float("nan")))}


def score_decimals(scores, low=2, high=6):
    """The fewest decimals (``low``..``high``) at which the distinct values of ``scores``
    print distinctly: cosines of 0.9991 and 0.9987 need 4, not the 2 that show both
    as 1.00."""
    values = sorted({float(s) for s in scores if math.isfinite(s)})
    for decimals in range(low, high + 1):
        shown = [f"{v:.{decimals}f}" for v in values]
        if len(set(shown)) == len(shown):
            return decimals
    return high


def vector_keys(ids):
    """vectors.txt keys for external ids: each id as a string, whitespace runs replaced
    by '_' (the word2vec text format splits on whitespace). Raises ValueError when two ids
    become one key."""
    keys = [re.sub(r"\s+", "_", str(i)) for i in ids]
    if len(set(keys)) != len(keys):
        seen = {}
        for i, k in zip(ids, keys):
            if k in seen:
                raise ValueError(f"item ids {seen[k]!r} and {str(i)!r} differ only in "
                                 f"whitespace, and vectors.txt keys cannot hold whitespace: "
                                 f"rename one of them")
            seen[k] = str(i)
    return keys


@contextlib.contextmanager
def divergence_as_input_error():
    """Training that diverges (FloatingPointError, naming --alpha) is a setting to change,
    not a bug: it is re-raised as a ValueError, which the CLI prints as one line (the
    original stays chained for TWOTOWER_DEBUG=1)."""
    try:
        yield
    except FloatingPointError as e:
        raise ValueError(str(e)) from e


def comparison_rows(metrics, models, keys, *, labels=None):
    """Rows of a side-by-side table: one per model (``{model}_{key}`` of ``metrics``;
    "-" where a model has no such metric), first column "model" (``labels`` maps a model
    to its printed name)."""
    labels = labels or {}
    return [dict({"model": labels.get(m, m)},
                 **{k: metrics.get(f"{m}_{k}", "-") for k in keys}) for m in models]


def hit_rate_curves(curves, ks=(1, 5, 10, 20, 50), *, popularity_of=None):
    """{label: (vocab, vectors, held)} → {label: (ks, HR@k)} over the ks below the catalogue
    size, ranking by cosine as towers.i2i_evaluation.next_item_metrics does; a
    "popularity" curve is added, ranking by the training counts of the vocabulary of
    ``popularity_of`` (a label; default the first)."""
    out, popularity = {}, None
    popularity_of = popularity_of or next(iter(curves))
    for label, (vocab, vectors, held) in curves.items():
        usable = [k for k in ks if k < len(vocab)]
        rows = [next_item_metrics(vocab, vectors, held, k=k) for k in usable]
        out[label] = (usable, [r[f"hr@{k}"] for r, k in zip(rows, usable)])
        if label == popularity_of:
            popularity = (usable, [r[f"popularity_hr@{k}"] for r, k in zip(rows, usable)])
    if popularity is not None:
        out["popularity"] = popularity
    return out


def plot_hit_rates(path, curves, *, title):
    """hit_rate_curves(...) as a PNG (HR@K against K, log x)."""
    return plot_curves(path, curves, xlabel="K", ylabel="HR@K (held-out next item)",
                       title=title, logx=True)


__all__ = ["add_output_arguments", "check_index_arguments", "save_model_folder",
           "build_vector_index", "save_vector_index", "index_metrics", "score_decimals",
           "vector_keys", "divergence_as_input_error", "comparison_rows",
           "hit_rate_curves", "plot_hit_rates"]
