"""The HTTP server, started in-process on a free loopback port over small saved folders.

Every check talks to 127.0.0.1 only, with short server timeouts (1-2 s) and client
timeouts; nothing asserts a duration.
"""

import http.client
import json
import re
import socket
import threading
import time
import warnings

import numpy as np
import pytest
import tensorflow as tf

import twotower  # noqa: F401
from twotower.index import persistence
from twotower.index.builder import build_index, embed
from twotower.index.retriever import Retriever
from twotower.index.server import IndexServer, IndexService
from twotower.index.server.limits import CoalescingTransport
from twotower.recipes.serve import build_parser, main
from twotower.metrics import ranking as evaluation
from twotower.towers import IDTower

TOKEN = "s3cret-token"
FAST = dict(timeout_header=1.0, timeout_body=1.0, timeout_keep_alive=2.0)


@pytest.fixture(scope="module")
def int_folder(tmp_path_factory):
    """800 items with integer ids 1..800, an IDTower over 20 users, no vocabulary."""
    tf.keras.utils.set_random_seed(3)
    query_tower, item_tower = IDTower(20, 8), IDTower(800, 8)
    items = embed(item_tower, np.arange(800), progress=False)
    path = str(tmp_path_factory.mktemp("srv") / "index")
    persistence.save(path, Retriever(build_index(items, np.arange(800) + 1), query_tower),
                     query_example=np.arange(2))
    return path, query_tower(np.arange(20)).numpy(), items


@pytest.fixture(scope="module")
def served(int_folder):
    """Read-only server with small limits."""
    path, users, items = int_folder
    server = IndexServer(persistence.load(path), "127.0.0.1", 0, max_request_bytes=8192,
                         max_batch=16, max_cost=1000, max_concurrency=2, **FAST)
    server.start_background()
    yield server, users, items
    server.shutdown()


@pytest.fixture(scope="module")
def writable(tmp_path_factory):
    """String ids (items "sku-i", users "u-j"), seen items, an item tower, a token."""
    tf.keras.utils.set_random_seed(5)
    query_tower, item_tower = IDTower(6, 8), IDTower(400, 8)
    items = embed(item_tower, np.arange(300), progress=False)
    retriever = Retriever(build_index(items, np.arange(300)), query_tower, item_tower,
                          user_seen={0: [0, 1, 2], 2: [7]},
                          item_vocab=[f"sku-{i}" for i in range(300)],
                          user_vocab=[f"u-{j}" for j in range(6)])
    path = str(tmp_path_factory.mktemp("srv") / "index")
    persistence.save(path, retriever, query_example=np.arange(2), item_example=np.arange(2))
    server = IndexServer(persistence.load(path), "127.0.0.1", 0, token=TOKEN, **FAST)
    server.start_background()
    yield server, query_tower(np.arange(6)).numpy(), items, item_tower
    server.shutdown()


def _call(server, method, path, body=None, raw=None, headers=None, conn=None):
    host, port = server.server_address
    own = conn is None
    conn = conn or http.client.HTTPConnection(host, port, timeout=30)
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    hdrs = {"Content-Type": "application/json"} if data is not None else {}
    hdrs.update(headers or {})
    conn.request(method, path, body=data, headers=hdrs)
    resp = conn.getresponse()
    payload = resp.read()
    assert resp.getheader("content-type", "").startswith(
        "application/json" if path != "/metrics" else "text/plain"), payload[:200]
    out = resp.status, (json.loads(payload) if path != "/metrics" else payload.decode())
    if own:
        conn.close()
    return out


def _ids(names):
    return [int(n.split("-")[1]) for n in names]


# -- the command line -----------------------------------------------------------------
def test_binds_loopback_by_default_and_every_flag_has_help():
    parser = build_parser()
    assert parser.parse_args(["some/dir"]).host == "127.0.0.1"
    for action in parser._actions:
        assert action.help, action.dest


@pytest.mark.parametrize("argv,match", [
    (["/no/such/folder"], "does not exist"),
    (["{tmp}"], "cannot load index folder"),
    (["{tmp}", "--max-cost", "0"], "--max-cost: must be > 0"),
    (["{tmp}", "--port", "70000"], r"--port must be in \[0, 65535\]"),
    (["{tmp}", "--token-file", "/no/such/token"], "--token-file"),
    (["{tmp}", "--reload-interval", "-1"], "--reload-interval must be >= 0"),
])
def test_serve_errors_are_one_line_and_exit_2(tmp_path, capsys, argv, match):
    (tmp_path / "junk.txt").write_text("not an index")
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    try:
        code = main(argv)
    except SystemExit as e:
        code = e.code
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and re.search(match, err), err
    assert "Traceback" not in err


