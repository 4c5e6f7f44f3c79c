"""tf.distribute on loopback: global negatives, several workers, a killed worker.

Every part runs in fresh processes on 127.0.0.1 (TensorFlow fixes its devices and its
collectives when a process starts), on the youtube recipe (in-batch softmax, streaming
logQ) over a planted MovieLens-format folder (4 taste clusters, as the recipe tests use)
or --data DIR:

  §1 mirrored: one process with 2 logical CPU devices. One training step on a global
     batch of 2B under MirroredStrategy vs one device on the same 2B examples, for
     in-batch (streaming logQ), mixed, sampled, NEG and triplet losses: the largest
     |Δ loss| and |Δ gradient|. Then the recipe trained with global negatives
     (cross_replica=True) and with per-replica ones at the same global batch:
     recall@50_cross_replica vs recall@50_per_replica (what global negatives buy).
  §2 multi-worker: the recipe in 1 process (single_recall@50) and in 2 worker processes
     under MultiWorkerMirroredStrategy with TF_CONFIG (multiworker_recall@50, the weights
     compared across the workers); then the 2 workers again with --checkpoint-dir, worker
     1 SIGKILLed mid-training, the cluster restarted, resumed_recall@50.
     examples_per_sec_1_worker / _2_workers: on a 2-core machine the 2 workers share the
     cores and talk over gRPC, so their ratio shows the overhead, not a speed-up.

    python benchmarks/distributed.py --out /tmp/bench_distributed [--overwrite]

Writes DIR/metrics.json and DIR/results.md (atomically; --out checked before any work).
"""

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.abspath(__file__)


# ------------------------------------------------------------------- worker processes

