"""EGES (Wang et al., "Billion-scale Commodity Embedding for E-commerce Recommendation in
Alibaba", KDD 2018), beside item2vec, with cold-start items from side information.

  1. a weighted directed item graph from consecutive items of sessions, w_ij = how often
     j directly follows i (data/item_graph.py);
  2. weighted random walks P(j | i) = w_ij / Σ_k w_ik (or DeepWalk's uniform walk,
     --uniform-walks);
  3. skip-gram with negative sampling on the walks, where the centre's vector is
     EGES's H_v = Σ_j softmax(a_v)_j W^j_v over its id embedding and one embedding per
     side-information field (genres, multi-valued, mean of its values; release-year
     bucket) with learned per-item attention a_v (towers/side_info_tower.py; --no-attention
     gives GES, the plain mean). The context is an output-id embedding (item tower).

Items never in the graph still get H_v from their side information alone; item2vec has
no vector for them. The offline data is MovieLens-100K (data/movielens.py), sessions cut
at --max-gap-hours between a user's ratings.

Evaluation: a random --cold-fraction of the rated items is hidden from training entirely
(its events removed from the sessions). The last event of every remaining session of >= 3
events is held out; next-item HR@10 / NDCG@10 rank all items by cosine to the query
item (the session's earlier items excluded), for EGES, for item2vec on the same training
sessions and, with --compare-deepwalk, for skip-gram on uniform walks (DeepWalk). Cold
start: every (known item → hidden item) step of the full sessions asks for the hidden
item as the next item of its predecessor (cold_hr@10, ranked among all items), and each
hidden item's 10 nearest known items are checked against its true neighbours in the full
graph (cold_neighbour_precision@10, beside the 10 most popular items as a baseline).

    twotower eges --out out/eges
    twotower eges --source path/to/ml-100k --uniform-walks --out out/deepwalk-sideinfo

Writes to --out (new, empty, or an earlier twotower output with --overwrite; checked
before any work): vectors.txt (every item, cold ones included; word2vec text format),
model/ (config.json + weights.h5 + vocab.json + query_tower.json, the SideInfoTower's
config with its side information; towers.word2vec.load_model rebuilds it), index/ (a
ScaNN cosine index of all item vectors, tuned, addressed by MovieLens movie id:
``twotower serve OUT/index``, then ``/i2i {"item_ids": [50]}``), hit_rate.png (HR@K of
EGES, item2vec, DeepWalk when compared, and popularity), metrics.json; prints the table.
"""

import argparse
import os
import sys

import numpy as np

import twotower  # noqa: F401  (Keras 2 before TensorFlow)

from twotower.artifacts import atomic_directory, check_output_dir
from twotower.data.item_graph import ItemGraph
from twotower.data.movielens import load_movielens
from twotower.data.sessions import leave_last_out, movielens_booking_sessions
from twotower.data.side_info import encode_side_info, year_buckets
from twotower.data.vocab import Vocabulary
from twotower.data.word2vec_format import write_word2vec_text
from twotower.recipes.vector_export import (add_output_arguments, build_vector_index,
                                            check_index_arguments, hit_rate_curves,
                                            index_metrics, plot_hit_rates, save_model_folder,
                                            save_vector_index)
from twotower.reporting import format_table, write_metrics
from twotower.towers.i2i_evaluation import next_item_metrics
from twotower.towers.side_info_tower import SideInfoTower
from twotower.towers.word2vec import (add_training_arguments, build_model, DataConfig,
                                      ModelConfig, set_threads, train_word2vec,
                                      training_config, validate, word_vectors)

K = 10


def movielens_side_info(ml):
    """{genres: [N, max_genres] codes, year: [N] 5-year-bucket codes}, 0 = missing."""
    codes, _ = encode_side_info({"genres": list(ml.movies["genres"]),
                                 "year": year_buckets(ml.movies["year"])})
    return codes


def hide_items(sequences, num_items, fraction, seed):
    """Hides a random ``fraction`` of the items that occur in ``sequences``: returns
    (sequences with those items' events removed, bool [num_items] hidden)."""
    if not 0 <= fraction < 1:
        raise ValueError(f"--cold-fraction must be in [0, 1), got {fraction!r}")
    seen = np.unique(np.concatenate(sequences))
    rng = np.random.default_rng(seed)
    hidden = np.zeros(num_items, bool)
    hidden[rng.choice(seen, int(round(fraction * seen.size)), replace=False)] = True
    return [s[~hidden[s]] for s in sequences], hidden


def cold_pairs(sequences, hidden):
    """(known predecessor, hidden item, {}) for every step into a hidden item."""
    out = []
    for s in sequences:
        for a, b in zip(s[:-1], s[1:]):
            if hidden[b] and not hidden[a] and a != b:
                out.append((int(a), int(b), set()))
    return out


