import numpy as np
import pytest
import tensorflow as tf

import twotower  # noqa: F401
from twotower.index.builder import build_index, embed
from twotower.index import UnknownIdError
from twotower.index.feature_schema import FeatureError
from twotower.index.retriever import Retriever
from twotower.metrics import ranking as evaluation
from twotower.towers import IDTower
from twotower.towers.feature_tower import FeatureTower as FT


@pytest.fixture(scope="module")
def towers():
    tf.keras.utils.set_random_seed(0)
    query_tower, item_tower = IDTower(40, 8, name="q"), IDTower(600, 8, name="i")
    query_tower(np.arange(2)), item_tower(np.arange(2))
    return query_tower, item_tower


def test_u2i_matches_brute_force_with_seen_items_excluded(towers):
    query_tower, item_tower = towers
    items = embed(item_tower, np.arange(600), progress=False)
    retriever = Retriever(build_index(items, np.arange(600)), query_tower, item_tower)
    users = np.arange(40)
    seen = [np.arange(u, u + 5) for u in users]
    ids, scores = retriever.u2i(users, 10, exclude=seen)
    ref_ids, ref_scores = evaluation.top_k(query_tower(users).numpy(), items, 10,
                                           exclude=[list(s) for s in seen])
    np.testing.assert_array_equal(ids, ref_ids)
    np.testing.assert_allclose(scores, ref_scores, rtol=1e-5)


def test_i2i_excludes_the_item_itself(towers):
    _, item_tower = towers
    items = embed(item_tower, np.arange(600), progress=False)
    retriever = Retriever(build_index(items, np.arange(600) + 1, distance="cosine"),
                          None, item_tower)
    ids, _ = retriever.i2i([1, 2, 3], 5)
    unit = items / np.linalg.norm(items, axis=1, keepdims=True)
    ref, _ = evaluation.top_k(unit[:3], unit, 5, exclude=[[0], [1], [2]])
    np.testing.assert_array_equal(ids, ref + 1)
    assert all(i not in row for i, row in zip([1, 2, 3], ids))
    with pytest.raises(ValueError, match=r"exclude must have one list per item id \(3\), got 1"):
        retriever.i2i([1, 2, 3], 5, exclude=[[7]])
    # by features (through the item tower): the item itself comes first
    by_feat, _ = retriever.i2i_features(np.array([0, 1, 2]), 1)
    np.testing.assert_array_equal(by_feat[:, 0], [1, 2, 3])


def test_bad_input(towers):
    query_tower, item_tower = towers
    items = embed(item_tower, np.arange(600), progress=False)
    retriever = Retriever(build_index(items), query_tower)
    with pytest.raises(ValueError, match="unknown item id 600"):
        retriever.i2i([600])
    with pytest.raises(ValueError, match=r"k must be an int in \[1, 599\], got 600"):
        retriever.i2i([0], 600)
    with pytest.raises(ValueError, match=r"k must be an int in \[1, 600\], got 0"):
        retriever.u2i(np.arange(3), 0)
    with pytest.raises(ValueError, match="has no item_tower"):
        retriever.i2i_features(np.arange(3))


# -- ids: nothing collides with the pad, nothing is silently rounded -------------------
@pytest.mark.parametrize("call, match", [
    (lambda r: r.i2i([100.9]), "item_ids must be integer ids, got float value 100.9"),
    (lambda r: r.i2i([True]), "item_ids must be integer ids, got bool value True"),
    (lambda r: r.i2i([2 ** 70]), "item_ids must be int64 ids, got 1180591620717411303424"),
    (lambda r: r.i2i([]), "item_ids is empty"),
    (lambda r: r.i2i([1], 3, exclude=[[127.9]]), "exclude must be integer ids, got float "
                                                 "value 127.9"),
    (lambda r: r.i2i([1], 3, exclude=[[2 ** 70]]), "exclude must be int64 ids"),
    (lambda r: r.u2i_embeddings(np.zeros((0, 8), np.float32)), "empty batch"),
    (lambda r: r.u2i_embeddings(np.ones((1, 8), np.float32), exclude=[[True]]),
     "exclude must be integer ids, got bool"),
    (lambda r: r.u2i_users([]), "user_ids is empty"),
    (lambda r: r.u2i_users([0.5]), "user_ids must be integer ids, got float value 0.5"),
])
def test_bad_ids_are_refused_by_name(towers, call, match):
    query_tower, item_tower = towers
    items = embed(item_tower, np.arange(600), progress=False)
    retriever = Retriever(build_index(items), query_tower, item_tower)
    with pytest.raises(ValueError, match=match):
        call(retriever)


