"""item2vec (Barkan & Koenigstein, "Item2Vec: Neural Item Embedding for Collaborative
Filtering", 2016): word2vec's skip-gram with negative sampling on item sequences.

The sequences are your own (``--sessions`` or ``--interactions``, data/sessions.py) or,
by default, MovieLens-100K's: each user's ratings in time order are one "sentence" of
movie ids (one session per user). From an interaction log (user_id,item_id,timestamp)
each user's interactions in time order are one sequence, split where more than
--session-gap seconds pass (default: not split, the user's whole history is the
"basket"); a sessions CSV (session_id,item_id,timestamp) gives the sequences itself. The
model is the word2vec recipe's two-tower model (IDTower query/item towers, RetrievalLoss
with NEG/HS/NCE/sampled softmax) trained by the same sparse per-example SGD
(training/sgd_trainer.py). The last item of every sequence of >= 3 is held out: the query
is the item just before it, the candidates every item the sequence has not had in
training, scored two ways — cosine of the input vectors (item-to-item, as the paper
ranks: hr@10) and the model's own two-tower score <W[q], W'[c]> (hr@10_two_tower) — and
HR@10 / NDCG@10 of the held-out item are printed beside the popularity baseline.

    twotower item2vec --out out/item2vec
    twotower item2vec --source path/to/ml-100k --window 20 --epochs 30 --out out/i2v
    twotower item2vec --interactions log.csv --out out/mine        # user_id,item_id,timestamp
    twotower item2vec --interactions log.parquet --session-gap 1800 --out out/mine
    twotower item2vec --sessions sessions.csv --out out/mine       # session_id,item_id,timestamp

Writes to --out (new, empty, or an earlier twotower output with --overwrite; checked
before any work): vectors.txt (word2vec text format: your own item ids as the keys —
whitespace in an id becomes '_' —, or for MovieLens the movie index + title with spaces
replaced by '_'), model/ (config.json + weights.h5 + vocab.json of item indexes, with
each row's own item id under "item_ids"; training.word2vec_trainer.load_model reads it), index/ (a ScaNN cosine index of the item vectors,
tuned, addressed by your item ids or the MovieLens movie id: ``twotower serve
OUT/index``, then ``/i2i {"item_ids": ["sku-1"]}``), hit_rate.png (HR@K of cosine and
popularity), metrics.json; prints i2i neighbours and the comparison table.

Bad input raises (``twotower item2vec`` prints it as one line, exit status 2;
TWOTOWER_DEBUG=1 shows the traceback).
"""

import argparse
import os
import sys

import numpy as np

import twotower  # noqa: F401  (Keras 2 before TensorFlow)

from twotower.artifacts import atomic_directory
from twotower.command import run_as_main
from twotower.data.movielens import load_movielens
from twotower.data.sessions import describe, leave_last_out, sessions_from_interactions
from twotower.data.word2vec_examples import ARCHS
from twotower.data.word2vec_format import write_word2vec_text
from twotower.metrics.item_to_item import next_item_metrics
from twotower.recipes.session_flags import (add_session_arguments, check_session_arguments,
                                            sessions_from_args)
from twotower.recipes import vector_export as vx
from twotower.recipes.word2vec_flags import (add_training_arguments, add_vector_arguments,
                                             training_config)
from twotower.reporting import format_table, write_metrics
from twotower.training.word2vec_trainer import (WORD2VEC_HEADS, DataConfig, ModelConfig,
                                                train_word2vec, word_vectors)


K = 10
# item2vec's sequence is a user's whole history: an --interactions log is not split
SESSION_GAP = None


def user_sequences(ml):
    """(sequences: list of int arrays of movie indexes in time order, titles)."""
    movie_ids = np.asarray(ml.movies["movie_id"])
    position = {int(m): i for i, m in enumerate(movie_ids)}
    r = ml.ratings
    item = np.array([position[int(m)] for m in r["movie_id"]], dtype=np.int64)
    titles = [f"{t} ({y})" if y > 0 else str(t)
              for t, y in zip(ml.movies["title"], ml.movies["year"])]
    log = sessions_from_interactions(
        r["user_id"], item, r["timestamp"], item_names=titles,
        market_of_item=np.zeros(len(titles), np.int64), market_names=["all"], max_gap=None)
    return log.sequences(), titles


def _unit(x):
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def load_sequences(args):
    """(sequences of item indexes, display names of the items, external ids of the
    items, origin, whether it is MovieLens): your sessions or log when given, else
    MovieLens."""
    log, origin = sessions_from_args(args, session_gap=SESSION_GAP)
    if log is not None:
        print(describe(log), flush=True)
        names = [str(n) for n in log.item_names]
        return log.sequences(), names, np.asarray(names, dtype=str), origin, False
    source = args.source or "auto"
    ml = load_movielens(source)
    sequences, titles = user_sequences(ml)
    return (sequences, titles, np.asarray(ml.movies["movie_id"], np.int64),
            f"movielens:{source}", True)


