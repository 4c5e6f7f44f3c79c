"""`make demo`: MovieLens 100K end to end, offline, in a few minutes on 2 cores.

1. trains the YouTube two-tower recipe (history + user features, in-batch softmax with
   streaming logQ; recipes/youtube.py) on MovieLens 100K (offline: the recbole wheel);
2. embeds the catalog with the item tower and builds a ScaNN index (size rules of
   index/config.py; cosine, since both towers L2-normalise), tunes it for recall@10 >=
   0.95 against brute force;
3. saves one folder (index + towers + user features + seen items + manifest) that
   `twotower serve OUT/index` serves, and a SavedModel of query tower + ScaNN;
4. reloads both (the folder through its checksums) and checks they answer as before;
5. prints the quality table (model vs popularity, full corpus, seen items excluded, and
   recall@K of the answers the index itself returns), the top-10 movies for 3 users and
   the i2i neighbours of 3 well-known films; writes OUT/metrics.json and
   OUT/recall_at_k.png.

``--out`` is checked before anything is loaded: a folder twotower did not write is
refused, an earlier demo output is replaced only with ``--overwrite`` (swapped in whole,
never half written). With ``--checkpoint-dir``, training resumes after a kill when the
same command is run again.

    twotower demo --out out/demo --overwrite
"""

import argparse
import os
import sys
import time

import numpy as np

import twotower  # noqa: F401  (Keras 2 before TensorFlow)

from twotower.artifacts import atomic_directory
from twotower.command import run_as_main
from twotower.data.retrieval_task import item_inputs, query_inputs
from twotower.index import persistence, saved_model
from twotower.index.builder import embed
from twotower.index.export import (export_retriever, index_metrics, index_recall_curve,
                                   write_serving)
from twotower.recipes import two_tower_kit as common
from twotower.recipes import youtube
from twotower.reporting import format_table, plot_curves, twotower_command, write_metrics


FILMS = (("Star Wars", 1977), ("Toy Story", 1995), ("Fargo", 1996))
KS = (1, 5, 10, 20, 50, 100)


def build_parser():
    p = argparse.ArgumentParser(prog="twotower demo", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="out/demo",
                   help="output folder: index/, saved_model/, metrics.json, recall_at_k.png "
                   "(written through a temporary folder and swapped in; a folder twotower "
                   "did not write is never replaced)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an earlier twotower output at --out")
    p.add_argument("--epochs", type=int, default=3, help="training epochs (default 3)")
    p.add_argument("--data", dest="source", default="auto",
                   help="MovieLens source: 'auto' (offline recbole wheel, cached), 'recbole', "
                   "'url', a folder or a zip (see `twotower youtube --help`)")
    p.add_argument("--users", type=int, nargs="*", default=[1, 2, 3],
                   help="MovieLens user ids whose top-10 to print (default 1 2 3)")
    p.add_argument("--target-recall", type=float, default=0.95,
                   help="recall@10 against brute force the index is tuned to (default 0.95)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--checkpoint-dir", default=None,
                   help="folder for training checkpoints; after a kill, the same command "
                   "resumes training from the last one (see `twotower youtube --help`)")
    p.add_argument("--checkpoint-every", type=int, default=50,
                   help="training steps between checkpoints (default %(default)s)")
    return p


def _title(data, row):
    year = int(data.items["year"][row])
    return f"{data.items['title'][row]} ({year})" if year > 0 else str(data.items["title"][row])


def i2i_agreement(export, data, k=10, window=5):
    """Co-occurrence agreement@k of the index's item vectors (metrics/item_to_item.py)
    on the users' training sequences, plus ``reference(row)``: the k films users rate
    nearest film ``row``, the list each printed neighbour list is checked against."""
    from twotower.metrics.item_to_item import cooccurrence_agreement, cooccurrence_scores

    tr = data.train
    order = np.lexsort((tr.timestamp, tr.user))
    users, items = tr.user[order], tr.item[order]
    sequences = [s for s in np.split(items, np.flatnonzero(np.diff(users)) + 1) if len(s)]
    vectors = embed(export.retriever.item_tower, item_inputs(data), progress=False)
    out = cooccurrence_agreement(vectors, sequences, k=k, window=window)
    co, _ = cooccurrence_scores(sequences, data.num_items, window)

    def reference(row):
        return np.argsort(-co[row], kind="stable")[:k]

    out["reference"] = reference
    return out