def test_negative_ids_cannot_be_indexed_so_the_pad_never_collides(corpus):
    items, _ = corpus
    with pytest.raises(ValueError, match=r"item_ids must be >= 0 \(-1 pads results\), got -1"):
        build_index(items[:10], np.arange(10) - 1)
    index = build_index(items[:10])
    with pytest.raises(ValueError, match="got -1"):
        index.add([-1], items[:1])
    with pytest.raises(ValueError, match="item_ids must be integer ids, got float"):
        index.add([10.0], items[:1])
    # excluding everything but 3 items pads with -1, which no item can be
    ids, scores = index.search(items[:1], 5, exclude=[list(range(7))])
    assert set(ids[0, :3].tolist()) == {7, 8, 9} and (np.diff(scores[0, :3]) <= 0).all()
    assert ids[0, 3:].tolist() == [-1, -1] and np.isneginf(scores[0, 3:]).all()
    with pytest.raises(ValueError, match="queries is an empty batch"):
        index.search(np.zeros((0, 16), np.float32), 3)


# -- the user's own ids ---------------------------------------------------------------
def test_string_item_ids_in_and_out(towers):
    query_tower, item_tower = towers
    items = embed(item_tower, np.arange(600), progress=False)
    names = np.array([f"sku-{i}" for i in range(600)])
    plain = Retriever(build_index(items), query_tower, item_tower)
    named = Retriever(build_index(items), query_tower, item_tower, item_vocab=names)
    want, want_scores = plain.i2i([3, 4], 5, exclude=[[10], []])
    got, got_scores = named.i2i(["sku-3", "sku-4"], 5, exclude=[["sku-10"], []])
    assert got.dtype.kind == "U"
    np.testing.assert_array_equal(got, names[want])
    np.testing.assert_allclose(got_scores, want_scores)
    np.testing.assert_array_equal(named.u2i(np.arange(3), 4)[0], names[plain.u2i(np.arange(3),
                                                                                 4)[0]])
    with pytest.raises(UnknownIdError, match="unknown item id 'nope'") as e:
        named.i2i(["sku-1", "nope"])
    assert e.value.ids == ["nope"]
    # excluding an item nobody knows changes nothing (nor does excluding one twice)
    np.testing.assert_array_equal(named.u2i(np.arange(2), 3, exclude=[["nope"], []])[0],
                                  named.u2i(np.arange(2), 3)[0])
    kept = named.i2i(["sku-3"], 4, exclude=[["sku-10", "ghost", "sku-10"]])[0]
    np.testing.assert_array_equal(kept, named.i2i(["sku-3"], 4, exclude=[["sku-10"]])[0])
    with pytest.raises(ValueError, match="must be string ids"):
        named.i2i(["sku-3"], 4, exclude=[[10]])  # the wrong kind of id is still an error
    assert named.known_item_ids(["sku-5", "ghost"]).tolist() == [5, -1]
    with pytest.raises(ValueError, match="must be string ids"):
        named.i2i([3])
    with pytest.raises(ValueError, match="item_vocab has 10 ids but the index holds "
                                         "internal item id 599"):
        Retriever(build_index(items), item_vocab=names[:10])


