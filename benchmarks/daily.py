"""A week of days: retrain from scratch, warm start, or keep day 1's model (issue 23 §4).

The log (planted, string ids, written as one CSV per day plus an items table that grows):
items fall into ``--categories`` categories (the items table's one feature column); each
day brings ``--new-items`` new items and ``--new-users`` new users. A user has a home
category; an interaction is, with probability ρ (``--global-share``), a draw from the
day's popularity over every item so far, else a draw from the home category weighted by
the same popularity. Popularity drifts: every day each item's weight is multiplied by a
log-normal factor (σ = ``--drift``), and a new item starts ``--fresh-boost`` times the
median weight, so new items matter on the day they arrive. Each day a share
(``--active``) of the known users and every new user interact ``--per-user`` times.

Three strategies give a model after each day d = 1 … 6 (the youtube recipe, its flags
below; the same for all):

  scratch  trained on days 1..d (``--scratch-epochs``)
  warm     ``--warm-start`` from warm's day d−1 model on day d's log alone
           (``--warm-epochs``); day 1's warm model is scratch's
  frozen   day 1's model, never trained again

Each model is evaluated on day d+1's interactions: every interaction of day d+1 is
predicted from the user's state just before it (user id, history of everything before
it, items already seen excluded: metrics/retrieval_report.py, repeats left out; a seeded
sample of ``--eval-rows`` of them, the same for every strategy), over
the catalogue of day d+1 — its new items included, embedded from their features by the
item tower. A model meets ids it never trained (day d+1's items and users; for frozen,
everything after day 1) as the recipe's own export would: it is carried onto day d+1's
vocabulary by training/warm_start.py with no training step (known ids keep their rows,
unknown ids take the OOV bucket's, unknown history items a zero row), which embeds every
known id exactly as the model does.

Keys (metrics.json): ``{strategy}_recall@10_day{d}`` (d = the day trained through,
evaluated on day d+1), ``{strategy}_fresh_recall@10_day{d}`` (the day d+1 interactions
with an item new on day d+1), ``{strategy}_seconds_day{d}`` (wall seconds of the
training run: the recipe's main, data read to state written, its own evaluation and no
export), ``{strategy}_train_seconds_day{d}`` (fit's own timer: training steps from the
end of the first one), ``warm_over_scratch_recall_day{d}``,
``warm_over_scratch_seconds_day{d}``, ``warm_over_scratch_train_seconds_day{d}``,
``goal_reached`` (warm ≥ 0.98× scratch recall and ≤ 0.3× its wall seconds on every day
d ≥ 2; ``goal_recall_reached`` and ``goal_seconds_reached`` apart). Also results.md and
daily.png (recall and fresh-item recall by day; seconds by day).

    flock /tmp/twotower-bench.lock python benchmarks/daily.py --out out/bench_daily
"""

import argparse
import contextlib
import io
import json
import os
import sys
import time

import numpy as np

import twotower  # noqa: F401  (Keras 2 before TensorFlow)

from twotower.artifacts import atomic_directory, atomic_write_text, check_output_dir
from twotower.data.log_task import load_log_task
from twotower.data.retrieval_task import RetrievalConfig, item_inputs, query_inputs
from twotower.metrics.retrieval_report import retrieval_report
from twotower.reporting import format_table, write_metrics
from twotower.towers.retrieval_towers import build_towers
from twotower.towers.two_tower_model import embed
from twotower.training.warm_start import load_previous, merge_towers

STRATEGIES = ("scratch", "warm", "frozen")
DAY = 86_400
GOAL_RECALL, GOAL_SECONDS = 0.98, 0.3


# -- the log ----------------------------------------------------------------------------

