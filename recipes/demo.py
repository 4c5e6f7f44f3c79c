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

    twotower demo --out out/demo
"""

import argparse
import os
import sys
import time

import numpy as np

import twotower  # noqa: F401  (Keras 2 before TensorFlow)
from twotower.artifacts import atomic_directory
from twotower.index import persistence, saved_model
from twotower.index.builder import build_index, embed
from twotower.index.retriever import Retriever
from twotower.index.tuner import tune
from twotower.recipes import movielens_two_tower as common
from twotower.recipes import youtube
from twotower.reporting import format_table, plot_curves, write_metrics

FILMS = (("Star Wars", 1977), ("Toy Story", 1995), ("Fargo", 1996))
KS = (1, 5, 10, 20, 50, 100)


def build_parser():
    p = argparse.ArgumentParser(prog="twotower demo", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="out/demo",
                   help="output folder: index/, saved_model/, metrics.json, recall_at_k.png "
                   "(written through a temporary folder, then renamed)")
    p.add_argument("--epochs", type=int, default=3, help="training epochs (default 3)")
    p.add_argument("--data", dest="source", default="auto",
                   help="MovieLens source: 'auto' (offline recbole wheel, cached), 'recbole', "
                   "'url', a folder or a zip (see `twotower youtube --help`)")
    p.add_argument("--users", type=int, nargs="*", default=[1, 2, 3],
                   help="MovieLens user ids whose top-10 to print (default 1 2 3)")
    p.add_argument("--target-recall", type=float, default=0.95,
                   help="recall@10 against brute force the index is tuned to (default 0.95)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    return p


def _title(data, row):
    year = int(data.items["year"][row])
    return f"{data.items['title'][row]} ({year})" if year > 0 else str(data.items["title"][row])


def _find_film(data, title, year):
    hits = np.flatnonzero((data.items["title"] == title) & (data.items["year"] == year))
    return int(hits[0]) if hits.size else None


def _recall_curve(found_rows, targets):
    """recall@K of ranked lists [Q, Kmax] against one target per query."""
    hit_rank = np.full(len(targets), np.inf)
    for q, (row, t) in enumerate(zip(found_rows, targets)):
        where = np.flatnonzero(row == t)
        if where.size:
            hit_rank[q] = where[0] + 1
    return [float(np.mean(hit_rank <= k)) for k in KS]


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.epochs < 1:
        raise SystemExit(f"--epochs must be >= 1, got {args.epochs}")
    if not 0 < args.target_recall <= 1:
        raise SystemExit(f"--target-recall must be in (0, 1], got {args.target_recall}")
    t_start = time.perf_counter()

    # 1. train ------------------------------------------------------------------------
    print(f"[1/5] training the youtube recipe on MovieLens 100K ({args.epochs} epochs) ...",
          flush=True)
    config = youtube.Config(epochs=args.epochs, seed=args.seed, source=args.source)
    model, data, quality = youtube.train(config)
    pop = common.popularity(data)

    # 2. index ------------------------------------------------------------------------
    print("[2/5] embedding the catalog and building the ScaNN index ...", flush=True)
    item_vectors = embed(model.item_tower, common.item_inputs(data))
    movie_ids = data.items["movie_id"].astype(np.int64)
    index = build_index(item_vectors, movie_ids, distance="cosine")
    test_queries = common.query_inputs(data, data.test)
    query_vectors = embed(model.query_tower, test_queries, desc="embedding users")
    tuned = tune(index, query_vectors, target_recall=args.target_recall, k=10)

    # the user feature store: each user's latest query features (the test split holds one
    # row per user, its history ending before the held-out item) and everything seen
    # before it, as movie ids
    user_ids = test_queries["user_id"].astype(np.int64)
    seen_rows = data.exclusions(data.test)
    user_seen = {int(u): movie_ids[np.asarray(s, np.int64)] for u, s in zip(user_ids, seen_rows)}
    retriever = Retriever(index, model.query_tower, model.item_tower,
                          user_table=test_queries, user_seen=user_seen)

    # the index's own answers for the held-out item: recall@K through ScaNN, seen excluded
    found, _ = retriever.u2i_users(user_ids, max(KS))
    targets = movie_ids[data.test.item]
    index_curve = _recall_curve(found, targets)

    # 3. save -------------------------------------------------------------------------
    print(f"[3/5] saving to {args.out} ...", flush=True)
    example = {k: v[:2] for k, v in test_queries.items()}
    with atomic_directory(args.out) as tmp:
        persistence.save(os.path.join(tmp, "index"), retriever, query_example=example,
                         item_example=common.item_inputs(data, [0, 1]),
                         extra={"recipe": "youtube", "epochs": args.epochs})
        saved_model.export(os.path.join(tmp, "saved_model"), index, model.query_tower, k=10,
                           query_example=example)
        metrics = {f"model_{k}": v for k, v in quality.items() if k != "num_queries"}
        metrics.update({f"popularity_{k}": v for k, v in pop.items() if k != "num_queries"})
        metrics.update({f"index_recall@{k}": v for k, v in zip(KS, index_curve)})
        metrics.update({"index_vs_exact_recall@10": tuned.recall,
                        "index_qps": tuned.qps, "index_build_s": index.build_seconds,
                        "num_items": index.size, "num_users": len(user_ids)})
        plot_curves(os.path.join(tmp, "recall_at_k.png"), {
            "two-tower (exact)": ([k for k in KS if f"recall@{k}" in quality],
                                  [quality[f"recall@{k}"] for k in KS if f"recall@{k}" in quality]),
            "two-tower via ScaNN index": (list(KS), index_curve),
            "popularity": ([k for k in KS if f"recall@{k}" in pop],
                           [pop[f"recall@{k}"] for k in KS if f"recall@{k}" in pop]),
        }, xlabel="K", ylabel="recall@K (held-out next movie)",
            title="MovieLens 100K: youtube two-tower, full corpus", logx=True)

        # 4. reload and check ----------------------------------------------------------
        print("[4/5] reloading the folder and the SavedModel ...", flush=True)
        import tensorflow as tf

        reloaded = persistence.load(os.path.join(tmp, "index"))
        again, _ = reloaded.u2i_users(user_ids[:50], 10)
        same_folder = bool(np.array_equal(again, found[:50, :10]))
        exported = saved_model.load(os.path.join(tmp, "saved_model"))
        sm_ids = exported.serve({k: tf.constant(v[:50]) for k, v in test_queries.items()})
        want, _ = index.search(query_vectors[:50], 10)
        same_sm = bool(np.array_equal(sm_ids["item_ids"].numpy(), want))
        metrics.update({"reload_same_ids": int(same_folder),
                        "saved_model_same_ids": int(same_sm)})
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
          f"  recall@10 of the index's own u2i answers: {index_curve[KS.index(10)]:.4f}; "
          f"reloaded folder same ids: {same_folder}; SavedModel same ids: {same_sm}")

    row_of = {int(m): r for r, m in enumerate(movie_ids)}
    users = [u for u in args.users if int(u) in set(user_ids.tolist())]
    if users:
        top, scores = reloaded.u2i_users(users, 10)
        for u, ids, sc in zip(users, top, scores):
            seen = user_seen[int(u)]
            print(f"\nUser {u} (rated {len(seen)} movies before the held-out one); top 10:")
            for rank, (m, s) in enumerate(zip(ids, sc), 1):
                print(f"  {rank:2d}. {_title(data, row_of[int(m)])}  [{s:.3f}]")
    for title, year in FILMS:
        row = _find_film(data, title, year)
        if row is None:
            print(f"\n{title} ({year}) is not in this catalog")
            continue
        ids, sc = reloaded.i2i([movie_ids[row]], 10)
        print(f"\nMovies like {_title(data, row)}:")
        for rank, (m, s) in enumerate(zip(ids[0], sc[0]), 1):
            print(f"  {rank:2d}. {_title(data, row_of[int(m)])}  [{s:.3f}]")

    print(f"\nwrote {args.out}/index (serve it: twotower serve {args.out}/index), "
          f"{args.out}/saved_model, {args.out}/metrics.json, {args.out}/recall_at_k.png "
          f"in {time.perf_counter() - t_start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
