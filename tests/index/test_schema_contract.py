"""The HTTP contract: what the OpenAPI schema says is what the server does.

Schemathesis runs in-process against the ASGI app (no sockets) with every check, as
`schemathesis run --checks all` does (examples, coverage, fuzzing and stateful phases),
over two small indexes: integer ids with ID towers, and string ids with feature towers
(every feature kind the schema describes: a category, a text, a multi-hot list, a number,
an id sequence, the id feature that may be left out). The bounded run is in the default
suite; a larger one is marked slow.

The feature checks (the per-index feature schema, ragged lists, the id a client cannot
know, 400s that name the feature) run the same string-id index behind a loopback server.
"""

import http.client
import json

import numpy as np
import pytest
import tensorflow as tf

import twotower  # noqa: F401
from twotower.index import persistence
from twotower.index.builder import build_index, embed
from twotower.index.retriever import Retriever
from twotower.index.server import IndexServer, create_app
from twotower.towers import IDTower
from twotower.towers.feature_tower import FeatureTower as FT

TOKEN = "contract-token"
GENRES = np.array([["a", "b", ""], ["c", "", ""], ["a", "d", "e"], ["b", "", ""]])
TITLES = np.array(["red shoes", "blue hat", "green coat", "red hat"])


def _item_features(n):
    """Item tower inputs for internal ids 0..n-1 (ids >= 40 were never trained)."""
    j = np.arange(n)
    return {"item_id": j.astype(np.int64), "genres": GENRES[j % 4], "title": TITLES[j % 4],
            "year": (1990 + j % 30).astype(np.float32)}


def _feature_retriever():
    """60 items "sku-0".."sku-59" and 10 users "u-0".."u-9", both towers FeatureTowers."""
    tf.keras.utils.set_random_seed(11)
    items = _item_features(60)
    item_tower = FT([FT.categorical("item_id", vocabulary=list(range(40)), dim=4),
                     FT.multi_hot("genres", GENRES, dim=4),
                     FT.text("title", TITLES, dim=4, sequence_length=4),
                     FT.dense("year", items["year"])], output_dim=8, hidden_units=(8,))
    users = {"user_id": np.arange(10, dtype=np.int64),
             "history": (np.arange(40).reshape(10, 4) % 61).astype(np.int64),
             "country": np.array(["fr", "de", "us", "fr", "jp", "us", "de", "fr", "us",
                                  "br"])}
    query_tower = FT([FT.categorical("user_id", vocabulary=list(range(10)), dim=4),
                      FT.sequence("history", 61, dim=4),
                      FT.categorical("country", users["country"], dim=2)],
                     output_dim=8, hidden_units=(8,))
    vectors = embed(item_tower, items, progress=False)
    query_tower({k: v[:2] for k, v in users.items()})
    retriever = Retriever(build_index(vectors, np.arange(60), distance="cosine"),
                          query_tower, item_tower,
                          user_table=users, user_seen={0: [1, 2]},
                          item_vocab=[f"sku-{i}" for i in range(60)],
                          user_vocab=[f"u-{j}" for j in range(10)])
    example = {k: v[:2] for k, v in users.items()}
    return retriever, example, {k: v[:2] for k, v in items.items()}


@pytest.fixture(scope="module")
def feature_folder(tmp_path_factory):
    retriever, query_example, item_example = _feature_retriever()
    path = str(tmp_path_factory.mktemp("contract") / "features")
    persistence.save(path, retriever, query_example=query_example,
                     item_example=item_example)
    return path


@pytest.fixture(scope="module")
def id_folder(tmp_path_factory):
    """300 items with integer ids 1..300 (no vocabulary), ID towers over 20 users."""
    tf.keras.utils.set_random_seed(3)
    query_tower, item_tower = IDTower(20, 8), IDTower(300, 8)
    vectors = embed(item_tower, np.arange(300), progress=False)
    path = str(tmp_path_factory.mktemp("contract") / "ids")
    persistence.save(path, Retriever(build_index(vectors, np.arange(300) + 1), query_tower,
                                     item_tower, user_seen={3: [5, 6]}),
                     query_example=np.arange(2), item_example=np.arange(2))
    return path


# -- schemathesis, every check ---------------------------------------------------------
# 413 is what a request valid by the schema gets when it is over a limit spanning fields
# (batch x (k + len(exclude)) over --max-cost, or too many body bytes): JSON Schema cannot
# state a product of two fields, so the schema documents it (the 413 answer and the API
# description) and the acceptance check is told. Every other check runs as the CLI's.
ACCEPTED = ["2xx", "3xx", "401", "403", "404", "409", "413", "429", "5xx"]


