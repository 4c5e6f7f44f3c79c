"""Load on `twotower serve`: throughput, latency under idle and slowloris connections,
the cost bound, keep-alive vs new-connection latency, /u2i by user id with and without
the stored user vectors, and a new export swapped in under load. Loopback only, bounded
in time.

The server runs as its own process (``python -m twotower.cli serve``, default flags: it
polls its folder's manifest every 2 s) on a free 127.0.0.1 port, over a copy of the folder
given with --index or one built here: --items synthetic clustered vectors (dim --dim)
under an IDTower query tower of --users users (a user table of their ids and their query
vectors stored, as ``twotower.index.export`` stores them), tuned at k = --k.

The clients run in this process: http.client for the sequential phases, and for the
concurrent ones raw HTTP/1.1 on asyncio protocols that write the next request from the
callback that reads the previous answer, on uvloop's event loop where it is installed.
They must not be what bounds the requests/s on a machine of few cores: each load phase
reports this process's CPU per answer (``client_cpu_ms_per_request``, a few hundredths
of a millisecond) beside the server's (``server_cpu_ms_per_request``), and both servers
of phase 6 are measured by the same clients. Phases, each --seconds long unless said:

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
5. keep-alive vs new connections: one client, sequential POST /u2i (and POST /i2i
   {"item_ids": [i], "k": k}, and GET /health), alternately on one kept-alive http.client
   connection (as requests.Session does) and on a new connection each;
6. /u2i by user id, stored vectors vs the query tower: the load of phase 1 on this
   server (it reads each user's stored query vector) and on a second server over the
   same export saved without user_vectors.npy (the query tower runs for every batch, as
   before vectors were stored), alternated --u2i-rounds times; medians of the rounds;
   and as many rounds of GET /health at the same concurrency (no index work, but
   FastAPI's routing and a 1 KB answer; a plain /u2i by user id skips that routing),
   then one client's sequential /u2i to each server;
7. swap: --clients keep-alive clients POST /u2i for --swap-seconds while the served
   folder is replaced --swaps times, evenly spaced, by an export written beforehand beside
   it and swapped in as ``twotower.artifacts.atomic_directory`` does (one atomic rename
   exchange, then the old version removed); the server finds each by polling. Errors,
   p50/p99 beside phase 1's, the reloads /health counts, the versions the answers'
   X-Index-Version headers name, the reload seconds /metrics reports.

    python benchmarks/server_load.py --out out/bench_server

Writes metrics.json (flat numbers), results.md, server.log (and server-query-tower.log)
to --out, swapped in when the run is done; exit status 1
when the load or swap phase saw errors.
"""

import argparse
import asyncio
import collections
import http.client
import json
import os
import random
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

from twotower.artifacts import atomic_directory, check_output_dir, exchange_paths
from twotower.reporting import format_table, write_metrics


def build_parser():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="output folder (metrics.json, results.md, "
                                                "the servers' logs)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an earlier twotower output at --out")
    p.add_argument("--index", default=None,
                   help="serve a copy of this saved index folder (its users must be int ids "
                        "0..users-1) instead of building a synthetic one; it is never "
                        "changed")
    p.add_argument("--items", type=int, default=20_000, help="synthetic items")
    p.add_argument("--dim", type=int, default=32, help="synthetic embedding dimension")
    p.add_argument("--users", type=int, default=1000, help="users of the IDTower query tower")
    p.add_argument("--k", type=int, default=10, help="k of every /u2i request (and tuning)")
    p.add_argument("--seconds", type=float, default=20.0, help="length of each phase")
    p.add_argument("--clients", type=int, default=64, help="concurrent clients in phases 1, 6 and 7")
    p.add_argument("--idle", type=int, default=1000, help="idle connections in phase 2")
    p.add_argument("--slow", type=int, default=100, help="slowloris clients in phase 3")
    p.add_argument("--latency-requests", type=int, default=300,
                   help="sequential requests for each of keep-alive and new-connection")
    p.add_argument("--u2i-rounds", type=int, default=3,
                   help="phase 6: alternated rounds of /u2i load on the stored user vectors "
                        "and on the query tower, and as many of GET /health (0: skip the "
                        "phase)")
    p.add_argument("--swaps", type=int, default=10,
                   help="phase 7: new exports swapped into the served folder under load "
                        "(0: skip the phase)")
    p.add_argument("--swap-seconds", type=float, default=60.0,
                   help="phase 7: length of the load during which the folder is swapped")
    p.add_argument("--server-flag", action="append", default=[],
                   help="extra flag for `twotower serve` (repeatable), e.g. "
                        "--server-flag=--timeout-header=5")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    return p