def test_serve_port_in_use_is_one_line_exit_2(int_folder, capsys):
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    try:
        code = main([int_folder[0], "--port", str(taken.getsockname()[1])])
    finally:
        taken.close()
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "cannot listen" in err, err


# -- answers ----------------------------------------------------------------------------
def test_health(served):
    server, _, _ = served
    status, body = _call(server, "GET", "/health")
    assert status == 200 and body["status"] == "ok" and body["num_items"] == 800
    assert body["dim"] == 8 and body["towers"] == {"query": True, "item": False}
    assert body["read_only"] is True and body["users"] == 20 and body["distance"] == "dot"
    assert "tuned_k" in body


def test_u2i_by_user_id_and_embeddings_match_brute_force(served):
    server, users, items = served
    seen = [1, 2, 3]  # left out of every query's answer
    status, body = _call(server, "POST", "/u2i",
                         {"user_ids": [0, 5, 7, 19], "k": 5, "exclude": seen})
    assert status == 200 and body["warnings"] == []
    want, _ = evaluation.top_k(users[[0, 5, 7, 19]], items, 5, exclude=[[0, 1, 2]] * 4)
    np.testing.assert_array_equal(body["item_ids"], want + 1)
    status, body2 = _call(server, "POST", "/u2i", {"embeddings": users[[0, 5, 7, 19]].tolist(),
                                                    "k": 5, "exclude": seen})
    assert status == 200 and body2["item_ids"] == body["item_ids"]


def test_i2i_matches_brute_force(served):
    server, _, items = served
    status, body = _call(server, "POST", "/i2i", {"item_ids": [1, 400], "k": 3})
    assert status == 200
    want, _ = evaluation.top_k(items[[0, 399]], items, 3, exclude=[[0], [399]])
    np.testing.assert_array_equal(body["item_ids"], want + 1)
    # fewer than k left after exclusions: the row is padded with nulls, never a fake id
    status, body = _call(server, "POST", "/i2i", {"item_ids": [1], "k": 799,
                                                  "exclude": [2, 3]})
    assert status == 200 and body["item_ids"][0][-2:] == [None, None]
    assert body["scores"][0][-2:] == [None, None] and None not in body["item_ids"][0][:-2]


@pytest.mark.parametrize("method,path,body,raw,code,match", [
    ("POST", "/u2i", None, b"{not json", 400, "not valid JSON"),
    ("POST", "/u2i", None, b"", 400, "body"),
    ("POST", "/u2i", [1, 2], None, 400, "must be a JSON object"),
    ("POST", "/u2i", {"user_ids": [1], "k": 0}, None, 400, "k: .*greater than or equal to 1"),
    ("POST", "/u2i", {"user_ids": [1], "k": 1001}, None, 400,
     "k: .*less than or equal to 1000, got 1001"),  # k <= --max-cost: the schema says so
    ("POST", "/u2i", {"user_ids": [1], "k": "3"}, None, 400, "k: .*valid integer"),
    ("POST", "/u2i", {"user_ids": [1.5]}, None, 400,
     "user_ids.0: an id of this index's users must be an int64 integer, got 1.5"),
    ("POST", "/u2i", {"user_ids": ["u-1"]}, None, 400,
     "user_ids.0: an id of this index's users must be an int64 integer, got 'u-1'"),
    ("POST", "/u2i", {"user_ids": [1], "exclude": [2 ** 70]}, None, 400,
     "exclude.0: an id of this index's items must be an int64 integer"),
    ("POST", "/u2i", {"user_ids": [1], "exclude": [[1]]}, None, 400,
     r"exclude.0: .* got \[1\]"),  # one list for every query, not one per query
    ("POST", "/u2i", {"embeddings": [[0.1] * 3]}, None, 400,
     "embeddings.0: List should have at least 8 items"),
    ("POST", "/u2i", {"embeddings": [[0.1] * 8, [0.1]]}, None, 400,
     "embeddings.1: List should have at least 8 items"),
    ("POST", "/u2i", {"embeddings": [[1e300] * 8]}, None, 400,
     "embeddings.0.0: Input should be less than or equal to 1000000000000000"),
    ("POST", "/u2i", {"user_ids": [1], "embeddings": [[0.0] * 8]}, None, 400,
     "exactly one of"),
    ("POST", "/u2i", {"user_ids": [1], "bogus": 1}, None, 400, "bogus: Extra inputs"),
    ("POST", "/u2i", {"user_ids": [1], "exclude_seen": "no"}, None, 400, "exclude_seen"),
    ("POST", "/u2i", {"features": [3, 20], "k": 1000}, None, 400,  # 400 before the 413
     r"features\[1\]: expected an integer in \[0, 19\], got 20"),  # the IDTower's range
    ("POST", "/u2i", {"user_ids": [1] * 17, "k": 1}, None, 400,
     "user_ids: List should have at most 16 items"),  # --max-batch, stated by the schema
    ("POST", "/i2i", {"item_ids": [1], "k": 1001}, None, 400, "k: .*less than or equal"),
    ("POST", "/i2i", {"items": [1]}, None, 400, r"give exactly one of \['item_ids'\]"),
    ("POST", "/i2i", {"features": [1, 2]}, None, 400,
     "/i2i of this index takes item_ids; not features"),
])
def test_bad_requests_get_400_json_and_the_server_keeps_serving(served, method, path, body,
                                                                raw, code, match):
    server, _, _ = served
    status, answer = _call(server, method, path, body=body, raw=raw)
    assert status == code and re.search(match, answer["error"]), answer
    assert _call(server, "GET", "/health")[0] == 200


