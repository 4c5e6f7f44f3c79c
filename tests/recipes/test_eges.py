"""twotower.recipes.eges on the planted MovieLens folder (4 genre/year clusters of 20
movies), its cold start, on a user's own log with an item table, and its bad inputs."""

import json
import os

import numpy as np
import pytest

from twotower import cli
from twotower.data.feature_table import read_feature_table
from twotower.data.side_info import encode_side_info, side_info_from_table, year_buckets
from twotower.index import load
from twotower.recipes import eges

FLAGS = ["--dim", "16", "--epochs", "6", "--window", "3", "--sample", "0", "--batch-size",
         "64", "--alpha", "0.05", "--walks-per-node", "4", "--cold-fraction", "0.2",
         "--max-gap-hours", "1000", "--quiet"]


@pytest.fixture(autouse=True)
def no_debug(monkeypatch):
    monkeypatch.delenv("TWOTOWER_DEBUG", raising=False)


@pytest.fixture(scope="module")
def run(planted_ml100k, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("eges") / "out")
    assert eges.main(["--source", planted_ml100k, "--out", out, "--compare-deepwalk"] + FLAGS) == 0
    return out


def _vectors(path):
    names, rows = [], []
    with open(path) as f:
        f.readline()
        for line in f:
            parts = line.split()
            names.append(parts[0])
            rows.append([float(x) for x in parts[1:]])
    return names, np.array(rows)


def test_metrics(run):
    m = json.load(open(os.path.join(run, "metrics.json")))
    for key in ("eges_hr@10", "item2vec_hr@10", "deepwalk_hr@10", "eges_cold_hr@10",
                "eges_cold_neighbour_precision@10"):
        assert 0 <= m[key] <= 1
    assert m["hidden_items"] == 16 and m["item2vec_cold_answered"] == 0
    assert m["num_items"] == 81 and m["graph_isolated_nodes"] >= 17  # hidden + never rated
    assert m["eges_hr@10"] > m["popularity_hr@10"]


def test_cold_items_land_near_their_side_info_siblings(run):
    """Hidden movies were never walked: their vectors come from genre + year alone, which
    are those of their cluster, so their nearest walked movies are of the same cluster."""
    m = json.load(open(os.path.join(run, "metrics.json")))
    names, vectors = _vectors(os.path.join(run, "vectors.txt"))
    assert len(names) == 81                      # every movie, cold ones included
    assert m["eges_cold_neighbour_precision@10"] > m["popularity_cold_neighbour_precision@10"]
    colour = np.array([n.split(":")[1].split("_")[0] for n in names])
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    retriever = load(os.path.join(run, "index"))           # addressed by movie id 1..81
    ids, _ = retriever.i2i(np.arange(1, 81), k=5)
    same = (colour[np.asarray(ids) - 1] == colour[:80, None]).mean()
    assert same > 0.8
    # the never-rated movie 81 (Action, 1990: the red cluster's side information)
    sims = unit[:80] @ unit[80]
    assert (colour[np.argsort(-sims)[:5]] == "Red").mean() >= 0.8


def test_model_folder_reloads_with_its_side_info_tower(run):
    from twotower.towers.side_info_tower import SideInfoTower
    from twotower.training.word2vec_trainer import load_model, word_vectors

    model, vocab, config = load_model(os.path.join(run, "model"))
    assert isinstance(model.query_tower, SideInfoTower) and len(vocab) == 81
    _, vectors = _vectors(os.path.join(run, "vectors.txt"))
    np.testing.assert_allclose(word_vectors(model, config.arch), vectors, atol=1e-5)
    m = json.load(open(os.path.join(run, "metrics.json")))
    assert m["index_items"] == 81 and os.path.getsize(os.path.join(run, "hit_rate.png")) > 1000


