"""item2vec (Barkan & Koenigstein, "Item2Vec: Neural Item Embedding for Collaborative
Filtering", 2016): word2vec's skip-gram with negative sampling on item sequences.

Each MovieLens-100K user's ratings in time order are one "sentence" of movie ids
(data/sessions.py, one session per user); the model is the word2vec recipe's two-tower
model (IDTower query/item towers, RetrievalLoss with NEG/HS/NCE/sampled softmax) trained
by the same sparse per-example SGD (towers/sgd_trainer.py). The last rating of every user
is held out: the query is the item rated just before it, the candidates every movie the
user has not rated in training, scored two ways — cosine of the input vectors
(item-to-item, as the paper ranks: hr@10) and the model's own two-tower score
<W[q], W'[c]> (hr@10_two_tower) — and HR@10 / NDCG@10 of the held-out item are reported
beside the popularity baseline.

    twotower item2vec --out out/item2vec
    twotower item2vec --source path/to/ml-100k --window 20 --epochs 30 --out out/i2v

Writes to --out (new, empty, or an earlier twotower output with --overwrite; checked
before any work): vectors.txt (item index + title → vector, word2vec text format; titles
have spaces replaced by '_'), model/ (config.json + weights.h5 + vocab.json of movie
indexes; towers.word2vec.load_model reads it), index/ (a ScaNN cosine index of the movie
vectors, tuned, addressed by MovieLens movie id: ``twotower serve OUT/index``, then
``/i2i {"item_ids": [50]}``), hit_rate.png (HR@K of cosine, two-tower score and
popularity), metrics.json; prints i2i neighbours with titles.
"""

import argparse
import os
import sys

import numpy as np

import twotower  # noqa: F401  (Keras 2 before TensorFlow)

from twotower.artifacts import atomic_directory, check_output_dir
from twotower.data.movielens import load_movielens
from twotower.data.sessions import leave_last_out, sessions_from_interactions  # noqa: F401
from twotower.data.word2vec_examples import ARCHS
from twotower.data.word2vec_format import write_word2vec_text
from twotower.recipes.vector_export import (add_output_arguments, build_vector_index,
                                            check_index_arguments, hit_rate_curves,
                                            index_metrics, plot_hit_rates, save_model_folder,
                                            save_vector_index, score_decimals)
from twotower.reporting import format_table, write_metrics
from twotower.towers.i2i_evaluation import next_item_metrics
from twotower.towers.word2vec import (HEADS, add_training_arguments, DataConfig, ModelConfig,
                                      set_threads, train_word2vec, training_config, word_vectors)


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


def build_parser():
    m = ModelConfig()
    p = argparse.ArgumentParser(
        prog="twotower item2vec",
        description="item2vec on MovieLens-100K user sequences: skip-gram (or CBOW) with "
                    "NEG/HS/NCE/sampled softmax, word2vec's sparse SGD; next-item HR@10 "
                    "and NDCG@10 on each user's last rating; i2i neighbours with titles.")
    p.add_argument("--source", default="auto",
                   help="MovieLens: a folder/zip, 'url', 'recbole' (offline wheel) or "
                        "'auto' (default %(default)s)")
    p.add_argument("--arch", choices=ARCHS, default=m.arch, help="(default %(default)s)")
    p.add_argument("--head", choices=HEADS, default=m.head, help="(default %(default)s)")
    p.add_argument("--negative", type=int, default=m.negative,
                   help="negatives per example (default %(default)s)")
    p.add_argument("--dim", type=int, default=64, help="vector size (default %(default)s)")
    p.add_argument("--window", type=int, default=10,
                   help="maximum window over a user's time-ordered items (default %(default)s)")
    p.add_argument("--sample", type=float, default=1e-3,
                   help="subsampling threshold of popular items (default %(default)s)")
    p.add_argument("--min-count", type=int, default=1,
                   help="drop items rated fewer times (default %(default)s)")
    add_training_arguments(
        p, epochs=10, batch_size=1024,
        batch_help="examples per sparse SGD step; a catalogue of ~1.7k items puts many "
                   "updates of a popular item in one big batch")
    p.add_argument("--probes", type=int, default=4,
                   help="print neighbours of this many most-rated movies (default %(default)s)")
    g = add_output_arguments(p)
    g.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    data = DataConfig(corpus=f"movielens:{args.source}", min_count=args.min_count)
    model_config = ModelConfig(args.arch, args.head, args.negative, args.dim, args.window,
                               args.sample)
    train = training_config(args)
    try:
        out = check_output_dir(args.out, overwrite=args.overwrite)
        check_index_arguments(args)
        set_threads(args.threads)
        ml = load_movielens(args.source)
        sequences, titles = user_sequences(ml)
        train_seqs, held = leave_last_out(sequences)
        if not held:
            raise ValueError(f"--source {args.source!r}: no user has 3 or more ratings to "
                             f"hold one out")
        vocab, model, stats = train_word2vec(train_seqs, data, model_config, train,
                                             progress=not args.quiet)
        vectors = word_vectors(model, args.arch)
        metrics = dict(stats, epochs=args.epochs, dim=args.dim)
        outputs = None if args.head == "hs" else model.item_tower.embeddings.numpy()
        metrics.update(next_item_metrics(vocab, vectors, held, output_vectors=outputs))
        movie_ids = np.asarray(ml.movies["movie_id"], np.int64)[np.asarray(vocab.words)]
        retriever, tuned, _ = build_vector_index(vectors, movie_ids,
                                                 target_recall=args.target_recall,
                                                 k=args.index_k, seed=args.seed,
                                                 progress=not args.quiet)
        metrics.update(index_metrics(retriever, tuned))
        names = [f"{i}:{titles[i].replace(' ', '_')}" for i in vocab.words]
        with atomic_directory(out, overwrite=args.overwrite) as tmp:
            write_word2vec_text(os.path.join(tmp, "vectors.txt"), names, vectors)
            save_model_folder(os.path.join(tmp, "model"), model, model_config, vocab)
            save_vector_index(os.path.join(tmp, "index"), retriever, tuned,
                              {"recipe": "item2vec", "item_ids": "movielens movie_id"})
            plot_hit_rates(os.path.join(tmp, "hit_rate.png"),
                           hit_rate_curves({"item2vec (cosine)": (vocab, vectors, held)}),
                           title="item2vec: next movie of each user (held out)")
            write_metrics(tmp, metrics)
    except (ValueError, FileNotFoundError, RuntimeError, FloatingPointError) as e:
        print(f"twotower item2vec: error: {e}", file=sys.stderr)
        return 2
    unit = _unit(vectors)
    for p in range(min(args.probes, len(vocab))):
        sims = unit @ unit[p]
        sims[p] = -np.inf
        top = np.argsort(-sims)[:5]
        decimals = score_decimals(sims[top])
        print(f"{titles[vocab.words[p]]}:")
        for i in top:
            print(f"    {sims[i]:.{decimals}f}  {titles[vocab.words[i]]}")
    print(format_table([{"metric": k, "value": v} for k, v in sorted(metrics.items())]))
    print(f"wrote {out}  (serve the index: twotower serve {os.path.join(out, 'index')})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