def comparison(metrics):
    """The side-by-side table: cosine, the two-tower score (not for --head hs) and
    popularity on the same held-out items."""
    rows = [("item2vec (cosine)", ""), ("item2vec (two-tower score)", "_two_tower")]
    out = [{"model": name, f"hr@{K}": metrics[f"hr@{K}{s}"],
            f"ndcg@{K}": metrics[f"ndcg@{K}{s}"]} for name, s in rows
           if f"hr@{K}{s}" in metrics]
    return out + [{"model": "popularity", f"hr@{K}": metrics[f"popularity_hr@{K}"],
                   f"ndcg@{K}": metrics[f"popularity_ndcg@{K}"]}]


def build_parser():
    m = ModelConfig()
    p = argparse.ArgumentParser(
        prog="twotower item2vec",
        description="item2vec on your own sessions or interaction log (--sessions, "
                    "--interactions) or MovieLens-100K user sequences: skip-gram (or CBOW) "
                    "with NEG/HS/NCE/sampled softmax, word2vec's sparse SGD; next-item "
                    "HR@10 and NDCG@10 on each sequence's last item beside popularity; "
                    "i2i neighbours; vectors keyed by your own item ids.")
    g = p.add_argument_group("data")
    add_session_arguments(g, session_gap=SESSION_GAP)
    g.add_argument("--min-count", type=int, default=1,
                   help="drop items seen fewer times in training (default %(default)s)")
    g = p.add_argument_group("model")
    g.add_argument("--arch", choices=ARCHS, default=m.arch,
                   help="sg: predict each neighbour from the item; cbow: predict the item "
                        "from the mean of its neighbours (default %(default)s)")
    g.add_argument("--head", choices=WORD2VEC_HEADS, default=m.head,
                   help="loss head: neg (negative sampling), hs (hierarchical softmax), "
                        "nce, sampled-softmax (default %(default)s)")
    g.add_argument("--negative", type=int, default=m.negative,
                   help="negatives per example (default %(default)s)")
    add_vector_arguments(g, dim=64, window=10, sample=1e-3,
                         window_help="maximum window over a sequence's time-ordered items",
                         sample_help="subsampling threshold of popular items")
    add_training_arguments(
        p, epochs=10, batch_size=1024,
        batch_help="examples per sparse SGD step; a catalogue of ~1.7k items puts many "
                   "updates of a popular item in one big batch")
    g = vx.add_output_arguments(p)
    g.add_argument("--probes", type=int, default=4,
                   help="print neighbours of this many most frequent items (default "
                        "%(default)s)")
    return p


def main(argv=None):
    args, out = vx.parse_and_begin(build_parser(), argv)
    check_session_arguments(args, session_gap=SESSION_GAP)
    model_config = ModelConfig(args.arch, args.head, args.negative, args.dim, args.window,
                               args.sample)
    train = training_config(args)
    sequences, titles, external, origin, movielens = load_sequences(args)
    keys = None if movielens else vx.vector_keys(external)     # ids that clash: before training
    data = DataConfig(corpus=origin, min_count=args.min_count)
    train_seqs, held = leave_last_out(sequences)
    if not held:
        raise ValueError(f"{origin}: no sequence has 3 or more items to hold the last one "
                         f"out for evaluation")
    with vx.divergence_as_input_error():
        vocab, model, stats = train_word2vec(train_seqs, data, model_config, train,
                                             progress=not args.quiet)
    vectors = word_vectors(model, args.arch)
    metrics = dict(stats, epochs=args.epochs, dim=args.dim)
    outputs = None if args.head == "hs" else model.item_tower.embeddings.numpy()
    evaluation = next_item_metrics(vocab, vectors, held, k=K, output_vectors=outputs)
    metrics.update(evaluation)
    rows = np.asarray(vocab.words, np.int64)
    retriever, tuned = vx.index_from_args(vectors, external[rows], args, metrics)
    names = ([f"{i}:{titles[i].replace(' ', '_')}" for i in vocab.words] if movielens
             else [keys[i] for i in rows])
    with atomic_directory(out, overwrite=args.overwrite) as tmp:
        write_word2vec_text(os.path.join(tmp, "vectors.txt"), names, vectors)
        vx.save_model_folder(os.path.join(tmp, "model"), model, model_config, vocab,
                             item_ids=external[rows])
        vx.save_vector_index(os.path.join(tmp, "index"), retriever, tuned,
                             {"recipe": "item2vec",
                              "item_ids": "movielens movie_id" if movielens else origin})
        vx.plot_hit_rates(os.path.join(tmp, "hit_rate.png"),
                          vx.hit_rate_curves({"item2vec (cosine)": (vocab, vectors, held)}),
                          title="item2vec: next item of each sequence (held out)")
        write_metrics(tmp, metrics)
    unit = _unit(vectors)
    for p in range(min(args.probes, len(vocab))):
        sims = unit @ unit[p]
        sims[p] = -np.inf
        top = np.argsort(-sims)[:5]
        decimals = vx.score_decimals(sims[top])
        print(f"{titles[vocab.words[p]]}:")
        for i in top:
            print(f"    {sims[i]:.{decimals}f}  {titles[vocab.words[i]]}")
    print(format_table(comparison(metrics)))
    shown = {f"{k}@{K}{s}" for k in ("hr", "ndcg", "popularity_hr", "popularity_ndcg")
             for s in ("", "_two_tower")}
    return vx.finish(out, metrics, shown)


if __name__ == "__main__":
    sys.exit(run_as_main("item2vec", main))