def write_days(folder, args):
    """Writes day{d}.csv (d = 1 … days), items{d}.csv (every item up to day d with its
    category) and returns {d: set of items new on day d}."""
    rng = np.random.default_rng(args.seed)
    cats = args.categories
    n_items, n_users = args.items, args.users
    category = list(rng.integers(cats, size=n_items))
    weight = list(rng.pareto(1.2, size=n_items) + 1.0)
    home = list(rng.integers(cats, size=n_users))
    clock = {}
    new_items = {1: set(range(n_items))}
    for d in range(1, args.days + 1):
        if d > 1:
            fresh = range(len(category), len(category) + args.new_items)
            med = float(np.median(weight))
            for _ in fresh:
                category.append(int(rng.integers(cats)))
                weight.append(med * args.fresh_boost)
            new_items[d] = set(fresh)
            new_users = range(len(home), len(home) + args.new_users)
            home += list(rng.integers(cats, size=args.new_users))
            old_users = np.flatnonzero(rng.random(len(home) - args.new_users) < args.active)
            active = np.concatenate([old_users, np.asarray(new_users, np.int64)])
        else:
            active = np.arange(n_users)
        w = np.asarray(weight) * np.exp(rng.normal(0.0, args.drift, len(weight)))
        weight = list(w)
        cat = np.asarray(category)
        glob = w / w.sum()
        by_cat = {c: (np.flatnonzero(cat == c), w[cat == c] / w[cat == c].sum())
                  for c in range(cats)}
        users = np.repeat(rng.permutation(active), args.per_user)
        picks = np.empty(len(users), np.int64)
        is_global = rng.random(len(users)) < args.global_share
        picks[is_global] = rng.choice(len(glob), size=int(is_global.sum()), p=glob)
        homes = np.asarray(home)[users]
        for c, (members, p) in by_cat.items():
            at = np.flatnonzero(~is_global & (homes == c))
            picks[at] = members[rng.choice(len(members), size=len(at), p=p)]
        # each user's interactions in order within the day (their clock), users interleaved
        step = np.zeros(len(users), np.int64)
        for k in range(1, args.per_user):
            step[k::args.per_user] = k
        start = np.asarray([clock.get(int(u), 0) for u in users[::args.per_user]])
        for u in users[::args.per_user].tolist():
            clock[u] = clock.get(u, 0) + args.per_user
        t = d * DAY + np.minimum(np.repeat(start, args.per_user) + step, DAY - 8) \
            + users % 7
        rows = sorted(zip(users.tolist(), picks.tolist(), t.tolist()), key=lambda r: r[2])
        with open(os.path.join(folder, f"day{d}.csv"), "w") as f:
            f.write("user_id,item_id,timestamp\n")
            f.writelines(f"u{u},i{i},{t}\n" for u, i, t in rows)
        with open(os.path.join(folder, f"items{d}.csv"), "w") as f:
            f.write("item_id,category\n")
            f.writelines(f"i{i},c{c}\n" for i, c in enumerate(category))
    return new_items


def concat_days(folder, first, last, name):
    path = os.path.join(folder, name)
    with open(path, "w") as out:
        out.write("user_id,item_id,timestamp\n")
        for d in range(first, last + 1):
            with open(os.path.join(folder, f"day{d}.csv")) as f:
                next(f)
                out.writelines(f)
    return path


# -- training and evaluation ------------------------------------------------------------

def recipe_flags(args):
    return ["--dim", str(args.dim), "--batch-size", str(args.batch_size), "--lr",
            str(args.lr), "--seed", str(args.seed), "--history-length", str(args.history),
            "--no-export"]


def train(args, log, items, out, epochs, warm_from=None):
    """One youtube run (in this process); returns (wall seconds, its metrics.json)."""
    from twotower.recipes import youtube

    argv = ["--interactions", log, "--items", items, "--epochs", str(epochs), "--out", out,
            "--overwrite", *recipe_flags(args)]
    if warm_from:
        argv += ["--warm-start", warm_from]
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        code = youtube.main(argv)
    seconds = time.perf_counter() - start
    if code:
        raise RuntimeError(f"youtube {' '.join(argv)} exited {code}")
    with open(os.path.join(out, "metrics.json")) as f:
        return seconds, json.load(f)


def evaluation_data(folder, d, args):
    """Days 1..d+1 with day d+1 as the test split (a temporal cut between the days)."""
    log = concat_days(folder, 1, d + 1, f"eval{d}.csv")
    with open(os.path.join(folder, f"day{d + 1}.csv")) as f:
        n_test = sum(1 for _ in f) - 1
    with open(log) as f:
        n_all = sum(1 for _ in f) - 1
    config = RetrievalConfig(split="temporal", test_fraction=n_test / n_all,
                             valid_fraction=0.0, history_length=args.history,
                             min_user_interactions=1)
    with contextlib.redirect_stdout(io.StringIO()):
        return load_log_task(log, config, items=os.path.join(folder, f"items{d + 1}.csv"),
                             verbose=False)