def free_ports(n):
    """n free TCP ports on 127.0.0.1 (bound to port 0 and released)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def tf_config(ports, index, kind="worker"):
    """TF_CONFIG for task ``index`` of a loopback cluster of workers at ``ports``."""
    return json.dumps({"cluster": {kind: [f"127.0.0.1:{p}" for p in ports]},
                       "task": {"type": kind, "index": index}})


def worker_env(tf_config_text=None, logical_cpus=1):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="",
               TWOTOWER_LOGICAL_CPUS=str(logical_cpus))
    env.pop("TF_CONFIG", None)
    if tf_config_text:
        env["TF_CONFIG"] = tf_config_text
    return env


def start_worker(spec, result, env, log):
    """Starts ``python distributed.py --worker SPEC RESULT`` (see :func:`run_worker`)."""
    return subprocess.Popen([sys.executable, HERE, "--worker", json.dumps(spec), result],
                            env=env, stdout=log, stderr=subprocess.STDOUT)


def run_cluster(spec, folder, *, workers=2, die=None, timeout=600):
    """Runs ``spec`` on ``workers`` processes (MultiWorkerMirroredStrategy over loopback);
    ``die`` = (worker index, step): that worker SIGKILLs itself after that step, and the
    others are stopped once it is gone. Returns [result dict or None per worker]."""
    ports = free_ports(workers)
    os.makedirs(folder, exist_ok=True)
    procs, results = [], []
    for i in range(workers):
        s = dict(spec, strategy="multi-worker")
        if spec.get("weights"):
            s["weights"] = f"{spec['weights']}.{i}.npz"
        if die is not None and die[0] == i:
            s["die_at_step"] = die[1]
        results.append(os.path.join(folder, f"worker{i}.json"))
        log = open(os.path.join(folder, f"worker{i}.log"), "w")
        procs.append(start_worker(s, results[-1], worker_env(tf_config(ports, i)), log))
    deadline = time.monotonic() + timeout
    try:
        while any(p.poll() is None for p in procs):
            if die is not None and procs[die[0]].poll() is not None:
                for p in procs:  # the others wait on the dead worker's collectives
                    if p.poll() is None:
                        p.kill()
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"workers still running after {timeout} s (logs in {folder})")
            time.sleep(0.2)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait()
    out = []
    for p, r in zip(procs, results):
        out.append(json.load(open(r)) if p.returncode == 0 and os.path.exists(r) else None)
    return out


def run_single(spec, result_path, *, logical_cpus=1, timeout=600):
    """Runs ``spec`` in one fresh process (no cluster); returns its result dict."""
    log_path = result_path + ".log"
    with open(log_path, "w") as log:
        p = start_worker(spec, result_path, worker_env(logical_cpus=logical_cpus), log)
        try:
            p.wait(timeout=timeout)
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
    if p.returncode != 0:
        raise RuntimeError(f"worker failed (rc {p.returncode}); log: {open(log_path).read()[-3000:]}")
    return json.load(open(result_path))


def run_worker(spec, result_path):
    """One process: the youtube recipe as ``spec`` says; writes a JSON result (metrics
    and a digest of the weights). spec keys: data, epochs, batch_size, lr, dim, seed,
    strategy, checkpoint_dir, checkpoint_every, die_at_step, cross_replica (None/bool),
    weights (path for an .npz of the trained weights), part ("recipe" or "steps")."""
    cpus = int(os.environ.get("TWOTOWER_LOGICAL_CPUS", "1"))
    import twotower  # noqa: F401  (Keras 2 before TensorFlow)
    import tensorflow as tf
    if cpus > 1:
        tf.config.set_logical_device_configuration(
            tf.config.list_physical_devices("CPU")[0],
            [tf.config.LogicalDeviceConfiguration()] * cpus)
    if spec.get("part") == "steps":
        result = _step_differences()
    else:
        result = _train_youtube(spec, tf)
    tmp = result_path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(result, f)
    os.replace(tmp, result_path)


def _train_youtube(spec, tf):
    import numpy as np

    from twotower.recipes import two_tower_kit as common

    from twotower.training import distribute

    from twotower.training import resumable_fit
    from twotower.recipes import youtube

    if spec.get("mirrored_devices"):
        distribute._STRATEGIES["mirrored"] = tf.distribute.MirroredStrategy(
            [d.name for d in tf.config.list_logical_devices("CPU")])
    config = youtube.Config(source=spec["data"], epochs=spec["epochs"],
                            batch_size=spec["batch_size"], lr=spec["lr"], dim=spec["dim"],
                            seed=spec.get("seed", 0), strategy=spec.get("strategy", "none"),
                            checkpoint_dir=spec.get("checkpoint_dir"),
                            checkpoint_every=spec.get("checkpoint_every", 50),
                            oov_rate=spec.get("oov_rate", 0.0),
                            steps_per_execution=1, jit_compile=False, export=False)
    die = spec.get("die_at_step")
    if die is not None:
        original = resumable_fit.RecordLoss.on_train_batch_end

        def on_train_batch_end(self, batch, logs=None):  # a crash, not a shutdown
            original(self, batch, logs)
            if int(self.model.optimizer.iterations.numpy()) >= die:
                os.kill(os.getpid(), signal.SIGKILL)
        resumable_fit.RecordLoss.on_train_batch_end = on_train_batch_end
        resumable_fit.RecordLoss._implements_train_batch_hooks = lambda self: True

    def loss(data):
        base = youtube.make_loss(config, data.num_items)
        return type(base).from_config(dict(base.get_config(),
                                           cross_replica=spec.get("cross_replica")))
    model, data, metrics = common.train_recipe(config, loss, history=True, l2_normalize=True)
    # the model's state: tower weights and the frequency estimator (not the optimizer's
    # slots, the loss tracker or the fit bookkeeping)
    est = model.retrieval_loss.candidates.frequency_estimator
    state = list(model.trainable_variables) + (list(est.weights) if est is not None else [])
    weights = {f"{i}:{v.name}": np.asarray(v.numpy()) for i, v in enumerate(state)}
    if spec.get("weights"):
        np.savez(spec["weights"], **weights)
    return {"metrics": {k: v for k, v in metrics.items() if isinstance(v, (int, float))},
            "replicas": int(distribute.make_strategy(config.strategy).num_replicas_in_sync)}


def max_weight_diff(path_a, path_b):
    """Largest |Δ| between two weight files written by workers."""
    import numpy as np

    a, b = np.load(path_a), np.load(path_b)
    if sorted(a.files) != sorted(b.files):
        return float("inf")
    return max(float(np.max(np.abs(a[k].astype(np.float64) - b[k]))) for k in a.files)


def _step_differences():
    """§1 on the 2 logical devices of this process: max |Δ loss|, |Δ grad| over cases."""
    import numpy as np
    import tensorflow as tf

    from twotower.data.frequency import StreamingFrequencyEstimator
    from twotower.data.samplers import UniformSampler
    from twotower.losses import (InBatch, MixedNegatives, RetrievalLoss, SampledNegatives,
                                 Triplet)
    from twotower.towers.id_tower import IDTower
    from twotower.towers.two_tower_model import TwoTowerModel

    n_items, n_users, dim, b = 50, 64, 8, 16
    rng = np.random.default_rng(0)
    items = rng.integers(0, 10, 2 * b)  # a narrow range: many ids on both replicas
    users = np.arange(2 * b)
    draws = tf.constant(rng.integers(0, n_items, 8))

    def fixed(shape, seed=None):
        return draws[:shape[0]]

    def mixed():
        s = MixedNegatives(8, n_items, frequencies=StreamingFrequencyEstimator(n_items))
        s.sampler.sample_tf = fixed
        return s

    def sampled():
        s = SampledNegatives(UniformSampler(n_items), 8)
        s.sampler.sample_tf = fixed
        return s

    cases = {
        "softmax/in-batch/streaming-logq": lambda: RetrievalLoss(
            "softmax", InBatch(frequencies=StreamingFrequencyEstimator(n_items)),
            temperature=0.1, similarity="cosine"),
        "softmax/mixed/streaming-logq": lambda: RetrievalLoss("softmax", mixed()),
        "nce/sampled": lambda: RetrievalLoss("nce", sampled()),
        "neg/in-batch": lambda: RetrievalLoss("neg", InBatch()),
        "triplet/in-batch": lambda: RetrievalLoss(Triplet(), InBatch(), similarity="cosine"),
    }
    w_user = rng.normal(size=(n_users, dim)).astype(np.float32)
    w_item = rng.normal(size=(n_items, dim)).astype(np.float32)
    devices = [d.name for d in tf.config.list_logical_devices("CPU")[:2]]
    mirrored = tf.distribute.MirroredStrategy(devices)

    def step(make, strategy):
        with strategy.scope():
            model = TwoTowerModel(IDTower(n_users, dim), IDTower(n_items, dim), make())
            model({"query": users[:2], "item": items[:2]})
            model.query_tower.embeddings.assign(w_user)
            model.item_tower.embeddings.assign(w_item)
            before = [v.numpy() for v in model.trainable_variables]
            model.compile(optimizer=tf.keras.optimizers.SGD(1.0))
        ds = tf.data.Dataset.from_tensor_slices({"query": users, "item": items}).batch(2 * b)
        loss = model.fit(ds, verbose=0).history["loss"][0]
        return loss, [x - v.numpy() for x, v in zip(before, model.trainable_variables)]

    loss_diff, grad_diff, per_case = 0.0, 0.0, {}
    for name, make in cases.items():
        l1, g1 = step(make, tf.distribute.get_strategy())
        l2, g2 = step(make, mirrored)
        dl = abs(l1 - l2)
        dg = max(float(np.max(np.abs(a - c))) for a, c in zip(g1, g2))
        per_case[name] = {"loss_diff": dl, "grad_diff": dg}
        loss_diff, grad_diff = max(loss_diff, dl), max(grad_diff, dg)
    result = {"cross_replica_max_abs_loss_diff": loss_diff,
              "cross_replica_max_abs_grad_diff": grad_diff, "cases": per_case,
              "replicas": len(devices)}
    for flag, key in ((True, "cross_replica"), (False, "per_replica")):
        result[f"planted_recall@50_{key}"] = _planted_recall(mirrored, flag)
    return result


def _planted_recall(strategy, cross_replica, *, n_users=2000, n_items=1000, cluster=10,
                    per_user=20, global_batch=64, epochs=3, seed=0):
    """recall@50 of an ID two-tower model (in-batch softmax, streaming logQ, cosine,
    τ = 0.1) trained under ``strategy`` on a planted log: 100 clusters of 10 items, each
    user drawing 70% of its interactions from its home cluster and 30% from a Zipf
    popularity; one more draw per user is held out. Global vs per-replica negatives at
    the same global batch."""
    import numpy as np
    import tensorflow as tf

    from twotower.data.frequency import StreamingFrequencyEstimator
    from twotower.losses import InBatch, RetrievalLoss
    from twotower.towers.id_tower import IDTower
    from twotower.towers.two_tower_model import TwoTowerModel

    rng = np.random.default_rng(seed)
    home = rng.integers(0, n_items // cluster, n_users)
    pop = 1.0 / np.arange(1, n_items + 1)
    pop /= pop.sum()

    def draw(users):
        own = home[users] * cluster + rng.integers(0, cluster, users.size)
        return np.where(rng.random(users.size) < 0.7, own, rng.choice(n_items, users.size, p=pop))

    train_users = np.repeat(np.arange(n_users), per_user)
    train_items = draw(train_users)
    test_users = np.arange(n_users)
    test_items = draw(test_users)
    tf.keras.utils.set_random_seed(seed)
    with strategy.scope():
        model = TwoTowerModel(IDTower(n_users, 16), IDTower(n_items, 16), RetrievalLoss(
            "softmax", InBatch(frequencies=StreamingFrequencyEstimator(n_items, alpha=0.05)),
            temperature=0.1, similarity="cosine", cross_replica=cross_replica))
        model.compile(optimizer=tf.keras.optimizers.Adam(0.01))
    order = rng.permutation(train_users.size)
    ds = tf.data.Dataset.from_tensor_slices({"query": train_users[order],
                                             "item": train_items[order]})
    model.fit(ds.batch(global_batch, drop_remainder=True), epochs=epochs, verbose=0)
    u = tf.math.l2_normalize(model.query_tower.embeddings, -1).numpy()[test_users]
    v = tf.math.l2_normalize(model.item_tower.embeddings, -1).numpy()
    top = np.argsort(-(u @ v.T), axis=1)[:, :50]
    return float(np.mean(np.any(top == test_items[:, None], axis=1)))


# ------------------------------------------------------------------------ the benchmark

def write_planted(folder):
    """The recipe tests' planted MovieLens-100K-format folder (tests/recipes/conftest.py)."""
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(HERE)), "tests",
                                    "recipes"))
    from conftest import write_planted_ml100k
    return write_planted_ml100k(folder)