@pytest.mark.parametrize("method,path,code,match", [
    ("GET", "/nope", 404, "unknown path '/nope'"),
    ("POST", "/nope", 404, "unknown path"),
    ("GET", "/u2i", 405, "method GET not allowed .* POST"),
    ("PUT", "/i2i", 405, "method PUT not allowed"),
    ("DELETE", "/health", 405, "not allowed"),
    ("PUT", "/items", 405, "allowed: DELETE, POST"),
])
def test_unknown_routes_and_methods_are_json(served, method, path, code, match):
    server, _, _ = served
    status, answer = _call(server, method, path, body={} if method != "GET" else None)
    assert status == code and re.search(match, answer["error"]), answer


@pytest.mark.parametrize("method", ["PUT", "PATCH", "OPTIONS"])
def test_a_405_allows_every_method_of_the_path(served, method):
    """/items has a POST and a DELETE route: the Allow header names both (Starlette's
    own names the first route that matched the path only)."""
    server, _, _ = served
    conn = http.client.HTTPConnection(*server.server_address[:2], timeout=30)
    conn.request(method, "/items", body=b"{}", headers={"Content-Type": "application/json"})
    response = conn.getresponse()
    response.read()
    conn.close()
    assert response.status == 405 and response.getheader("allow") == "DELETE, POST"


def test_unknown_ids_are_404_naming_them(served):
    server, _, _ = served
    status, answer = _call(server, "POST", "/i2i", {"item_ids": [3, 0]})
    assert status == 404 and answer["unknown_ids"] == [0] and "0" in answer["error"]
    status, answer = _call(server, "POST", "/u2i", {"user_ids": [99]})
    assert status == 404 and answer["unknown_ids"] == [99], answer


def test_size_bounds_are_413(served):
    server, _, _ = served
    status, answer = _call(server, "POST", "/u2i", raw=b"x" * 9000)
    assert status == 413 and "--max-request-bytes 8192" in answer["error"]
    status, answer = _call(server, "POST", "/u2i", {"user_ids": [1] * 10, "k": 101})
    assert status == 413 and re.search(r"cost 1010 .* exceeds --max-cost 1000",
                                       answer["error"])
    status, answer = _call(server, "POST", "/u2i", {"user_ids": [1], "k": 300,
                                                    "exclude": list(range(1, 800))})
    assert status == 413 and "exclude list 799" in answer["error"], answer
    assert _call(server, "GET", "/health")[0] == 200


