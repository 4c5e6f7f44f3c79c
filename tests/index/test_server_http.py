"""The server's HTTP path: httptools' protocol with its guards (request heads over the
bound, pipelining), the plain /u2i path that skips FastAPI's validation (it takes only
what the schema takes, and answers as the route does), and the load clients of
benchmarks/server_load.py. Loopback only; nothing asserts a duration.
"""

import http.client
import json
import os
import re
import socket

import numpy as np
import pytest
import tensorflow as tf
from pydantic import TypeAdapter, ValidationError

import twotower  # noqa: F401
from twotower.index import persistence
from twotower.index.builder import build_index, embed
from twotower.index.retriever import Retriever
from twotower.index.server import IndexServer
from twotower.index.server.limits import MAX_HEADER_BYTES
from twotower.index.server.schemas import api_models, plain_u2i_parser
from twotower.towers import IDTower

FAST = dict(timeout_header=2.0, timeout_body=2.0, timeout_keep_alive=2.0)
INT64_MAX = 2 ** 63 - 1


def _retriever(str_users=False):
    tf.keras.utils.set_random_seed(7)
    query_tower, item_tower = IDTower(6, 8), IDTower(200, 8)
    items = embed(item_tower, np.arange(200), progress=False)
    return Retriever(build_index(items, np.arange(200)), query_tower,
                     user_seen={0: [0, 1, 2]},
                     user_vocab=[f"u-{j}" for j in range(6)] if str_users else None)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A server over string user ids (u-0..u-5; u-0 has seen items 0, 1, 2)."""
    path = str(tmp_path_factory.mktemp("http") / "index")
    persistence.save(path, _retriever(str_users=True), query_example=np.arange(2))
    server = IndexServer(persistence.load(path), "127.0.0.1", 0, **FAST)
    server.start_background()
    yield server
    server.shutdown()


def _call(server, method, path, body=None, raw=None, conn=None):
    own = conn is None
    conn = conn or http.client.HTTPConnection(*server.server_address, timeout=30)
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    conn.request(method, path, body=data,
                 headers={"Content-Type": "application/json"} if data is not None else {})
    resp = conn.getresponse()
    out = resp.status, json.loads(resp.read())
    if own:
        conn.close()
    return out


def _exchange(server, data, timeout=10):
    """Sends ``data`` on a new connection; everything read until the server closes it."""
    sock = socket.create_connection(server.server_address, timeout=timeout)
    try:
        sock.sendall(data)
        chunks = []
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)
    finally:
        sock.close()


# -- the plain /u2i path ----------------------------------------------------------------------
def _validated(models, body):
    """What the route's pydantic models make of ``body`` (None: refused)."""
    try:
        return TypeAdapter(models.U2IRequest).validate_python(json.loads(body))
    except (ValidationError, ValueError):
        return None


INT_BODIES = [
    b'{"user_ids": [3]}', b'{"user_ids": [0, 5, 2], "k": 4}',
    b'{"user_ids": [1], "k": 7, "exclude_seen": false}', b'{"k": 2, "user_ids": [4]}',
    b'{"user_ids": [%d]}' % INT64_MAX, b'{"user_ids": [%d]}' % -2 ** 63,
    # the route takes these: not the plain path's
    b'{"user_ids": [3.0]}', b'{"user_ids": [1], "exclude": [2]}',
    b'{"user_ids": [1], "exclude": null}', b'{"user_ids": [1], "k": 2.0}',
    # refused by the schema
    b'{"user_ids": [true]}', b'{"user_ids": [%d]}' % 2 ** 63, b'{"user_ids": []}',
    b'{"user_ids": [1], "k": 0}', b'{"user_ids": [1], "k": 1001}',
    b'{"user_ids": [1], "exclude_seen": 1}', b'{"user_ids": [1], "extra": 1}',
    b'{"user_ids": "1"}', b'{"user_ids": ["1"]}', b'{"user_ids": [1, 2, 3, 4, 5]}',
    b'{"user_ids": [1], "embeddings": [[0]]}', b'[1]', b'{"user_ids": [NaN]}',
    b'{"user_ids": [1e400]}', b'not json', b'',
]
STR_BODIES = [
    b'{"user_ids": ["u-1"]}', b'{"user_ids": ["", "x"], "k": 3}',
    b'{"user_ids": ["\\u00e9"]}', b'{"user_ids": ["a\\u0000b"]}', b'{"user_ids": [1]}',
    b'{"user_ids": ["\\ud800"]}',
]


@pytest.mark.parametrize("str_users, bodies", [(False, INT_BODIES), (True, STR_BODIES)])
def test_the_plain_parser_takes_only_what_the_schema_takes(str_users, bodies):
    """Each body the plain parser takes is valid by the route's models, as the same
    request; the others are left to the route (valid ones among them too)."""
    models = api_models(_retriever(str_users), max_batch=4, max_cost=1000)
    parse = plain_u2i_parser(models, max_batch=4, max_cost=1000)
    taken = 0
    for body in bodies:
        plain, checked = parse(body), _validated(models, body)
        if plain is None:
            continue
        taken += 1
        assert checked is not None, body
        assert type(checked) is type(plain) is models.U2IByUsers, body
        assert (plain.user_ids, plain.k, plain.exclude, plain.exclude_seen) == (
            checked.user_ids, checked.k, checked.exclude, checked.exclude_seen), body
    assert taken == (6 if not str_users else 2)