def test_upsert_and_remove_items_with_external_ids(towers):
    _, item_tower = towers
    items = embed(item_tower, np.arange(600), progress=False)
    names = np.array([f"i{i}" for i in range(500)])
    r = Retriever(build_index(items[:500]), None, item_tower, item_vocab=names)
    assert r.upsert_items(["new-a", "i7"], features=np.array([550, 551])) == \
        {"added": 1, "replaced": 1}
    assert len(r.item_vocab) == 501 and r.num_items == 501
    # new-a is item 550's embedding: its nearest neighbour by features is itself
    assert r.i2i_features(np.array([550]), 1)[0][0, 0] == "new-a"
    np.testing.assert_allclose(r.index.vectors_of(r.item_vocab.lookup(["i7"]))[0],
                               items[551], rtol=1e-5)
    assert r.remove_items(["i3", "new-a"]) == 2 and r.num_items == 499
    assert "i3" not in r.i2i(["i4"], 498)[0][0]
    with pytest.raises(UnknownIdError, match="'i3'"):
        r.i2i(["i3"])  # known to the vocabulary, no longer indexed
    with pytest.raises(UnknownIdError, match="'ghost'"):
        r.remove_items(["ghost"])
    assert r.upsert_items(["i3"], vectors=items[3:4]) == {"added": 1, "replaced": 0}
    assert r.item_vocab.lookup(["i3"]).tolist() == [3]  # internal ids never move
    with pytest.raises(ValueError, match="exactly one of vectors= and features="):
        r.upsert_items(["x"])
    with pytest.raises(ValueError, match="duplicates"):
        r.upsert_items(["x", "x"], vectors=items[:2])
    # without a vocabulary, ids are the internal ints
    plain = Retriever(build_index(items[:500]), None, item_tower)
    assert plain.upsert_items([700], vectors=items[550:551]) == {"added": 1, "replaced": 0}
    assert plain.i2i_features(np.array([550]), 1)[0][0, 0] == 700
    with pytest.raises(ValueError, match="got -1"):
        plain.upsert_items([-1], vectors=items[:1])


# -- u2i by user id with an ID-lookup query tower -----------------------------------------
def test_id_tower_users_exclude_their_seen_items_without_a_user_table(towers):
    query_tower, item_tower = towers
    items = embed(item_tower, np.arange(600), progress=False)
    seen = {u: np.arange(u, u + 5) for u in range(40)}
    r = Retriever(build_index(items), query_tower, user_seen=seen)
    assert r.num_users == 40 and r.num_users_with_seen == 40
    got, _ = r.u2i_users([0, 7], 10)
    want, _ = evaluation.top_k(query_tower(np.array([0, 7])).numpy(), items, 10,
                               exclude=[list(seen[0]), list(seen[7])])
    np.testing.assert_array_equal(got, want)
    unexcluded, _ = evaluation.top_k(query_tower(np.array([0])).numpy(), items, 10)
    np.testing.assert_array_equal(r.u2i_users([0], 10, exclude_seen=False)[0], unexcluded)
    with pytest.raises(UnknownIdError, match=r"unknown user id 40 \(40 users known\)"):
        r.u2i_users([3, 40])
    # a user table with only the id column feeds the ID tower its ids (no TypeError)
    tabled = Retriever(build_index(items), query_tower,
                       user_table={"user_id": np.arange(40)}, user_seen=seen)
    np.testing.assert_array_equal(tabled.u2i_users([0, 7], 10)[0], want)
    # external user ids
    users = np.array([f"u{i}" for i in range(40)])
    named = Retriever(build_index(items), query_tower, user_seen=seen, user_vocab=users)
    np.testing.assert_array_equal(named.u2i_users(["u0", "u7"], 10)[0], want)
    with pytest.raises(UnknownIdError, match="'u99'"):
        named.u2i_users(["u99"])
    assert Retriever(build_index(items)).num_users == 0


def test_a_user_table_keyed_by_strings_points_to_user_vocab(towers):
    query_tower, item_tower = towers
    items = embed(item_tower, np.arange(600), progress=False)
    with pytest.raises(ValueError, match="got str value 'u0'.*user_vocab="):
        Retriever(build_index(items), query_tower, user_table={"user_id": np.array(["u0"])})