def test_read_only_server_refuses_updates(served):
    server, _, _ = served
    for method, path in (("POST", "/items"), ("DELETE", "/items"), ("POST", "/items/delete")):
        body = {"items": [{"item_id": 5000, "embedding": [1.0] * 8}]} if path == "/items" \
            and method == "POST" else {"item_ids": [1]}
        status, answer = _call(server, method, path, body,
                               headers={"Authorization": f"Bearer {TOKEN}"})
        assert status == 403 and "read-only" in answer["error"] and "--token-file" in \
            answer["error"]
    assert _call(server, "GET", "/health")[1]["num_items"] == 800


def test_concurrency_limit_is_429_and_updates_exclude_searches(served):
    """max_concurrency=2: two searches wait on the index lock (held here, as an update
    holds it), a third gets 429 at once; the two finish once the lock is released."""
    server, users, _ = served
    service = server.app.app.state.service
    middleware = server.app
    results = []
    lock = service.lock
    lock._acquire(True)
    threads = [threading.Thread(target=lambda: results.append(_call(
        server, "POST", "/u2i", {"user_ids": [0], "k": 3})[0])) for _ in range(2)]
    try:
        for t in threads:
            t.start()
        deadline = time.monotonic() + 20
        while middleware.in_progress < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert middleware.in_progress == 2
        status, answer = _call(server, "POST", "/u2i", {"user_ids": [0], "k": 3})
        assert status == 429 and "--max-concurrency 2" in answer["error"]
        assert _call(server, "GET", "/health")[0] == 200  # not counted
        assert results == []  # the searches wait for the "update"
    finally:
        lock._release(True)
        for t in threads:
            t.join(20)
    assert results == [200, 200]


def test_metrics_and_openapi(served):
    server, _, _ = served
    _call(server, "POST", "/u2i", {"user_ids": [1]})
    _call(server, "GET", "/nope")
    status, text = _call(server, "GET", "/metrics")
    assert status == 200
    assert re.search(r'twotower_http_requests_total\{endpoint="/u2i",method="POST",'
                     r'status="200"\} [1-9]', text)
    assert 'twotower_http_errors_total{endpoint="other",status="404"}' in text
    assert 'twotower_http_request_duration_seconds_bucket{endpoint="/u2i",le="0.005"}' in text
    status, spec = _call(server, "GET", "/openapi.json")
    assert status == 200 and {"/u2i", "/i2i", "/health", "/metrics"} <= set(spec["paths"])
    assert "/items" not in spec["paths"]  # a read-only server documents no updates
    assert list(spec["paths"]["/metrics"]["get"]["responses"]["200"]["content"]) == [
        "text/plain"]
    u2i = spec["paths"]["/u2i"]["post"]
    assert "422" not in u2i["responses"] and "413" in u2i["responses"]
    kinds = spec["components"]["schemas"]
    assert [ref["$ref"].rsplit("/", 1)[1] for ref in
            u2i["requestBody"]["content"]["application/json"]["schema"]["oneOf"]] == [
        "U2IByUsers", "U2IByFeatures", "U2IByEmbeddings"]
    assert kinds["U2IByUsers"]["properties"]["user_ids"]["items"]["maximum"] == 2 ** 63 - 1
    assert kinds["U2IByUsers"]["properties"]["user_ids"]["maxItems"] == 16
    host, port = server.server_address
    conn = http.client.HTTPConnection(host, port, timeout=30)
    conn.request("GET", "/docs")
    resp = conn.getresponse()
    assert resp.status == 200 and b"swagger" in resp.read().lower()
    conn.close()


# -- connections --------------------------------------------------------------------------
def _read_until_closed(sock, limit=30.0):
    """Everything the server sends until it closes the connection (bounded)."""
    sock.settimeout(limit)
    chunks = []
    while True:
        try:
            data = sock.recv(65536)
        except ConnectionResetError:  # closed while bytes of ours were still unread
            data = b""
        if not data:
            return b"".join(chunks)
        chunks.append(data)


def test_slow_header_client_is_dropped_while_health_answers(served):
    server, _, _ = served
    slow = socket.create_connection(server.server_address, timeout=30)
    try:
        slow.sendall(b"GET /hea")  # a slowloris: the headers never finish
        assert _call(server, "GET", "/health")[0] == 200
        try:
            slow.sendall(b"l")  # a byte more does not extend the deadline
        except (BrokenPipeError, ConnectionResetError):
            pass  # already dropped
        answer = _read_until_closed(slow)
    finally:
        slow.close()
    assert answer.startswith(b"HTTP/1.1 408") and b'"error"' in answer, answer
    idle = socket.create_connection(server.server_address, timeout=30)
    try:
        assert _read_until_closed(idle) == b""  # sent nothing: closed quietly
    finally:
        idle.close()
    assert _call(server, "GET", "/health")[0] == 200


