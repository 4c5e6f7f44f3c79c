"""Load on `twotower serve`: throughput, latency under idle and slowloris connections,
the cost bound, and keep-alive vs new-connection latency. Loopback only, bounded in time.

The server runs as its own process (``python -m twotower.cli serve``, default flags) on a
free 127.0.0.1 port, over a folder given with --index or one built here: --items
synthetic clustered vectors (dim --dim) under an IDTower query tower of --users users,
tuned at k = --k. The clients are asyncio sockets (raw HTTP/1.1) and http.client in
threads, in this process. Phases, each --seconds long:

1. load: --clients concurrent keep-alive clients POST /u2i {"user_ids": [u], "k": k}
   as fast as answered: requests, errors (any status but 200, or a failed connection),
   p50/p99 latency, requests per second;
2. idle: --idle connections opened and held without sending a byte (reopened when the
   server drops them after its header timeout), while a probe opens a new connection
   for GET /health every 20 ms: its p99;
3. slow: --slow slowloris clients sending request headers one byte every 0.2 s (reopened
   when dropped), the same probe;
4. oversized: the status of a request whose batch x k exceeds --max-cost, and of a body
   over --max-request-bytes;
5. keep-alive vs new connections: one client, sequential POST /u2i (and GET /health),
   alternately on one kept-alive http.client connection (as requests.Session does) and
   on a new connection each.

    python benchmarks/server_load.py --out out/bench_server

Writes metrics.json (flat numbers), results.md and server.log to --out; exit status 1
when the load phase saw errors.
"""

import argparse
import asyncio
import http.client
import json
import os
import random
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

from twotower.artifacts import check_output_dir
from twotower.reporting import format_table, write_metrics


def build_parser():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="output folder (metrics.json, results.md, "
                                                "server.log)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an earlier twotower output at --out")
    p.add_argument("--index", default=None,
                   help="serve this saved index folder (its query tower must take int user "
                        "ids) instead of building a synthetic one")
    p.add_argument("--items", type=int, default=20_000, help="synthetic items")
    p.add_argument("--dim", type=int, default=32, help="synthetic embedding dimension")
    p.add_argument("--users", type=int, default=1000, help="users of the IDTower query tower")
    p.add_argument("--k", type=int, default=10, help="k of every /u2i request (and tuning)")
    p.add_argument("--seconds", type=float, default=20.0, help="length of each phase")
    p.add_argument("--clients", type=int, default=64, help="concurrent clients in phase 1")
    p.add_argument("--idle", type=int, default=1000, help="idle connections in phase 2")
    p.add_argument("--slow", type=int, default=100, help="slowloris clients in phase 3")
    p.add_argument("--latency-requests", type=int, default=300,
                   help="sequential requests for each of keep-alive and new-connection")
    p.add_argument("--server-flag", action="append", default=[],
                   help="extra flag for `twotower serve` (repeatable), e.g. "
                        "--server-flag=--timeout-header=5")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    return p


# -- the index and the server -----------------------------------------------------------------
def build_folder(path, *, items, dim, users, k, seed):
    """A tuned synthetic index (clustered vectors) with an IDTower query tower."""
    import tensorflow as tf

    import twotower  # noqa: F401  (Keras 2 set-up)
    from twotower.index import persistence
    from twotower.index.builder import build_index
    from twotower.index.retriever import Retriever
    from twotower.index.tuner import tune
    from twotower.towers import IDTower

    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(64, dim)).astype(np.float32)
    vectors = centers[rng.integers(64, size=items)] + 0.5 * rng.normal(
        size=(items, dim)).astype(np.float32)
    tf.keras.utils.set_random_seed(seed)
    query_tower = IDTower(users, dim)
    index = build_index(vectors.astype(np.float32), distance="dot")
    tune(index, query_tower(np.arange(min(users, 500))).numpy(), k=k, progress=False)
    seen = {u: rng.choice(items, size=20, replace=False) for u in range(users)}
    persistence.save(path, Retriever(index, query_tower, user_seen=seen),
                     query_example=np.arange(2))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(folder, port, log, flags):
    cmd = [sys.executable, "-m", "twotower.cli", "serve", folder, "--host", "127.0.0.1",
           "--port", str(port), *flags]
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode}; see {log.name}")
        try:
            status, body = http_call(port, "GET", "/health", timeout=2)
            if status == 200:
                return proc, json.loads(body)
        except OSError:
            pass
        time.sleep(0.25)
    proc.kill()
    raise RuntimeError("the server did not answer /health within 300 s")


def http_call(port, method, path, body=None, conn=None, timeout=30):
    own = conn is None
    conn = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    data = None if body is None else json.dumps(body).encode()
    conn.request(method, path, body=data,
                 headers={"Content-Type": "application/json"} if data else {})
    resp = conn.getresponse()
    payload = resp.read()
    if own:
        conn.close()
    return resp.status, payload


