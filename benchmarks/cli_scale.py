"""The CLI road at scale: the command a user types, on a generated log with string ids.

    flock /tmp/twotower-bench.lock python benchmarks/cli_scale.py --out out/bench_cli_scale
    python benchmarks/cli_scale.py --out out/bench_cli_scale --sizes 1e6,1e7   # larger
    python benchmarks/cli_scale.py --out out/bench_cli_rss --sizes 1e7,1e8 --skip step \
        --e2e-items 1e6 --e2e-users 2e5        # the same tables, a 10x longer log

Every run is ``python -m twotower.cli youtube --interactions log.csv --items items.csv
…`` in its own process (its output to a log file, so Keras prints one line an epoch),
read back from the ``metrics.json`` it writes (``seconds_{phase}``, ``peak_rss_gb``,
``examples_per_sec``, recall and popularity on the same test users, ``exact``).

The logs are planted (``twotower.data.planted_log``'s model: Zipf clusters of 1,000
items, each user drawing half from popularity and half from a home cluster), written as
CSV with string ids (``u17``, ``i4242``) and an items.csv with one categorical column
(``category``: the item's cluster modulo 100, a coarse hint shared by ten clusters).

1. **step** — the recipe's own towers (user id + mean-pooled history; item id +
   category, d = 32, one hidden layer of 64) on a log of ``--step-rows`` rows (20 a
   user) whose catalogue is 10⁴ or 10⁶ items, one epoch at ``--batch-size``: ms a step
   = batch / examples a second, the median of ``--step-repeats`` runs (each run's figure
   beside it as ``…_run1``, ``…_run2``, …), with ``--optimizer auto`` (what a user gets) and
   ``--optimizer adam`` (every row every step, XLA: the road before). Keys
   ``cli_step_ms_{1e4,1e6}_items``, ``cli_step_ms_adam_{1e4,1e6}_items``,
   ``cli_step_ms_lazy_adam_1e4_items`` (LazyAdam forced at the smallest catalogue); and
   ``cli_step_ms_1e6_items_1e4_log``: the 10⁴-item log with 10⁶ items in items.csv
   (the same rows used a step, the catalogue's tables 100× larger), which separates
   the catalogue's size from a larger catalogue's log touching more distinct rows.
2. **e2e** — for each of ``--sizes`` interactions (50 a user, items = interactions /
   10): the whole command with ``--out`` (training, evaluation, the index export).
   Keys ``cli_seconds_{phase}_{n}``, ``cli_peak_rss_gb_{n}`` (and
   ``cli_peak_rss_gb_{phase}_{n}``: the command's running peak as each phase ended),
   ``cli_train_examples_per_sec_{n}``, ``cli_recall@10_{n}``,
   ``cli_popularity_recall@10_{n}``, ``cli_oracle_recall@10_{n}`` (the planted model's
   own expected recall@10), ``cli_exact_{n}``, ``cli_evaluated_users_{n}``, and beside
   them ``id_road_train_examples_per_sec_{n}``: benchmarks/scale.py's end-to-end road
   (ID towers, Parquet shards streamed, LazyAdam) on a log of the same size, batch and
   catalogue (up to ``--id-road-max`` interactions). With ``--e2e-items`` and
   ``--e2e-users`` every size has the same catalogue and users (more interactions a
   user), so the tables stay the same and only the log grows: ``cli_peak_rss_ratio`` is
   the largest size's peak RSS over the next one's.

Writes metrics.json and results.md under ``--out``.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
CLUSTER = 1000


def size_key(n):
    """10000 -> '1e4', 3_000_000 -> '3e6' (the metrics.json spelling)."""
    exponent = len(str(int(n))) - 1
    return f"{n / 10 ** exponent:g}e{exponent}"


def write_csv_log(folder, num_interactions, num_items, per_user, seed=0, chunk_users=20_000,
                  table_items=None):
    """A planted log as ``folder/log.csv`` (user_id,item_id,timestamp; string ids) and
    ``folder/items.csv`` (item_id,category; ``table_items`` rows, default ``num_items``:
    more puts items nobody used into the catalogue). Returns the planted model's oracle
    recall@10 for its users."""
    import numpy as np

    from twotower.data.planted_log import PlantedLog, _draw_chunk
    from twotower.data.samplers import AliasTable

    cluster = min(CLUSTER, num_items)
    planted = PlantedLog(num_items=num_items, num_interactions=num_interactions,
                         interactions_per_user=per_user, cluster_size=cluster, seed=seed)
    rng = np.random.default_rng([seed, 2])
    w, omega = planted._weights()
    clusters = AliasTable.from_probabilities(w)
    home = clusters.draw(rng, planted.num_users)
    tables = (clusters, AliasTable.from_probabilities(omega), home)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "log.csv"), "w") as f:
        f.write("user_id,item_id,timestamp\n")
        for start in range(0, planted.num_users, chunk_users):
            users = np.arange(start, min(start + chunk_users, planted.num_users))
            items = _draw_chunk(planted, users, rng, tables)
            u = np.repeat(users, per_user)
            t = 1_700_000_000 + 60 * np.tile(np.arange(per_user), len(users)) + u % 60
            order = rng.permutation(u.size)
            f.write("".join(f"u{a},i{b},{c}\n" for a, b, c in
                            zip(u[order].tolist(), items.reshape(-1)[order].tolist(),
                                t[order].tolist())))
    ids = np.arange(max(num_items, table_items or 0))
    with open(os.path.join(folder, "items.csv"), "w") as f:
        f.write("item_id,category\n")
        f.write("".join(f"i{i},c{c}\n" for i, c in
                        zip(ids.tolist(), (ids % planted.num_clusters % 100).tolist())))
    return planted.oracle_recall_at_10(home)


def run_cli(folder, out, log_path, *flags):
    """Runs the youtube recipe on ``folder``'s log; returns its metrics.json (raises
    RuntimeError with the log's tail when the command fails)."""
    cmd = [sys.executable, "-m", "twotower.cli", "youtube",
           "--interactions", os.path.join(folder, "log.csv"),
           "--items", os.path.join(folder, "items.csv"), "--out", out, *flags]
    started = time.perf_counter()
    with open(log_path, "w") as log:
        log.write(" ".join(cmd) + "\n")
        log.flush()
        code = subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
                               env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    if code != 0:
        with open(log_path) as f:
            raise RuntimeError(f"{' '.join(cmd)} exited {code}:\n{f.read()[-3000:]}")
    with open(os.path.join(out, "metrics.json")) as f:
        metrics = json.load(f)
    metrics["wall_seconds"] = time.perf_counter() - started
    return metrics


