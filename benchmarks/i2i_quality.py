"""Item-to-item quality on MovieLens: the youtube item tower, item2vec and the mns item
tower, measured the same way on the same split.

Every model trains on the same interactions: the leave-last-out training split of the
two-tower recipes (each user's last rating is test, the second-last validation; neither
is trained on). item2vec trains on each user's training ratings in time order (the same
interactions as sentences), with the item2vec recipe's defaults; youtube and mns are
their recipes' ``train`` with the benchmark defaults. Item vectors: the item tower's
(L2-normalised) embedding of the whole catalogue; item2vec's input vectors W.

Measures (metrics/item_to_item.py):
  next-item HR@10 / NDCG@10 — for each user, the neighbours of their last known item
      (the validation item) by cosine, the items they saw excluded; hit if the held-out
      next item (the test item) is among the top 10. Popularity beside it.
  co-occurrence agreement@10 — overlap of each item's 10 cosine neighbours with its 10
      strongest co-occurring items in the training sequences (cosine-normalised counts,
      window 5), over items with >= 20 co-occurrences. Popularity beside it.

    python benchmarks/i2i_quality.py --data recbole --seeds 3 --out out/bench_i2i

Writes DIR/metrics.json (flat: <model>_hr@10, <model>_ndcg@10, <model>_agreement@10,
each with _std over seeds; popularity_*; best_i2i_model) and DIR/results.md.
"""

import argparse
import dataclasses
import os
import sys
import time

import numpy as np

import twotower  # noqa: F401  (Keras 2 before TensorFlow)
import tensorflow as tf

from twotower.artifacts import (atomic_directory, atomic_write_json, atomic_write_text,
                                check_output_dir)
from twotower.recipes import item2vec, mns, youtube
from twotower.recipes import two_tower_kit as common
from twotower.data import retrieval_task
from twotower.reporting import flatten_metrics, format_table
from twotower.metrics.item_to_item import cooccurrence_agreement, i2i_hit_rate
from twotower.recipes.word2vec_flags import training_config
from twotower.training.word2vec_trainer import (DataConfig, ModelConfig, train_word2vec,
                                                word_vectors)

MODELS = ("youtube", "item2vec", "mns")
K = 10


def training_sequences(data):
    """Each user's training items in time order (the two-tower recipes' training split)."""
    tr = data.train
    order = np.lexsort((tr.timestamp, tr.user))
    users, items = tr.user[order], tr.item[order]
    bounds = np.flatnonzero(np.diff(users)) + 1
    return [s.tolist() for s in np.split(items, bounds) if len(s)]


def held_out_pairs(data):
    """(queries, targets, exclusions): per test user, the validation item (their last
    known item), the test item (the next one), and every item they saw before it."""
    valid_item = dict(zip(data.valid.user.tolist(), data.valid.item.tolist()))
    keep = [i for i, u in enumerate(data.test.user.tolist()) if u in valid_item]
    queries = np.array([valid_item[int(data.test.user[i])] for i in keep], np.int64)
    targets = data.test.item[keep].astype(np.int64)
    exclusions = data.exclusions(data.test)
    return queries, targets, [exclusions[i] for i in keep]


def tower_vectors(train_fn, config):
    """Trains a two-tower recipe; returns its item tower's vectors of the whole catalogue."""
    from twotower.towers.two_tower_model import embed

    model, data, _ = train_fn(config)
    return embed(model.item_tower, retrieval_task.item_inputs(data))


def item2vec_vectors(sequences, num_items, source, seed):
    """item2vec (the recipe's defaults) on ``sequences``; [N, d] vectors, zero rows for
    items it has no vector for."""
    args = item2vec.build_parser().parse_args(["--source", source, "--out", "unused",
                                               "--seed", str(seed)])
    data_config = DataConfig(corpus=f"movielens:{source}", min_count=args.min_count)
    model_config = ModelConfig(args.arch, args.head, args.negative, args.dim, args.window,
                               args.sample)
    vocab, model, _ = train_word2vec(sequences, data_config, model_config,
                                     training_config(args), progress=False)
    w = word_vectors(model, args.arch)
    out = np.zeros((num_items, w.shape[1]), np.float32)
    out[np.asarray(vocab.words, np.int64)] = w
    return out


