"""benchmarks/server_load.py: its exports, the swap it makes, and (slow) a short run of
every phase. Nothing asserts a duration or a rate."""

import asyncio
import importlib.util
import json
import os
import time

import numpy as np
import pytest

from twotower.index import persistence


def _bench():
    path = os.path.join(os.path.dirname(__file__), "..", "..", "benchmarks", "server_load.py")
    spec = importlib.util.spec_from_file_location("twotower_bench_server_load", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def bench():
    return _bench()


@pytest.fixture(scope="module")
def retriever(bench):
    return bench.build_retriever(items=300, dim=8, users=20, k=5, seed=0)


def test_exports_with_and_without_the_stored_user_vectors(bench, retriever, tmp_path):
    stored, tower = str(tmp_path / "stored"), str(tmp_path / "tower")
    kept = retriever.user_vectors
    a = bench.save_export(stored, retriever, export=1)
    b = bench.save_export(tower, retriever, stored_vectors=False, export=2)
    assert retriever.user_vectors is kept  # the retriever is left as it was
    assert os.path.exists(os.path.join(stored, "user_vectors.npy"))
    assert not os.path.exists(os.path.join(tower, "user_vectors.npy"))
    assert a["manifest_sha256"] != b["manifest_sha256"]
    with_vectors, without = persistence.load(stored), persistence.load(tower)
    assert without.user_vectors is None
    np.testing.assert_array_equal(with_vectors.user_vectors, kept)
    # both answer by user id, the same items (the stored vectors are the tower's output)
    users = np.arange(20)
    ids_a, _ = with_vectors.u2i_users(users, k=5)
    ids_b, _ = without.u2i_users(users, k=5)
    np.testing.assert_array_equal(ids_a, ids_b)


def test_swap_in_replaces_the_folder_and_removes_the_old_version(bench, retriever,
                                                                 tmp_path):
    folder, staged = str(tmp_path / "index"), str(tmp_path / "export-1")
    bench.save_export(folder, retriever, export=0)
    new = bench.save_export(staged, retriever, export=1)["manifest_sha256"]
    bench.swap_in(staged, folder)
    assert not os.path.exists(staged)
    assert persistence.read_manifest(folder)["manifest_sha256"] == new


@pytest.mark.slow
def test_a_short_run_of_every_phase(bench, tmp_path):
    out = str(tmp_path / "out")
    status = bench.main(["--out", out, "--items", "500", "--dim", "8", "--users", "50",
                         "--seconds", "1", "--clients", "8", "--idle", "5", "--slow", "2",
                         "--latency-requests", "5", "--u2i-rounds", "1", "--swaps", "2",
                         "--swap-seconds", "6"])
    with open(os.path.join(out, "metrics.json")) as f:
        metrics = json.load(f)
    assert status == 0 and metrics["errors"] == 0 and metrics["swap_errors"] == 0
    assert metrics["swaps"] == 2 and metrics["swap_serves_last_export"] == 1
    assert 1 <= metrics["swap_reloads"] <= 2 and metrics["swap_reload_failures"] == 0
    assert metrics["swap_versions_answered"] >= 2
    assert metrics["u2i_errors_stored_vectors"] == metrics["u2i_errors_query_tower"] == 0
    assert metrics["u2i_requests_stored_vectors"] > 0 and metrics["u2i_requests_query_tower"] > 0
    assert metrics["i2i_keepalive_p50_ms"] > 0
    for name in ("server.log", "server-query-tower.log", "results.md"):
        assert os.path.exists(os.path.join(out, name))


def test_load_clients_count_answers_reconnects_and_timeouts(monkeypatch):
    """A server that closes every second connection after its answer, answers 503 once,
    and never answers one request: the clients count each, open new connections, and
    time the silent one out."""
    bench = _bench()
    monkeypatch.setattr(bench, "REQUEST_TIMEOUT_S", 0.3)
    seen = {"requests": 0, "connections": 0}

    async def handle(reader, writer):
        seen["connections"] += 1
        n = seen["connections"]
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
                await reader.readexactly(length)
                seen["requests"] += 1
                if seen["requests"] == 5:
                    await asyncio.sleep(3)  # silent: the client gives up first
                    return
                status = b"503 Service Unavailable" if seen["requests"] == 3 else b"200 OK"
                close = n % 2 == 0
                writer.write(b"HTTP/1.1 " + status + b"\r\nContent-Length: 2\r\n" +
                             (b"Connection: close\r\n" if close else b"") + b"\r\n{}")
                await writer.drain()
                if close:
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    stats = {"requests": 0, "errors": 0, "connection_errors": 0}
    latencies = []

    async def run():
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server:
            await bench.load_client(port, time.perf_counter() + 1.5, 10, 3, stats, latencies,
                                    0)

    bench.run_async(run())
    answered = len(latencies)
    assert answered >= 10 and stats["connection_errors"] == 1
    assert stats["requests"] == answered + 1 and stats["errors"] == 2
    # opened again after the server closed one, and after the silent one
    assert stats["status_503"] == 1 and seen["connections"] >= 3
