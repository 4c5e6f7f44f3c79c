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
    manifest["manifest_sha256"] = persistence._canonical_sha256(manifest)  # re-signed
    json.dump(manifest, open(mpath, "w"))
    with pytest.raises(ValueError, match=match):
        persistence.load(bad)


@pytest.mark.parametrize("content,match", [
    (b"[]", "must hold a JSON object, got list"),
    (b"null", "must hold a JSON object, got NoneType"),
    (b"42", "must hold a JSON object, got int"),
    (b'{"format": "twotower-index/2"}', r"is missing the keys \['config', 'dim'"),
    (b'{"format": "tw\xff"}', r"is not UTF-8 \(byte 14\)"),
    (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
    (b"{not json", "is not valid JSON"),
])
def test_a_malformed_manifest_gets_a_value_error_naming_it(saved, tmp_path, content, match):
    path, _ = saved
    bad = _copy(path, str(tmp_path / "bad"))
    with open(os.path.join(bad, "manifest.json"), "wb") as f:
        f.write(content)
    with pytest.raises(ValueError, match=match) as e:
        persistence.load(bad)
    assert "manifest.json" in str(e.value)


def _resigned(folder, change):
    mpath = os.path.join(folder, "manifest.json")
    manifest = json.load(open(mpath))
    change(manifest)
    manifest["manifest_sha256"] = persistence._canonical_sha256(manifest)
    json.dump(manifest, open(mpath, "w"))


def test_wrong_types_are_refused_even_when_re_signed(saved, tmp_path):
    path, _ = saved
    bad = _copy(path, str(tmp_path / "bad"))
    _resigned(bad, lambda m: m.update(dim="8"))
    with pytest.raises(ValueError, match="'dim' must be a JSON int, got '8'"):
        persistence.load(bad)
    _resigned(bad, lambda m: m.update(dim=8, towers={"evil": "x"}))
    with pytest.raises(ValueError, match="towers must map"):
        persistence.load(bad)


def test_every_single_byte_flip_in_the_manifest_is_refused(saved, tmp_path):
    path, _ = saved
    bad = _copy(path, str(tmp_path / "flip"))
    mpath = os.path.join(bad, "manifest.json")
    original = open(mpath, "rb").read()
    positions = np.random.default_rng(0).choice(len(original), size=60, replace=False)
    for pos in positions:
        flipped = bytearray(original)
        flipped[pos] ^= 0x01
        open(mpath, "wb").write(bytes(flipped))
        with pytest.raises(ValueError):
            persistence.read_manifest(bad)
    open(mpath, "wb").write(original)
    persistence.read_manifest(bad)


@pytest.mark.parametrize("where", ["files", "towers"])
def test_paths_outside_the_folder_are_refused(saved, tmp_path, where):
    path, _ = saved
    bad = _copy(path, str(tmp_path / "bad"))
    outside = tmp_path / "x"
    outside.write_text("secret")

    def escape(m):
        if where == "files":
            m["files"]["../x"] = m["files"].pop("item_ids.npy")
        else:
            m["towers"]["query_tower"] = "../../x"
    _resigned(bad, escape)
    with pytest.raises(ValueError, match="is not a plain relative path inside the index folder"):
        persistence.load(bad)


def test_a_symbolic_link_inside_is_refused(saved, tmp_path):
    path, _ = saved
    bad = _copy(path, str(tmp_path / "bad"))
    os.symlink("/etc/hostname", os.path.join(bad, "link"))
    with pytest.raises(ValueError, match="holds a symbolic link 'link'"):
        persistence.load(bad)


def test_an_earlier_index_is_replaced_only_with_overwrite(saved, tmp_path):
    path, retriever = saved
    index_only = Retriever(retriever.index)
    target = str(tmp_path / "again")
    persistence.save(target, index_only)
    with pytest.raises(ValueError, match="--overwrite|overwrite"):
        persistence.save(target, index_only)
    persistence.save(target, index_only, overwrite=True)
    persistence.load(target)
    user = tmp_path / "user"
    user.mkdir()
    (user / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="twotower did not write"):
        persistence.save(str(user), index_only, overwrite=True)
    assert (user / "notes.txt").read_text() == "mine"


def test_refuses_a_non_index_folder(tmp_path):
    with pytest.raises(ValueError, match="is not a twotower index folder"):
        persistence.load(str(tmp_path))


def test_a_failed_save_leaves_no_folder(tmp_path):
    index = build_index(np.ones((10, 3), np.float32))
    target = tmp_path / "never"
    with pytest.raises((ValueError, TypeError)):
        persistence.save(str(target), Retriever(index, object()))
    assert not target.exists() and not [p for p in os.listdir(tmp_path) if "never" in p]