def test_slow_body_is_408_and_malformed_http_is_json_400(served):
    server, _, _ = served
    slow = socket.create_connection(server.server_address, timeout=30)
    try:
        slow.sendall(b"POST /u2i HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 100\r\n\r\n{\"user_ids\"")
        answer = _read_until_closed(slow)
    finally:
        slow.close()
    assert answer.startswith(b"HTTP/1.1 408") and b"request body not received" in answer
    bad = socket.create_connection(server.server_address, timeout=30)
    try:
        bad.sendall(b"NOT HTTP AT ALL\r\n\r\n")
        answer = _read_until_closed(bad)
    finally:
        bad.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400") and "error" in json.loads(body)


def test_keep_alive_connection_serves_many_requests_without_nagle(served):
    server, _, _ = served
    host, port = server.server_address
    conn = http.client.HTTPConnection(host, port, timeout=30)
    for _ in range(5):
        assert _call(server, "POST", "/u2i", {"user_ids": [2], "k": 2}, conn=conn)[0] == 200
        assert _call(server, "GET", "/health", conn=conn)[0] == 200
    # the server side of this connection has Nagle off (asyncio sets TCP_NODELAY)
    mine = conn.sock.getsockname()
    nodelay = [c.transport.get_extra_info("socket").getsockopt(socket.IPPROTO_TCP,
                                                                socket.TCP_NODELAY)
               for c in list(server.server.server_state.connections)
               if c.client is not None and tuple(c.client) == mine]
    conn.close()
    assert nodelay and all(nodelay)


def test_a_response_is_written_in_one_send():
    class Recorder:
        def __init__(self):
            self.writes = []

        def write(self, data):
            self.writes.append(data)

        def close(self):
            pass

    raw = Recorder()
    t = CoalescingTransport(raw)
    t.write(b"HTTP/1.1 100 Continue\r\n\r\n")  # interim answers go at once
    assert raw.writes == [b"HTTP/1.1 100 Continue\r\n\r\n"]
    t.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
    t.write(b"{}")
    t.write(b"")
    assert len(raw.writes) == 1
    t.flush()
    assert raw.writes[1] == b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}"
    t.write(b"HTTP/1.1 404 Not Found\r\n\r\n")
    t.close()  # closing sends what is held
    assert raw.writes[2] == b"HTTP/1.1 404 Not Found\r\n\r\n"


# -- string ids, seen items, updates -----------------------------------------------------------
def test_string_ids_with_seen_items_excluded(writable):
    server, users, items, _ = writable
    status, health = _call(server, "GET", "/health")
    assert health["read_only"] is False and health["users"] == 6
    assert health["users_with_seen"] == 2 and health["id_kind"] == "str"
    status, body = _call(server, "POST", "/u2i", {"user_ids": ["u-0", "u-2"], "k": 4})
    assert status == 200 and all(i.startswith("sku-") for row in body["item_ids"] for i in row)
    want, _ = evaluation.top_k(users[[0, 2]], items, 4, exclude=[[0, 1, 2], [7]])
    assert [_ids(row) for row in body["item_ids"]] == want.tolist()
    status, body = _call(server, "POST", "/u2i", {"user_ids": ["u-0"], "k": 4,
                                                  "exclude_seen": False})
    want, _ = evaluation.top_k(users[[0]], items, 4)
    assert status == 200 and [_ids(row) for row in body["item_ids"]] == want.tolist()
    status, body = _call(server, "POST", "/i2i", {"item_ids": ["sku-3"], "k": 3,
                                                  "exclude": ["sku-0"]})
    want, _ = evaluation.top_k(items[[3]], items, 3, exclude=[[3, 0]])
    assert status == 200 and [_ids(row) for row in body["item_ids"]] == want.tolist()
    status, answer = _call(server, "POST", "/u2i", {"user_ids": ["u-0", "nobody"]})
    assert status == 404 and answer["unknown_ids"] == ["nobody"], answer
    status, answer = _call(server, "POST", "/i2i", {"item_ids": ["sku-999"]})
    assert status == 404 and answer["unknown_ids"] == ["sku-999"], answer
    status, answer = _call(server, "POST", "/i2i", {"item_ids": [3]})
    assert status == 400 and "items must be a string" in answer["error"], answer