# -- the index and the server -----------------------------------------------------------------
def build_retriever(*, items, dim, users, k, seed):
    """A tuned synthetic index (clustered vectors) with an IDTower query tower, a user
    table of the ids 0..users-1 and their query vectors stored (as an export has them)."""
    import tensorflow as tf

    import twotower  # noqa: F401  (Keras 2 set-up)
    from twotower.index.builder import build_index
    from twotower.index.retriever import Retriever, embed_user_table
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
    table = {"user_id": np.arange(users, dtype=np.int64)}
    return Retriever(index, query_tower, user_table=table, user_seen=seen,
                     user_vectors=embed_user_table(query_tower, table, progress=False))


def save_export(path, retriever, *, stored_vectors=True, export=0):
    """Saves ``retriever`` to ``path`` (``twotower.index.save``); ``stored_vectors=False``
    leaves its user_vectors out (the query tower answers by user id); ``export`` is
    written in the manifest's extra, so that each export has its own manifest_sha256.
    Returns the manifest."""
    from twotower.index import persistence
    from twotower.index.towers_io import LoadedTower

    kept = retriever.user_vectors
    example = None if isinstance(retriever.query_tower, (LoadedTower, type(None))) \
        else np.arange(2)
    try:
        if not stored_vectors:
            retriever.user_vectors = None
        return persistence.save(path, retriever, query_example=example,
                                extra={"server_load_export": export})
    finally:
        retriever.user_vectors = kept


def swap_in(staged, folder):
    """What twotower.artifacts.atomic_directory does once a new export is complete: one
    atomic exchange of the two folders, then the previous version (now at ``staged``)
    removed."""
    exchange_paths(staged, folder)
    shutil.rmtree(staged, ignore_errors=True)


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
            log.flush()
            with open(log.name, errors="replace") as f:
                tail = "".join(f.readlines()[-20:])
            raise RuntimeError(f"the server exited with {proc.returncode}; the end of its "
                               f"log:\n{tail}")
        try:
            status, body = http_call(port, "GET", "/health", timeout=2)
            if status == 200:
                return proc, json.loads(body)
        except OSError:
            pass
        time.sleep(0.25)
    proc.kill()
    raise RuntimeError("the server did not answer /health within 300 s")


def stop_server(proc):
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


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


HEALTH_REQUEST = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
_CONTENT_LENGTH = re.compile(rb"(?i)\r\ncontent-length:\s*(\d+)")
_CLOSE = re.compile(rb"(?i)\r\nconnection:\s*close")
_VERSION = re.compile(rb"(?i)\r\nx-index-version:\s*([0-9a-f]+)")
REQUEST_TIMEOUT_S = 30.0


