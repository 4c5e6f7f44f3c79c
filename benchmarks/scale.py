"""Scale on one machine: step cost vs catalogue size, the index at 10⁷, an end-to-end run.

    python benchmarks/scale.py --out out/bench_scale            # 10⁴ … 10⁷ items
    python benchmarks/scale.py --out out/bench_scale --scale 0.1  # a 10⁶ rehearsal
    python benchmarks/scale.py --out out/bench_scale --scale 3    # bigger than the default

Phases, each in its own process so that its peak memory is its own (ru_maxrss):

1. **step** — for each head (sampled softmax, NEG, mixed negatives, in-batch softmax) and
   each catalogue size, a TwoTowerModel of two IDTowers (100k users, N items, d = 64)
   trained with LazyAdam on Zipf-distributed ids: median milliseconds per step (batch
   1024) over timed windows after warm-up, peak RSS, optimizer-state bytes. The step's
   cost should not grow with N beyond the table itself: samplers are alias tables
   (O(1) a draw), Q is gathered per candidate, and LazyAdam touches only the rows used.
2. **index** — ``benchmarks/index_vs_peers.py`` at the largest size (clustered synthetic
   vectors, d = 64, cosine): ScaNN build seconds, held-out recall@10 against exact search,
   single-query QPS, and hnswlib beside it where ``--hnswlib-max`` allows; and at 100k
   (**tuner**): the held-out recall of an index tuned to 0.95 on other queries.
3. **e2e** — a planted-model log (``twotower.data.planted_log``) of 2·(largest size)
   interactions, 50 a user, written to Parquet shards and streamed through
   ``interactions_dataset`` into ``model.fit`` (ID towers, in-batch softmax with logQ from
   the training counts, batch 1024, LazyAdam 0.02, one epoch), then evaluated through a
   tuned ScaNN index of the item tower (no dense users × items matrix): examples/s, peak
   RSS, and the held-out recall@10 of the last interaction of 20,000 sampled users
   against popularity's
   and against the planted model's own (the oracle). ``TWOTOWER_SCALE_E2E_HEAD`` picks
   another head (sampled_softmax, neg, mixed); at --scale 0.05 one epoch of sampled
   softmax (512 negatives) stayed below popularity (0.064 vs 0.073), in-batch reached
   0.165 (oracle 0.205).

Writes metrics.json (``step_ms_{head}_{size}``, ``peak_rss_gb_train_{size}``,
``scann_build_s_{size}``, ``scann_recall@10_{size}``, ``scann_qps_{size}``,
``peak_rss_gb_index_{size}``, ``train_examples_per_sec_{size}``, ``planted_recall@10``,
``popularity_recall@10``; sizes written 1e4 … 1e7), results.md and step_ms.png.
"""

import argparse
import gc
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

HEADS = ("sampled_softmax", "neg", "mixed", "in_batch")
E2E_HEAD = os.environ.get("TWOTOWER_SCALE_E2E_HEAD", "in_batch")
EVAL_USERS = 20_000   # held-out users evaluated in the end-to-end run
HERE = os.path.dirname(os.path.abspath(__file__))


class PhaseFailed(RuntimeError):
    """A phase's process ended without an answer (the run goes on and records it)."""


def size_key(n):
    """10000 -> '1e4', 3_000_000 -> '3e6' (the metrics.json spelling)."""
    exponent = len(str(int(n))) - 1
    mantissa = n / 10 ** exponent
    return f"{mantissa:g}e{exponent}"


def peak_rss_gb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20   # KiB -> GiB


def _phase(metrics, name, args):
    """_child, but a failed phase is printed and recorded (``{name}_failed``) so that the
    other phases' numbers are still written."""
    try:
        return _child(args)
    except PhaseFailed as e:
        print(f"{name} FAILED: {str(e)[:2000]}", flush=True)
        metrics[f"{name}_failed"] = 1
        return None


