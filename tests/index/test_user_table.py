"""u2i by user id through a user feature table (dict inputs with strings), saved,
reloaded and served."""

import http.client
import json

import numpy as np
import pytest
import tensorflow as tf

import twotower  # noqa: F401
from twotower.index import persistence
from twotower.index.builder import build_index
from twotower.index.retriever import Retriever
from twotower.index.server import IndexServer
from twotower.metrics import ranking


class _UserTower(tf.keras.layers.Layer):
    """id embedding + hashed-string embedding: a dict-input query tower."""

    def build(self, input_shape):
        self.ids = self.add_weight(name="ids", shape=[50, 8])
        self.hash = tf.keras.layers.Hashing(num_bins=7)
        self.strings = self.add_weight(name="strings", shape=[7, 8])

    def call(self, inputs):
        return (tf.gather(self.ids, inputs["user_id"])
                + tf.gather(self.strings, self.hash(inputs["city"])))


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tf.keras.utils.set_random_seed(4)
    rng = np.random.default_rng(4)
    items = rng.normal(size=(500, 8)).astype(np.float32)
    table = {"user_id": np.arange(50, dtype=np.int64),
             "city": np.array([f"c{i % 5}" for i in range(50)], dtype=object)}
    tower = _UserTower()
    users = tower(table).numpy()
    seen = {u: np.arange(u, u + 3, dtype=np.int64) + 100 for u in range(50)}
    retriever = Retriever(build_index(items, np.arange(500) + 100), tower, user_table=table,
                          user_seen=seen)
    path = str(tmp_path_factory.mktemp("ut") / "index")
    persistence.save(path, retriever, query_example={k: v[:2] for k, v in table.items()})
    return retriever, persistence.load(path), users, items


def test_u2i_users_excludes_seen_and_survives_reload(setup):
    retriever, loaded, users, items = setup
    want, _ = ranking.top_k(users[[3, 9]], items, 5,
                               exclude=[list(range(3, 6)), list(range(9, 12))])
    for r in (retriever, loaded):
        got, _ = r.u2i_users([3, 9], 5)
        np.testing.assert_array_equal(got, want + 100)
    unexcluded, _ = ranking.top_k(users[[3]], items, 5)
    np.testing.assert_array_equal(loaded.u2i_users([3], 5, exclude_seen=False)[0],
                                  unexcluded + 100)
    with pytest.raises(ValueError, match="unknown user id 77"):
        loaded.u2i_users([3, 77])


def test_served_by_user_id(setup):
    _, loaded, users, items = setup
    server = IndexServer(loaded, "127.0.0.1", 0)
    server.start_background()
    try:
        conn = http.client.HTTPConnection(*server.server_address[:2], timeout=30)
        headers = {"Content-Type": "application/json"}
        conn.request("POST", "/u2i", body=json.dumps({"user_ids": [3, 9], "k": 5}),
                     headers=headers)
        resp = conn.getresponse()
        body = json.loads(resp.read())
        assert resp.status == 200
        want, _ = ranking.top_k(users[[3, 9]], items, 5,
                                   exclude=[list(range(3, 6)), list(range(9, 12))])
        np.testing.assert_array_equal(body["item_ids"], want + 100)
        conn.request("POST", "/u2i", body=json.dumps({"user_ids": [999]}), headers=headers)
        resp = conn.getresponse()  # an unknown id is a 404 naming it (UnknownIdError)
        assert resp.status == 404 and "unknown user id 999" in json.loads(resp.read())["error"]
        conn.close()
    finally:
        server.shutdown()
        server.server_close()