def test_out_checked_before_any_work(tmp_path, capsys, monkeypatch):
    def no_work(*a, **k):
        raise AssertionError("MovieLens was read before --out was checked")

    monkeypatch.setattr(eges, "load_movielens", no_work)
    target = tmp_path / "a_file"
    target.write_text("keep")
    assert cli.main(["eges", "--out", str(target), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert str(target) in err and len(err.strip().splitlines()) == 1
    assert target.read_text() == "keep"


def test_side_info_encoding_with_missing_values():
    codes, vocab = encode_side_info({"genres": [("Drama", "War"), (), ("War",)],
                                     "year": year_buckets([1994, 0, 2001])})
    assert vocab["genres"] == ["Drama", "War"] and vocab["year"] == ["1990-1994", "2000-2004"]
    assert codes["genres"].tolist() == [[1, 2], [0, 0], [2, 0]]
    assert codes["year"].tolist() == [1, 0, 2]       # 0 = missing
    with pytest.raises(ValueError, match="one value per item"):
        encode_side_info({"a": [1, 2], "b": [1]})


def test_helpers_and_bad_inputs(planted_ml100k, tmp_path, capsys):
    seqs = [np.array([0, 1, 2, 3]), np.array([2, 3])]
    visible, hidden = eges.hide_items(seqs, 5, 0.25, seed=0)
    assert hidden.sum() == 1 and all(not hidden[s].any() for s in visible)
    assert eges.cold_pairs([np.array([0, 1, 2])], np.array([False, True, False])) == [(0, 1, set())]
    out = str(tmp_path / "o")
    for flag, value in (("--cold-fraction", "1.5"), ("--walk-length", "1"), ("--dim", "0")):
        assert cli.main(["eges", "--source", planted_ml100k, "--out", out, flag, value,
                         "--quiet"]) == 2
        assert flag in capsys.readouterr().err
    assert not os.path.exists(out)


def test_the_table_sets_popularity_beside_the_models(run, capsys):
    m = json.load(open(os.path.join(run, "metrics.json")))
    assert 0 <= m["popularity_ndcg@10"] <= m["popularity_hr@10"]
    lines = eges.format_table(eges.comparison(m)).splitlines()
    assert [c.strip() for c in lines[0].split("|")[1:-1]] == [
        "model", "hr@10", "ndcg@10", "cold_hr@10", "cold_neighbour_precision@10"]
    rows = {line.split("|")[1].strip(): line for line in lines[2:]}
    assert list(rows) == ["eges", "item2vec", "deepwalk", "popularity"]
    assert f"{m['popularity_cold_neighbour_precision@10']:.4f}" in rows["popularity"]


def write_shop(folder, users=120, seed=0):
    """A log with string ids (4 product lines of 10, "sku <line>.<k>" — with a space — a
    user buys from line u % 4) and an item table: brand = the line, tags, a price, and
    "sku new" that no one bought, of line 2."""
    rng = np.random.default_rng(seed)
    log, items = os.path.join(folder, "log.csv"), os.path.join(folder, "items.csv")
    with open(log, "w") as f:
        f.write("user_id,product_id,timestamp\n")
        for u in range(users):
            for k in range(8):
                line = int(rng.integers(4)) if k == 4 else u % 4
                f.write(f"u{u},sku {line}.{rng.integers(10)},{1_700_000_000 + 60 * k}\n")
    with open(items, "w") as f:
        f.write("product_id,brand,tags,price\n")
        for line in range(4):
            for k in range(10):
                f.write(f"sku {line}.{k},brand{line},line{line}|all,{100 * line + k}\n")
        f.write("sku new,brand2,line2|all,205\n")
    return log, items


def test_own_log_with_an_item_table(tmp_path, capsys):
    """--interactions + --items: side information from the table's columns; the item only
    in the table gets a vector from them; vectors.txt and the index keep the log's ids."""
    log, items = write_shop(str(tmp_path))
    out = str(tmp_path / "o")
    assert eges.main(["--interactions", log, "--items", items, "--out", out] + FLAGS[:-5]
                     + ["--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "brand                categorical" in printed and "price" in printed
    assert "1 item of" in printed and "not in the log" in printed
    m = json.load(open(os.path.join(out, "metrics.json")))
    assert m["num_items"] == 41 and m["side_info_fields"] == 3 and m["hidden_items"] == 4
    assert m["eges_hr@10"] > m["popularity_hr@10"]
    names, vectors = _vectors(os.path.join(out, "vectors.txt"))
    assert len(names) == 41 and "sku_new" in names and "sku_2.3" in names
    retriever = load(os.path.join(out, "index"))
    ids, _ = retriever.i2i(["sku new"], k=5)             # from side information alone
    assert np.mean([str(i).startswith("sku 2.") for i in ids[0]]) >= 0.6
    from twotower.towers.side_info_tower import SideInfoTower
    from twotower.training.word2vec_trainer import load_model

    model, vocab, _ = load_model(os.path.join(out, "model"))
    assert isinstance(model.query_tower, SideInfoTower) and len(vocab) == 41


def test_own_sessions_with_ids_only(tmp_path, capsys):
    """--sessions without --items: ids only (BGE), nothing hidden, a vector per walked
    item; --cold-fraction and --items are refused where they cannot apply."""
    path = tmp_path / "s.csv"
    rng = np.random.default_rng(0)
    with open(path, "w") as f:
        f.write("session_id,item_id,timestamp\n")
        for s in range(100):
            for k in range(6):
                f.write(f"s{s},i{s % 4}-{rng.integers(8)},{k}\n")
    out = str(tmp_path / "o")
    assert eges.main(["--sessions", str(path), "--out", out] + FLAGS[:-5] + ["--quiet"]) == 0
    assert "ids only" in capsys.readouterr().out
    m = json.load(open(os.path.join(out, "metrics.json")))
    assert m["hidden_items"] == 0 and m["side_info_fields"] == 0 and "eges_cold_hr@10" not in m
    names, _ = _vectors(os.path.join(out, "vectors.txt"))
    assert len(names) == m["index_items"] == 32 and all(n.startswith("i") for n in names)
    for argv, message in ((["--cold-fraction", "0.2"], "without --items there is none"),
                          (["--side-info", "brand"], "--side-info 'brand' names columns of "
                                                     "--items")):
        assert cli.main(["eges", "--sessions", str(path), "--out", str(tmp_path / "x")]
                        + argv) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1
    assert cli.main(["eges", "--items", str(path), "--out", str(tmp_path / "x")]) == 2
    assert "needs --sessions or --interactions" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "x")


def test_side_info_from_an_item_table(tmp_path):
    path = tmp_path / "items.csv"
    path.write_text("item_id,brand,tags,price,url\n"
                    "a,acme,x|y,1,http://a\nb,acme,y,2,http://b\nc,zeta,,30,http://c\n")
    table = read_feature_table(str(path), "item_id")
    codes, notes = side_info_from_table(table, ["a", "b", "c", "d"], buckets=2)
    assert sorted(codes) == ["brand", "price", "tags"]        # url: every value distinct
    assert codes["brand"].tolist() == [1, 1, 2, 0]            # d is not in the table
    assert codes["tags"].tolist() == [[1, 2], [2, 0], [0, 0], [0, 0]]
    assert codes["price"].tolist() == [1, 2, 2, 0]
    assert any("url" in n and "left out" in n for n in notes)
    with pytest.raises(ValueError, match="--side-info 'nope'"):
        side_info_from_table(table, ["a"], columns=["nope"])
    with pytest.raises(ValueError, match="no column usable"):
        side_info_from_table(table, ["a", "b"], columns=["url"])


def test_errors_raise_for_the_cli(tmp_path, capsys, monkeypatch):
    """main raises; `twotower eges` prints one line, exit 2; TWOTOWER_DEBUG=1 raises
    (running the module: tests/recipes/test_item2vec.py)."""
    args = ["--interactions", str(tmp_path / "nope.csv"), "--out", str(tmp_path / "o")]
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        eges.main(args)
    assert cli.main(["eges", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("twotower eges: error: --interactions ") and err.count("\n") == 1
    monkeypatch.setenv("TWOTOWER_DEBUG", "1")
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        cli.main(["eges", *args])
