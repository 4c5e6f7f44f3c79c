import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

import twotower  # noqa: F401
from twotower.index import saved_model
from twotower.index.builder import build_index, embed
from twotower.index.tuner import tune
from twotower.towers import IDTower


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    tf.keras.utils.set_random_seed(2)
    query_tower, item_tower = IDTower(50, 8), IDTower(3000, 8)
    items = embed(item_tower, np.arange(3000), progress=False)
    index = build_index(items, np.arange(3000) * 2, distance="cosine", num_leaves=50,
                        num_leaves_to_search=2, reorder=20, brute_force=False)
    tune(index, query_tower(np.arange(50)).numpy(), repeats=1, progress=False)
    path = str(tmp_path_factory.mktemp("sm") / "model")
    saved_model.export(path, index, query_tower, k=10, query_example=np.arange(2))
    return path, index, query_tower


def test_reloads_in_a_fresh_process_with_the_same_ids(exported, tmp_path):
    path, index, query_tower = exported
    users = np.arange(50)
    here = saved_model.load(path)
    before = here.serve(tf.constant(users, tf.int64))["item_ids"].numpy()
    code = textwrap.dedent(f"""
        import numpy as np, twotower, tensorflow as tf
        from twotower.index import saved_model
        m = saved_model.load({path!r})
        out = m.serve(tf.constant(np.arange(50), tf.int64))
        np.save({str(tmp_path / 'ids.npy')!r}, out["item_ids"].numpy())
    """)
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
    np.testing.assert_array_equal(np.load(tmp_path / "ids.npy"), before)
    # Built from the index's own trained assets, it answers as the pybind index does; the
    # query is L2-normalised by TF there and by numpy here, and a last-bit difference can
    # flip an AH lookup-table rounding at the reorder boundary, so allow a sliver.
    want, _ = index.search(query_tower(users).numpy(), 10)
    assert (before == want).mean() >= 0.97


def test_exact_export_equals_brute_force(tmp_path):
    rng = np.random.default_rng(0)
    items = rng.normal(size=(500, 6)).astype(np.float32)
    q = rng.normal(size=(20, 6)).astype(np.float32)
    index = build_index(items, np.arange(500) + 1)
    path = saved_model.export(str(tmp_path / "exact"), index, k=5)
    loaded = saved_model.load(path)
    out = loaded.serve_embeddings(tf.constant(q))
    want, _ = index.exact_search(q, 5)
    np.testing.assert_array_equal(out["item_ids"].numpy(), want)


def test_bad_k(exported, tmp_path):
    _, index, query_tower = exported
    with pytest.raises(ValueError, match=r"k must be an int in \[1, 3000\], got 0"):
        saved_model.export(str(tmp_path / "x"), index, query_tower, k=0)