def test_i2i_by_features_embeds_a_new_item(writable):
    server, _, items, item_tower = writable
    new = item_tower(np.array([350])).numpy()  # an id the item tower knows, not indexed
    status, body = _call(server, "POST", "/i2i", {"features": [350], "k": 5})
    want, _ = evaluation.top_k(new, items, 5)
    assert status == 200 and [_ids(row) for row in body["item_ids"]] == want.tolist()


def test_updates_need_the_token_and_are_searchable(writable):
    server, _, _, item_tower = writable
    vec = [5.0] * 8
    upsert = {"items": [{"item_id": "sku-new", "embedding": vec}]}
    status, answer = _call(server, "POST", "/items", upsert)
    assert status == 401 and "bearer token" in answer["error"]
    status, answer = _call(server, "POST", "/items", upsert,
                           headers={"Authorization": "Bearer wrong"})
    assert status == 401
    auth = {"Authorization": f"Bearer {TOKEN}"}
    status, answer = _call(server, "POST", "/items", upsert, headers=auth)
    assert status == 200 and answer["added"] == 1 and answer["num_items"] == 301
    assert answer["item_ids"] == ["sku-new"]
    status, body = _call(server, "POST", "/u2i", {"embeddings": [vec], "k": 1})
    assert body["item_ids"] == [["sku-new"]]
    # rows by embedding and by features in one request; an id given twice: the last wins
    status, answer = _call(server, "POST", "/items", {"items": [
        {"item_id": "sku-new2", "embedding": [-5.0] * 8},
        {"item_id": "sku-new3", "features": 370},
        {"item_id": "sku-new2", "features": 360}]}, headers=auth)
    assert status == 200 and (answer["added"], answer["replaced"]) == (2, 0)
    assert answer["item_ids"] == ["sku-new3", "sku-new2"]
    status, body = _call(server, "POST", "/u2i", {
        "embeddings": item_tower(np.array([360])).numpy().tolist(), "k": 1})
    assert body["item_ids"] == [["sku-new2"]]  # item 360's embedding, not [-5, ...]
    status, answer = _call(server, "DELETE", "/items", {"item_ids": ["sku-new"]}, headers=auth)
    assert status == 200 and answer["removed"] == 1
    status, answer = _call(server, "POST", "/items/delete",
                           {"item_ids": ["sku-new2", "sku-new3", "sku-new2"]}, headers=auth)
    assert status == 200 and answer["num_items"] == 300 and answer["removed"] == 2
    status, body = _call(server, "POST", "/u2i", {"embeddings": [vec], "k": 1})
    assert body["item_ids"] != [["sku-new"]]
    # a delete is idempotent: ids not indexed (any more) are listed, nothing fails
    status, answer = _call(server, "POST", "/items/delete", {"item_ids": ["sku-new", "sku-1"]},
                           headers=auth)
    assert status == 200 and answer["removed"] == 1 and answer["unknown_ids"] == ["sku-new"]
    status, answer = _call(server, "POST", "/items", {"items": [
        {"item_id": "sku-1", "embedding": vec[:3]}]}, headers=auth)
    assert status == 400 and "items.0.embedding: List should have at least 8" in \
        answer["error"], answer
    status, answer = _call(server, "POST", "/items", {"items": [
        {"item_id": "", "embedding": vec}]}, headers=auth)
    assert status == 400 and "items.0.item_id" in answer["error"], answer


def test_a_delete_that_would_empty_the_index_is_a_409():
    tf.keras.utils.set_random_seed(1)
    items = np.random.default_rng(0).normal(size=(3, 4)).astype(np.float32)
    server = IndexServer(Retriever(build_index(items, item_ids=[4, 5, 6])), "127.0.0.1", 0,
                         token=TOKEN, **FAST)
    server.start_background()
    try:
        auth = {"Authorization": f"Bearer {TOKEN}"}
        status, answer = _call(server, "DELETE", "/items", {"item_ids": [4, 5, 6, 7]},
                               headers=auth)
        assert status == 409 and "leave the index empty" in answer["error"], answer
        status, answer = _call(server, "DELETE", "/items", {"item_ids": [4, 5, 7]},
                               headers=auth)
        assert status == 200 and answer["item_ids"] == [4, 5] and answer["unknown_ids"] == [7]
        # one item left: i2i has no neighbour to give, only nulls (and says why)
        status, body = _call(server, "POST", "/i2i", {"item_ids": [6], "k": 2})
        assert status == 200 and body["item_ids"] == [[None, None]]
        assert body["warnings"] == ["k=2 exceeds the 0 items a query can get here: each row "
                                    "ends with 2 nulls"]
    finally:
        server.shutdown()