def cold_neighbour_precision(vectors, sequences, hidden, counts, k=K):
    """Mean over hidden items with graph neighbours of the share of their k nearest known
    items (cosine) that are neighbours in the full graph; and the same for the k most
    popular known items (baseline)."""
    n = len(hidden)
    full = ItemGraph(sequences, n)
    neighbours = [set() for _ in range(n)]
    for a, b in zip(full.sources, full.targets):
        neighbours[a].add(int(b))
        neighbours[b].add(int(a))
    known = np.flatnonzero(~hidden & (counts > 0))
    unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    popular = known[np.argsort(-counts[known], kind="stable")[:k]]
    ours, base = [], []
    for h in np.flatnonzero(hidden):
        truth = neighbours[h] - {int(h)}
        if not truth:
            continue
        top = known[np.argsort(-(unit[known] @ unit[h]))[:k]]
        ours.append(np.mean([int(i) in truth for i in top]))
        base.append(np.mean([int(i) in truth for i in popular]))
    return (float(np.mean(ours)) if ours else 0.0, float(np.mean(base)) if base else 0.0,
            len(ours))


def run(args):
    """Trains EGES and the baselines; returns a dict: metrics, vectors (EGES's, every
    item), names, external_ids (movie ids), model, model_config, vocab, query_tower (the
    SideInfoTower), curves (HR@K of every model and popularity)."""
    data = DataConfig(corpus=f"movielens:{args.source}", min_count=1)
    model_config = ModelConfig("sg", "neg", args.negative, args.dim, args.window, args.sample)
    train = training_config(args)
    validate(data, model_config, train)
    for flag, v in (("--walk-length", args.walk_length), ("--walks-per-node", args.walks_per_node)):
        if v < 2 and flag == "--walk-length" or v < 1:
            raise ValueError(f"{flag} must be an int >= {2 if flag == '--walk-length' else 1}, "
                             f"got {v!r}")
    if not 0 <= args.cold_fraction < 1:
        raise ValueError(f"--cold-fraction must be in [0, 1), got {args.cold_fraction!r}")
    ml = load_movielens(args.source)
    log = movielens_booking_sessions(ml, max_gap_hours=args.max_gap_hours)
    n = log.num_items
    side_info = movielens_side_info(ml)
    full = log.sequences(min_length=2)
    if not full:
        raise ValueError(f"--source {args.source!r}: no session has 2 or more ratings")
    visible, hidden = hide_items(full, n, args.cold_fraction, args.seed)
    train_seqs, held = leave_last_out([s for s in visible if len(s) >= 2])
    graph = ItemGraph(train_seqs, n)
    walks = [w.tolist() for w in graph.random_walks(args.walk_length, args.walks_per_node,
                                                    weighted=not args.uniform_walks,
                                                    seed=args.seed) if len(w) >= 2]
    counts = np.bincount(np.concatenate([np.asarray(w) for w in walks]), minlength=n)
    known = counts > 0
    # EGES's vocabulary is the whole catalogue in id order: never-walked items keep a row
    # (zero count: never a negative) whose vector comes from side information alone.
    vocab = Vocabulary(list(range(n)), counts)
    tower = SideInfoTower(n, args.dim, side_info, known_items=known,
                          use_attention=not args.no_attention, name="eges")
    kwargs = dict(progress=not args.quiet)
    _, eges, stats = train_word2vec(walks, data, model_config, train, vocab=vocab,
                                    model_fn=lambda v: build_model(v, model_config, args.seed,
                                                                   query_tower=tower),
                                    query_is_item=True, description="eges", **kwargs)
    vectors = word_vectors(eges, "sg")
    i2v_vocab, i2v, i2v_stats = train_word2vec([s.tolist() for s in map(np.asarray, train_seqs)],
                                               data, model_config, train,
                                               description="item2vec", **kwargs)
    metrics = {"num_items": n, "hidden_items": int(hidden.sum()),
               "graph_edges": graph.num_edges, "graph_isolated_nodes": int(graph.isolated.size),
               "walks": len(walks), "side_info_missing_values": int(sum(
                   (np.asarray(c).reshape(n, -1) > 0).any(axis=1).__invert__().sum()
                   for c in side_info.values())),
               "dim": args.dim, "epochs": args.epochs, "eges_seconds": stats["seconds"],
               "item2vec_seconds": i2v_stats["seconds"]}
    results = [("eges", vocab, vectors), ("item2vec", i2v_vocab, word_vectors(i2v, "sg"))]
    if args.compare_deepwalk:
        uniform = [w.tolist() for w in graph.random_walks(args.walk_length, args.walks_per_node,
                                                          weighted=False, seed=args.seed)
                   if len(w) >= 2]
        dw_vocab, dw, _ = train_word2vec(uniform, data, model_config, train,
                                         description="deepwalk", **kwargs)
        results.append(("deepwalk", dw_vocab, word_vectors(dw, "sg")))
    for name, v, vec in results:
        m = next_item_metrics(v, vec, held, k=K)
        metrics.update({f"{name}_hr@{K}": m[f"hr@{K}"], f"{name}_ndcg@{K}": m[f"ndcg@{K}"]})
        metrics["eval_pairs"] = m["eval_users"]
        metrics[f"popularity_hr@{K}"] = m[f"popularity_hr@{K}"] if name == "item2vec" else \
            metrics.get(f"popularity_hr@{K}", 0.0)
    cold = cold_pairs(full, hidden)
    metrics["cold_pairs"] = len(cold)
    if cold:
        m = next_item_metrics(vocab, vectors, cold, k=K)
        metrics[f"eges_cold_hr@{K}"] = m[f"hr@{K}"]
        metrics[f"eges_cold_ndcg@{K}"] = m[f"ndcg@{K}"]
        metrics[f"item2vec_cold_answered"] = sum(1 for _, b, _ in cold if b in i2v_vocab.index)
    prec, pop_prec, n_cold = cold_neighbour_precision(vectors, full, hidden,
                                                      np.bincount(np.concatenate(train_seqs),
                                                                  minlength=n))
    metrics.update({f"eges_cold_neighbour_precision@{K}": prec,
                    f"popularity_cold_neighbour_precision@{K}": pop_prec,
                    "cold_items_with_neighbours": n_cold})
    names = [f"{i}:{str(log.item_names[i]).replace(' ', '_')}" for i in range(n)]
    # popularity as the metrics rank it: by training-session counts (item2vec's vocabulary)
    curves = hit_rate_curves({name: (v, vec, held) for name, v, vec in results},
                             popularity_of="item2vec")
    return dict(metrics=metrics, vectors=vectors, names=names,
                external_ids=np.asarray(ml.movies["movie_id"], np.int64), model=eges,
                model_config=model_config, vocab=vocab, query_tower=tower, curves=curves)