def run_async(coro):
    """Runs ``coro`` on uvloop's event loop where it is installed (asyncio's otherwise):
    the clients' own CPU per request is then a small part of what the server spends."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


class _LoadConnection(asyncio.Protocol):
    """One kept-alive connection of a load client. The next request is written from the
    callback that reads the answer to the previous one: no task switch, no stream
    buffers per request. ``done`` is set to True when the connection should be opened
    again (closed by the server, failed, timed out) and False at the deadline."""

    def __init__(self, client):
        self.client = client
        self.transport = None
        self.buffer = b""
        self.sent_at = None
        self.timer = None
        self.done = asyncio.get_running_loop().create_future()

    def connection_made(self, transport):
        self.transport = transport
        self.send()

    def send(self):
        now = time.perf_counter()
        if now >= self.client.deadline:
            return self.finish(False)
        self.sent_at = now
        self.transport.write(self.client.next_request())
        if self.timer is None:
            self.timer = asyncio.get_running_loop().call_later(REQUEST_TIMEOUT_S,
                                                               self.check_timeout)

    def check_timeout(self):
        self.timer = None
        if self.sent_at is None or self.done.done():
            return
        late = self.sent_at + REQUEST_TIMEOUT_S - time.perf_counter()
        if late > 0:  # a later request: look again when it would be late
            self.timer = asyncio.get_running_loop().call_later(late, self.check_timeout)
            return
        self.sent_at = None
        self.client.failed()
        self.finish(True, abort=True)

    def data_received(self, data):
        self.buffer += data
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0 or self.sent_at is None:
            return
        head = self.buffer[:end + 4]
        m = _CONTENT_LENGTH.search(head)
        total = end + 4 + (int(m.group(1)) if m else 0)
        if len(self.buffer) < total:
            return
        self.buffer = self.buffer[total:]
        seconds = time.perf_counter() - self.sent_at
        self.sent_at = None
        if self.client.answered(int(head[9:12]), head, seconds):
            self.finish(True)  # the server closes this connection: open another
        else:
            self.send()

    def connection_lost(self, exc):
        if self.sent_at is not None:  # a request was in flight
            self.sent_at = None
            self.client.failed()
        self.finish(True)

    def finish(self, reopen, abort=False):
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if not self.done.done():
            self.done.set_result(reopen)
        if self.transport is not None and not self.transport.is_closing():
            self.transport.abort() if abort else self.transport.close()


class _LoadClient:
    """What one load client asks and what it counts (see :func:`load_client`)."""

    def __init__(self, deadline, users, k, stats, latencies, seed, versions, health):
        self.deadline, self.users, self.k, self.health = deadline, users, k, health
        self.stats, self.latencies, self.versions = stats, latencies, versions
        self.rng = random.Random(seed)

    def next_request(self):
        return HEALTH_REQUEST if self.health else u2i_request(
            self.rng.randrange(self.users), self.k)

    def answered(self, status, head, seconds):
        """Counts an answer; True when the server said it closes the connection."""
        self.latencies.append(seconds)
        self.stats["requests"] += 1
        if self.versions is not None:
            v = _VERSION.search(head)
            self.versions[v.group(1).decode() if v else None] += 1
        if status != 200:
            self.stats["errors"] += 1
            self.stats[f"status_{status}"] = self.stats.get(f"status_{status}", 0) + 1
        return _CLOSE.search(head) is not None

    def failed(self):
        """A connection that failed (refused, reset, closed or silent for 30 s with a
        request in flight): a request, an error, a connection error."""
        self.stats["requests"] += 1
        self.stats["errors"] += 1
        self.stats["connection_errors"] += 1


async def load_client(port, deadline, users, k, stats, latencies, seed, versions=None,
                      health=False):
    """POST /u2i by one random user id at a time (``health``: GET /health) on one
    kept-alive connection until ``deadline``, opened again whenever it is closed;
    counts into ``stats``, ``latencies`` and (when given) ``versions`` (a Counter of
    the X-Index-Version headers of the answers)."""
    loop = asyncio.get_running_loop()
    client = _LoadClient(deadline, users, k, stats, latencies, seed, versions, health)
    while time.perf_counter() < deadline:
        try:
            _, conn = await loop.create_connection(lambda: _LoadConnection(client),
                                                   "127.0.0.1", port)
        except OSError:
            client.failed()
            await asyncio.sleep(0.01)
            continue
        if not await conn.done:
            break


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
def phase_load(port, args, users, seconds=None, versions=None, during=None, health=False):
    """--clients keep-alive clients on /u2i (``health``: GET /health) for ``seconds``
    (--seconds); ``during``: an optional coroutine function run beside them (given the
    phase's start time)."""
    stats = {"requests": 0, "errors": 0, "connection_errors": 0}
    latencies = []
    seconds = args.seconds if seconds is None else seconds

    async def run():
        start = time.perf_counter()
        deadline = start + seconds
        await asyncio.gather(*(load_client(port, deadline, users, args.k, stats, latencies,
                                           args.seed + i, versions, health)
                               for i in range(args.clients)),
                             *([during(start)] if during else []))

    t0, cpu0 = time.perf_counter(), time.process_time()
    run_async(run())
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    p50, p99 = percentiles(latencies)
    return {"requests": stats["requests"], "errors": stats["errors"],
            "connection_errors": stats["connection_errors"], "p50_ms": p50, "p99_ms": p99,
            "max_ms": 1000.0 * max(latencies, default=float("nan")),
            "rps": stats["requests"] / elapsed, "clients": args.clients,
            # this process's CPU (the clients) per answer, and in cores
            "client_cpu_ms_per_request": 1000 * cpu / max(1, stats["requests"]),
            "client_cpu_cores": cpu / elapsed,
            **{k: v for k, v in stats.items() if k.startswith("status_")}}


def phase_idle(port, args):
    stats = {"open": 0, "dropped_by_server": 0, "connect_errors": 0}
    probe = run_async(under_background(
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
    probe = run_async(under_background(
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


def phase_latency(port, args, users, num_items=None):
    rng = random.Random(args.seed)
    bodies = [{"user_ids": [rng.randrange(users)], "k": args.k}
              for _ in range(args.latency_requests)]
    paths = [("", "/u2i", bodies)]
    if num_items and num_items > args.k:  # i2i: neighbours of an indexed item (internal ids
        # 0..n-1 in a built folder; a given --index folder's ids may differ: skipped)
        paths.append(("i2i_", "/i2i", [{"item_ids": [rng.randrange(num_items)], "k": args.k}
                                       for _ in range(args.latency_requests)]))
    paths.append(("health_", "/health", [None] * args.latency_requests))
    out = {}
    for name, path, path_bodies in paths:
        keep, fresh = [], []
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        method = "GET" if path == "/health" else "POST"
        for body in path_bodies:  # interleaved: load from elsewhere falls on both alike
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


def phase_u2i_paths(servers, args, users):
    """Phase 1's load on each server of ``servers`` ({name: (port, pid)}), alternated
    --u2i-rounds times (the order reversed every other round, so that drift falls on
    both alike); medians of the rounds, and the server CPU per answer. Then one client's
    sequential POST /u2i on a kept-alive connection to each, interleaved (no batching:
    one request's own cost)."""
    rounds = {name: [] for name in servers}
    names = list(servers)
    for r in range(args.u2i_rounds):
        for name in (names if r % 2 == 0 else names[::-1]):
            port, pid = servers[name]
            cpu0 = process_cpu_seconds(pid)
            m = phase_load(port, args, users)
            m["cpu_ms"] = 1000 * (process_cpu_seconds(pid) - cpu0) / max(1, m["requests"])
            rounds[name].append(m)
            print(f"   round {r + 1}/{args.u2i_rounds} {name}: {m['rps']:.0f} rps, "
                  f"p99 {m['p99_ms']:.1f} ms, {m['errors']} errors", flush=True)
    # GET /health (facts kept in memory, answered on the event loop, no index work) at the
    # same concurrency, once per round: FastAPI's routing and a 1 KB answer, no search
    port, pid = servers[names[0]]
    health_rounds = []
    for _ in range(args.u2i_rounds):
        cpu0 = process_cpu_seconds(pid)
        m = phase_load(port, args, users, health=True)
        m["cpu_ms"] = 1000 * (process_cpu_seconds(pid) - cpu0) / max(1, m["requests"])
        health_rounds.append(m)
    out = {"u2i_rounds": args.u2i_rounds,
           "health_rps_under_load": float(np.median([m["rps"] for m in health_rounds])),
           "health_p50_ms_under_load": float(np.median([m["p50_ms"] for m in health_rounds])),
           "health_p99_ms_under_load": float(np.median([m["p99_ms"] for m in health_rounds])),
           "health_requests_under_load": sum(m["requests"] for m in health_rounds),
           "health_server_cpu_ms_per_request_under_load":
               float(np.median([m["cpu_ms"] for m in health_rounds])),
           "health_client_cpu_ms_per_request_under_load":
               float(np.median([m["client_cpu_ms_per_request"] for m in health_rounds])),
           "health_errors_under_load": sum(m["errors"] for m in health_rounds)}
    for name, ms in rounds.items():
        for key, field in (("rps", "rps"), ("p50_ms", "p50_ms"), ("p99_ms", "p99_ms"),
                           ("server_cpu_ms_per_request", "cpu_ms"),
                           ("client_cpu_ms_per_request", "client_cpu_ms_per_request")):
            out[f"u2i_{key}_{name}"] = float(np.median([m[field] for m in ms]))
        out[f"u2i_errors_{name}"] = sum(m["errors"] for m in ms)
        out[f"u2i_requests_{name}"] = sum(m["requests"] for m in ms)
    rng = random.Random(args.seed)
    conns = {name: http.client.HTTPConnection("127.0.0.1", port, timeout=30)
             for name, (port, _) in servers.items()}
    one = {name: [] for name in servers}
    for _ in range(args.latency_requests):
        body = {"user_ids": [rng.randrange(users)], "k": args.k}
        for name, (port, _) in servers.items():
            t0 = time.perf_counter()
            status, _ = http_call(port, "POST", "/u2i", body, conn=conns[name])
            one[name].append(time.perf_counter() - t0)
            if status != 200:
                raise RuntimeError(f"POST /u2i ({name}) answered {status}")
    for name, conn in conns.items():
        conn.close()
        out[f"u2i_keepalive_p50_ms_{name}"], out[f"u2i_keepalive_p99_ms_{name}"] = \
            percentiles(one[name])
    a, b = rounds["stored_vectors"], rounds["query_tower"]
    out["u2i_stored_over_tower_rps"] = out["u2i_rps_stored_vectors"] / out["u2i_rps_query_tower"]
    ratios = [x["rps"] / y["rps"] for x, y in zip(a, b)]
    out["u2i_stored_over_tower_rps_min_round"] = float(min(ratios))
    out["u2i_stored_over_tower_rps_max_round"] = float(max(ratios))
    return out


def reload_seconds(port):
    """(sum, count) of twotower_index_reload_seconds in GET /metrics."""
    _, text = http_call(port, "GET", "/metrics")
    found = dict(re.findall(rb"(?m)^twotower_index_reload_seconds_(sum|count) (\S+)$", text))
    return float(found.get(b"sum", b"nan")), float(found.get(b"count", b"nan"))


def phase_swap(port, args, users, folder, staged):
    """Phase 1's load for --swap-seconds while ``staged`` (export folders beside
    ``folder``, each with its own manifest_sha256) are swapped in one by one, evenly
    spaced; then waits (up to 60 s) until the server serves the last of them."""
    health0 = json.loads(http_call(port, "GET", "/health")[1])["reload"]
    secs0 = reload_seconds(port)
    versions = collections.Counter()
    swapped = []
    gap = args.swap_seconds / (len(staged) + 1)

    async def swapper(start):
        loop = asyncio.get_running_loop()
        for i, (path, _) in enumerate(staged):
            await asyncio.sleep(max(0.0, start + gap * (i + 1) - time.perf_counter()))
            await loop.run_in_executor(None, swap_in, path, folder)
            swapped.append(time.perf_counter() - start)

    m = phase_load(port, args, users, seconds=args.swap_seconds, versions=versions,
                   during=swapper)
    last = staged[-1][1]
    deadline = time.monotonic() + 60
    while True:
        health = json.loads(http_call(port, "GET", "/health")[1])
        if health["version"]["manifest_sha256"] == last or time.monotonic() > deadline:
            break
        time.sleep(0.25)
    secs1 = reload_seconds(port)
    if health["reload"]["last_error"]:
        print(f"   the last refused reload: {health['reload']['last_error']}", flush=True)
    reloads = health["reload"]["reloads"] - health0["reloads"]
    return {"swaps": len(swapped), "swap_seconds": args.swap_seconds,
            "swap_requests": m["requests"], "swap_errors": m["errors"],
            "swap_connection_errors": m["connection_errors"],
            "swap_p50_ms": m["p50_ms"], "swap_p99_ms": m["p99_ms"], "swap_max_ms": m["max_ms"],
            "swap_rps": m["rps"],
            **{f"swap_{k}": v for k, v in m.items() if k.startswith("status_")},
            "swap_reloads": reloads,
            "swap_reload_failures": health["reload"]["failures"] - health0["failures"],
            "swap_serves_last_export": int(health["version"]["manifest_sha256"] == last),
            "swap_versions_answered": len([v for v in versions if v]),
            "swap_answers_without_version": versions[None],
            "swap_reload_seconds_mean": (secs1[0] - secs0[0]) / max(1.0, secs1[1] - secs0[1])}


def raise_nofile(wanted):
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def main(argv=None):
    args = build_parser().parse_args(argv)
    logs = tempfile.mkdtemp(prefix="twotower-server-load-logs-")
    try:
        return run(args, logs)
    finally:
        shutil.rmtree(logs, ignore_errors=True)


def run(args, logs):
    """The phases; the servers' logs go to ``logs``, copied to --out with the results."""
    for name in ("items", "dim", "users", "k", "clients", "idle", "slow", "latency_requests"):
        if getattr(args, name) < 1:
            raise SystemExit(f"--{name.replace('_', '-')} must be >= 1, got "
                             f"{getattr(args, name)}")
    for name in ("u2i_rounds", "swaps"):
        if getattr(args, name) < 0:
            raise SystemExit(f"--{name.replace('_', '-')} must be >= 0, got "
                             f"{getattr(args, name)}")
    for name in ("seconds", "swap_seconds"):
        if not getattr(args, name) > 0:
            raise SystemExit(f"--{name.replace('_', '-')} must be > 0, got "
                             f"{getattr(args, name)}")
    out = check_output_dir(args.out, overwrite=args.overwrite)
    nofile = raise_nofile(args.idle + args.slow + args.clients + 512)
    if nofile < args.idle + args.slow + 64:
        raise SystemExit(f"the open-files limit ({nofile}) is too low for --idle {args.idle} "
                         f"+ --slow {args.slow}")
    with tempfile.TemporaryDirectory(prefix="twotower-server-load-") as tmp:
        if args.index is None:
            print(f"building a {args.items} x {args.dim} index ...", flush=True)
            retriever = build_retriever(items=args.items, dim=args.dim, users=args.users,
                                        k=args.k, seed=args.seed)
        else:
            from twotower.index import persistence
            retriever = persistence.load(args.index)
        # the served folder is this run's own: phase 7 replaces it
        folder = os.path.join(tmp, "index")
        save_export(folder, retriever)
        tower_folder = None
        if args.u2i_rounds and retriever.user_vectors is None:
            print("phase 6 skipped: the index has no stored user vectors", flush=True)
        elif args.u2i_rounds:
            tower_folder = os.path.join(tmp, "index-query-tower")
            save_export(tower_folder, retriever, stored_vectors=False)
        staged = []  # phase 7's exports, written beside the served folder beforehand
        for i in range(args.swaps):
            path = os.path.join(tmp, f"export-{i + 1}")
            staged.append((path, save_export(path, retriever,
                                             export=i + 1)["manifest_sha256"]))
        del retriever
        port = free_port()
        with open(os.path.join(logs, "server.log"), "w") as log:
            proc, health = start_server(folder, port, log, args.server_flag)
            try:
                users = health.get("users") or args.users
                print(f"server on 127.0.0.1:{port}: {health['num_items']} items, "
                      f"tuned_k {health.get('tuned_k')}; phases of {args.seconds:g} s",
                      flush=True)
                metrics = {"items": health["num_items"], "dim": health["dim"],
                           "seconds_per_phase": args.seconds, "cpus": os.cpu_count() or 0,
                           "load_average_1m_at_start": os.getloadavg()[0]}
                print("1/7 load ...", flush=True)
                cpu0 = process_cpu_seconds(proc.pid)
                metrics.update(phase_load(port, args, users))
                # CPU per answer: unlike latency, it does not depend on what else runs here
                metrics["server_cpu_ms_per_request"] = (
                    1000 * (process_cpu_seconds(proc.pid) - cpu0) / max(1, metrics["requests"]))
                print("2/7 idle connections ...", flush=True)
                idle = phase_idle(port, args)
                print("3/7 slowloris ...", flush=True)
                slow = phase_slow(port, args)
                print("4/7 oversized ...", flush=True)
                metrics.update(phase_oversized(port, health))
                print("5/7 keep-alive vs new connections ...", flush=True)
                metrics.update(phase_latency(
                    port, args, users, None if args.index else health["num_items"]))
                if tower_folder is not None:
                    print("6/7 /u2i by user id: stored vectors vs the query tower ...",
                          flush=True)
                    tower_port = free_port()
                    with open(os.path.join(logs, "server-query-tower.log"), "w") as log2:
                        proc2, _ = start_server(tower_folder, tower_port, log2,
                                                args.server_flag)
                        try:
                            metrics.update(phase_u2i_paths(
                                {"stored_vectors": (port, proc.pid),
                                 "query_tower": (tower_port, proc2.pid)}, args, users))
                        finally:
                            stop_server(proc2)
                if staged:
                    print(f"7/7 {len(staged)} swaps under load for {args.swap_seconds:g} s "
                          "...", flush=True)
                    metrics.update(phase_swap(port, args, users, folder, staged))
            finally:
                stop_server(proc)
    n_idle, n_slow = args.idle, args.slow
    metrics.update({k.replace("under_idle", f"under_idle_{n_idle}"): v for k, v in idle.items()})
    metrics.update({k.replace("under_slow", f"under_slow_{n_slow}"): v for k, v in slow.items()})
    metrics.update({"idle_connections": n_idle, "slow_clients": n_slow})
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
    if "i2i_keepalive_p50_ms" in metrics:
        rows.append({"phase": "POST /i2i, one kept-alive connection",
                     "requests": args.latency_requests, "errors": 0,
                     "p50 ms": metrics["i2i_keepalive_p50_ms"],
                     "p99 ms": metrics["i2i_keepalive_p99_ms"], "rps": ""})
    if "u2i_rps_query_tower" in metrics:
        for name, what in (("stored_vectors", "stored user vectors"),
                           ("query_tower", "the query tower")):
            rows.append({"phase": f"{args.clients} clients, POST /u2i by user id, {what} "
                                  f"(median of {args.u2i_rounds})",
                         "requests": metrics[f"u2i_requests_{name}"],
                         "errors": metrics[f"u2i_errors_{name}"],
                         "p50 ms": metrics[f"u2i_p50_ms_{name}"],
                         "p99 ms": metrics[f"u2i_p99_ms_{name}"],
                         "rps": metrics[f"u2i_rps_{name}"]})
    if "health_rps_under_load" in metrics:
        rows.append({"phase": f"{args.clients} clients, GET /health (no index work, "
                              f"median of {args.u2i_rounds})",
                     "requests": metrics["health_requests_under_load"],
                     "errors": metrics["health_errors_under_load"],
                     "p50 ms": metrics["health_p50_ms_under_load"],
                     "p99 ms": metrics["health_p99_ms_under_load"],
                     "rps": metrics["health_rps_under_load"]})
    if "swap_errors" in metrics:
        rows.append({"phase": f"{args.clients} clients, POST /u2i, {metrics['swaps']} swaps "
                              f"in {args.swap_seconds:g} s",
                     "requests": metrics["swap_requests"], "errors": metrics["swap_errors"],
                     "p50 ms": metrics["swap_p50_ms"], "p99 ms": metrics["swap_p99_ms"],
                     "rps": metrics["swap_rps"]})
    table = format_table(rows, floatfmt="{:.2f}")
    notes = (f"server CPU per /u2i answer under load: "
             f"{metrics['server_cpu_ms_per_request']:.2f} ms (the clients': "
             f"{metrics['client_cpu_ms_per_request']:.3f} ms); load average at start "
             f"{metrics['load_average_1m_at_start']:.1f} on {metrics['cpus']} CPUs.\n"
             f"batch x k over the bound ({metrics['oversized_request_batch']} x "
             f"{metrics['oversized_request_k']}): HTTP {metrics['oversized_request_status']}; "
             f"a 2 MB body: HTTP {metrics['oversized_body_status']}.\n"
             f"idle connections dropped by the server's header timeout (and reopened): "
             f"{idle['idle_dropped_by_server']}; slowloris clients dropped: "
             f"{slow['slow_dropped_by_server']} ({slow['slow_answered_408']} with a 408).")
    if "u2i_rps_query_tower" in metrics:
        notes += (f"\n/u2i by user id, stored vectors over the query tower: "
                  f"{metrics['u2i_stored_over_tower_rps']:.2f}x the requests/s (rounds "
                  f"{metrics['u2i_stored_over_tower_rps_min_round']:.2f}-"
                  f"{metrics['u2i_stored_over_tower_rps_max_round']:.2f}x); server CPU per "
                  f"answer {metrics['u2i_server_cpu_ms_per_request_stored_vectors']:.2f} vs "
                  f"{metrics['u2i_server_cpu_ms_per_request_query_tower']:.2f} ms (the "
                  f"clients' {metrics['u2i_client_cpu_ms_per_request_stored_vectors']:.3f} vs "
                  f"{metrics['u2i_client_cpu_ms_per_request_query_tower']:.3f} ms); one "
                  f"client, kept alive: p50 {metrics['u2i_keepalive_p50_ms_stored_vectors']:.2f}"
                  f" vs {metrics['u2i_keepalive_p50_ms_query_tower']:.2f} ms.")
    if "swap_errors" in metrics:
        notes += (f"\nswaps: {metrics['swaps']} exports swapped in, {metrics['swap_reloads']} "
                  f"reloads ({metrics['swap_reload_failures']} refused; "
                  f"{metrics['swap_reload_seconds_mean']:.2f} s each on average; the "
                  f"longest answer {metrics['swap_max_ms']:.0f} ms vs "
                  f"{metrics['max_ms']:.0f} ms steady), "
                  f"{metrics['swap_versions_answered']} versions named by X-Index-Version, "
                  f"serving the last export: {bool(metrics['swap_serves_last_export'])}; "
                  f"p99 {metrics['swap_p99_ms']:.1f} ms vs {metrics['p99_ms']:.1f} ms "
                  "steady (phase 1).")
    print("\n" + table + "\n\n" + notes)
    with atomic_directory(out, overwrite=args.overwrite) as final:
        for name in os.listdir(logs):
            shutil.copy(os.path.join(logs, name), os.path.join(final, name))
        write_metrics(final, metrics)
        with open(os.path.join(final, "results.md"), "w") as f:
            f.write("# twotower serve under load\n\n" + table + "\n\n" + notes + "\n")
    failed = {"load": metrics["errors"], "swap": metrics.get("swap_errors", 0)}
    for phase, errors in failed.items():
        if errors:
            print(f"server_load: {errors} errors in the {phase} phase", file=sys.stderr)
    return 1 if any(failed.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