def process_cpu_seconds(pid):
    """User + system CPU seconds of a process (Linux /proc; NaN elsewhere)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return float("nan")


def percentiles(values_s):
    if not values_s:
        return float("nan"), float("nan")
    a = np.asarray(values_s) * 1000.0
    return float(np.percentile(a, 50)), float(np.percentile(a, 99))


# -- raw asyncio HTTP/1.1 clients -----------------------------------------------------------
def u2i_request(user, k):
    body = json.dumps({"user_ids": [int(user)], "k": k}).encode()
    return (b"POST /u2i HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)


async def read_response(reader):
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    m = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", head)
    body = await reader.readexactly(int(m.group(1))) if m else b""
    return status, body, re.search(rb"(?i)\r\nconnection:\s*close", head) is not None


async def load_client(port, deadline, users, k, stats, latencies, seed):
    rng = random.Random(seed)
    reader = writer = None
    while time.perf_counter() < deadline:
        try:
            if writer is None:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
            request = u2i_request(rng.randrange(users), k)
            t0 = time.perf_counter()
            writer.write(request)
            status, _, close = await asyncio.wait_for(read_response(reader), 30)
            latencies.append(time.perf_counter() - t0)
            stats["requests"] += 1
            if status != 200:
                stats["errors"] += 1
                stats.setdefault(f"status_{status}", 0)
                stats[f"status_{status}"] += 1
            if close:
                writer.close()
                writer = None
        except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError,
                asyncio.LimitOverrunError):
            stats["requests"] += 1
            stats["errors"] += 1
            stats["connection_errors"] += 1
            if writer is not None:
                writer.close()
            writer = None
    if writer is not None:
        writer.close()


async def hold_idle(port, stop, stats):
    """One idle connection, reopened whenever the server closes it."""
    while not stop.is_set():
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            stats["connect_errors"] += 1
            await asyncio.sleep(0.1)
            continue
        stats["open"] += 1
        read = asyncio.ensure_future(reader.read(65536))
        stopped = asyncio.ensure_future(stop.wait())
        done, _ = await asyncio.wait({read, stopped}, return_when=asyncio.FIRST_COMPLETED)
        if read in done:
            stats["dropped_by_server"] += 1
        for task in (read, stopped):
            task.cancel()
        stats["open"] -= 1
        writer.close()


async def slowloris(port, stop, stats, interval, seed):
    """Request headers one byte at a time, never finished; reopened when dropped."""
    rng = random.Random(seed)
    head = (b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: slowloris\r\n"
            b"X-Padding: " + b"a" * 4096)
    while not stop.is_set():
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            stats["connect_errors"] += 1
            await asyncio.sleep(0.1)
            continue
        stats["open"] += 1
        read = asyncio.ensure_future(reader.read(65536))
        i = 0
        try:
            while not stop.is_set() and not read.done():
                writer.write(head[i:i + 1])
                i = (i + 1) % len(head)
                await asyncio.wait({read}, timeout=interval * (0.5 + rng.random()))
        except OSError:
            pass
        if read.done():
            stats["dropped_by_server"] += 1
            if not read.cancelled() and read.exception() is None and \
                    read.result().startswith(b"HTTP/1.1 408"):
                stats["answered_408"] += 1
        read.cancel()
        stats["open"] -= 1
        writer.close()


def probe_health(port, seconds, out):
    """GET /health on a new connection every 20 ms for ``seconds`` (in a thread)."""
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        t0 = time.perf_counter()
        try:
            status, _ = http_call(port, "GET", "/health", timeout=30)
        except OSError:
            status = -1
        out["latencies"].append(time.perf_counter() - t0)
        if status != 200:
            out["errors"] += 1
        time.sleep(0.02)


async def under_background(port, seconds, make_clients, count, stats):
    """Starts ``count`` background clients, waits until they are open, probes /health."""
    stop = asyncio.Event()
    tasks = [asyncio.ensure_future(make_clients(i, stop)) for i in range(count)]
    deadline = time.monotonic() + 60
    while stats["open"] < count and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    stats["open_when_probing"] = stats["open"]
    probe = {"latencies": [], "errors": 0}
    await asyncio.get_running_loop().run_in_executor(None, probe_health, port, seconds, probe)
    stats["open_after_probing"] = stats["open"]
    stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    return probe


# -- phases ------------------------------------------------------------------------------
def phase_load(port, args, users):
    stats = {"requests": 0, "errors": 0, "connection_errors": 0}
    latencies = []

    async def run():
        deadline = time.perf_counter() + args.seconds
        await asyncio.gather(*(load_client(port, deadline, users, args.k, stats, latencies,
                                           args.seed + i) for i in range(args.clients)))

    t0 = time.perf_counter()
    asyncio.run(run())
    elapsed = time.perf_counter() - t0
    p50, p99 = percentiles(latencies)
    return {"requests": stats["requests"], "errors": stats["errors"],
            "connection_errors": stats["connection_errors"], "p50_ms": p50, "p99_ms": p99,
            "rps": stats["requests"] / elapsed, "clients": args.clients,
            **{k: v for k, v in stats.items() if k.startswith("status_")}}


def phase_idle(port, args):
    stats = {"open": 0, "dropped_by_server": 0, "connect_errors": 0}
    probe = asyncio.run(under_background(
        port, args.seconds, lambda i, stop: hold_idle(port, stop, stats), args.idle, stats))
    p50, p99 = percentiles(probe["latencies"])
    return {"health_p50_ms_under_idle": p50, "health_p99_ms_under_idle": p99,
            "health_errors_under_idle": probe["errors"],
            "health_probes_under_idle": len(probe["latencies"]),
            "idle_open_when_probing": stats["open_when_probing"],
            "idle_open_after_probing": stats["open_after_probing"],
            "idle_dropped_by_server": stats["dropped_by_server"],
            "idle_connect_errors": stats["connect_errors"]}


def phase_slow(port, args):
    stats = {"open": 0, "dropped_by_server": 0, "answered_408": 0, "connect_errors": 0}
    probe = asyncio.run(under_background(
        port, args.seconds,
        lambda i, stop: slowloris(port, stop, stats, 0.2, args.seed + i), args.slow, stats))
    p50, p99 = percentiles(probe["latencies"])
    return {"health_p50_ms_under_slow": p50, "health_p99_ms_under_slow": p99,
            "health_errors_under_slow": probe["errors"],
            "health_probes_under_slow": len(probe["latencies"]),
            "slow_open_when_probing": stats["open_when_probing"],
            "slow_dropped_by_server": stats["dropped_by_server"],
            "slow_answered_408": stats["answered_408"],
            "slow_connect_errors": stats["connect_errors"]}


def phase_oversized(port, health):
    limits = health.get("limits", {})
    max_cost, max_batch = limits.get("max_cost", 100_000), limits.get("max_batch", 1024)
    batch = min(max_batch, health["num_items"])
    k = min(health["num_items"], max_cost // batch + 1)
    status, body = http_call(port, "POST", "/u2i", {"user_ids": [0] * batch, "k": k})
    # A body over --max-request-bytes: refused by its Content-Length before it is read.
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(b"POST /u2i HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: "
                     b"application/json\r\nContent-Length: 2097152\r\n\r\n")
        head = sock.recv(65536)
    body_status = int(head[9:12]) if head.startswith(b"HTTP/1.1 ") else -1
    return {"oversized_request_status": status, "oversized_request_batch": batch,
            "oversized_request_k": k, "oversized_body_status": body_status,
            "oversized_request_message_bytes": len(body)}


def phase_latency(port, args, users):
    rng = random.Random(args.seed)
    bodies = [{"user_ids": [rng.randrange(users)], "k": args.k}
              for _ in range(args.latency_requests)]
    out = {}
    for name, path in (("", "/u2i"), ("health_", "/health")):
        keep, fresh = [], []
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        method = "POST" if path == "/u2i" else "GET"
        for b in bodies:  # interleaved, so that load from elsewhere falls on both alike
            body = b if path == "/u2i" else None
            t0 = time.perf_counter()
            status, _ = http_call(port, method, path, body, conn=conn)
            keep.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            status_new, _ = http_call(port, method, path, body)
            fresh.append(time.perf_counter() - t0)
            if (status, status_new) != (200, 200):
                raise RuntimeError(f"{method} {path} answered {status}/{status_new}")
        conn.close()
        out[f"{name}keepalive_p50_ms"], out[f"{name}keepalive_p99_ms"] = percentiles(keep)
        out[f"{name}new_connection_p50_ms"], out[f"{name}new_connection_p99_ms"] = \
            percentiles(fresh)
    return out


def raise_nofile(wanted):
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def main(argv=None):
    args = build_parser().parse_args(argv)
    for name in ("items", "dim", "users", "k", "clients", "idle", "slow", "latency_requests"):
        if getattr(args, name) < 1:
            raise SystemExit(f"--{name.replace('_', '-')} must be >= 1, got "
                             f"{getattr(args, name)}")
    if not args.seconds > 0:
        raise SystemExit(f"--seconds must be > 0, got {args.seconds}")
    out = check_output_dir(args.out, overwrite=args.overwrite)
    nofile = raise_nofile(args.idle + args.slow + args.clients + 512)
    if nofile < args.idle + args.slow + 64:
        raise SystemExit(f"the open-files limit ({nofile}) is too low for --idle {args.idle} "
                         f"+ --slow {args.slow}")
    os.makedirs(out, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="twotower-server-load-") as tmp:
        folder = args.index
        if folder is None:
            folder = os.path.join(tmp, "index")
            print(f"building a {args.items} x {args.dim} index ...", flush=True)
            build_folder(folder, items=args.items, dim=args.dim, users=args.users, k=args.k,
                         seed=args.seed)
        port = free_port()
        with open(os.path.join(out, "server.log"), "w") as log:
            proc, health = start_server(folder, port, log, args.server_flag)
            try:
                users = health.get("users") or args.users
                print(f"server on 127.0.0.1:{port}: {health['num_items']} items, "
                      f"tuned_k {health.get('tuned_k')}; phases of {args.seconds:g} s",
                      flush=True)
                metrics = {"items": health["num_items"], "dim": health["dim"],
                           "seconds_per_phase": args.seconds, "cpus": os.cpu_count() or 0,
                           "load_average_1m_at_start": os.getloadavg()[0]}
                print("1/5 load ...", flush=True)
                cpu0 = process_cpu_seconds(proc.pid)
                metrics.update(phase_load(port, args, users))
                # CPU per answer: unlike latency, it does not depend on what else runs here
                metrics["server_cpu_ms_per_request"] = (
                    1000 * (process_cpu_seconds(proc.pid) - cpu0) / max(1, metrics["requests"]))
                print("2/5 idle connections ...", flush=True)
                idle = phase_idle(port, args)
                print("3/5 slowloris ...", flush=True)
                slow = phase_slow(port, args)
                print("4/5 oversized ...", flush=True)
                metrics.update(phase_oversized(port, health))
                print("5/5 keep-alive vs new connections ...", flush=True)
                metrics.update(phase_latency(port, args, users))
            finally:
                proc.terminate()
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
    n_idle, n_slow = args.idle, args.slow
    metrics.update({k.replace("under_idle", f"under_idle_{n_idle}"): v for k, v in idle.items()})
    metrics.update({k.replace("under_slow", f"under_slow_{n_slow}"): v for k, v in slow.items()})
    metrics.update({"idle_connections": n_idle, "slow_clients": n_slow})
    write_metrics(out, metrics)
    rows = [
        {"phase": f"load: {args.clients} clients, POST /u2i k={args.k}",
         "requests": metrics["requests"], "errors": metrics["errors"],
         "p50 ms": metrics["p50_ms"], "p99 ms": metrics["p99_ms"], "rps": metrics["rps"]},
        {"phase": f"GET /health under {n_idle} idle connections",
         "requests": idle["health_probes_under_idle"],
         "errors": idle["health_errors_under_idle"],
         "p50 ms": idle["health_p50_ms_under_idle"],
         "p99 ms": idle["health_p99_ms_under_idle"], "rps": ""},
        {"phase": f"GET /health under {n_slow} slowloris clients",
         "requests": slow["health_probes_under_slow"],
         "errors": slow["health_errors_under_slow"],
         "p50 ms": slow["health_p50_ms_under_slow"],
         "p99 ms": slow["health_p99_ms_under_slow"], "rps": ""},
        {"phase": "POST /u2i, one kept-alive connection", "requests": args.latency_requests,
         "errors": 0, "p50 ms": metrics["keepalive_p50_ms"],
         "p99 ms": metrics["keepalive_p99_ms"], "rps": ""},
        {"phase": "POST /u2i, a new connection each", "requests": args.latency_requests,
         "errors": 0, "p50 ms": metrics["new_connection_p50_ms"],
         "p99 ms": metrics["new_connection_p99_ms"], "rps": ""},
    ]
    table = format_table(rows, floatfmt="{:.2f}")
    notes = (f"server CPU per /u2i answer under load: "
             f"{metrics['server_cpu_ms_per_request']:.2f} ms; load average at start "
             f"{metrics['load_average_1m_at_start']:.1f} on {metrics['cpus']} CPUs.\n"
             f"batch x k over the bound ({metrics['oversized_request_batch']} x "
             f"{metrics['oversized_request_k']}): HTTP {metrics['oversized_request_status']}; "
             f"a 2 MB body: HTTP {metrics['oversized_body_status']}.\n"
             f"idle connections dropped by the server's header timeout (and reopened): "
             f"{idle['idle_dropped_by_server']}; slowloris clients dropped: "
             f"{slow['slow_dropped_by_server']} ({slow['slow_answered_408']} with a 408).")
    print("\n" + table + "\n\n" + notes)
    with open(os.path.join(out, "results.md"), "w") as f:
        f.write("# twotower serve under load\n\n" + table + "\n\n" + notes + "\n")
    if metrics["errors"]:
        print(f"server_load: {metrics['errors']} errors in the load phase", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