def _contract_failures(app, *, examples, steps, seed):
    """Runs every schemathesis phase and check against ``app``; returns the failures
    and errors as text (empty: the contract holds)."""
    import schemathesis
    from schemathesis.config import SchemathesisConfig
    from schemathesis.engine import Status, events, from_schema

    config = SchemathesisConfig.from_dict({
        "seed": seed, "workers": 1, "headers": {"Authorization": f"Bearer {TOKEN}"},
        "generation": {"max-examples": examples, "database": "none"},  # the same every run
        "checks": {"positive_data_acceptance": {"expected-statuses": ACCEPTED}},
        "phases": {"stateful": {"max-steps": steps}}})
    schema = schemathesis.openapi.from_asgi("/openapi.json", app, config=config)
    problems, cases, phases = [], 0, set()
    for event in from_schema(schema).execute():
        if isinstance(event, events.ScenarioFinished):
            cases += len(event.recorder.cases)
            for case_id, checks in event.recorder.checks.items():
                for c in checks:
                    if c.status != Status.FAILURE:
                        continue
                    interaction = event.recorder.interactions.get(case_id)
                    response = getattr(interaction, "response", None)
                    answer = "" if response is None else (
                        f"\n-> {response.status_code} {response.content[:300]!r}")
                    problems.append(f"{event.label}: {c.name}: {c.failure_info.failure}"
                                    f"\n{c.failure_info.code_sample}{answer}"[:3000])
        elif isinstance(event, events.NonFatalError):
            problems.append(f"error: {event.info}"[:2000])
        elif isinstance(event, events.FatalError):
            problems.append(f"fatal: {event.exception!r}"[:2000])
        elif isinstance(event, events.PhaseFinished) and event.status != Status.SKIP:
            phases.add(event.phase.name.name if hasattr(event.phase.name, "name")
                       else str(event.phase.name))
    return problems, cases, phases


def _app(folder):
    return create_app(persistence.load(folder), token=TOKEN, max_batch=8, max_cost=400)


@pytest.mark.parametrize("which", ["id_folder", "feature_folder"])
def test_every_schemathesis_check_passes(which, request):
    problems, cases, phases = _contract_failures(
        _app(request.getfixturevalue(which)), examples=6, steps=6, seed=1)
    assert not problems, "\n\n".join(problems[:5])
    ran = {p.lower() for p in phases}
    assert cases > 100 and all(any(p.startswith(name) for p in ran)
                               for name in ("coverage", "fuzzing", "stateful")), ran


@pytest.mark.slow
@pytest.mark.parametrize("which", ["id_folder", "feature_folder"])
def test_every_schemathesis_check_passes_at_length(which, request):
    problems, cases, _ = _contract_failures(
        _app(request.getfixturevalue(which)), examples=100, steps=30, seed=7)
    assert not problems, "\n\n".join(problems[:5])
    assert cases > 2000


# -- the features each tower takes -------------------------------------------------------
@pytest.fixture(scope="module")
def featured(feature_folder):
    server = IndexServer(persistence.load(feature_folder), "127.0.0.1", 0, token=TOKEN,
                         timeout_header=2.0, timeout_body=2.0)
    server.start_background()
    yield server
    server.shutdown()


def _call(server, method, path, body=None, token=None):
    conn = http.client.HTTPConnection(*server.server_address[:2], timeout=30)
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    conn.request(method, path, None if body is None else json.dumps(body), headers)
    response = conn.getresponse()
    answer = json.loads(response.read())
    conn.close()
    return response.status, answer


def _row(j, **change):
    """Item j's features as a request row (no item_id), ragged lists unpadded."""
    row = {"genres": [g for g in GENRES[j % 4] if g], "title": str(TITLES[j % 4]),
           "year": float(1990 + j % 30)}
    row.update(change)
    return row