# -- the towers' inputs as JSON -------------------------------------------------------------
def test_feature_schema_of_a_feature_tower_pads_fills_and_names_what_is_wrong():
    genres = np.array([["a", "b"], ["c", ""]])
    tower = FT([FT.categorical("item_id", vocabulary=[0, 1, 2], dim=2),
                FT.multi_hot("genres", genres, dim=2), FT.dense("year", [1990.0, 2000.0]),
                FT.sequence("history", 5, dim=2)], output_dim=4, hidden_units=())
    items = embed(tower, {"item_id": np.arange(3), "genres": np.array([["a", ""]] * 3),
                          "year": np.full(3, 1995.0, np.float32),
                          "history": np.zeros((3, 2), np.int64)}, progress=False)
    r = Retriever(build_index(items), None, tower, item_vocab=["x", "y", "z"])
    schema = r.feature_schema("item")
    assert r.feature_schema("query") is None and schema.rows_are_objects
    described = {f["name"]: f for f in schema.describe()["features"]}
    # a live tower (not saved with an example) takes lists of any length, padded
    assert described["genres"]["shape"] == [None] and described["genres"]["pad"] == ""
    assert (described["history"]["minimum"], described["history"]["maximum"]) == (0, 4)
    assert described["item_id"] == {
        "name": "item_id", "type": "string", "shape": [], "required": False,
        "form": described["item_id"]["form"], "what": described["item_id"]["what"]}
    inputs = schema.prepare([{"genres": ["a"], "year": 2001, "history": [3], "item_id": "z"},
                             {"genres": ["b", "c", "a"], "year": 1990.5, "history": []}])
    assert inputs["genres"].tolist() == [[b"a", b"", b""], [b"b", b"c", b"a"]]
    assert inputs["history"].tolist() == [[3], [0]]
    assert inputs["item_id"].tolist() == [2, -1]  # "z" is internal 2; left out: OOV
    assert inputs["year"].dtype == np.float32
    np.testing.assert_allclose(tower(inputs).numpy()[0], tower({
        "item_id": np.array([2]), "genres": np.array([["a", "", ""]]),
        "year": np.array([2001.0], np.float32), "history": np.array([[3]])}).numpy()[0],
        rtol=1e-6)
    for rows, match in [
        ([{"genres": "a", "year": 1.0, "history": []}],
         r"features\[0\]\['genres'\]: expected a list, got 'a'"),
        ([{"genres": [], "year": True, "history": []}],
         r"features\[0\]\['year'\]: expected a number, got True"),
        ([{"genres": [], "year": 1.0, "history": [5]}],
         r"features\[0\]\['history'\]\[0\]: expected an integer in \[0, 4\], got 5"),
        ([{"genres": [], "history": []}], r"missing features \['year'\]"),
        ([], "non-empty list"),
    ]:
        with pytest.raises(FeatureError, match=match):
            schema.prepare(rows)


def test_stored_user_vectors_answer_as_the_tower_does(tmp_path):
    """u2i by user id from the vectors computed at export equals the tower's answer, and
    survives a save and load; without a tower, the vectors still answer."""
    from twotower.index import load, save
    from twotower.index.builder import build_index
    from twotower.index.retriever import embed_user_table
    from twotower.towers import IDTower

    rng = np.random.default_rng(3)
    users, items = IDTower(40, 8, name="u"), IDTower(60, 8, name="i")
    item_vectors = items(np.arange(60)).numpy()
    index = build_index(item_vectors, np.arange(60), distance="dot")
    table = {"user_id": np.arange(5, 25, dtype=np.int64)}
    seen = {int(u): rng.choice(60, 4, replace=False) for u in table["user_id"]}
    plain = Retriever(index, users, items, user_table=table, user_seen=seen)
    vectors = embed_user_table(users, table, progress=False)
    stored = Retriever(index, users, items, user_table=table, user_seen=seen,
                       user_vectors=vectors)
    ask = [5, 17, 24]
    want, want_scores = plain.u2i_users(ask, 7)
    got, got_scores = stored.u2i_users(ask, 7)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_allclose(got_scores, want_scores, rtol=1e-5)
    save(str(tmp_path / "ix"), stored)
    again = load(str(tmp_path / "ix"))
    assert again.user_vectors is not None
    np.testing.assert_array_equal(again.u2i_users(ask, 7)[0], want)
    towerless = Retriever(index, None, items, user_table=table, user_seen=seen,
                          user_vectors=vectors)
    np.testing.assert_array_equal(towerless.u2i_users(ask, 7)[0], want)
    with pytest.raises(ValueError, match="one vector a user row"):
        Retriever(index, users, items, user_table=table, user_vectors=vectors[:3])