@pytest.mark.parametrize("asked", [
    ["u-0", "u-1", "u-2", "u-3", "u-4", "u-5", "u-1", "u-2"],
    ["u-0", "u-1", "nobody", "u-2", "u-3", "u-4", "u-5", "u-1"],
])
def test_concurrent_user_requests_are_batched_and_each_gets_its_answer(writable, asked,
                                                                      monkeypatch):
    """Requests queued while the index is busy are answered in one batch; an unknown user
    in one of them is that request's 404 only."""
    server, users, items, _ = writable
    app = server.app.app
    service, batcher = app.state.service, app.state.batcher
    results = {}

    def client(j):
        results[j] = _call(server, "POST", "/u2i", {"user_ids": [asked[j]], "k": 3})

    def wait_for(condition):
        deadline = time.monotonic() + 20
        while not condition() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert condition()

    before, fallbacks = batcher.batches, service.batch_fallbacks
    monkeypatch.setattr(batcher, "parallel", 1)  # one batch at a time: a fixed order
    service.lock._acquire(True)  # the index is busy (as during an update)
    threads = [threading.Thread(target=client, args=(j,)) for j in range(len(asked))]
    try:
        threads[0].start()  # starts a batch of its own at once, and waits for the lock
        wait_for(lambda: batcher.batches == before + 1)
        for t in threads[1:]:  # these queue up behind it
            t.start()
        wait_for(lambda: sum(len(q) for q in batcher.pending.values()) == len(asked) - 1)
    finally:
        service.lock._release(True)
        for t in threads:
            if t.is_alive() or t.ident is not None:
                t.join(20)
    assert batcher.batches - before == 2  # the seven queued requests shared one batch
    assert (service.batch_fallbacks > fallbacks) == ("nobody" in asked)
    seen = {0: [0, 1, 2], 2: [7]}
    for j, user in enumerate(asked):
        status, body = results[j]
        if user == "nobody":
            assert status == 404 and body["unknown_ids"] == ["nobody"]
            continue
        u = int(user.split("-")[1])
        want, _ = evaluation.top_k(users[[u]], items, 3, exclude=[seen.get(u, [])])
        assert status == 200 and [_ids(row) for row in body["item_ids"]] == want.tolist()