def _child(args):
    """Runs one phase in a fresh process; returns its JSON answer (raises PhaseFailed)."""
    cmd = [sys.executable, os.path.abspath(__file__), "--phase", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    lines = [l for l in proc.stdout.splitlines() if l.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise PhaseFailed(f"phase {' '.join(args)} failed (exit {proc.returncode}"
                          f"{', killed: out of memory?' if proc.returncode == -9 else ''}):\n"
                          f"{proc.stderr[-3000:]}")
    return json.loads(lines[-1])


# ----------------------------------------------------------------------------- step

def make_loss(head, counts, num_items):
    from twotower.data.samplers import UnigramSampler
    from twotower.losses import InBatch, MixedNegatives, RetrievalLoss, SampledNegatives

    if head == "sampled_softmax":
        return RetrievalLoss("softmax", SampledNegatives(UnigramSampler(counts), 256))
    if head == "neg":
        return RetrievalLoss("neg", SampledNegatives(UnigramSampler(counts, 0.75), 5,
                                                     shared=False))
    if head == "mixed":
        return RetrievalLoss("softmax", MixedNegatives(256, num_items, frequencies=counts))
    if head == "in_batch":
        return RetrievalLoss("softmax", InBatch(frequencies=counts))
    raise ValueError(f"unknown head {head!r}; expected one of {HEADS}")


def zipf_counts(num_items, exponent=1.0, total=10 ** 9):
    import numpy as np

    ranks = np.arange(1, num_items + 1, dtype=np.float64)
    weights = ranks ** -exponent
    return np.maximum(1, np.round(total * weights / weights.sum())).astype(np.int64)


def phase_step(head, num_items, batch_size, steps, dim, num_users=100_000, seed=0):
    import numpy as np

    import twotower  # noqa: F401
    import tensorflow as tf
    from twotower.data.samplers import UnigramSampler
    from twotower.towers import IDTower
    from twotower.training.lazy_adam import LazyAdam
    from twotower.towers.two_tower_model import TwoTowerModel

    tf.keras.utils.set_random_seed(seed)
    counts = zipf_counts(num_items)
    model = TwoTowerModel(IDTower(num_users, dim, name="user"),
                          IDTower(num_items, dim, name="item"),
                          make_loss(head, counts, num_items))
    model.compile(optimizer=LazyAdam(1e-3))
    rng = np.random.default_rng(seed)
    draws = UnigramSampler(counts, power=1.0, seed=seed).sample(steps * batch_size)
    users = rng.integers(0, num_users, size=steps * batch_size)
    ds = tf.data.Dataset.from_tensor_slices({"query": users, "item": draws}) \
        .batch(batch_size, drop_remainder=True).cache()
    warm = max(5, steps // 6)
    model.fit(ds.take(warm), verbose=0)          # traces the step and creates the slots
    times = []

    class Timer(tf.keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            self.t = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            times.append(time.perf_counter() - self.t)

    model.fit(ds.skip(warm), verbose=0, callbacks=[Timer()])
    slot_bytes = sum(int(np.prod(v.shape)) * v.dtype.size for v in model.optimizer.variables
                     if len(v.shape) > 0)
    table_bytes = sum(int(np.prod(v.shape)) * v.dtype.size for v in model.trainable_variables)
    return {"step_ms": float(np.median(times) * 1e3), "steps_timed": len(times),
            "peak_rss_gb": peak_rss_gb(), "optimizer_state_gb": slot_bytes / 2 ** 30,
            "table_gb": table_bytes / 2 ** 30}


# ----------------------------------------------------------------------------- index

def phase_index(num_items, hnswlib, out):
    sys.path.insert(0, HERE)
    import index_vs_peers

    argv = ["--out", out, "--sizes", str(num_items), "--distances", "cos",
            "--repeats", "3", "--target-recall", "0.95"]
    if not hnswlib:
        argv.append("--no-hnswlib")
    index_vs_peers.main(argv)
    with open(os.path.join(out, "metrics.json")) as f:
        metrics = json.load(f)
    metrics["peak_rss_gb"] = peak_rss_gb()
    return metrics


# ----------------------------------------------------------------------------- e2e

def phase_e2e(num_items, interactions, folder, batch_size, epochs, dim, per_user, lr,
              seed=0):
    import numpy as np

    import twotower  # noqa: F401
    import tensorflow as tf
    from twotower.data.interactions_dataset import interactions_dataset
    from twotower.data.planted_log import PlantedLog, write_planted_log
    from twotower.index import build_index, tune
    from twotower.losses import RetrievalLoss, SampledNegatives
    from twotower.data.samplers import UnigramSampler
    from twotower.towers import IDTower
    from twotower.training.lazy_adam import LazyAdam
    from twotower.towers.two_tower_model import TwoTowerModel

    planted = PlantedLog(num_items=num_items, num_interactions=interactions,
                         interactions_per_user=per_user, seed=seed)
    t0 = time.perf_counter()
    summary = write_planted_log(planted, folder)
    write_s = time.perf_counter() - t0
    counts = summary["item_counts"]
    num_users = planted.num_users
    train_files = summary["train_files"]
    tf.keras.utils.set_random_seed(seed)
    model = TwoTowerModel(IDTower(num_users, dim, name="user"),
                          IDTower(num_items, dim, name="item"),
                          make_loss(E2E_HEAD, np.maximum(counts, 1), num_items))
    model.compile(optimizer=LazyAdam(lr))

    def stream():
        ds = interactions_dataset(folder, batch_size=batch_size)
        return ds.map(lambda b: {"query": b["user_id"], "item": b["item_id"]}).unbatch() \
            .batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)

    t0 = time.perf_counter()
    examples = 0
    for _ in range(epochs):
        hist = model.fit(stream(), verbose=0)
        examples += summary["train_rows"] // batch_size * batch_size
    train_s = time.perf_counter() - t0
    # held-out: each evaluated user's last interaction; retrieval through ScaNN
    # free the training state (table + LazyAdam's two slots: 3 × N × d floats) before
    # the index is built: at 10⁷ × 64 both together did not fit in 24 GB
    item_vectors = model.item_tower.embeddings.numpy()    # the IDTower's table, [N, d]
    query_tower = model.query_tower
    last_loss = float(hist.history["loss"][-1])
    del model, hist
    gc.collect()
    users, targets = summary["test_users"], summary["test_items"]
    if len(users) > EVAL_USERS:   # a uniform sample of users: the recall's std error ≈ 0.003
        pick = np.random.default_rng(seed).choice(len(users), EVAL_USERS, replace=False)
        users, targets = users[pick], targets[pick]
    index = build_index(item_vectors, np.arange(num_items), distance="dot")
    query_vectors = query_tower(users).numpy()
    tune(index, query_vectors[:500], target_recall=0.95, progress=False)
    found, _ = index.search(query_vectors, 10)
    recall = float(np.mean([t in row for t, row in zip(targets, found)]))
    top10 = np.argsort(-counts)[:10]
    popularity = float(np.isin(targets, top10).mean())
    return {"train_examples_per_sec": examples / train_s, "train_seconds": train_s,
            "log_write_seconds": write_s, "interactions": int(summary["rows"]),
            "planted_recall@10": recall, "popularity_recall@10": popularity,
            "planted_oracle_recall@10": summary.get("oracle_recall@10", float("nan")),
            "last_loss": last_loss, "peak_rss_gb": peak_rss_gb()}


# ----------------------------------------------------------------------------- main

def build_parser():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", help="output folder (metrics.json, results.md, step_ms.png)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an earlier twotower output at --out")
    p.add_argument("--scale", type=float, default=1.0,
                   help="multiplies the largest catalogue (10⁷) and the log (2·10⁷); "
                   "0.1 is a 10⁶ rehearsal (default %(default)s)")
    p.add_argument("--sizes", default="1e4,1e5,1e6",
                   help="smaller catalogue sizes for the step phase; the largest "
                   "(10⁷ × scale) is always added (default %(default)s)")
    p.add_argument("--heads", default=",".join(HEADS), help="heads for the step phase")
    p.add_argument("--batch-size", type=int, default=1024, help="examples per step")
    p.add_argument("--steps", type=int, default=60, help="steps per step measurement")
    p.add_argument("--dim", type=int, default=64, help="embedding dimension")
    p.add_argument("--epochs", type=int, default=1, help="epochs of the end-to-end run")
    p.add_argument("--e2e-batch-size", type=int, default=1024,
                   help="batch of the end-to-end run (in-batch softmax: also its negatives) "
                   "(default %(default)s)")
    p.add_argument("--per-user", type=int, default=50,
                   help="interactions per user in the planted log (default %(default)s)")
    p.add_argument("--lr", type=float, default=0.02,
                   help="LazyAdam learning rate of the end-to-end run (default %(default)s)")
    p.add_argument("--hnswlib-max", type=float, default=1e6,
                   help="largest size at which hnswlib runs beside ScaNN (its build at 10⁷ "
                   "takes longer than this benchmark's hour on 2 cores) (default 1e6)")
    p.add_argument("--skip", default="", help="phases to skip: step,index,tuner,e2e")
    p.add_argument("--data", default=None,
                   help="folder for the generated log shards (default: a temporary folder, "
                   "removed afterwards)")
    p.add_argument("--phase", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    return p


def _run_phase(argv):
    name, rest = argv[0], argv[1:]
    if name == "step":
        head, n, b, steps, dim = rest
        out = phase_step(head, int(float(n)), int(b), int(steps), int(dim))
    elif name == "index":
        n, hnsw, out_dir = rest
        out = phase_index(int(float(n)), hnsw == "1", out_dir)
    elif name == "e2e":
        n, inter, folder, b, epochs, dim, per_user, lr = rest
        out = phase_e2e(int(float(n)), int(float(inter)), folder, int(b), int(epochs), int(dim),
                        int(per_user), float(lr))
    else:
        raise SystemExit(f"unknown phase {name!r}")
    print(json.dumps(out, default=float))


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.phase:
        return _run_phase(args.phase)
    from twotower.artifacts import atomic_directory, atomic_write_text, check_output_dir
    from twotower.reporting import format_table, plot_curves, write_metrics

    if not args.out:
        raise SystemExit("scale.py: error: --out is required")
    check_output_dir(args.out, overwrite=args.overwrite)
    if not args.scale > 0:
        raise SystemExit(f"scale.py: error: --scale must be > 0, got {args.scale}")
    largest = int(round(1e7 * args.scale))
    sizes = sorted({int(float(s)) for s in args.sizes.split(",") if s} | {largest})
    heads = [h for h in args.heads.split(",") if h]
    skip = set(filter(None, args.skip.split(",")))
    metrics, rows = {"largest_items": largest}, []
    started = time.perf_counter()
    if "step" not in skip:
        for n in sizes:
            for head in heads:
                k = size_key(n)
                r = _phase(metrics, f"step_{head}_{k}", ["step", head, str(n),
                                                         str(args.batch_size), str(args.steps),
                                                         str(args.dim)])
                if r is None:
                    continue
                metrics[f"step_ms_{head}_{k}"] = r["step_ms"]
                metrics[f"peak_rss_gb_train_{head}_{k}"] = r["peak_rss_gb"]
                metrics[f"optimizer_state_gb_{k}"] = r["optimizer_state_gb"]
                metrics[f"peak_rss_gb_train_{k}"] = max(metrics.get(f"peak_rss_gb_train_{k}", 0),
                                                        r["peak_rss_gb"])
                rows.append({"items": k, "head": head, "step ms": r["step_ms"],
                             "peak RSS GB": r["peak_rss_gb"],
                             "table GB": r["table_gb"],
                             "optimizer state GB": r["optimizer_state_gb"]})
                print(f"step {head:16s} {k:>4s}: {r['step_ms']:.1f} ms, "
                      f"peak {r['peak_rss_gb']:.2f} GB", flush=True)
    with tempfile.TemporaryDirectory() as scratch:
        if "index" not in skip:
            r = _phase(metrics, "index", ["index", str(largest),
                                          "1" if largest <= args.hnswlib_max else "0",
                                          os.path.join(scratch, "index")]) or {"peak_rss_gb": None}
            k, corpus = size_key(largest), f"{largest}_cos"   # index_vs_peers' corpus name
            for peer in ("scann", "hnswlib", "bruteforce"):
                for key in ("build_s", "recall@10", "qps", "batch_qps", "mb"):
                    if f"{peer}_{key}_{corpus}" in r:
                        metrics[f"{peer}_{key}_{k}"] = r[f"{peer}_{key}_{corpus}"]
            if r["peak_rss_gb"] is not None:
                metrics[f"peak_rss_gb_index_{k}"] = r["peak_rss_gb"]
            metrics[f"hnswlib_ran_{k}"] = int(largest <= args.hnswlib_max)
        if "tuner" not in skip:
            # the tuner's promise on held-out queries (it tunes a lower confidence bound)
            r = _phase(metrics, "tuner", ["index", "100000", "0", os.path.join(scratch, "tuner")])
            if r is not None:
                metrics["tuned_heldout_recall@10_100k_cos"] = r["tuned_heldout_recall@10_100000_cos"]
                metrics["tuned_target_recall_100k_cos"] = r["tuned_target_recall_100000_cos"]
        if "e2e" not in skip:
            folder = args.data or os.path.join(scratch, "log")
            r = _phase(metrics, "e2e", ["e2e", str(largest), str(2 * largest), folder,
                                        str(args.e2e_batch_size), str(args.epochs), str(args.dim),
                                        str(args.per_user), str(args.lr)])
            k = size_key(largest)
        if "e2e" not in skip and r is not None:
            metrics[f"train_examples_per_sec_{k}"] = r["train_examples_per_sec"]
            metrics[f"peak_rss_gb_e2e_{k}"] = r["peak_rss_gb"]
            for key in ("planted_recall@10", "popularity_recall@10",
                        "planted_oracle_recall@10", "interactions", "train_seconds"):
                metrics[key] = r[key]
    metrics["benchmark_seconds"] = time.perf_counter() - started
    with atomic_directory(args.out, overwrite=args.overwrite) as tmp:
        write_metrics(tmp, metrics)
        table = format_table(rows) if rows else ""
        summary = format_table([{k: v for k, v in metrics.items()
                                 if not k.startswith(("step_ms_", "peak_rss_gb_train_"))}])
        atomic_write_text(os.path.join(tmp, "results.md"),
                          f"# scale benchmark\n\n{table}\n\n{summary}\n")
        if rows:
            curves = {h: ([r["items"] for r in rows if r["head"] == h],
                          [r["step ms"] for r in rows if r["head"] == h]) for h in heads}
            curves = {h: ([float(x) for x in xs], ys) for h, (xs, ys) in curves.items()}
            plot_curves(os.path.join(tmp, "step_ms.png"), curves, xlabel="items in the catalogue",
                        ylabel="ms per step (batch 1024)", title="training step vs catalogue size",
                        logx=True)
    print(table)
    print(json.dumps(metrics, indent=1, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