def build_parser():
    m = ModelConfig()
    p = argparse.ArgumentParser(
        prog="twotower eges",
        description="EGES (Alibaba KDD 2018): weighted walks on the session item graph, "
                    "skip-gram with side-information attention (genres, year) beside "
                    "item2vec; next-item HR@10 and cold-start quality for items hidden "
                    "from the graph; a ScaNN index of all item vectors.")
    g = p.add_argument_group("data")
    g.add_argument("--source", default="auto",
                   help="MovieLens: a folder/zip, 'url', 'recbole' (offline wheel) or "
                        "'auto' (default %(default)s)")
    g.add_argument("--max-gap-hours", type=float, default=1.0,
                   help="a new session after this many hours between ratings (default "
                        "%(default)s)")
    g.add_argument("--cold-fraction", type=float, default=0.1,
                   help="share of the rated items hidden from the graph, for the cold-start "
                        "evaluation (default %(default)s)")
    g = p.add_argument_group("walks")
    g.add_argument("--walk-length", type=int, default=10, help="nodes per walk (default %(default)s)")
    g.add_argument("--walks-per-node", type=int, default=10,
                   help="walks started from every node with an out-edge (default %(default)s)")
    g.add_argument("--uniform-walks", action="store_true",
                   help="DeepWalk's uniform walks instead of edge-weighted ones")
    g = p.add_argument_group("model")
    g.add_argument("--no-attention", action="store_true",
                   help="GES: the plain mean of id and side-information embeddings")
    g.add_argument("--negative", type=int, default=m.negative,
                   help="negatives per pair from unigram^0.75 (default %(default)s)")
    g.add_argument("--dim", type=int, default=32, help="vector size (default %(default)s)")
    g.add_argument("--window", type=int, default=5, help="maximum window (default %(default)s)")
    g.add_argument("--sample", type=float, default=1e-3,
                   help="subsampling threshold; 0 = off (default %(default)s)")
    g.add_argument("--compare-deepwalk", action="store_true",
                   help="also train plain skip-gram on uniform walks (DeepWalk) and report it")
    add_training_arguments(p, epochs=5, batch_size=512, batch_help="pairs per sparse SGD step")
    g = add_output_arguments(p)
    g.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        out = check_output_dir(args.out, overwrite=args.overwrite)
        check_index_arguments(args)
        set_threads(args.threads)
        result = run(args)
        metrics, vectors = result["metrics"], result["vectors"]
        retriever, tuned, _ = build_vector_index(vectors, result["external_ids"],
                                                 target_recall=args.target_recall,
                                                 k=args.index_k, seed=args.seed,
                                                 progress=not args.quiet)
        metrics.update(index_metrics(retriever, tuned))
        with atomic_directory(out, overwrite=args.overwrite) as tmp:
            write_word2vec_text(os.path.join(tmp, "vectors.txt"), result["names"], vectors)
            save_model_folder(os.path.join(tmp, "model"), result["model"],
                              result["model_config"], result["vocab"],
                              query_tower=result["query_tower"])
            save_vector_index(os.path.join(tmp, "index"), retriever, tuned, {"recipe": "eges"})
            plot_hit_rates(os.path.join(tmp, "hit_rate.png"), result["curves"],
                           title="EGES vs item2vec: next movie of each session (held out)")
            write_metrics(tmp, metrics)
    except (ValueError, FileNotFoundError, RuntimeError, FloatingPointError) as e:
        print(f"twotower eges: error: {e}", file=sys.stderr)
        return 2
    print(format_table([{"metric": k, "value": v} for k, v in sorted(metrics.items())]))
    print(f"wrote {out}  (serve the index: twotower serve {os.path.join(out, 'index')})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
