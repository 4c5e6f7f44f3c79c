"""twotower.recipes.eges on the planted MovieLens folder (4 genre/year clusters of 20
movies), its cold start, and its bad inputs."""

import json
import os

import numpy as np
import pytest

from twotower.data.side_info import encode_side_info, year_buckets
from twotower.index import load
from twotower.recipes import eges

FLAGS = ["--dim", "16", "--epochs", "6", "--window", "3", "--sample", "0", "--batch-size",
         "64", "--alpha", "0.05", "--walks-per-node", "4", "--cold-fraction", "0.2",
         "--max-gap-hours", "1000", "--quiet"]


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
    from twotower.towers.word2vec import load_model, word_vectors

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
    assert eges.main(["--out", str(target), "--quiet"]) == 2
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
        assert eges.main(["--source", planted_ml100k, "--out", out, flag, value, "--quiet"]) == 2
        assert flag in capsys.readouterr().err
    assert not os.path.exists(out)
