"""Tuned ScaNN (twotower.index) vs numpy brute force vs hnswlib (vs faiss HNSW if installed).

Corpora: synthetic clustered, anisotropic d=64 vectors (100k and 1M; cosine and dot
product, the dot-product corpus with log-normal norms so MIPS differs from cosine), and
trained MovieLens item embeddings when ``--movielens DIR`` points at a saved index folder
(e.g. the demo's out/demo/index).

Measured per corpus, in the same run: recall@10 against exact search on held-out
queries; single-query QPS (one query per call, one thread); batched QPS (all queries in
one call, every core); build seconds; tuning seconds (ScaNN); index MB on disk. QPS are
medians of --repeats rounds in which every peer is timed once (interleaved, so that load
from other processes on a shared machine falls on all of them alike), each timer after a
pause and a flush of the CPU caches (no timer inherits what the one before it cached for
the same queries).

ScaNN is tuned by twotower.index.tuner for --target-recall on separate tuning queries
(objective: single-query latency through ScannIndex.search, batched QPS second; with
--tune-builds auto, rebuilds over a size-rule grid of build-time knobs within
--tune-budget seconds); hnswlib's ef is the smallest of a grid whose recall on those
queries reaches the same target by the same one-sided 95% lower bound.

Single-query QPS is timed the way `twotower serve` calls each peer, one [1, d] query per
call: ScaNN through ``ScannIndex.search(q, 10)`` (the Retriever's path: validation,
normalisation, the pybind search, id mapping), hnswlib through ``knn_query(q, k=10,
num_threads=1)``, numpy as matmul + argpartition. Every call is timed: ``{peer}_qps`` is
1 / the median call (a call preempted by another process cannot move it),
``{peer}_qps_mean`` calls / total seconds. ``scann_raw_qps`` is ScaNN's pybind
``search`` alone on prepared (normalised) queries, ``scann_as_shipped_qps`` the serving
path with ScaNN's AVX2/AVX-512 flags off (the scann 1.4.2 wheel as shipped, same index),
``scann_wrapper_qps`` the same figure as ``scann_qps`` (kept for older reports).

    python benchmarks/index_vs_peers.py --out out/bench_index
"""

import argparse
import collections
import os
import shutil
import sys
import tempfile
import time

import numpy as np

import twotower  # noqa: F401  (Keras 2 set-up before anything imports TensorFlow)
from twotower.index import config as config_lib
from twotower.index.brute_force import exact_top_k, recall_at_k
from twotower.index.builder import build_index
from twotower.index.scann_index import enable_cpu_dispatch, kernels_as_shipped, normalize
from twotower.index.tuner import CacheEvictor, per_query_recall, recall_bound, tune
from twotower.reporting import format_table, write_metrics

K = 10
PAUSE_S = 0.5  # before each timer: worker threads of the previous one go idle


def build_parser():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="output folder (metrics.json, results.md; "
                   "checked before any work, written atomically)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an earlier twotower output at --out")
    p.add_argument("--sizes", default="100k,1m",
                   help="comma-separated synthetic corpus sizes (k/m suffixes)")
    p.add_argument("--distances", default="cos,dot", help="comma-separated: cos, dot")
    p.add_argument("--dim", type=int, default=64, help="vector dimension")
    p.add_argument("--queries", type=int, default=1000, help="held-out evaluation queries")
    p.add_argument("--tune-queries", type=int, default=2000,
                   help="queries for tuning (the tuner chooses on half, checks on the other)")
    p.add_argument("--single-queries", type=int, default=500,
                   help="queries timed one at a time (brute force: min(this, 100); its batch: 256)")
    p.add_argument("--target-recall", type=float, default=0.95, help="recall@10 to reach")
    p.add_argument("--repeats", type=int, default=5,
                   help="interleaved timing rounds (median taken)")
    p.add_argument("--tune-builds", default="auto", choices=("auto", "none"),
                   help="ScaNN tuner: also rebuild over the size-rule grid of build-time "
                        "knobs (auto) or tune search-time knobs only (none)")
    p.add_argument("--tune-budget", type=float, default=180.0,
                   help="seconds the ScaNN tuner may spend per corpus (rebuilds included)")
    p.add_argument("--hnsw-m", type=int, default=16, help="hnswlib M")
    p.add_argument("--hnsw-ef-construction", type=int, default=100,
                   help="hnswlib ef_construction")
    p.add_argument("--no-hnswlib", action="store_true", help="skip hnswlib")
    p.add_argument("--movielens", default=None,
                   help="a saved twotower index folder whose item vectors to add as a corpus")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    return p


def _size(text):
    text = text.strip().lower()
    mult = {"k": 1_000, "m": 1_000_000}.get(text[-1], 1)
    return int(float(text.rstrip("km")) * mult)