def id_road(num_items, interactions, batch, per_user, scratch):
    """benchmarks/scale.py's end-to-end phase on a planted log of the same size."""
    cmd = [sys.executable, os.path.join(HERE, "scale.py"), "--phase", "e2e", str(num_items),
           str(interactions), os.path.join(scratch, "id_road"), str(batch), "1", "32",
           str(per_user), "0.02"]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"scale.py e2e exited {proc.returncode}: {proc.stderr[-2000:]}")
    return json.loads(lines[-1])


def build_parser():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="output folder (metrics.json, results.md)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an earlier twotower output at --out")
    p.add_argument("--sizes", default="1e6",
                   help="interactions of the end-to-end runs, comma-separated (items = "
                   "interactions / 10, 50 a user) (default %(default)s)")
    p.add_argument("--step-rows", type=float, default=3e5,
                   help="rows of the step phase's logs (default %(default)s)")
    p.add_argument("--step-repeats", type=int, default=3,
                   help="runs of each step-phase command; the median is reported "
                        "(default %(default)s)")
    p.add_argument("--step-items", default="1e4,1e6",
                   help="catalogue sizes of the step phase (default %(default)s)")
    p.add_argument("--batch-size", type=int, default=1024, help="examples per step "
                   "(default %(default)s)")
    p.add_argument("--epochs", type=int, default=1, help="epochs of the end-to-end runs "
                   "(default %(default)s)")
    p.add_argument("--e2e-items", type=float, default=None,
                   help="the end-to-end runs' catalogue, the same at every size (default: "
                   "interactions / 10)")
    p.add_argument("--e2e-users", type=float, default=None,
                   help="the end-to-end runs' users, the same at every size (default: "
                   "interactions / 50); with --e2e-items the tables stay the same and only "
                   "the log grows, which is what cli_peak_rss_ratio compares")
    p.add_argument("--id-road-max", type=float, default=1e7,
                   help="run the ID road beside the end-to-end runs up to this many "
                   "interactions (default %(default)g)")
    p.add_argument("--skip", default="", help="phases to skip: step,e2e,id_road")
    p.add_argument("--data", default=None, help="folder for the generated logs (default: a "
                   "temporary folder, removed afterwards)")
    return p


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.step_repeats < 1:
        parser.error(f"--step-repeats must be at least 1, got {args.step_repeats}")
    sys.path.insert(0, ROOT)
    from twotower.artifacts import atomic_directory, atomic_write_text, check_output_dir
    from twotower.reporting import format_table, write_metrics

    check_output_dir(args.out, overwrite=args.overwrite)
    skip = set(filter(None, args.skip.split(",")))
    sizes = [int(float(s)) for s in args.sizes.split(",") if s]
    batch = str(args.batch_size)
    metrics, step_rows, e2e_rows = {"batch_size": args.batch_size}, [], []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(dir=args.data) as scratch:
        logs = os.path.join(scratch, "logs")   # each command's output, kept in --out/logs
        os.makedirs(logs)
        if "step" not in skip:
            step_items = [int(float(s)) for s in args.step_items.split(",") if s]
            # the smallest catalogue's log with the largest catalogue in items.csv: the
            # same rows used, only the tables larger
            # LazyAdam forced on the smallest catalogue too, where auto takes XLAAdam
            runs = [(n, n, ("auto", "adam") + (("lazy_adam",) if n == min(step_items) else ()))
                    for n in step_items]
            if len(step_items) > 1:
                runs.append((min(step_items), max(step_items), ("auto",)))
            for used, items, choices in runs:
                folder = os.path.join(scratch, f"step_{used}_{items}")
                write_csv_log(folder, int(args.step_rows), used, 20, table_items=items)
                k = size_key(items) + "_items" + ("" if used == items else f"_{size_key(used)}_log")
                for choice in choices:
                    # --step-repeats runs of the command, the median reported (one epoch's
                    # figure moves by tens of per cent on a shared 2-core machine)
                    runs_ms = []
                    for r in range(args.step_repeats):
                        m = run_cli(folder,
                                    os.path.join(scratch, f"out_step_{used}_{items}_{choice}"),
                                    os.path.join(logs, f"step_{k}_{choice}_{r}.log"),
                                    "--epochs", "1", "--batch-size", batch, "--no-export",
                                    "--eval-users", "2000", "--optimizer", choice,
                                    *(("--overwrite",) if r else ()))
                        runs_ms.append(args.batch_size / m["examples_per_sec"] * 1e3)
                    ms = float(statistics.median(runs_ms))
                    name = "" if choice == "auto" else f"{choice}_"
                    metrics[f"cli_step_ms_{name}{k}"] = ms
                    for r, x in enumerate(runs_ms):
                        metrics[f"cli_step_ms_{name}{k}_run{r + 1}"] = x
                    step_rows.append({"items": size_key(items), "log's items": size_key(used),
                                      "optimizer": choice,
                                      "chosen": ("LazyAdam" if m["lazy_adam"] else "Adam")
                                      + (", XLA" if m["jit_compile"] else ""),
                                      "ms/step (median)": ms,
                                      "runs": " ".join(f"{x:.1f}" for x in runs_ms),
                                      "table rows": m["table_rows"]})
                    print(f"step {k}, --optimizer {choice}: {ms:.1f} ms "
                          f"(runs {', '.join(f'{x:.1f}' for x in runs_ms)})", flush=True)
            if {"cli_step_ms_1e4_items", "cli_step_ms_1e6_items"} <= set(metrics):
                metrics["cli_step_ratio_1e6_over_1e4"] = (metrics["cli_step_ms_1e6_items"]
                                                         / metrics["cli_step_ms_1e4_items"])
        for n in sizes if "e2e" not in skip else ():
            k = size_key(n)
            items = int(args.e2e_items) if args.e2e_items else max(n // 10, CLUSTER)
            per_user = max(1, round(n / args.e2e_users)) if args.e2e_users else 50
            folder = os.path.join(scratch, f"e2e_{n}")
            t0 = time.perf_counter()
            oracle = write_csv_log(folder, n, items, per_user)
            metrics[f"cli_log_write_seconds_{k}"] = time.perf_counter() - t0
            m = run_cli(folder, os.path.join(scratch, f"out_{n}"),
                        os.path.join(logs, f"e2e_{k}.log"), "--epochs", str(args.epochs),
                        "--batch-size", batch)
            for key, value in m.items():
                # seconds and the running peak RSS at the end of each phase
                if key.startswith("seconds_") or key.startswith("peak_rss_gb_"):
                    metrics[f"cli_{key}_{k}"] = value
            metrics.update({
                f"cli_wall_seconds_{k}": m["wall_seconds"],
                f"cli_peak_rss_gb_{k}": m["peak_rss_gb"],
                f"cli_train_examples_per_sec_{k}": m["examples_per_sec"],
                f"cli_recall@10_{k}": m["recall@10"],
                f"cli_popularity_recall@10_{k}": m["popularity_recall@10"],
                f"cli_oracle_recall@10_{k}": oracle,
                f"cli_exact_{k}": m["exact"], f"cli_evaluated_users_{k}": m["evaluated_users"],
                f"cli_lazy_adam_{k}": m["lazy_adam"], f"cli_items_{k}": items,
                f"cli_users_{k}": m.get("num_users", n // per_user),
                f"cli_interactions_per_user_{k}": per_user})
            row = {"interactions": k, "items": items, "peak RSS GB": m["peak_rss_gb"],
                   "examples/s": m["examples_per_sec"], "recall@10": m["recall@10"],
                   "popularity": m["popularity_recall@10"], "oracle": oracle,
                   "exact": m["exact"], **{key[len("seconds_"):] + " s": v
                                           for key, v in m.items() if key.startswith("seconds_")}}
            if "id_road" not in skip and n <= args.id_road_max:
                r = id_road(items, n, args.batch_size, per_user, scratch)
                metrics[f"id_road_train_examples_per_sec_{k}"] = r["train_examples_per_sec"]
                metrics[f"cli_over_id_road_examples_per_sec_{k}"] = (
                    m["examples_per_sec"] / r["train_examples_per_sec"])
                row["ID road examples/s"] = r["train_examples_per_sec"]
            e2e_rows.append(row)
            print(json.dumps(row, default=float), flush=True)
        rss = sorted((int(key.rsplit("_", 1)[1].split("e")[1]), key) for key in metrics
                     if key.startswith("cli_peak_rss_gb_")
                     and key[len("cli_peak_rss_gb_")].isdigit())  # not the per-phase keys
        if len(rss) > 1 and args.e2e_items and args.e2e_users:  # the same tables
            (_, small), (_, large) = rss[-2], rss[-1]
            metrics["cli_peak_rss_ratio"] = metrics[large] / metrics[small]
        saved_logs = {}
        for name in sorted(os.listdir(logs)):
            with open(os.path.join(logs, name)) as f:
                saved_logs[name] = f.read()
    metrics["benchmark_seconds"] = time.perf_counter() - started
    tables = ""
    if step_rows:
        tables += "## step (one epoch, the recipe's towers)\n\n" + format_table(step_rows) + "\n\n"
    if e2e_rows:
        tables += "## end to end (the CLI command)\n\n" + format_table(e2e_rows) + "\n"
    with atomic_directory(args.out, overwrite=args.overwrite) as tmp:
        write_metrics(tmp, metrics)
        atomic_write_text(os.path.join(tmp, "results.md"), f"# CLI at scale\n\n{tables}")
        os.makedirs(os.path.join(tmp, "logs"))
        for name, text in saved_logs.items():
            atomic_write_text(os.path.join(tmp, "logs", name), text)
    print(tables)
    print(json.dumps(metrics, indent=1, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