def _find_film(data, title, year):
    hits = np.flatnonzero((data.items["title"] == title) & (data.items["year"] == year))
    return int(hits[0]) if hits.size else None


def main(argv=None):
    args = build_parser().parse_args(argv)
    config = youtube.Config(epochs=args.epochs, seed=args.seed, source=args.source,
                            out=args.out, overwrite=args.overwrite,
                            checkpoint_dir=args.checkpoint_dir,
                            checkpoint_every=args.checkpoint_every,
                            target_recall=args.target_recall).validate()
    common.check_outputs(config)  # before any data is loaded
    t_start = time.perf_counter()

    # 1. train ------------------------------------------------------------------------
    print(f"[1/5] training the youtube recipe on MovieLens 100K ({args.epochs} epochs) ...",
          flush=True)
    model, data, quality = youtube.train(config)
    pop = common.popularity(data)

    # 2. index ------------------------------------------------------------------------
    print("[2/5] embedding the catalog, building and tuning the ScaNN index ...", flush=True)
    export = export_retriever(model, data, target_recall=args.target_recall)
    index, tuned, retriever = export.index, export.tuned, export.retriever
    movie_ids, user_ids = export.item_ids, export.user_ids
    user_seen = retriever.user_seen
    test_queries = query_inputs(data, data.test)
    # the index's own answers for the held-out item: recall@K through ScaNN, seen excluded
    ks, found, index_curve = index_recall_curve(export, data, KS)

    # 3. save -------------------------------------------------------------------------
    print(f"[3/5] saving to {args.out} ...", flush=True)
    with atomic_directory(args.out, overwrite=args.overwrite) as tmp:
        write_serving(tmp, export, model, extra={"recipe": "youtube",
                                                        "epochs": args.epochs})
        metrics = {f"model_{k}": v for k, v in quality.items() if k != "num_queries"}
        metrics.update({f"popularity_{k}": v for k, v in pop.items() if k != "num_queries"})
        metrics.update(index_metrics(export, data))
        exact_ks = [k for k in KS if f"recall@{k}" in quality]
        pop_ks = [k for k in KS if f"recall@{k}" in pop]
        # the exact curve drawn wide and solid, ScaNN's narrow and dashed on top: where
        # the index finds what brute force finds, both stay visible
        plot_curves(os.path.join(tmp, "recall_at_k.png"), {
            "two-tower, exact": (exact_ks, [quality[f"recall@{k}"] for k in exact_ks]),
            "two-tower via the ScaNN index": (list(ks), index_curve),
            "popularity": (pop_ks, [pop[f"recall@{k}"] for k in pop_ks]),
        }, xlabel="K", ylabel="recall@K (held-out next movie)",
            title="MovieLens 100K: youtube two-tower, full corpus", logx=True,
            styles={"two-tower, exact": {"linewidth": 5, "alpha": 0.45, "marker": "s",
                                          "markersize": 9},
                    "two-tower via the ScaNN index": {"linestyle": "--", "linewidth": 1.5,
                                                       "marker": "x"}})

        # 4. reload and check ----------------------------------------------------------
        print("[4/5] reloading the folder and the SavedModel ...", flush=True)
        import tensorflow as tf

        reloaded = persistence.load(os.path.join(tmp, "index"))
        again, _ = reloaded.u2i_users(user_ids[:50], 10)
        before, _ = retriever.u2i_users(user_ids[:50], 10)
        same_folder = bool(np.array_equal(again, before))
        # served answers leave out every item of the user's own log, the last one too
        served, _ = reloaded.u2i_users(user_ids, 10)
        own = sum(len(set(row.tolist()) & set(user_seen[int(u)].tolist()))
                  for u, row in zip(user_ids, served))
        exported = saved_model.load(os.path.join(tmp, "saved_model"))
        sm_ids = exported.serve({k: tf.constant(v[:50]) for k, v in test_queries.items()})
        query_vectors = embed(model.query_tower, {k: v[:50] for k, v in
                                                         test_queries.items()})
        want, _ = index.search(query_vectors, 10)
        same_sm = bool(np.array_equal(sm_ids["item_ids"].numpy(), want))
        agreement = i2i_agreement(export, data)
        metrics.update({"reload_same_ids": int(same_folder),
                        "saved_model_same_ids": int(same_sm),
                        "served_own_items_returned": int(own),
                        "i2i_agreement@10": agreement["agreement@10"],
                        "popularity_i2i_agreement@10": agreement["popularity_agreement@10"]})
        write_metrics(tmp, metrics)

    # 5. report -----------------------------------------------------------------------
    print("[5/5] results\n")
    rows = []
    for k in ("recall@10", "recall@20", "recall@50", "recall@100", "ndcg@10", "mrr",
              "coverage@50", "head_recall@50", "tail_recall@50"):
        if k in quality:
            rows.append({"metric": k, "youtube two-tower": quality[k],
                         "popularity": pop.get(k, float("nan"))})
    print("Quality on the held-out last movie of each user (full catalog, seen excluded):")
    print(format_table(rows))
    print(f"\nScaNN index: {index.size} items, config {index.config.to_dict()}\n"
          f"  recall@10 vs brute force {tuned.recall:.4f} at {tuned.qps:,.0f} queries/s "
          f"(target {args.target_recall}); build {index.build_seconds:.2f} s\n"
          f"  recall@10 of the index's own u2i answers: "
          f"{dict(zip(ks, index_curve)).get(10, float('nan')):.4f}; "
          f"reloaded folder same ids: {same_folder}; SavedModel same ids: {same_sm}\n"
          f"  items of a user's own log in their served top 10 (all {len(user_ids)} users): "
          f"{own}")

    row_of = {int(m): r for r, m in enumerate(movie_ids)}
    users = [u for u in args.users if int(u) in set(user_ids.tolist())]
    if users:
        top, scores = reloaded.u2i_users(users, 10)
        for u, ids, sc in zip(users, top, scores):
            seen = user_seen[int(u)]
            print(f"\nUser {u} (rated {len(seen)} movies, all left out); top 10:")
            for rank, (m, s) in enumerate(zip(ids, sc), 1):
                print(f"  {rank:2d}. {_title(data, row_of[int(m)])}  [{s:.3f}]")
    print(f"\nItem to item (/i2i): cosine neighbours of the item tower. Agreement@10 with "
          f"the films users rate nearest each one (co-occurrence within 5 ratings, "
          f"cosine-normalised, over {agreement['agreement_items']} films): "
          f"{agreement['agreement@10']:.3f}, popularity's {agreement['popularity_agreement@10']:.3f}."
          " MovieLens users rate in bulk, mostly the same well-known films, so those films' "
          "neighbours are each other.")
    for title, year in FILMS:
        row = _find_film(data, title, year)
        if row is None:
            print(f"\n{title} ({year}) is not in this catalog")
            continue
        ids, sc = reloaded.i2i([movie_ids[row]], 10)
        rows_found = [row_of[int(m)] for m in ids[0]]
        near = set(agreement["reference"](row).tolist())
        print(f"\nMovies like {_title(data, row)} ({len(near & set(rows_found))} of 10 among "
              "the 10 films users rate nearest it, marked *):")
        for rank, (r, s_) in enumerate(zip(rows_found, sc[0]), 1):
            mark = "*" if r in near else " "
            print(f"  {rank:2d}.{mark}{_title(data, r)}  [{s_:.3f}]")

    print(f"\nwrote {args.out}/index (serve it: {twotower_command()} serve {args.out}/index), "
          f"{args.out}/saved_model, {args.out}/metrics.json, {args.out}/recall_at_k.png "
          f"in {time.perf_counter() - t_start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(run_as_main("demo", main))