def synthetic(n, dim, *, distance, num_queries, seed):
    """Clustered, anisotropic vectors: x = c_z + (ε ⊙ s) R, s_j = j^-0.7 (a decaying
    spectrum), R a random rotation, z ~ one of √n clusters. For "dot", rows are scaled by
    log-normal norms (σ = 0.3) so maximum inner product differs from cosine."""
    rng = np.random.default_rng(seed)
    clusters = max(8, int(np.sqrt(n)))
    centers = rng.normal(size=(clusters, dim)).astype(np.float32)
    spectrum = (np.arange(1, dim + 1) ** -0.7).astype(np.float32)
    rot, _ = np.linalg.qr(rng.normal(size=(dim, dim)))
    rot = rot.astype(np.float32)
    total = n + num_queries
    out = np.empty((total, dim), np.float32)
    for s in range(0, total, 200_000):
        m = min(200_000, total - s)
        z = rng.integers(clusters, size=m)
        out[s:s + m] = centers[z] + (rng.normal(size=(m, dim)).astype(np.float32)
                                     * spectrum * 1.5) @ rot
    if distance == "dot":
        out[:n] *= rng.lognormal(0.0, 0.3, size=(n, 1)).astype(np.float32)
    return out[:n], out[n:]


def _per_call(search, rows):
    """Seconds of each ``search(row)`` call, one row per call."""
    clock = time.perf_counter
    out = []
    for row in rows:
        t0 = clock()
        search(row)
        out.append(clock() - t0)
    return out


def _dir_mb(path):
    total = 0
    for root, _, files in os.walk(path):
        total += sum(os.path.getsize(os.path.join(root, f)) for f in files)
    return total / 2**20


def bench_brute_force(items, queries, args):
    single = queries[:min(args.single_queries, 100)]

    def top_k(q):
        s = items @ q
        part = np.argpartition(-s, K)[:K]
        part[np.argsort(-s[part])]

    def one_at_a_time():
        return _per_call(top_k, single)

    timers = {"qps": (one_at_a_time, None),
              "batch_qps": (lambda: exact_top_k(queries[:256], items, K, chunk_size=256),
                            len(queries[:256]))}
    return {"recall@10": 1.0, "build_s": 0.0, "mb": items.nbytes / 2**20}, timers