def build_parser():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="output folder (metrics.json, results.md)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an earlier twotower output at --out")
    p.add_argument("--data", default="auto", help="MovieLens source: a folder or zip, 'url', "
                   "'recbole' (offline wheel) or 'auto' (default %(default)s)")
    p.add_argument("--seeds", type=int, default=3, help="seeds per model (default %(default)s)")
    p.add_argument("--epochs", type=int, default=3,
                   help="epochs of the two-tower recipes (default %(default)s)")
    p.add_argument("--window", type=int, default=5,
                   help="co-occurrence window of the agreement measure (default %(default)s)")
    p.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS),
                   help="models to measure (default: all)")
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.seeds < 1 or args.epochs < 1 or args.window < 1:
        print(f"i2i_quality: error: --seeds, --epochs and --window must be >= 1, got "
              f"{args.seeds}, {args.epochs}, {args.window}", file=sys.stderr)
        return 2
    check_output_dir(args.out, overwrite=args.overwrite)
    base = youtube.Config(source=args.data, epochs=args.epochs)
    data = common.load_data(base)
    sequences = training_sequences(data)
    queries, targets, exclusions = held_out_pairs(data)
    started = time.time()
    runs = {m: [] for m in args.models}
    from tqdm.auto import tqdm

    bar = tqdm(total=len(args.models) * args.seeds, desc="i2i", unit="run")
    for seed in range(args.seeds):
        for name in args.models:
            if name == "youtube":
                v = tower_vectors(youtube.train, dataclasses.replace(base, seed=seed))
            elif name == "mns":
                v = tower_vectors(mns.train, mns.Config(source=args.data, epochs=args.epochs,
                                                        seed=seed))
            else:
                v = item2vec_vectors(sequences, data.num_items, args.data, seed + 1)
            m = i2i_hit_rate(v, queries, targets, exclusions, k=K,
                             item_counts=data.item_counts)
            m.update(cooccurrence_agreement(v, sequences, k=K, window=args.window))
            runs[name].append(m)
            bar.set_postfix_str(f"{name} seed {seed}: hr@{K} {m[f'hr@{K}']:.3f}")
            bar.update(1)
            tf.keras.backend.clear_session()
    bar.close()

    flat, rows = {}, []
    for name, results in runs.items():
        row = {"model": name}
        for key in (f"hr@{K}", f"ndcg@{K}", f"agreement@{K}"):
            vals = np.array([r[key] for r in results])
            flat[f"{name}_{key}"] = float(vals.mean())
            std = float(vals.std(ddof=1)) if len(vals) > 1 else None
            if std is not None:
                flat[f"{name}_{key}_std"] = std
            row[key] = f"{vals.mean():.4f}" + (f" ± {std:.4f}" if std is not None else "")
        rows.append(row)
    first = next(iter(runs.values()))[0]
    flat.update({f"popularity_hr@{K}": first[f"popularity_hr@{K}"],
                 f"popularity_ndcg@{K}": first[f"popularity_ndcg@{K}"],
                 f"popularity_agreement@{K}": first[f"popularity_agreement@{K}"],
                 "eval_queries": first["eval_queries"],
                 "agreement_items": first["agreement_items"],
                 "seeds": args.seeds, "epochs": args.epochs,
                 "wall_seconds": time.time() - started})
    rows.append({"model": "popularity", f"hr@{K}": f"{first[f'popularity_hr@{K}']:.4f}",
                 f"ndcg@{K}": f"{first[f'popularity_ndcg@{K}']:.4f}",
                 f"agreement@{K}": f"{first[f'popularity_agreement@{K}']:.4f}"})
    best = max(runs, key=lambda n: flat[f"{n}_hr@{K}"])
    for name in runs:
        if name != best:
            flat[f"best_hr@{K}_ratio_vs_{name}"] = (flat[f"{best}_hr@{K}"]
                                                   / max(flat[f"{name}_hr@{K}"], 1e-12))
    table = format_table(rows)
    header = (f"MovieLens i2i ({data.num_items} items, {len(queries)} users' next items, "
              f"{first['agreement_items']} items for agreement); {args.seeds} seeds, "
              f"mean ± std; best by HR@{K}: {best}")
    print(f"\n{header}\n{table}\n")
    with atomic_directory(args.out, overwrite=args.overwrite) as tmp:
        # metrics.json: flat numbers, plus the best model's name
        atomic_write_json(os.path.join(tmp, "metrics.json"),
                          {**flatten_metrics(flat), "best_i2i_model": best})
        atomic_write_text(os.path.join(tmp, "results.md"), f"{header}\n\n{table}\n")
    print(f"wrote {os.path.join(args.out, 'metrics.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