def evaluate(model_out, data, fresh_items, args):
    """recall@10 of a saved run's model on ``data``'s test split, overall and on fresh
    items (module docstring)."""
    from twotower.recipes.youtube import Config

    config = Config(dim=args.dim, history_length=args.history)
    prev = load_previous(model_out, config)
    q, i = build_towers(data, config, l2_normalize=True)
    q, i, _ = merge_towers(prev, data, q, i, fresh=False)
    rows = np.arange(len(data.test))
    if args.eval_rows and len(rows) > args.eval_rows:  # the same sample for every model
        rows = np.sort(np.random.default_rng(args.seed).choice(rows, args.eval_rows,
                                                                replace=False))
    u = embed(q, {k: np.asarray(x)[rows] for k, x in query_inputs(data, data.test).items()})
    v = embed(i, item_inputs(data))
    targets = np.asarray(data.test.item)[rows]
    every = data.exclusions(data.test)
    exclusions = [every[r] for r in rows]
    head = data.head_items()
    out = {"recall@10": retrieval_report(u, v, targets, exclusions, head)["recall@10"]}
    fresh_rows = np.isin(np.asarray(data.item_vocab)[targets],
                         [f"i{n}" for n in sorted(fresh_items)])
    out["fresh_recall@10"] = (retrieval_report(
        u[fresh_rows], v, targets[fresh_rows], [exclusions[r] for r in
                                                np.flatnonzero(fresh_rows)],
        head)["recall@10"] if fresh_rows.any() else float("nan"))
    out["test_rows"] = int(len(targets))
    out["fresh_rows"] = int(fresh_rows.sum())
    return out


def run(args):
    check_output_dir(args.out, overwrite=args.overwrite)
    work = args.work or os.path.join("/tmp/twotower-data", "daily")
    os.makedirs(work, exist_ok=True)
    fresh = write_days(work, args)
    metrics = {"days": args.days}
    rows = []
    models = {}
    for d in range(1, args.days):
        items = os.path.join(work, f"items{d}.csv")
        seconds = {}
        out = os.path.join(work, f"scratch{d}")
        seconds["scratch"], m = train(args, concat_days(work, 1, d, f"upto{d}.csv"), items,
                                      out, args.scratch_epochs)
        metrics[f"scratch_train_seconds_day{d}"] = m["train_seconds"]
        models["scratch"] = out
        if d == 1:
            models["warm"] = models["frozen"] = out
            seconds["warm"] = seconds["scratch"]
            metrics[f"warm_train_seconds_day{d}"] = m["train_seconds"]
        else:
            out = os.path.join(work, f"warm{d}")
            seconds["warm"], m = train(args, os.path.join(work, f"day{d}.csv"), items, out,
                                       args.warm_epochs, warm_from=models["warm"])
            metrics[f"warm_train_seconds_day{d}"] = m["train_seconds"]
            models["warm"] = out
        seconds["frozen"] = 0.0
        metrics[f"frozen_train_seconds_day{d}"] = 0.0
        data = evaluation_data(work, d, args)
        row = {"day": d}
        for s in STRATEGIES:
            r = evaluate(models[s], data, fresh[d + 1], args)
            metrics[f"{s}_recall@10_day{d}"] = r["recall@10"]
            metrics[f"{s}_fresh_recall@10_day{d}"] = r["fresh_recall@10"]
            metrics[f"{s}_seconds_day{d}"] = seconds[s]
            row[f"{s} R@10"] = r["recall@10"]
            row[f"{s} fresh R@10"] = r["fresh_recall@10"]
            row[f"{s} s"] = seconds[s]
        metrics[f"test_rows_day{d}"] = r["test_rows"]
        metrics[f"fresh_rows_day{d}"] = r["fresh_rows"]
        metrics[f"warm_over_scratch_recall_day{d}"] = (metrics[f"warm_recall@10_day{d}"]
                                                       / metrics[f"scratch_recall@10_day{d}"])
        metrics[f"warm_over_scratch_seconds_day{d}"] = seconds["warm"] / seconds["scratch"]
        metrics[f"warm_over_scratch_train_seconds_day{d}"] = (
            metrics[f"warm_train_seconds_day{d}"] / metrics[f"scratch_train_seconds_day{d}"])
        rows.append(row)
        print(format_table([row]), flush=True)
    later = range(2, args.days)
    metrics["goal_recall_reached"] = int(all(
        metrics[f"warm_over_scratch_recall_day{d}"] >= GOAL_RECALL for d in later))
    metrics["goal_seconds_reached"] = int(all(
        metrics[f"warm_over_scratch_seconds_day{d}"] <= GOAL_SECONDS for d in later))
    metrics["goal_reached"] = int(metrics["goal_recall_reached"]
                                  and metrics["goal_seconds_reached"])
    table = format_table(rows)
    command = "python benchmarks/daily.py " + " ".join(sys.argv[1:])
    text = (f"# A week of days\n\n`{command}`\n\n{table}\n\n"
            f"warm / scratch recall@10 by day: " + ", ".join(
                f"{metrics[f'warm_over_scratch_recall_day{d}']:.3f}" for d in later)
            + f" (goal >= {GOAL_RECALL}); warm / scratch seconds: " + ", ".join(
                f"{metrics[f'warm_over_scratch_seconds_day{d}']:.3f}" for d in later)
            + f" (goal <= {GOAL_SECONDS}); goal reached: {bool(metrics['goal_reached'])}\n")
    print("\n" + text)
    with atomic_directory(args.out, overwrite=args.overwrite) as tmp:
        write_metrics(tmp, metrics)
        atomic_write_text(os.path.join(tmp, "results.md"), text)
        plot(os.path.join(tmp, "daily.png"), metrics, args.days)
    print(f"wrote {args.out}: metrics.json, results.md, daily.png")
    return metrics