def build_parser():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="output folder (metrics.json, results.md)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an earlier twotower output at --out")
    p.add_argument("--data", default=None,
                   help="MovieLens-100K folder (default: a planted one written to a temp dir)")
    p.add_argument("--epochs", type=int, default=3, help="epochs per run (default %(default)s)")
    p.add_argument("--batch-size", type=int, default=32,
                   help="global batch (default %(default)s)")
    p.add_argument("--lr", type=float, default=0.02, help="Adam lr (default %(default)s)")
    p.add_argument("--dim", type=int, default=16, help="embedding size (default %(default)s)")
    p.add_argument("--timeout", type=int, default=600,
                   help="seconds each process may run (default %(default)s)")
    return p


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--worker"]:
        run_worker(json.loads(argv[1]), argv[2])
        return 0
    args = build_parser().parse_args(argv)
    from twotower.artifacts import (OutputPathError, atomic_directory, atomic_write_json,
                                    atomic_write_text, check_output_dir)
    from twotower.reporting import format_table
    try:
        check_output_dir(args.out, overwrite=args.overwrite)
        for name in ("epochs", "batch_size", "dim", "timeout"):
            if getattr(args, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got "
                                 f"{getattr(args, name)}")
    except (OutputPathError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    work = tempfile.mkdtemp(prefix="twotower-bench-distributed-")
    data = args.data or write_planted(os.path.join(work, "ml-100k"))
    spec = {"data": data, "epochs": args.epochs, "batch_size": args.batch_size,
            "lr": args.lr, "dim": args.dim, "seed": 0}
    t = args.timeout
    m = {"workers": 2, "global_batch": args.batch_size, "epochs": args.epochs}
    started = time.time()
    print("§1 one step, MirroredStrategy on 2 logical CPUs vs one device ...", flush=True)
    steps = run_single({"part": "steps"}, os.path.join(work, "steps.json"), logical_cpus=2,
                       timeout=t)
    m.update({k: steps[k] for k in ("cross_replica_max_abs_loss_diff",
                                    "cross_replica_max_abs_grad_diff",
                                    "planted_recall@50_cross_replica",
                                    "planted_recall@50_per_replica")})
    print("§1 recipe with global vs per-replica negatives (2 logical CPUs) ...", flush=True)
    for flag, key in ((True, "recall@50_cross_replica"), (False, "recall@50_per_replica")):
        r = run_single(dict(spec, strategy="mirrored", mirrored_devices=True,
                            cross_replica=flag),
                       os.path.join(work, f"mirrored_{flag}.json"), logical_cpus=2, timeout=t)
        m[key] = r["metrics"]["recall@50"]
        m[key.replace("@50", "@10")] = r["metrics"]["recall@10"]
        m[key.replace("recall@50", "loss_last_epoch")] = r["metrics"]["loss_last_epoch"]
        m["mirrored_replicas"] = r["replicas"]
    print("§2 one process ...", flush=True)
    single = run_single(spec, os.path.join(work, "single.json"), timeout=t)
    m["single_recall@50"] = single["metrics"]["recall@50"]
    m["examples_per_sec_1_worker"] = single["metrics"]["examples_per_sec"]
    print("§2 two worker processes (MultiWorkerMirroredStrategy, loopback) ...", flush=True)
    two = run_cluster(dict(spec, weights=os.path.join(work, "w.npz")),
                      os.path.join(work, "cluster"), timeout=t)
    if any(r is None for r in two):
        raise RuntimeError(f"a worker failed; logs in {os.path.join(work, 'cluster')}")
    m["multiworker_recall@50"] = two[0]["metrics"]["recall@50"]
    w = os.path.join(work, "w.npz")
    m["multiworker_max_abs_weight_diff_between_workers"] = max_weight_diff(f"{w}.0.npz",
                                                                         f"{w}.1.npz")
    m["examples_per_sec_2_workers"] = two[0]["metrics"]["examples_per_sec"]
    print("§2 kill worker 1 mid-training (SIGKILL), restart the cluster ...", flush=True)
    ckpt = os.path.join(work, "ckpt")
    kill = dict(spec, checkpoint_dir=ckpt, checkpoint_every=5)
    dead = run_cluster(kill, os.path.join(work, "killed"), die=(1, 12), timeout=t)
    m["killed_worker_finished"] = int(dead[1] is not None)
    resumed = run_cluster(kill, os.path.join(work, "resumed"), timeout=t)
    if any(r is None for r in resumed):
        raise RuntimeError(f"the restarted cluster failed; logs in {os.path.join(work, 'resumed')}")
    m["resumed_recall@50"] = resumed[0]["metrics"]["recall@50"]
    m["resumed_at_step"] = resumed[0]["metrics"]["resumed_at_step"]
    m["seconds"] = time.time() - started
    m["note"] = ("examples_per_sec_2_workers vs _1_worker: 2 processes share this machine's "
                 f"{os.cpu_count()} cores and exchange gradients and embeddings over gRPC "
                 "on loopback, so the ratio measures the overhead, not a speed-up")
    rows = [{"metric": k, "value": f"{v:.3g}" if isinstance(v, float) else v}
            for k, v in m.items() if k != "note"]
    text = ("# tf.distribute on loopback\n\n" + format_table(rows) + "\n\n" + m["note"] + "\n"
            + "\nper case (§1):\n\n" + format_table(
                [{"case": k, **{n: f"{x:.3g}" for n, x in v.items()}}
                 for k, v in steps["cases"].items()]) + "\n")
    with atomic_directory(args.out, overwrite=args.overwrite) as tmp:
        atomic_write_json(os.path.join(tmp, "metrics.json"), m)
        atomic_write_text(os.path.join(tmp, "results.md"), text)
    print(text)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
