import http.client
import json
import threading

import numpy as np
import pytest
import tensorflow as tf

import twotower  # noqa: F401
from twotower.index import persistence
from twotower.index.builder import build_index, embed
from twotower.index.retriever import Retriever
from twotower.index.server import IndexServer, build_parser
from twotower.towers import IDTower, evaluation


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    tf.keras.utils.set_random_seed(3)
    query_tower, item_tower = IDTower(20, 8), IDTower(800, 8)
    items = embed(item_tower, np.arange(800), progress=False)
    path = str(tmp_path_factory.mktemp("srv") / "index")
    persistence.save(path, Retriever(build_index(items, np.arange(800) + 1), query_tower),
                     query_example=np.arange(2))
    server = IndexServer(persistence.load(path), "127.0.0.1", 0, max_request_bytes=4096,
                         max_batch=16)
    server.start_background()
    yield server, query_tower(np.arange(20)).numpy(), items
    server.shutdown()
    server.server_close()


def _call(server, method, path, body=None, raw=None):
    host, port = server.server_address[:2]
    conn = http.client.HTTPConnection(host, port, timeout=30)
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    conn.request(method, path, body=data,
                 headers={"Content-Type": "application/json"} if data is not None else {})
    resp = conn.getresponse()
    out = resp.status, json.loads(resp.read() or b"null")
    conn.close()
    return out


def test_binds_loopback_by_default():
    args = build_parser().parse_args(["some/dir"])
    assert args.host == "127.0.0.1"


def test_health(served):
    server, _, _ = served
    status, body = _call(server, "GET", "/health")
    assert status == 200 and body["status"] == "ok" and body["num_items"] == 800
    assert body["dim"] == 8 and body["towers"] == {"query": True, "item": False}


def test_u2i_by_user_id_matches_brute_force(served):
    server, users, items = served
    seen = [[1, 2, 3]] * 4
    status, body = _call(server, "POST", "/u2i",
                         {"user_ids": [0, 5, 7, 19], "k": 5, "exclude": seen})
    assert status == 200
    want, _ = evaluation.top_k(users[[0, 5, 7, 19]], items, 5, exclude=[[0, 1, 2]] * 4)
    np.testing.assert_array_equal(body["item_ids"], want + 1)
    # by embeddings, the same answer
    status, body2 = _call(server, "POST", "/u2i", {"embeddings": users[[0, 5, 7, 19]].tolist(),
                                                    "k": 5, "exclude": seen})
    assert status == 200 and body2["item_ids"] == body["item_ids"]


def test_i2i_matches_brute_force(served):
    server, _, items = served
    status, body = _call(server, "POST", "/i2i", {"item_ids": [1, 400], "k": 3})
    assert status == 200
    want, _ = evaluation.top_k(items[[0, 399]], items, 3, exclude=[[0], [399]])
    np.testing.assert_array_equal(body["item_ids"], want + 1)


@pytest.mark.parametrize("path,body,raw,code,match", [
    ("/u2i", None, b"{not json", 400, "not valid JSON"),
    ("/u2i", [1, 2], None, 400, "must be a JSON object"),
    ("/u2i", {"user_ids": [1], "k": 0}, None, 400, r"k must be an int in \[1, 800\], got 0"),
    ("/u2i", {"user_ids": [1], "k": "3"}, None, 400, "k must be an integer"),
    ("/u2i", {"user_ids": [99]}, None, 400, "query tower rejected"),
    ("/u2i", {"user_ids": ["a"]}, None, 400, "user_ids must be a list of integers"),
    ("/u2i", {"embeddings": [[0.1] * 3]}, None, 400, r"shape \[n, 8\], got \(1, 3\)"),
    ("/u2i", {"user_ids": [1], "embeddings": [[0.0] * 8]}, None, 400, "exactly one of"),
    ("/u2i", {"user_ids": list(range(17))}, None, 400, r"batch size must be in \[1, 16\]"),
    ("/i2i", {"item_ids": [0]}, None, 400, "unknown item id 0"),
    ("/i2i", {"item_ids": [1], "k": 800}, None, 400, r"k must be an int in \[1, 799\]"),
    ("/i2i", {"items": [1]}, None, 400, "i2i needs item_ids"),
    ("/nope", {}, None, 404, "unknown path"),
    ("/u2i", None, b"x" * 5000, 413, "exceeds 4096"),
])
def test_bad_requests_get_a_message_and_the_server_keeps_serving(served, path, body, raw,
                                                                 code, match):
    import re

    server, _, _ = served
    status, answer = _call(server, "POST", path, body=body, raw=raw)
    assert status == code and re.search(match, answer["error"]), answer
    assert _call(server, "GET", "/health")[0] == 200


def test_concurrent_clients(served):
    server, users, items = served
    want, _ = evaluation.top_k(users, items, 10)
    results, errors = {}, []

    def client(u):
        try:
            results[u] = _call(server, "POST", "/u2i", {"user_ids": [u]})[1]["item_ids"][0]
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=client, args=(u,)) for u in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for u in range(20):
        np.testing.assert_array_equal(results[u], want[u] + 1)