def test_no_plain_parser_without_user_ids():
    tf.keras.utils.set_random_seed(1)
    items = embed(IDTower(50, 4), np.arange(50), progress=False)
    models = api_models(Retriever(build_index(items, np.arange(50))), max_batch=4,
                        max_cost=100)
    assert plain_u2i_parser(models, max_batch=4, max_cost=100) is None


def test_the_plain_path_answers_as_the_route(served, monkeypatch):
    plain = served.app.app
    taken = []
    parse = plain.parse
    monkeypatch.setattr(plain, "parse", lambda body: taken.append(parse(body)) or taken[-1])
    # u-0: its seen items left out; the same request by the plain path and by the route
    by_plain = _call(served, "POST", "/u2i", {"user_ids": ["u-0", "u-3"], "k": 5})
    by_route = _call(served, "POST", "/u2i", {"user_ids": ["u-0", "u-3"], "k": 5,
                                              "exclude": []})
    assert [t is not None for t in taken] == [True, False]
    assert by_plain[0] == 200 and by_plain == by_route
    assert not {0, 1, 2} & set(by_plain[1]["item_ids"][0])
    kept = _call(served, "POST", "/u2i", {"user_ids": ["u-0"], "k": 5,
                                          "exclude_seen": False})
    assert kept[0] == 200 and kept[1]["k"] == 5 and taken[-1] is not None
    # errors come from the app's handlers, as the route answers them
    status, body = _call(served, "POST", "/u2i", {"user_ids": ["u-1", "nobody"]})
    assert taken[-1] is not None
    assert status == 404 and body["unknown_ids"] == ["nobody"] and "error" in body
    status, body = _call(served, "POST", "/u2i", {"user_ids": ["u-1"], "k": 100001})
    assert taken[-1] is None  # over the schema's bound: the route's 400
    assert status == 400 and body["error"].startswith("k:")
    # a body that is not JSON, through the plain path's parser to the route's 400
    status, body = _call(served, "POST", "/u2i", raw=b'{"user_ids": [')
    assert status == 400 and "JSON" in body["error"]


# -- the protocol's guards -----------------------------------------------------------------------
def test_a_request_head_over_the_bound_is_a_json_431(served):
    before = served.metrics.dropped.labels("header_too_large")._value.get()
    # whole, in one write: refused once its headers are parsed
    head = (b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * MAX_HEADER_BYTES +
            b"\r\n\r\n")
    answer = _exchange(served, head)
    status_line, _, body = answer.partition(b"\r\n\r\n")
    assert status_line.startswith(b"HTTP/1.1 431") and str(MAX_HEADER_BYTES) in json.loads(
        body)["error"]
    # a head that never ends is refused by the bytes read, before the header timeout
    sock = socket.create_connection(served.server_address, timeout=10)
    try:
        sock.sendall(b"GET /health HTTP/1.1\r\nX-Big: ")
        for _ in range(2 * MAX_HEADER_BYTES // 8192 + 2):
            try:
                sock.sendall(b"b" * 8192)
            except (BrokenPipeError, ConnectionResetError):
                break
        got = sock.recv(65536)
    except ConnectionResetError:
        got = b""
    finally:
        sock.close()
    assert got == b"" or got.startswith(b"HTTP/1.1 431")
    assert served.metrics.dropped.labels("header_too_large")._value.get() >= before + 2
    # a head under the bound is answered
    assert _exchange(served, b"GET /health HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 8000 +
                     b"\r\nConnection: close\r\n\r\n").startswith(b"HTTP/1.1 200")


def test_pipelined_requests_are_answered_in_order(served):
    one = json.dumps({"user_ids": ["u-1"], "k": 2}).encode()
    bad = b'{"user_ids": ["nobody"]}'
    requests = [b"POST /u2i HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (len(b), b)
                for b in (one, bad, one)]
    answer = _exchange(served, b"".join(requests) + b"GET /health HTTP/1.1\r\nHost: x\r\n"
                                                    b"Connection: close\r\n\r\n")
    statuses = [int(code) for code in re.findall(rb"HTTP/1\.1 (\d{3}) ", answer)]
    assert statuses == [200, 404, 200, 200]


def test_a_header_timeout_still_answers_408_on_a_kept_alive_connection(served):
    """The header timer starts again at a later request's first byte."""
    sock = socket.create_connection(served.server_address, timeout=30)
    try:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        first = sock.recv(65536)
        sock.sendall(b"GET /hea")  # and never more
        rest = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            rest += chunk
    finally:
        sock.close()
    assert first.startswith(b"HTTP/1.1 200")
    assert rest.startswith(b"HTTP/1.1 408") and b"request headers" in rest


def test_the_plain_path_without_batching(served):
    """--batch-parallel 0: the plain path answers each request alone, as the route does."""
    alone = IndexServer(served.retriever, "127.0.0.1", 0, batch_parallel=0, **FAST)
    alone.start_background()
    try:
        assert alone.app.app.parse is not None
        for body in ({"user_ids": ["u-0", "u-2"], "k": 4},
                     {"user_ids": ["u-0"], "k": 4, "exclude_seen": False}):
            got = _call(alone, "POST", "/u2i", body)
            assert got[0] == 200 and got == _call(served, "POST", "/u2i", body)
        assert alone.app.app.state.batcher.batches == 0
        status, body = _call(alone, "POST", "/u2i", {"user_ids": ["nobody"]})
        assert status == 404 and body["unknown_ids"] == ["nobody"]
    finally:
        alone.shutdown()
