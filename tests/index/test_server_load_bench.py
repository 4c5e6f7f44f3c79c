"""benchmarks/server_load.py: its exports, the swap it makes, and (slow) a short run of
every phase. Nothing asserts a duration or a rate."""

import importlib.util
import json
import os

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
