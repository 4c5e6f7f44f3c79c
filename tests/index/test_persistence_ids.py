"""Index folders and ids: save right after fit (signatures inferred), load → change →
save → load, the user's own (string) ids through save/load, an ID-tower's seen items."""

import os

import numpy as np
import pytest
import tensorflow as tf

import twotower  # noqa: F401
from twotower.index import UnknownIdError, persistence
from twotower.index.builder import build_index, embed
from twotower.index.retriever import Retriever
from twotower.losses import RetrievalLoss
from twotower.metrics import ranking
from twotower.towers import IDTower, TwoTowerModel
from twotower.towers import feature_tower as ft


def _fit(query_tower, item_tower, query, item, item_features=None):
    model = TwoTowerModel(query_tower, item_tower, RetrievalLoss(),
                          item_features=item_features)
    model.compile(optimizer=tf.keras.optimizers.Adam(0.01))
    data = tf.data.Dataset.from_tensor_slices({"query": query, "item": item}).batch(16)
    model.fit(data, epochs=1, verbose=0)
    return model


def test_save_right_after_fit_infers_id_tower_signatures(tmp_path):
    tf.keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    model = _fit(IDTower(20, 8), IDTower(300, 8), rng.integers(20, size=64),
                 rng.integers(300, size=64))
    vectors = embed(model.item_tower, np.arange(300), progress=False)
    retriever = Retriever(build_index(vectors), model.query_tower, model.item_tower)
    persistence.save(str(tmp_path / "index"), retriever)  # no example batches
    loaded = persistence.load(str(tmp_path / "index"))
    assert loaded.query_tower.spec == tf.TensorSpec([None], tf.int64)
    np.testing.assert_array_equal(loaded.u2i(np.arange(5), 10)[0],
                                  retriever.u2i(np.arange(5), 10)[0])
    np.testing.assert_array_equal(loaded.i2i_features(np.arange(3), 4)[0],
                                  retriever.i2i_features(np.arange(3), 4)[0])
    assert loaded.num_users == 20  # the ID tower's range survives the save


def test_save_after_fit_infers_feature_tower_signatures(tmp_path):
    tf.keras.utils.set_random_seed(1)
    rng = np.random.default_rng(1)
    n = 200
    items = {"item_id": np.arange(n, dtype=np.int64),
             "genre": np.array([f"g{i % 7}" for i in range(n)], dtype=object),
             "title": np.array([f"film number {i % 13}" for i in range(n)], dtype=object),
             "year": rng.uniform(1950, 2020, size=n).astype(np.float32)}
    item_tower = ft.FeatureTower([ft.categorical("item_id", items["item_id"], dim=4),
                                  ft.categorical("genre", items["genre"], dim=3),
                                  ft.text("title", items["title"], dim=3),
                                  ft.dense("year", items["year"])], output_dim=8)
    pick = rng.integers(n, size=64)
    model = _fit(IDTower(10, 8), item_tower, rng.integers(10, size=64),
                 {k: v[pick] for k, v in items.items()}, item_features=items)
    vectors = embed(item_tower, items, progress=False)
    retriever = Retriever(build_index(vectors), model.query_tower, item_tower)
    persistence.save(str(tmp_path / "index"), retriever)
    loaded = persistence.load(str(tmp_path / "index"))
    assert sorted(loaded.item_tower.spec) == ["genre", "item_id", "title", "year"]
    some = {k: v[:4] for k, v in items.items()}  # extra keys are fine, as for FeatureTower
    got, _ = loaded.i2i_features(some, 3)
    want, _ = retriever.i2i_features(some, 3)
    np.testing.assert_array_equal(got, want)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    tf.keras.utils.set_random_seed(2)
    query_tower, item_tower = IDTower(30, 8), IDTower(400, 8)
    vectors = embed(item_tower, np.arange(400), progress=False)
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    top, _ = ranking.top_k(query_tower(np.arange(30)).numpy(), unit, 4)
    seen = {u: top[u] for u in range(30)}  # each user has seen its own top 4
    retriever = Retriever(build_index(vectors, distance="cosine"), query_tower, item_tower,
                          user_seen=seen,
                          item_vocab=np.array([f"sku-{i:03d}" for i in range(400)]),
                          user_vocab=np.array([f"user-{u}" for u in range(30)]))
    path = str(tmp_path_factory.mktemp("ids") / "index")
    persistence.save(path, retriever)
    return path, retriever, vectors, query_tower, seen