def _neighbours(retriever, inputs, k):
    """Brute-force top-k (cosine) external ids of item-tower inputs."""
    v = np.asarray(retriever.item_tower(inputs), np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    scores = v @ retriever.index.vectors.T  # the index holds unit vectors
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return [[f"sku-{i}" for i in row] for row in retriever.index.item_ids[top].tolist()]


def test_health_and_openapi_describe_each_feature(featured):
    status, health = _call(featured, "GET", "/health")
    assert status == 200 and health["asks"]["/i2i"] == ["item_ids", "features"]
    item = {f["name"]: f for f in health["features"]["item"]["features"]}
    assert health["features"]["item"]["rows"] == "objects"
    assert item["genres"]["type"] == "string" and item["genres"]["shape"] == [3]
    assert item["genres"]["pad"] == "" and "at most 3 strings" in item["genres"]["form"]
    assert item["year"]["type"] == "number" and item["year"]["shape"] == []
    assert item["title"]["type"] == "string" and item["item_id"]["required"] is False
    assert item["item_id"]["type"] == "string"  # this index's own ids, not the tower's ints
    query = {f["name"]: f for f in health["features"]["query"]["features"]}
    assert query["history"]["shape"] == [4] and query["history"]["pad"] == 0
    assert (query["history"]["minimum"], query["history"]["maximum"]) == (0, 60)
    status, spec = _call(featured, "GET", "/openapi.json")
    row = spec["components"]["schemas"]["I2IByFeatures"]["properties"]["features"]["items"]
    assert row["additionalProperties"] is False
    assert sorted(row["required"]) == ["genres", "title", "year"]
    assert row["properties"]["genres"] == {"type": "array", "items": {"type": "string"},
                                           "maxItems": 3}
    assert row["properties"]["item_id"]["anyOf"][1] == {"type": "null"}


def test_ragged_lists_are_padded_to_the_trained_width(featured):
    retriever = featured.retriever
    status, short = _call(featured, "POST", "/i2i", {"features": [_row(2), _row(5)], "k": 4})
    assert status == 200
    inputs = {"item_id": np.array([-1, -1]), "genres": GENRES[[2, 1]],
              "title": TITLES[[2, 1]], "year": np.array([1992.0, 1995.0], np.float32)}
    assert short["item_ids"] == _neighbours(retriever, inputs, 4)
    status, padded = _call(featured, "POST", "/i2i", {
        "features": [_row(2, genres=["a", "d", "e"]), _row(5, genres=["c", "", ""])],
        "k": 4})
    assert status == 200 and padded["item_ids"] == short["item_ids"]


def test_the_id_feature_is_optional_and_takes_the_index_own_ids(featured):
    retriever = featured.retriever
    # left out on a string-id index: the out-of-vocabulary bucket, as for a new item
    status, new = _call(featured, "POST", "/i2i", {"features": [_row(3)], "k": 3})
    inputs = {"item_id": np.array([-1]), "genres": GENRES[[3]], "title": TITLES[[3]],
              "year": np.array([1993.0], np.float32)}
    assert status == 200 and new["item_ids"] == _neighbours(retriever, inputs, 3)
    # given as this index's own id: the trained id embedding, so the item finds itself
    status, known = _call(featured, "POST", "/i2i",
                          {"features": [_row(3, item_id="sku-3")], "k": 1})
    assert status == 200 and known["item_ids"] == [["sku-3"]]
    status, unknown = _call(featured, "POST", "/i2i",
                            {"features": [_row(3, item_id="not-an-item")], "k": 3})
    assert status == 200 and unknown["item_ids"] == new["item_ids"]
    # u2i by features: the user id is optional too, and a known one is the user's own
    status, answer = _call(featured, "POST", "/u2i", {
        "features": [{"history": [3, 7], "country": "fr"},
                     {"user_id": "u-4", "history": [], "country": "jp"}], "k": 2})
    assert status == 200 and len(answer["item_ids"]) == 2


@pytest.mark.parametrize("features,match", [
    ([_row(1, genres=["a", "b", "c", "d"])],
     r"features\[0\]\['genres'\]: 4 values, more than the 3 the tower was trained with"),
    ([_row(1, year="1999")], r"features\[0\]\['year'\]: expected a number, got '1999'; "
                             r"'year' takes a number"),
    ([_row(1, genres="a")], r"features\[0\]\['genres'\]: expected a list, got 'a'; "
                            r"'genres' takes a list of at most 3 strings"),
    ([{"genres": ["a"], "year": 1.0}], r"features\[0\]: missing features \['title'\]; "
                                       r"'title' takes a string"),
    ([_row(1, colour="red")], r"unknown features \['colour'\]; the item tower takes "
                              r"\['genres', 'item_id', 'title', 'year'\]"),
    ([_row(1, item_id=3)], r"features\[0\]\['item_id'\]: expected this index's string id "
                           r"or null, got 3"),
    ([_row(1), [1, 2]], r"features\[1\] must be an object keyed by feature name"),
])
def test_a_wrong_feature_is_a_400_naming_it_and_its_form(featured, features, match):
    import re

    status, answer = _call(featured, "POST", "/i2i", {"features": features})
    assert status == 400 and re.search(match, answer["error"]), answer
    assert not re.search("tensorflow|InvalidArgument|Traceback", answer["error"])


def test_a_sequence_id_outside_the_trained_range_is_a_400_naming_it(featured):
    status, answer = _call(featured, "POST", "/u2i", {
        "features": [{"history": [3, 61], "country": "fr"}]})
    assert status == 400 and "features[0]['history'][1]: expected an integer in [0, 60], " \
        "got 61" in answer["error"], answer


def test_upsert_by_features_needs_no_tower_id(featured):
    status, done = _call(featured, "POST", "/items", {"items": [
        {"item_id": "sku-new", "features": _row(2, title="violet scarf")}]}, token=TOKEN)
    assert status == 200 and done["added"] == 1 and done["item_ids"] == ["sku-new"]
    status, answer = _call(featured, "POST", "/i2i", {
        "features": [_row(2, title="violet scarf", item_id="sku-new")], "k": 1})
    assert status == 200 and answer["item_ids"] == [["sku-new"]]
    status, done = _call(featured, "DELETE", "/items", {"item_ids": ["sku-new"]},
                         token=TOKEN)
    assert status == 200 and done["removed"] == 1
