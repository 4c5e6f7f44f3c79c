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
no vector for them.

Data (data/sessions.py; the same flags as item2vec and airbnb): your own sessions
(``--sessions`` CSV, session_id,item_id,timestamp) or interaction log (``--interactions``,
user_id,item_id,timestamp as CSV/Parquet, each user's events in time order split into
sessions after --session-gap seconds of inactivity, default 3600), with side information
from ``--items items.csv`` (keyed by the item id; every other column, or those named by
--side-info, is a field: categorical, '|'-separated multi-valued, text as its words,
numbers in 10 quantile buckets; data/side_info.side_info_from_table). Items only in the
table are in the catalogue too: their vectors come from side information alone. Without
--items the model has ids only (the paper's BGE: skip-gram on weighted walks) and
nothing is hidden for the cold-start evaluation. Offline, by default, MovieLens-100K
(data/movielens.py) with genres and a release-year bucket as side information, sessions
cut at --max-gap-hours between a user's ratings.

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
    twotower eges --interactions log.csv --items items.csv --out out/mine
    twotower eges --sessions s.csv --items items.csv --side-info brand,category --out out/mine

Writes to --out (new, empty, or an earlier twotower output with --overwrite; checked
before any work): vectors.txt (every item, cold ones included; word2vec text format;
keys: your own item ids — whitespace in an id becomes '_' —, or "index:title" for
MovieLens), model/ (config.json + weights.h5 + vocab.json, each row's item id under
"item_ids", and with side information
query_tower.json, the SideInfoTower's config with its side information;
training.word2vec_trainer.load_model rebuilds it), index/ (a ScaNN cosine index of all item
vectors, tuned, addressed by your item ids or the MovieLens movie id: ``twotower serve
OUT/index``, then ``/i2i {"item_ids": [50]}``), hit_rate.png (HR@K of EGES, item2vec,
DeepWalk when compared, and popularity), metrics.json; prints the side-by-side table
(EGES, item2vec, DeepWalk, popularity) and the other numbers.

Bad input raises (``twotower eges`` prints it as one line, exit status 2;
TWOTOWER_DEBUG=1 shows the traceback).
"""

import argparse
import os
import re
import sys

import numpy as np

import twotower  # noqa: F401  (Keras 2 before TensorFlow)

from twotower.artifacts import atomic_directory
from twotower.command import run_as_main
from twotower.data.feature_table import read_feature_table
from twotower.data.item_graph import ItemGraph
from twotower.data.movielens import load_movielens
from twotower.data.sessions import describe, leave_last_out, movielens_booking_sessions
from twotower.data.side_info import encode_side_info, side_info_from_table, year_buckets
from twotower.data.vocab import Vocabulary
from twotower.data.word2vec_format import write_word2vec_text
from twotower.metrics.item_to_item import next_item_metrics
from twotower.recipes.session_flags import (add_session_arguments, check_session_arguments,
                                            log_columns, sessions_from_args)
from twotower.recipes import vector_export as vx
from twotower.recipes.word2vec_flags import (add_training_arguments, add_vector_arguments,
                                             training_config)
from twotower.reporting import format_table, write_metrics
from twotower.towers.side_info_tower import SideInfoTower
from twotower.training.word2vec_trainer import (DataConfig, ModelConfig, build_model,
                                                train_word2vec, validate,
                                                word_vectors)


K = 10
# EGES (KDD 2018) cuts sessions at one hour of inactivity
SESSION_GAP = 3600.0
COLD_FRACTION = 0.1


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


def check_arguments(args):
    """ValueErrors naming the flag and its value, before any data is read; returns the
    cold fraction (its default: 0.1 with side information, 0 with ids only)."""
    check_session_arguments(args, session_gap=SESSION_GAP)
    for flag, v, low in (("--walk-length", args.walk_length, 2),
                         ("--walks-per-node", args.walks_per_node, 1)):
        if isinstance(v, bool) or v < low:
            raise ValueError(f"{flag} must be an int >= {low}, got {v!r}")
    own = args.sessions is not None or args.interactions is not None
    if args.items is not None and not own:
        raise ValueError(f"--items {args.items!r} is the side information of your own items: "
                         f"it needs --sessions or --interactions (MovieLens has its genres "
                         f"and years)")
    if args.side_info is not None and args.items is None:
        raise ValueError(f"--side-info {args.side_info!r} names columns of --items, which is "
                         f"not given")
    if args.items is not None:
        if not os.path.isfile(args.items):
            raise FileNotFoundError(f"--items {args.items!r}: no such file (give the item "
                                    f"table: a CSV with a header, keyed by the item id)")
        header = _header(args.items)
        for c in _side_info_columns(args) or ():
            if c not in header:
                raise ValueError(f"--side-info {c!r}: {args.items} has no such column; it "
                                 f"has {header}")
    side_info = not own or args.items is not None
    fraction = args.cold_fraction
    if fraction is None:
        return COLD_FRACTION if side_info else 0.0
    if not 0 <= fraction < 1:
        raise ValueError(f"--cold-fraction must be in [0, 1), got {fraction!r}")
    if fraction > 0 and not side_info:
        raise ValueError(f"--cold-fraction {fraction!r} hides items from the graph to test "
                         f"their vectors from side information; without --items there is "
                         f"none (a hidden item would get no vector): give --items or "
                         f"--cold-fraction 0")
    return fraction


def load_catalogue(args):
    """Sessions and side information: (log, side_info codes {field: codes} over the
    catalogue or None, external ids [N], vectors.txt keys [N], origin). The catalogue is
    the log's items, then (--items) the table's items that are not in the log."""
    log, origin = sessions_from_args(args, session_gap=SESSION_GAP)
    if log is None:
        source = args.source or "auto"
        ml = load_movielens(source)
        log = movielens_booking_sessions(ml, max_gap_hours=args.max_gap_hours)
        keys = [f"{i}:{str(t).replace(' ', '_')}" for i, t in enumerate(log.item_names)]
        return (log, movielens_side_info(ml), np.asarray(ml.movies["movie_id"], np.int64),
                keys, f"movielens:{source}")
    print(describe(log), flush=True)
    ids = [str(i) for i in log.item_names]
    side_info = None
    if args.items is not None:
        table = read_feature_table(args.items, _item_key(args), infer=True,
                                   flag_prefix="--item")
        known = set(ids)
        ids += [str(i) for i in table.ids.tolist() if str(i) not in known]
        side_info, notes = side_info_from_table(table, ids, columns=_side_info_columns(args))
        print("\n".join(notes), flush=True)
        extra = len(ids) - log.num_items
        if extra:
            print(f"{extra} item{'s' if extra > 1 else ''} of {args.items} "
                  f"{'are' if extra > 1 else 'is'} not in the log: vectors from side "
                  f"information alone", flush=True)
    else:
        print("no --items: ids only (skip-gram on weighted walks, the paper's BGE); no "
              "cold-start evaluation", flush=True)
    return log, side_info, np.asarray(ids, dtype=str), vx.vector_keys(ids), origin


def _item_key(args):
    """The --items table's key column: the log's item column (as --item-col or an alias
    resolved it) when the table has it, else item_id."""
    wanted = "item_id"
    if args.interactions is not None:
        from twotower.data import interactions as logs

        first = logs.list_files(args.interactions)[0]
        wanted = logs.resolve_columns(first, log_columns(args))[0].item
    return wanted if wanted in _header(args.items) else "item_id"


def _header(path):
    """The column names on the first line of a table (comma, tab, ';' or '|')."""
    with open(path, encoding="utf-8-sig", errors="replace") as f:
        return [h.strip().strip('"') for h in re.split(r"[,\t;|]", f.readline())]


def _side_info_columns(args):
    """--side-info as a list of column names (None: every column)."""
    if args.side_info is None:
        return None
    return [c.strip() for c in args.side_info.split(",") if c.strip()]


def run(args):
    """Trains EGES and the baselines; returns a dict: metrics, vectors (EGES's, one row
    per vocabulary item), names (vectors.txt keys), external_ids (your item ids or movie
    ids, per row), model, model_config, vocab, query_tower (the SideInfoTower, or None with
    ids only), curves (HR@K of every model and popularity)."""
    data = DataConfig(corpus="sessions", min_count=1)
    model_config = ModelConfig("sg", "neg", args.negative, args.dim, args.window, args.sample)
    train = training_config(args)
    validate(data, model_config, train)
    cold_fraction = check_arguments(args)
    log, side_info, external, keys, origin = load_catalogue(args)
    data.corpus = origin
    n = len(external)
    full = log.sequences(min_length=2)
    if not full:
        raise ValueError(f"{origin}: no session has 2 or more events")
    visible, hidden = hide_items(full, n, cold_fraction, args.seed)
    if hidden.any():
        print(f"{int(hidden.sum())} items hidden from the graph (--cold-fraction "
              f"{cold_fraction:g}) to measure cold start: their vectors come from side "
              f"information alone (--cold-fraction 0 trains on every item)", flush=True)
    train_seqs, held = leave_last_out([s for s in visible if len(s) >= 2])
    if not held:
        raise ValueError(f"{origin}: no session has 3 or more events to hold the last one "
                         f"out for evaluation")
    graph = ItemGraph(train_seqs, n)
    walks = [w.tolist() for w in graph.random_walks(args.walk_length, args.walks_per_node,
                                                    weighted=not args.uniform_walks,
                                                    seed=args.seed) if len(w) >= 2]
    counts = np.bincount(np.concatenate([np.asarray(w) for w in walks]), minlength=n)
    known = counts > 0
    kwargs = dict(progress=not args.quiet)
    tower = None
    with vx.divergence_as_input_error():
        if side_info is not None:
            # EGES's vocabulary is the whole catalogue in id order: never-walked items keep
            # a row (zero count: never a negative) whose vector comes from side information
            # alone.
            vocab = Vocabulary(list(range(n)), counts)
            tower = SideInfoTower(n, args.dim, side_info, known_items=known,
                                  use_attention=not args.no_attention, name="eges")
            model_fn = lambda v: build_model(v, model_config, args.seed, query_tower=tower)
            _, eges, stats = train_word2vec(walks, data, model_config, train, vocab=vocab,
                                            model_fn=model_fn, query_is_item=True,
                                            description="eges", **kwargs)
        else:
            # ids only: a vector for every walked item, none for the others
            vocab, eges, stats = train_word2vec(walks, data, model_config, train,
                                                description="eges", **kwargs)
        vectors = word_vectors(eges, "sg")
        i2v_vocab, i2v, i2v_stats = train_word2vec(
            [s.tolist() for s in map(np.asarray, train_seqs)], data, model_config, train,
            description="item2vec", **kwargs)
        results = [("eges", vocab, vectors), ("item2vec", i2v_vocab, word_vectors(i2v, "sg"))]
        if args.compare_deepwalk:
            uniform = [w.tolist() for w in graph.random_walks(args.walk_length,
                                                              args.walks_per_node,
                                                              weighted=False, seed=args.seed)
                       if len(w) >= 2]
            dw_vocab, dw, _ = train_word2vec(uniform, data, model_config, train,
                                             description="deepwalk", **kwargs)
            results.append(("deepwalk", dw_vocab, word_vectors(dw, "sg")))
    metrics = {"num_items": n, "hidden_items": int(hidden.sum()),
               "graph_edges": graph.num_edges, "graph_isolated_nodes": int(graph.isolated.size),
               "walks": len(walks), "side_info_fields": len(side_info or {}),
               "side_info_missing_values": int(sum(
                   (np.asarray(c).reshape(n, -1) > 0).any(axis=1).__invert__().sum()
                   for c in (side_info or {}).values())),
               "dim": args.dim, "epochs": args.epochs, "eges_seconds": stats["seconds"],
               "item2vec_seconds": i2v_stats["seconds"]}
    for name, v, vec in results:
        m = next_item_metrics(v, vec, held, k=K)
        metrics.update({f"{name}_hr@{K}": m[f"hr@{K}"], f"{name}_ndcg@{K}": m[f"ndcg@{K}"]})
        metrics["eval_pairs"] = m["eval_users"]
        if name == "item2vec":
            # popularity as the curves rank it: by training-session counts
            metrics[f"popularity_hr@{K}"] = m[f"popularity_hr@{K}"]
            metrics[f"popularity_ndcg@{K}"] = m[f"popularity_ndcg@{K}"]
    if hidden.any():
        cold = cold_pairs(full, hidden)
        metrics["cold_pairs"] = len(cold)
        if cold:
            m = next_item_metrics(vocab, vectors, cold, k=K)
            metrics[f"eges_cold_hr@{K}"] = m[f"hr@{K}"]
            metrics[f"eges_cold_ndcg@{K}"] = m[f"ndcg@{K}"]
            metrics["item2vec_cold_answered"] = sum(1 for _, b, _ in cold
                                                    if b in i2v_vocab.index)
        prec, pop_prec, n_cold = cold_neighbour_precision(
            vectors, full, hidden, np.bincount(np.concatenate(train_seqs), minlength=n))
        metrics.update({f"eges_cold_neighbour_precision@{K}": prec,
                        f"popularity_cold_neighbour_precision@{K}": pop_prec,
                        "cold_items_with_neighbours": n_cold})
    rows = np.asarray(vocab.words, np.int64)
    curves = vx.hit_rate_curves({name: (v, vec, held) for name, v, vec in results},
                                popularity_of="item2vec")
    return dict(metrics=metrics, vectors=vectors, names=[keys[i] for i in rows],
                external_ids=external[rows], model=eges, model_config=model_config,
                vocab=vocab, query_tower=tower, curves=curves)


def comparison(metrics):
    """The side-by-side table: EGES, item2vec, DeepWalk (when compared) and popularity on
    the same held-out items; the cold-start columns when items were hidden."""
    models = [m for m in ("eges", "item2vec", "deepwalk") if f"{m}_hr@{K}" in metrics]
    keys = [f"hr@{K}", f"ndcg@{K}"]
    if f"eges_cold_hr@{K}" in metrics:
        keys.append(f"cold_hr@{K}")
    if f"eges_cold_neighbour_precision@{K}" in metrics:
        keys.append(f"cold_neighbour_precision@{K}")
    return vx.comparison_rows(metrics, models + ["popularity"], keys)


def build_parser():
    m = ModelConfig()
    p = argparse.ArgumentParser(
        prog="twotower eges",
        description="EGES (Alibaba KDD 2018): weighted walks on the session item graph, "
                    "skip-gram with side-information attention beside item2vec, on your "
                    "own sessions or interaction log (--sessions, --interactions) with side "
                    "information from --items, or on MovieLens (genres, year); next-item "
                    "HR@10 beside popularity and cold-start quality for items hidden from "
                    "the graph; a ScaNN index of all item vectors.")
    g = p.add_argument_group("data")
    add_session_arguments(g, session_gap=SESSION_GAP)
    g.add_argument("--items", default=None, metavar="FILE",
                   help="--sessions / --interactions: side information, a CSV with a header "
                        "keyed by the item id (the log's item column, or item_id); every "
                        "other column is a field: categorical, '|'-separated multi-valued, "
                        "text (its words), numeric (10 quantile buckets). Items only in the "
                        "table get vectors from side information alone. Default: ids only")
    g.add_argument("--side-info", default=None, metavar="COLS",
                   help="comma-separated --items columns to use (default: all; a column "
                        "whose every value is distinct is left out)")
    g.add_argument("--max-gap-hours", type=float, default=1.0,
                   help="MovieLens: a new session after this many hours between ratings "
                        "(default %(default)s)")
    g.add_argument("--cold-fraction", type=float, default=None,
                   help="share of the items hidden from the graph, for the cold-start "
                        f"evaluation (default {COLD_FRACTION} with side information, 0 with "
                        "ids only; 0 trains on every item)")
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
    add_vector_arguments(g, dim=32, window=5, sample=1e-3)
    g.add_argument("--compare-deepwalk", action="store_true",
                   help="also train plain skip-gram on uniform walks (DeepWalk) and report it")
    add_training_arguments(p, epochs=5, batch_size=512, batch_help="pairs per sparse SGD step")
    vx.add_output_arguments(p)
    return p


def main(argv=None):
    args, out = vx.parse_and_begin(build_parser(), argv, check_arguments)
    result = run(args)
    metrics, vectors = result["metrics"], result["vectors"]
    retriever, tuned = vx.index_from_args(vectors, result["external_ids"], args, metrics)
    with atomic_directory(out, overwrite=args.overwrite) as tmp:
        write_word2vec_text(os.path.join(tmp, "vectors.txt"), result["names"], vectors)
        vx.save_model_folder(os.path.join(tmp, "model"), result["model"],
                             result["model_config"], result["vocab"],
                             query_tower=result["query_tower"], item_ids=result["external_ids"])
        vx.save_vector_index(os.path.join(tmp, "index"), retriever, tuned, {"recipe": "eges"})
        vx.plot_hit_rates(os.path.join(tmp, "hit_rate.png"), result["curves"],
                          title="EGES vs item2vec: next item of each session (held out)")
        write_metrics(tmp, metrics)
    table = comparison(metrics)
    print(format_table(table))
    shown = {f"{row['model']}_{k}" for row in table for k in row if k != "model"}
    return vx.finish(out, metrics, shown)


if __name__ == "__main__":
    sys.exit(run_as_main("eges", main))
