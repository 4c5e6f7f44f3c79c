import json
import os

import numpy as np
import pytest
import tensorflow as tf

import twotower  # noqa: F401
from twotower.index import persistence
from twotower.index.builder import build_index, embed
from twotower.index.retriever import Retriever
from twotower.index.tuner import tune
from twotower.towers import IDTower


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    tf.keras.utils.set_random_seed(1)
    query_tower, item_tower = IDTower(30, 8), IDTower(2500, 8)
    items = embed(item_tower, np.arange(2500), progress=False)
    index = build_index(items, np.arange(2500) + 7, distance="cosine", num_leaves=40,
                        num_leaves_to_search=4, reorder=50, brute_force=False)
    tune(index, query_tower(np.arange(30)).numpy(), target_recall=0.9, repeats=1,
         progress=False)
    retriever = Retriever(index, query_tower, item_tower)
    path = str(tmp_path_factory.mktemp("idx") / "folder")
    persistence.save(path, retriever, query_example=np.arange(2),
                     item_example=np.arange(2), extra={"note": "test"})
    return path, retriever


def _copy(src, dst):
    import shutil
    shutil.copytree(src, dst)
    return dst


def test_reload_answers_the_same(saved, tmp_path):
    path, retriever = saved
    moved = _copy(path, str(tmp_path / "moved"))  # relative paths: the folder can move
    loaded = persistence.load(moved)
    users = np.arange(30)
    seen = [[int(i)] for i in retriever.u2i(users, 1)[0][:, 0]]
    want = retriever.u2i(users, 10, exclude=seen)
    got = loaded.u2i(users, 10, exclude=seen)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_allclose(got[1], want[1], rtol=1e-5)
    np.testing.assert_array_equal(loaded.i2i([7, 8], 5)[0], retriever.i2i([7, 8], 5)[0])
    np.testing.assert_array_equal(loaded.i2i_features(np.arange(3), 3)[0],
                                  retriever.i2i_features(np.arange(3), 3)[0])
    assert loaded.index.config == retriever.index.config
    m = loaded.manifest
    assert (m["dim"], m["distance"], m["num_items"]) == (8, "cosine", 2500)
    assert m["versions"]["scann"] and m["extra"] == {"note": "test"}
    assert "scann/scann_assets.pbtxt" in m["files"]
    assert "/" not in open(os.path.join(moved, "scann", "scann_assets.pbtxt")).read() \
        .split("asset_path:")[1].split("\n")[0].strip(' "')


def test_updates_survive_a_save(saved, tmp_path):
    path, _ = saved
    loaded = persistence.load(path, load_towers=False)
    loaded.index.remove([7, 8, 9])
    loaded.index.add([99_999], loaded.index.vectors_of([10]) * -1)
    persistence.save(str(tmp_path / "updated"), loaded)
    again = persistence.load(str(tmp_path / "updated"))
    q = np.random.default_rng(0).normal(size=(20, 8)).astype(np.float32)
    np.testing.assert_array_equal(again.index.search(q, 10)[0], loaded.index.search(q, 10)[0])
    assert 7 not in again.index and 99_999 in again.index


def test_refuses_a_changed_file(saved, tmp_path):
    path, _ = saved
    bad = _copy(path, str(tmp_path / "bad"))
    with open(os.path.join(bad, "item_ids.npy"), "r+b") as f:
        f.seek(-1, 2)
        f.write(b"\x01")
    with pytest.raises(ValueError, match=r"does not match its manifest: .*changed \['item_ids.npy'\]"):
        persistence.load(bad)
    os.remove(os.path.join(bad, "scann", "dataset.npy"))
    with pytest.raises(ValueError, match=r"missing \['scann/dataset.npy'\]"):
        persistence.load(bad)


@pytest.mark.parametrize("key,value,match", [
    ("format", "twotower-index/0", "has format 'twotower-index/0'"),
    ("versions", {"scann": "1.0.0"}, "written with scann '1.0.0'"),
])
def test_refuses_another_version(saved, tmp_path, key, value, match):
    path, _ = saved
    bad = _copy(path, str(tmp_path / "old"))
    mpath = os.path.join(bad, "manifest.json")
    manifest = json.load(open(mpath))
    manifest[key] = value
    json.dump(manifest, open(mpath, "w"))
    with pytest.raises(ValueError, match=match):
        persistence.load(bad)


def test_refuses_a_non_index_folder(tmp_path):
    with pytest.raises(ValueError, match="is not a twotower index folder"):
        persistence.load(str(tmp_path))


def test_a_failed_save_leaves_no_folder(tmp_path):
    index = build_index(np.ones((10, 3), np.float32))
    target = tmp_path / "never"
    with pytest.raises(ValueError, match="cannot infer the input signature"):
        persistence.save(str(target), Retriever(index, object()))
    assert not target.exists() and not [p for p in os.listdir(tmp_path) if "never" in p]
