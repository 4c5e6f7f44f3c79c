"""The server follows its folder: a new export swapped in under load (index/server/reload.py).

Loopback only, short client timeouts, every wait bounded; nothing asserts a duration.
"""

import http.client
import json
import threading
import time

import numpy as np
import pytest
import tensorflow as tf

import twotower  # noqa: F401
from twotower.index import persistence
from twotower.index.builder import build_index, embed
from twotower.index.retriever import Retriever
from twotower.index.server import IndexServer
from twotower.towers import IDTower

TOKEN = "swap-token"
FAST = dict(timeout_header=2.0, timeout_body=2.0, timeout_keep_alive=2.0)
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def exports():
    """Two retrievers with the same API (IDTower query tower over 20 users, integer ids)
    and different items: A has 300 items (ids 1..300), B 200 (ids 1001..1200)."""
    tf.keras.utils.set_random_seed(7)
    query_tower = IDTower(20, 8)
    users = query_tower(np.arange(20)).numpy()
    a = embed(IDTower(300, 8), np.arange(300), progress=False)
    b = embed(IDTower(200, 8), np.arange(200), progress=False)
    ra = Retriever(build_index(a, np.arange(300) + 1), query_tower)
    rb = Retriever(build_index(b, np.arange(200) + 1001), query_tower)
    return {"A": (ra, a, np.arange(300) + 1), "B": (rb, b, np.arange(200) + 1001),
            "users": users}


def _save(path, retriever):
    return persistence.save(path, retriever, query_example=np.arange(2), overwrite=True)


@pytest.fixture
def server_on(tmp_path, exports):
    """``server_on(token=TOKEN, interval=0)`` -> (server, folder): export A served from a
    folder of its own; stopped at the end."""
    started = []

    def make(token=TOKEN, interval=0.0):
        folder = str(tmp_path / f"index{len(started)}")
        _save(folder, exports["A"][0])
        server = IndexServer(persistence.load(folder), "127.0.0.1", 0, token=token,
                             folder=folder, reload_interval=interval, **FAST)
        server.start_background()
        started.append(server)
        return server, folder

    yield make
    for server in started:
        server.shutdown()


def _call(server, method, path, body=None, headers=None):
    host, port = server.server_address
    conn = http.client.HTTPConnection(host, port, timeout=30)
    try:
        data = None if body is None else json.dumps(body).encode()
        hdrs = {"Content-Type": "application/json"} if data is not None else {}
        hdrs.update(headers or {})
        conn.request(method, path, data, hdrs)
        r = conn.getresponse()
        raw = r.read()
        out = raw.decode() if path == "/metrics" else json.loads(raw)
        return r.status, out, dict(r.getheaders())
    finally:
        conn.close()


def _sha(folder):
    with open(f"{folder}/manifest.json", encoding="utf-8") as f:
        return json.load(f)["manifest_sha256"]


def _top(exports, name, users, k=5):
    """Brute-force top-k item ids of export ``name`` for users (dot product)."""
    _, vectors, ids = exports[name]
    scores = exports["users"][users] @ vectors.T
    return ids[np.argsort(-scores, axis=1)[:, :k]].tolist()


def test_reload_swaps_in_the_new_export(server_on, exports):
    server, folder = server_on()
    old = _sha(folder)
    status, health, headers = _call(server, "GET", "/health")
    assert status == 200 and health["version"]["manifest_sha256"] == old
    assert headers["x-index-version"] == old and health["num_items"] == 300
    assert health["reload"]["folder"] == folder and health["reload"]["last_error"] is None
    body = {"user_ids": [0, 1, 2], "k": 5}
    assert _call(server, "POST", "/u2i", body)[1]["item_ids"] == _top(exports, "A", [0, 1, 2])

    _save(folder, exports["B"][0])
    new = _sha(folder)
    assert new != old
    status, answer, _ = _call(server, "POST", "/admin/reload", headers=AUTH)
    assert status == 200 and answer["reloaded"] is True
    assert answer["version"]["manifest_sha256"] == new
    assert answer["previous"]["manifest_sha256"] == old

    status, health, headers = _call(server, "GET", "/health")
    assert health["version"]["manifest_sha256"] == new == headers["x-index-version"]
    assert health["num_items"] == 200 and health["reload"]["reloads"] == 1
    status, answer, headers = _call(server, "POST", "/u2i", body)
    assert status == 200 and headers["x-index-version"] == new
    assert answer["item_ids"] == _top(exports, "B", [0, 1, 2])
    metrics = _call(server, "GET", "/metrics")[1]
    assert 'twotower_index_reloads_total{result="success"} 1.0' in metrics
    assert "twotower_index_reload_seconds_count 1.0" in metrics