def bench_scann(items, distance, tune_q, eval_q, truth, args):
    index = build_index(items, distance="cosine" if distance == "cos" else "dot")
    tuned = tune(index, tune_q, target_recall=args.target_recall, k=K,
                 repeats=max(1, args.repeats - 1),
                 build_grid="auto" if args.tune_builds == "auto" else None,
                 budget_s=args.tune_budget)
    build_s = index.build_seconds  # the chosen index's build (a rebuild when one won)
    for b in tuned.builds:
        print(f"  tried {b}", flush=True)
    c = index.config
    q = index.prepare_queries(eval_q)
    leaves = c.num_leaves_to_search if c.num_leaves else -1
    pre = max(c.reorder, K) if (c.reorder and not c.brute_force) else -1
    raw = index.searcher
    pos, _ = raw.search_batched(q, K, pre, leaves, False, 0)
    ids = index.item_ids[np.asarray(pos)]
    recall = recall_at_k(ids, truth)
    single = q[:args.single_queries]
    served = [eval_q[i:i + 1] for i in range(len(single))]  # [1, d] rows, as a server

    def raw_one_at_a_time():
        return _per_call(lambda v: raw.search(v, K, pre, leaves), single)

    def served_one_at_a_time():
        return _per_call(lambda v: index.search(v, K), served)

    def as_shipped():
        with kernels_as_shipped():
            return served_one_at_a_time()

    timers = {"qps": (served_one_at_a_time, None),
              "raw_qps": (raw_one_at_a_time, None),
              "as_shipped_qps": (as_shipped, None),
              "batch_qps": (lambda: raw.search_batched(q, K, pre, leaves, True, 256), len(q))}
    tmp = tempfile.mkdtemp()
    try:
        raw.serialize(tmp, True)
        mb = _dir_mb(tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    dispatch = enable_cpu_dispatch()
    return {"recall@10": recall, "build_s": build_s, "mb": mb, "tuned_recall": tuned.recall,
            "tuned_recall_lower_bound": tuned.recall_lower_bound,
            "leaves_to_search": c.num_leaves_to_search, "num_leaves": c.num_leaves,
            "reorder": c.reorder, "dimensions_per_block": c.dimensions_per_block,
            "anisotropic_threshold": (-1.0 if c.anisotropic_threshold is None
                                      else c.anisotropic_threshold),
            "soar_lambda": -1.0 if c.soar_lambda is None else c.soar_lambda,
            "tuning_s": tuned.tuning_seconds, "builds_tried": float(sum(
                1 for b in tuned.builds if "skipped" not in b)),
            "avx2": float(dispatch["avx2"]), "avx512": float(dispatch["avx512"])}, timers


def bench_hnswlib(items, distance, tune_q, tune_truth, eval_q, truth, args):
    import hnswlib

    space = "cosine" if distance == "cos" else "ip"
    index = hnswlib.Index(space=space, dim=items.shape[1])
    t0 = time.perf_counter()
    index.init_index(max_elements=len(items), ef_construction=args.hnsw_ef_construction,
                     M=args.hnsw_m, random_seed=args.seed)
    index.add_items(items, np.arange(len(items)), num_threads=os.cpu_count())
    build_s = time.perf_counter() - t0
    def tune_recall(ef):
        index.set_ef(max(ef, K))
        labels, _ = index.knn_query(tune_q, k=K, num_threads=os.cpu_count())
        return recall_bound(per_query_recall(labels, tune_truth), 0.95)[1]

    # the smallest ef whose recall reaches the target on the tuning queries by the same
    # one-sided 95% lower bound the ScaNN tuner uses: a grid, then bisection (as the
    # tuner bisects its reorder size), so both peers are held to the same promise
    low, chosen = K - 1, None
    for ef in (10, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024):
        if tune_recall(ef) >= args.target_recall:
            chosen = ef
            break
        low = ef
    if chosen is None:
        chosen = 1024
    else:
        while chosen - low > max(1, 0.05 * chosen):
            mid = (low + chosen) // 2
            if tune_recall(mid) >= args.target_recall:
                chosen = mid
            else:
                low = mid
    index.set_ef(max(chosen, K))
    labels, _ = index.knn_query(eval_q, k=K, num_threads=os.cpu_count())
    recall = recall_at_k(labels, truth)
    single = [eval_q[i:i + 1] for i in range(min(len(eval_q), args.single_queries))]

    def one_at_a_time():  # [1, d] rows, one per call, as a server would
        return _per_call(lambda v: index.knn_query(v, k=K, num_threads=1), single)

    timers = {"qps": (one_at_a_time, None),
              "batch_qps": (lambda: index.knn_query(eval_q, k=K, num_threads=os.cpu_count()),
                            len(eval_q))}
    fd, tmp = tempfile.mkstemp()
    os.close(fd)
    try:
        index.save_index(tmp)
        mb = os.path.getsize(tmp) / 2**20
    finally:
        os.remove(tmp)
    return {"recall@10": recall, "build_s": build_s, "mb": mb, "ef": chosen}, timers


def run_corpus(name, items, queries_all, distance, args, metrics, rows):
    n_tune = args.tune_queries
    tune_q, eval_q = queries_all[:n_tune], queries_all[n_tune:]
    exact_items = normalize(items) if distance == "cos" else items
    norm = (lambda x: normalize(x)) if distance == "cos" else (lambda x: x)
    print(f"[{name}] exact ground truth for {len(queries_all)} queries ...", flush=True)
    truth, _ = exact_top_k(norm(eval_q), exact_items, K)
    tune_truth, _ = exact_top_k(norm(tune_q), exact_items, K)
    results, timers = {}, {}
    print(f"[{name}] brute force ...", flush=True)
    results["bruteforce"], timers["bruteforce"] = bench_brute_force(exact_items, norm(eval_q),
                                                                    args)
    print(f"[{name}] scann (build + tune) ...", flush=True)
    results["scann"], timers["scann"] = bench_scann(items, distance, tune_q, eval_q, truth,
                                                    args)
    if not args.no_hnswlib:
        try:
            import hnswlib  # noqa: F401
            print(f"[{name}] hnswlib ...", flush=True)
            results["hnswlib"], timers["hnswlib"] = bench_hnswlib(
                items, distance, tune_q, tune_truth, eval_q, truth, args)
        except ImportError:
            print("hnswlib not installed: skipped", flush=True)
    try:
        import faiss  # noqa: F401
        print("faiss is installed but its HNSW run is not implemented here: skipped")
    except ImportError:
        pass  # faiss is optional and not in the lock: skip gracefully
    # Timing in interleaved rounds (every peer once per round), medians over rounds: load
    # from other processes on a shared machine falls on all peers alike.
    print(f"[{name}] timing {args.repeats} interleaved rounds ...", flush=True)
    # Whatever runs right after a multi-threaded call pays for it: OpenBLAS's threads spin
    # for a while after numpy's batched brute force, taking a core from a 2-core machine
    # (issue 25's raw call, timed right after it in every round, read 5x slow). So each
    # timer starts after a pause that lets such threads go idle, and the order is a fresh
    # permutation each round (a rotation keeps the same neighbours).
    # A timer is (fn, count): fn() answers ``count`` queries in one batched call, or, with
    # count None, queries one at a time and returns the seconds of each call; then its QPS
    # is 1 / the median call (what a call preempted by another process on a shared
    # machine cannot move), and calls / total seconds is kept beside it as ``{metric}_mean``.
    # Each timer also starts with the CPU caches flushed (a write over twice the
    # last-level cache): at 1M a pass over the same queries right after another pass over
    # them (ScaNN's served call after its raw call, or the reverse) found their leaves and
    # reorder vectors still cached and read ~10 us a query faster -- the "unexplained"
    # 12 us between the served and raw calls at 1M cosine was which timer came second.
    samples = collections.defaultdict(list)
    order = [(p, m) for p, ts in timers.items() for m in ts]
    rng = np.random.default_rng(args.seed)
    evict = CacheEvictor()
    for _ in range(args.repeats):
        for j in rng.permutation(len(order)):
            peer, metric = order[j]
            fn, count = timers[peer][metric]
            time.sleep(PAUSE_S)
            evict()
            t0 = time.perf_counter()
            calls = fn()
            if count is not None:  # one batched call of ``count`` queries
                samples[(peer, metric)].append(count / (time.perf_counter() - t0))
            else:
                samples[(peer, metric)].append(1.0 / float(np.median(calls)))
                samples[(peer, metric + "_mean")].append(len(calls) / float(np.sum(calls)))
    for (peer, metric), values in samples.items():
        results[peer][metric] = float(np.median(values))
    results["scann"]["wrapper_qps"] = results["scann"]["qps"]
    for peer, r in results.items():
        for key, value in r.items():
            metrics[f"{peer}_{key}_{name}"] = value
        rows.append({"corpus": name, "index": peer, "recall@10": r["recall@10"],
                     "qps (1 query)": round(r["qps"]), "qps (batch)": round(r["batch_qps"]),
                     "build s": r["build_s"], "tuning s": r.get("tuning_s", 0.0),
                     "MB": r["mb"]})
    s, b = results["scann"], results["bruteforce"]
    # the tuner's promise on queries it never saw (it tunes a lower confidence bound)
    metrics[f"tuned_heldout_recall@10_{name}"] = s["recall@10"]
    metrics[f"tuned_target_recall_{name}"] = args.target_recall
    metrics[f"scann_over_bruteforce_qps_{name}"] = s["qps"] / b["qps"]
    if "hnswlib" in results:
        h = results["hnswlib"]
        metrics[f"scann_over_hnswlib_qps_{name}"] = s["qps"] / h["qps"]
        metrics[f"scann_over_hnswlib_qps_mean_{name}"] = s["qps_mean"] / h["qps_mean"]
        metrics[f"scann_over_hnswlib_batch_qps_{name}"] = s["batch_qps"] / h["batch_qps"]
    print(f"[{name}] load average during the run: {os.getloadavg()}", flush=True)
    metrics[f"loadavg_1m_{name}"] = os.getloadavg()[0]
    print(format_table([r for r in rows if r["corpus"] == name]), flush=True)


def main(argv=None):
    args = build_parser().parse_args(argv)
    if not 0 < args.target_recall <= 1:
        raise ValueError(f"--target-recall must be in (0, 1], got {args.target_recall!r}")
    sizes = [(s.strip().lower(), _size(s)) for s in args.sizes.split(",") if s.strip()]
    distances = [d.strip() for d in args.distances.split(",") if d.strip()]
    for d in distances:
        if d not in ("cos", "dot"):
            raise ValueError(f"--distances entries must be cos or dot, got {d!r}")
    from twotower.artifacts import atomic_directory, check_output_dir

    check_output_dir(args.out, overwrite=args.overwrite)
    metrics, rows = {}, []
    n_q = args.queries + args.tune_queries
    if args.movielens:
        from twotower.index import persistence

        manifest = persistence.read_manifest(args.movielens)
        items = np.load(os.path.join(args.movielens, "item_vectors.npy"))
        rng = np.random.default_rng(args.seed)
        # queries: the items themselves, perturbed (i2i-like), since user vectors differ
        qs = items[rng.integers(len(items), size=n_q)]
        qs = qs + rng.normal(scale=qs.std() * 0.1, size=qs.shape).astype(np.float32)
        dist = "cos" if manifest["distance"] == "cosine" else "dot"
        run_corpus(f"movielens_{dist}", items, qs, dist, args, metrics, rows)
    for label, n in sizes:
        for d in distances:
            items, queries = synthetic(n, args.dim, distance=d, num_queries=n_q,
                                       seed=args.seed)
            run_corpus(f"{label}_{d}", items, queries, d, args, metrics, rows)
            del items, queries
    print()
    print(format_table(rows))
    with atomic_directory(args.out, overwrite=args.overwrite) as tmp:
        write_metrics(tmp, metrics)
        with open(os.path.join(tmp, "results.md"), "w") as f:
            f.write(format_table(rows) + "\n")
    print(f"\nwrote {os.path.join(args.out, 'metrics.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