def test_connection_cap_and_chunked_body_bound(served):
    """Over --max-connections a client gets a JSON 503 and is closed; a chunked body over
    --max-request-bytes is a 413."""
    server, _, _ = served
    small = IndexServer(server.retriever, "127.0.0.1", 0, max_connections=2,
                        max_request_bytes=1000, **FAST)
    small.start_background()
    try:
        held = [socket.create_connection(small.server_address, timeout=30) for _ in range(2)]
        try:
            deadline = time.monotonic() + 20  # the server holds both before the third
            while len(small.server.server_state.connections) < 2 and \
                    time.monotonic() < deadline:
                time.sleep(0.01)
            extra = socket.create_connection(small.server_address, timeout=30)
            answer = _read_until_closed(extra)
            extra.close()
        finally:
            for s in held:
                s.close()
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 503") and "--max-connections" in json.loads(body)[
            "error"]
        chunked = socket.create_connection(small.server_address, timeout=30)
        try:
            chunk = b'{"user_ids": [' + b"1, " * 400 + b"1]}"  # 1,216 bytes
            chunked.sendall(b"POST /u2i HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
                            b"\r\nTransfer-Encoding: chunked\r\n\r\n" +
                            f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n0\r\n\r\n")
            answer = _read_until_closed(chunked)
        finally:
            chunked.close()
        assert answer.startswith(b"HTTP/1.1 413") and b"--max-request-bytes 1000" in answer
        assert _call(small, "GET", "/health")[0] == 200
    finally:
        small.shutdown()


def test_u2i_by_features_matches_brute_force(served):
    server, users, items = served
    status, body = _call(server, "POST", "/u2i", {"features": [3, 11], "k": 4})
    want, _ = evaluation.top_k(users[[3, 11]], items, 4)
    assert status == 200 and np.array_equal(body["item_ids"], want + 1)
    # as `curl -d` sends it (form encoding): still read as JSON
    status, body2 = _call(server, "POST", "/u2i", {"features": [3, 11], "k": 4}, headers={
        "Content-Type": "application/x-www-form-urlencoded"})
    assert status == 200 and body2["item_ids"] == body["item_ids"]


@pytest.mark.parametrize("exact", [False, True])
def test_k_above_the_tuned_k_is_answered_with_a_warning(exact):
    """ScaNN (approximate) and exact indexes alike: the warning on exact ones says that
    their answer stays exact (brute force scores every item; nothing to re-tune)."""
    from twotower.index.tuner import tune

    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(1000, 8)).astype(np.float32)
    index = (build_index(vectors) if exact else
             build_index(vectors, brute_force=False, reorder=50, training_sample_size=1000))
    assert index.config.brute_force is exact
    tune(index, vectors[:100] + 0.01, k=5, progress=False)
    assert index.config.tuned_k == 5
    service = IndexService(Retriever(index), max_batch=16, max_cost=10_000)
    ask = service.models.U2IByEmbeddings
    query = vectors[:1].tolist()
    assert service.u2i(ask(embeddings=query, k=5))["warnings"] == []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the Retriever warns in Python too
        (warning,) = service.u2i(ask(embeddings=query, k=20))["warnings"]
    assert warning.startswith("k=20 exceeds the k=5 this index was tuned for")
    if exact:
        assert "exact (brute force), so the answer is exact at any k" in warning
        assert "recall" not in warning
    else:
        assert "recall may be below the tuned target" in warning


def test_k_above_the_items_left_ends_rows_with_nulls(served):
    """k is bounded by the schema (--max-cost), not by the index size, which updates
    change: a larger k gets every item, then nulls, and a warning."""
    server, users, items = served
    status, body = _call(server, "POST", "/u2i", {"user_ids": [4], "k": 803})
    assert status == 200 and len(body["item_ids"][0]) == 803
    want, _ = evaluation.top_k(users[[4]], items, 800)
    assert body["item_ids"][0][:800] == (want[0] + 1).tolist()
    assert body["item_ids"][0][800:] == [None] * 3 and body["scores"][0][800:] == [None] * 3
    assert body["warnings"] == ["k=803 exceeds the 800 items a query can get here: each row "
                                "ends with 3 nulls"]
    status, body = _call(server, "POST", "/i2i", {"item_ids": [1], "k": 801})
    assert status == 200 and body["item_ids"][0][799:] == [None, None]  # 1 is left out
    assert None not in body["item_ids"][0][:799] and 1 not in body["item_ids"][0]


def test_excluding_an_unknown_item_is_a_no_op(served, writable):
    server, _, _ = served
    status, plain = _call(server, "POST", "/u2i", {"user_ids": [2], "k": 5, "exclude": [3]})
    status, more = _call(server, "POST", "/u2i", {"user_ids": [2], "k": 5,
                                                  "exclude": [3, 0, 99999, -7]})
    assert status == 200 and more["item_ids"] == plain["item_ids"]
    server, _, _, _ = writable
    status, plain = _call(server, "POST", "/i2i", {"item_ids": ["sku-3"], "k": 4,
                                                   "exclude": ["sku-0"]})
    status, more = _call(server, "POST", "/i2i", {"item_ids": ["sku-3"], "k": 4,
                                                  "exclude": ["sku-0", "no-such-item", ""]})
    assert status == 200 and more["item_ids"] == plain["item_ids"]
    assert "sku-0" not in more["item_ids"][0]
    status, answer = _call(server, "POST", "/u2i", {"user_ids": ["u-1"], "exclude": ["ghost"]})
    assert status == 200 and len(answer["item_ids"][0]) == 10
    status, answer = _call(server, "POST", "/u2i", {"user_ids": ["u-1"], "exclude": [7]})
    assert status == 400 and "exclude.0: an id of this index's items must be a string" in \
        answer["error"]  # a wrong kind of id is still an error