def test_polling_follows_the_folder(server_on, exports):
    server, folder = server_on(interval=0.05)
    _save(folder, exports["B"][0])
    new = _sha(folder)
    deadline = time.monotonic() + 30
    while _call(server, "GET", "/health")[1]["version"]["manifest_sha256"] != new:
        assert time.monotonic() < deadline, "the new export was not picked up"
        time.sleep(0.05)
    answer = _call(server, "POST", "/u2i", {"user_ids": [3], "k": 5})[1]
    assert answer["item_ids"] == _top(exports, "B", [3])


def test_reload_soon_is_what_sighup_does(server_on, exports):
    server, folder = server_on(interval=0)  # no polling: only asked-for reloads
    _save(folder, exports["B"][0])
    new = _sha(folder)
    server.reload_soon()  # `twotower serve` calls it on SIGHUP
    deadline = time.monotonic() + 30
    while _call(server, "GET", "/health")[1]["version"]["manifest_sha256"] != new:
        assert time.monotonic() < deadline, "reload_soon did not reload"
        time.sleep(0.05)


@pytest.mark.parametrize("damage, reason", [
    ("manifest", "checksum"), ("missing", "does not match its manifest"),
    ("other_api", "changes the API")])
def test_a_bad_new_folder_is_refused_and_the_old_keeps_serving(server_on, exports, damage,
                                                               reason):
    server, folder = server_on()
    old = _sha(folder)
    if damage == "other_api":  # a 16-dim index: another schema, so a restart is needed
        tf.keras.utils.set_random_seed(1)
        other = embed(IDTower(50, 16), np.arange(50), progress=False)
        _save(folder, Retriever(build_index(other, np.arange(50)), IDTower(20, 16)))
    else:
        manifest = _save(folder, exports["B"][0])
        if damage == "manifest":  # edited after save: its own checksum no longer matches
            manifest["extra"] = {"edited": True}
            with open(f"{folder}/manifest.json", "w", encoding="utf-8") as f:
                json.dump(manifest, f)
        else:
            import os
            os.remove(f"{folder}/{sorted(manifest['files'])[0]}")
    status, answer, _ = _call(server, "POST", "/admin/reload", headers=AUTH)
    assert status == 409 and reason in answer["error"]
    status, health, headers = _call(server, "GET", "/health")
    assert health["version"]["manifest_sha256"] == old == headers["x-index-version"]
    assert reason in health["reload"]["last_error"] and health["num_items"] == 300
    assert health["reload"]["failures"] == 1 and health["reload"]["reloads"] == 0
    status, answer, _ = _call(server, "POST", "/u2i", {"user_ids": [4], "k": 5})
    assert status == 200 and answer["item_ids"] == _top(exports, "A", [4])
    metrics = _call(server, "GET", "/metrics")[1]
    assert 'twotower_index_reloads_total{result="failure"} 1.0' in metrics
    # a good export afterwards is taken, and clears the error
    _save(folder, exports["B"][0])
    assert _call(server, "POST", "/admin/reload", headers=AUTH)[0] == 200
    health = _call(server, "GET", "/health")[1]
    assert health["reload"]["last_error"] is None and health["num_items"] == 200


def test_admin_reload_needs_the_token(server_on):
    server, _ = server_on()
    assert _call(server, "POST", "/admin/reload")[0] == 401
    assert _call(server, "POST", "/admin/reload",
                 headers={"Authorization": "Bearer wrong"})[0] == 401
    read_only, _ = server_on(token=None)
    status, answer, _ = _call(read_only, "POST", "/admin/reload", headers=AUTH)
    assert status == 403 and "read-only" in answer["error"]
    paths = _call(read_only, "GET", "/openapi.json")[1]["paths"]
    assert "/admin/reload" not in paths
    assert "/admin/reload" in _call(server, "GET", "/openapi.json")[1]["paths"]


