"""Day two through the CLI: `twotower youtube --warm-start PREV_OUT --interactions DAY2`.

Two days of a log with string ids: users like one of 4 categories; day 1 has users
u0..u119 and items item_000..item_079, day 2 users u60..u179 (half of them new) and
items item_040..item_099 (item_080..item_099 new), and item_100 only in the items
table. Every item keeps its category on both days.
"""

import json
import os

import numpy as np
import pytest

import twotower.cli as cli
from twotower.index import load

CATEGORIES = ("red", "blue", "green", "gold")
COMMON = ["--batch-size", "64", "--dim", "16", "--no-jit", "--quiet"]


def write_day(path, users, items, seed):
    rng = np.random.default_rng(seed)
    items = np.asarray(items)
    with open(path, "w") as f:
        f.write("user_id,item_id,timestamp\n")
        for u in users:
            mine = items[items % 4 == u % 4]
            for t in range(8):
                pick = int(rng.choice(mine if t != 4 else items))
                f.write(f"u{u},item_{pick:03d},{1_700_000_000 + 3600 * t + u}\n")
    return path


def write_items(path):
    with open(path, "w") as f:
        f.write("item_id,category\n")
        for i in range(101):
            f.write(f"item_{i:03d},{CATEGORIES[i % 4]}\n")
    return path


@pytest.fixture(scope="module")
def days(tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("days"))
    day1 = write_day(os.path.join(folder, "day1.csv"), range(0, 120), range(0, 80), 1)
    day2 = write_day(os.path.join(folder, "day2.csv"), range(60, 180), range(40, 100), 2)
    items = write_items(os.path.join(folder, "items.csv"))
    prev = os.path.join(folder, "day1_out")
    assert cli.main(["youtube", "--interactions", day1, "--items", items, "--epochs", "1",
                     *COMMON, "--out", prev]) == 0
    return {"folder": folder, "day1": day1, "day2": day2, "items": items, "prev": prev}


def vectors_by_id(index_dir):
    r = load(index_dir)
    keys = r.item_vocab.values[np.asarray(r.index.item_ids)]
    return dict(zip(keys.tolist(), np.asarray(r.index.vectors))), r


def state(out):
    with np.load(os.path.join(out, "warm_start", "arrays.npz")) as z:
        arrays = {k: z[k] for k in z.files}
    vocabs = {s: np.load(os.path.join(out, "warm_start", f"{s}_vocab.npy"))
              for s in ("item", "user")}
    return arrays, vocabs


def id_rows(out, tower, feature, side):
    """{external id: embedding row} of an id feature, from a run's warm_start state."""
    arrays, vocabs = state(out)
    with open(os.path.join(out, "warm_start", "state.json")) as f:
        spec = next(s for s in json.load(f)["towers"][tower]["features"]
                    if s["name"] == feature)
    table = arrays[f"{tower}/emb/{feature}/0"]
    k = spec["num_oov"]
    return {vocabs[side][v]: table[k + p] for p, v in enumerate(spec["vocabulary"])}, table


def test_empty_day_changes_nothing(days, tmp_path):
    """The empty day: the same log, --epochs 0. Every item vector, user vector and
    metric of the export equals the previous run's."""
    out = str(tmp_path / "same")
    assert cli.main(["youtube", "--interactions", days["day1"], "--items", days["items"],
                     "--epochs", "0", *COMMON, "--out", out,
                     "--warm-start", days["prev"]]) == 0
    before, r0 = vectors_by_id(os.path.join(days["prev"], "index"))
    after, r1 = vectors_by_id(os.path.join(out, "index"))
    assert before.keys() == after.keys()
    for k in before:
        np.testing.assert_allclose(after[k], before[k], atol=1e-6)
    np.testing.assert_allclose(r1.user_vectors, r0.user_vectors, atol=1e-6)
    m0 = json.load(open(os.path.join(days["prev"], "metrics.json")))
    m1 = json.load(open(os.path.join(out, "metrics.json")))
    for key in ("recall@10", "recall@50", "ndcg@10", "mrr"):
        assert m1[key] == pytest.approx(m0[key], abs=1e-6), key
    # the state it leaves is the previous one: weights, estimator, optimizer slots
    a0, _ = state(days["prev"])
    a1, _ = state(out)
    assert a0.keys() == a1.keys() and "slot/iterations" in a0
    for k in a0:
        np.testing.assert_allclose(a1[k], a0[k], atol=1e-6, err_msg=k)


@pytest.fixture(scope="module")
def frozen_day2(days):
    """Day 1's model re-exported for day 2 (--epochs 0: nothing trains)."""
    out = os.path.join(days["folder"], "day2_frozen")
    assert cli.main(["youtube", "--interactions", days["day2"], "--items", days["items"],
                     "--epochs", "0", *COMMON, "--out", out,
                     "--warm-start", days["prev"]]) == 0
    return out