def plot(path, metrics, days):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = list(range(1, days))
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4.2), dpi=110)
    for s, style, color in zip(STRATEGIES, ("-", "--", ":"), ("C0", "C1", "C2")):
        a.plot(xs, [metrics[f"{s}_recall@10_day{d}"] for d in xs], style, marker="o",
               color=color, label=f"{s}")
        a.plot(xs, [metrics[f"{s}_fresh_recall@10_day{d}"] for d in xs], style,
               marker="x", color=color, alpha=0.45, label=f"{s}, fresh items")
    a.set_xlabel("trained through day d (evaluated on day d+1)")
    a.set_ylabel("recall@10")
    a.grid(True, alpha=0.3)
    a.legend(fontsize=8)
    for s, color in (("scratch", "C0"), ("warm", "C1")):
        b.plot(xs, [metrics[f"{s}_seconds_day{d}"] for d in xs], marker="o", color=color,
               label=f"{s}, training run")
        b.plot(xs, [metrics[f"{s}_train_seconds_day{d}"] for d in xs], "--", marker="x",
               color=color, label=f"{s}, fit's steps")
    b.set_xlabel("day d")
    b.set_ylabel("seconds")
    b.grid(True, alpha=0.3)
    b.legend()
    fig.suptitle("a week of days: scratch vs warm start vs frozen day-1 model")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def build_parser():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="output folder (metrics.json, results.md, "
                   "daily.png); an earlier twotower output is replaced only with --overwrite")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier --out")
    p.add_argument("--work", default=None, help="folder for the generated days and the "
                   "models (default /tmp/twotower-data/daily)")
    g = p.add_argument_group("the log")
    g.add_argument("--days", type=int, default=7, help="days of log (default %(default)s)")
    g.add_argument("--items", type=int, default=4000, help="items on day 1 (default %(default)s)")
    g.add_argument("--users", type=int, default=10000, help="users on day 1 (default %(default)s)")
    g.add_argument("--new-items", type=int, default=400,
                   help="new items each later day (default %(default)s)")
    g.add_argument("--new-users", type=int, default=1500,
                   help="new users each later day (default %(default)s)")
    g.add_argument("--active", type=float, default=0.6,
                   help="share of known users active each later day (default %(default)s)")
    g.add_argument("--per-user", type=int, default=8,
                   help="interactions of an active user a day (default %(default)s)")
    g.add_argument("--categories", type=int, default=40,
                   help="item categories (default %(default)s)")
    g.add_argument("--global-share", type=float, default=0.3,
                   help="ρ, share of draws from global popularity (default %(default)s)")
    g.add_argument("--drift", type=float, default=0.3,
                   help="σ of the daily log-normal popularity drift (default %(default)s)")
    g.add_argument("--fresh-boost", type=float, default=5.0,
                   help="a new item's weight over the median (default %(default)s)")
    g = p.add_argument_group("the model (youtube recipe)")
    g.add_argument("--dim", type=int, default=32, help="(default %(default)s)")
    g.add_argument("--batch-size", type=int, default=256, help="(default %(default)s)")
    g.add_argument("--lr", type=float, default=0.005, help="(default %(default)s)")
    g.add_argument("--history", type=int, default=10,
                   help="history length (default %(default)s)")
    g.add_argument("--scratch-epochs", type=int, default=3,
                   help="epochs of a scratch run over days 1..d (default %(default)s)")
    g.add_argument("--warm-epochs", type=int, default=1,
                   help="epochs of a warm run over day d (default %(default)s)")
    g.add_argument("--seed", type=int, default=0, help="(default %(default)s)")
    g.add_argument("--eval-rows", type=int, default=20_000,
                   help="day d+1 interactions evaluated, a seeded sample (the same for "
                   "every strategy); 0: all (default %(default)s)")
    return p


def main(argv=None):
    run(build_parser().parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