def test_string_ids_round_trip_through_save_and_load(folder):
    path, retriever, _, _, _ = folder
    for name in ("item_vocab", "user_vocab"):  # plain unicode arrays, no pickles
        assert np.load(os.path.join(path, f"{name}.npy"), allow_pickle=False).dtype.kind == "U"
    loaded = persistence.load(path)
    assert loaded.num_users == 30 and len(loaded.item_vocab) == 400
    got, scores = loaded.i2i(["sku-007", "sku-100"], 5, exclude=[["sku-008"], []])
    want, want_scores = retriever.i2i(["sku-007", "sku-100"], 5, exclude=[["sku-008"], []])
    assert got.dtype.kind == "U" and got[0, 0].startswith("sku-")
    np.testing.assert_array_equal(got, want)
    np.testing.assert_allclose(scores, want_scores, rtol=1e-5)
    np.testing.assert_array_equal(loaded.u2i_users(["user-3"], 6)[0],
                                  retriever.u2i_users(["user-3"], 6)[0])
    with pytest.raises(UnknownIdError, match="unknown user id 'user-99'"):
        loaded.u2i_users(["user-99"])
    with pytest.raises(UnknownIdError, match="unknown item id 'sku-999'"):
        loaded.i2i(["sku-999"])


def test_id_tower_seen_items_are_excluded_after_load(folder):
    path, _, vectors, query_tower, seen = folder
    loaded = persistence.load(path)  # user_seen saved, no user_table
    assert loaded.user_table is None and loaded.num_users_with_seen == 30
    got, _ = loaded.u2i_users(["user-0", "user-5"], 10)
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    internal, _ = ranking.top_k(query_tower(np.array([0, 5])).numpy(), unit, 10,
                                   exclude=[list(seen[0]), list(seen[5])])
    np.testing.assert_array_equal(got, loaded.item_vocab.external(internal))
    assert not set(got[0]) & {f"sku-{i:03d}" for i in seen[0]}
    plain, _ = loaded.u2i_users(["user-0"], 10, exclude_seen=False)
    np.testing.assert_array_equal(plain[0, :4], [f"sku-{i:03d}" for i in seen[0]])


def test_load_change_save_load_round_trip(folder, tmp_path):
    path, _, vectors, _, _ = folder
    r = persistence.load(path)
    r.index.remove([5])  # the README's change, in internal ids
    r.remove_items(["sku-006"])
    r.upsert_items(["sku-new"], vectors=vectors[10:11])
    p2 = str(tmp_path / "changed")
    persistence.save(p2, r)
    r2 = persistence.load(p2)
    assert r2.num_items == 399 and 5 not in r2.index and "sku-new" in r2.item_vocab
    assert r2.i2i(["sku-010"], 1)[0][0, 0] == "sku-new"  # same vector: nearest
    r2.remove_items(["sku-new"])
    p3 = str(tmp_path / "again")
    persistence.save(p3, r2)  # a twice-loaded tower saves again
    r3 = persistence.load(p3)
    assert r3.num_items == 398
    for row in r3.i2i(["sku-001", "sku-002"], 397)[0]:
        assert not {"sku-005", "sku-006", "sku-new"} & set(row)
    np.testing.assert_array_equal(r3.u2i_users(["user-1"], 5)[0],
                                  r.u2i_users(["user-1"], 5, exclude=[["sku-new"]])[0])
    np.testing.assert_array_equal(r3.i2i_features(np.arange(2), 3)[0],
                                  r.i2i_features(np.arange(2), 3,
                                                 exclude=[["sku-new"]] * 2)[0])


def test_a_folder_without_vocabularies_uses_internal_ids(tmp_path):
    vectors = np.random.default_rng(3).normal(size=(50, 4)).astype(np.float32)
    persistence.save(str(tmp_path / "plain"), build_index(vectors, np.arange(50) + 1000))
    loaded = persistence.load(str(tmp_path / "plain"))
    assert loaded.item_vocab is None and loaded.user_vocab is None
    ids, _ = loaded.i2i([1000], 3)
    assert ids.dtype == np.int64 and 1000 not in ids and ids.min() >= 1000
    assert not os.path.exists(str(tmp_path / "plain" / "item_vocab.npy"))