def test_new_day_known_ids_keep_rows_new_items_by_features(days, frozen_day2):
    """A new log, --epochs 0: known items are embedded exactly as before, the id rows of
    known users and items are their previous rows, new items are in the index and
    embedded from their features (the OOV id row + their category: two new items of one
    category get one vector)."""
    out = frozen_day2
    before, _ = vectors_by_id(os.path.join(days["prev"], "index"))
    after, r = vectors_by_id(os.path.join(out, "index"))
    known = sorted(set(before) & set(after))
    assert len(known) >= 40
    for k in known:
        np.testing.assert_allclose(after[k], before[k], atol=1e-6)
    # items 80..100 had no id row on day 1 (only in the items table): no row now either
    # (nothing trained them), so each is embedded from its category alone
    day1_rows, _ = id_rows(days["prev"], "item_tower", "item_id", "item")
    assert not {f"item_{i:03d}" for i in range(80, 101)} & set(day1_rows)
    np.testing.assert_allclose(after["item_080"], after["item_084"], atol=1e-6)
    assert not np.allclose(after["item_080"], after["item_081"])   # other category
    ids, _ = r.i2i(["item_080"], 5)       # a new item is retrievable and finds its kin
    assert all(int(i[-3:]) % 4 == 0 for i in ids[0])
    for tower, feature, side in (("item_tower", "item_id", "item"),
                                 ("query_tower", "user_id", "user")):
        old, _ = id_rows(days["prev"], tower, feature, side)
        now, table = id_rows(out, tower, feature, side)
        both = sorted(set(old) & set(now))
        assert both and len(now) > len(both)
        for k in both:
            np.testing.assert_array_equal(now[k], old[k])
        for k in set(now) - set(old):                 # nothing trains them: the OOV row
            np.testing.assert_array_equal(now[k], table[0])


def test_warm_start_trains_on_from_the_previous_state(days, frozen_day2, tmp_path):
    """--epochs 1 on day 2: the optimizer's step count carries on from day 1's, the
    frequency estimator's clock too, and one epoch on day 2 beats day 1's model
    re-exported for day 2 (--epochs 0) on day 2's held-out items."""
    out = str(tmp_path / "day2_warm")
    assert cli.main(["youtube", "--interactions", days["day2"], "--items", days["items"],
                     "--epochs", "1", *COMMON, "--out", out,
                     "--warm-start", days["prev"]]) == 0
    a0, _ = state(days["prev"])
    a1, _ = state(out)
    assert int(a1["slot/iterations"]) > int(a0["slot/iterations"]) > 0
    assert int(a1["loss/estimator/occurrences"]) > int(a0["loss/estimator/occurrences"])
    metrics = json.load(open(os.path.join(out, "metrics.json")))
    frozen = json.load(open(os.path.join(frozen_day2, "metrics.json")))
    assert metrics["recall@10"] > frozen["recall@10"], (metrics, frozen)


def _refused(capsys, argv):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_refused_other_recipe_shapes_columns_and_foreign_folders(days, tmp_path, capsys):
    base = ["--interactions", days["day2"], "--items", days["items"], "--epochs", "1",
            "--out", str(tmp_path / "x"), "--warm-start", days["prev"]]
    err = _refused(capsys, ["dssm", *base, *COMMON])
    assert "--warm-start" in err and "recipe 'youtube', not 'dssm'" in err
    err = _refused(capsys, ["youtube", *base, "--batch-size", "64", "--dim", "8"])
    assert "other tower shapes" in err and "--dim" in err
    err = _refused(capsys, ["youtube", *base, *COMMON, "--hidden", "32"])
    assert "other tower shapes" in err and "--hidden" in err
    other_items = os.path.join(days["folder"], "items_more.csv")
    with open(other_items, "w") as f:
        f.write("item_id,category,price\n")
        for i in range(101):
            f.write(f"item_{i:03d},{CATEGORIES[i % 4]},{i + 0.5}\n")
    err = _refused(capsys, ["youtube", "--interactions", days["day2"], "--items",
                            other_items, "--epochs", "1", *COMMON, "--warm-start",
                            days["prev"]])
    assert "other item feature columns" in err and "price" in err
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    err = _refused(capsys, ["youtube", *base[:-1], str(mine), *COMMON])
    assert "not a folder twotower wrote" in err
    err = _refused(capsys, ["youtube", "--epochs", "0", *COMMON])
    assert "epochs must be an int >= 1" in err
    err = _refused(capsys, ["youtube", "--warm-start", days["prev"], *COMMON])
    assert "needs --interactions" in err


def test_the_day_two_loop_writes_over_its_own_folder(days, tmp_path):
    """The README's loop: --warm-start OUT --out OUT --overwrite reads the previous state
    before the new one is swapped in, and a server following OUT/index swaps it in."""
    import shutil

    from twotower.index.server.app import create_app

    out = str(tmp_path / "today")
    shutil.copytree(days["prev"], out)
    before, _ = state(out)
    index = os.path.join(out, "index")
    # what `twotower serve OUT/index` runs (its state under the limits middleware)
    app = create_app(load(index), folder=index).app
    served = app.state.reloader.version["manifest_sha256"]
    assert cli.main(["youtube", "--interactions", days["day2"], "--items", days["items"],
                     "--epochs", "1", *COMMON, "--warm-start", out, "--out", out,
                     "--overwrite"]) == 0
    after, _ = state(out)
    assert int(after["slot/iterations"]) > int(before["slot/iterations"])
    # the server following OUT/index picks the new export up (its polling step)
    answer = app.state.reloader.reload(force=False)
    assert answer["reloaded"] and answer["version"]["manifest_sha256"] != served
    assert app.state.service.retriever.num_items == 101