def test_a_server_without_a_folder_has_nothing_to_reload(exports):
    server = IndexServer(exports["A"][0], "127.0.0.1", 0, token=TOKEN, **FAST)
    server.start_background()
    try:
        status, answer, headers = _call(server, "POST", "/admin/reload", headers=AUTH)
        assert status == 409 and "not started from a folder" in answer["error"]
        health = _call(server, "GET", "/health")[1]
        assert health["version"]["manifest_sha256"] is None and health["reload"] is None
        assert "x-index-version" not in headers
    finally:
        server.shutdown()


def test_http_updates_are_dropped_by_a_swap(server_on, exports):
    server, folder = server_on()
    vector = exports["B"][1][0].tolist()
    status, _, _ = _call(server, "POST", "/items",
                         {"items": [{"item_id": 5000, "embedding": vector}]}, AUTH)
    assert status == 200
    assert _call(server, "POST", "/i2i", {"item_ids": [5000], "k": 3})[0] == 200
    health = _call(server, "GET", "/health")[1]
    assert health["num_items"] == 301 and health["reload"]["updates_since_export"] == 1
    _save(folder, exports["A"][0])  # the same export again: the source of truth
    assert _call(server, "POST", "/admin/reload", headers=AUTH)[0] == 200
    health = _call(server, "GET", "/health")[1]
    assert health["num_items"] == 300 and health["reload"]["updates_since_export"] == 0
    status, answer, _ = _call(server, "POST", "/i2i", {"item_ids": [5000], "k": 3})
    assert status == 404 and answer["unknown_ids"] == [5000]


def test_http_deletes_are_undone_by_a_swap(server_on, exports):
    server, folder = server_on()
    status, answer, _ = _call(server, "POST", "/items/delete", {"item_ids": [7]}, AUTH)
    assert status == 200 and answer["removed"] == 1
    status, answer, _ = _call(server, "POST", "/i2i", {"item_ids": [7], "k": 3})
    assert status == 404
    health = _call(server, "GET", "/health")[1]
    assert health["num_items"] == 299 and health["reload"]["updates_since_export"] == 1
    _save(folder, exports["A"][0])  # the export still holds item 7: it serves again
    assert _call(server, "POST", "/admin/reload", headers=AUTH)[0] == 200
    health = _call(server, "GET", "/health")[1]
    assert health["num_items"] == 300 and health["reload"]["updates_since_export"] == 0
    status, answer, _ = _call(server, "POST", "/i2i", {"item_ids": [7], "k": 3})
    assert status == 200 and len(answer["item_ids"][0]) == 3


def test_requests_during_swaps_all_succeed(server_on, exports):
    server, folder = server_on()
    stop = threading.Event()
    statuses, answers = [], []
    valid = {"A": set(exports["A"][2].tolist()), "B": set(exports["B"][2].tolist())}

    def client(seed):
        rng = np.random.default_rng(seed)
        while not stop.is_set():
            users = rng.integers(20, size=2).tolist()
            status, answer, _ = _call(server, "POST", "/u2i", {"user_ids": users, "k": 5})
            statuses.append(status)
            answers.append(answer)

    threads = [threading.Thread(target=client, args=(s,), daemon=True) for s in range(3)]
    for t in threads:
        t.start()
    try:
        for name in ("B", "A", "B", "A"):
            _save(folder, exports[name][0])
            status, answer, _ = _call(server, "POST", "/admin/reload", headers=AUTH)
            assert status == 200 and answer["reloaded"] is True
            time.sleep(0.05)  # let a few searches run on this export
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    assert statuses and set(statuses) == {200}
    for answer in answers:  # each answer comes wholly from one export
        ids = {i for row in answer["item_ids"] for i in row}
        assert ids <= valid["A"] or ids <= valid["B"]
    assert _call(server, "GET", "/health")[1]["reload"]["reloads"] == 4
