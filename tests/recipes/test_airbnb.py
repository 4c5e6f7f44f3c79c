"""twotower.recipes.airbnb on planted click sessions, and its bad inputs."""

import json
import os

import numpy as np
import pytest

from twotower.index import load
from twotower.recipes import airbnb

FLAGS = ["--dim", "16", "--epochs", "8", "--batch-size", "64", "--alpha", "0.05",
         "--sample", "0", "--quiet"]


def write_sessions(path, n_sessions=160, seed=0, length=6):
    """8 tastes of 5 listings, market = taste // 2; a session clicks 6 listings of one taste
    (30% from a random taste) and half the sessions book their 5th click."""
    rng = np.random.default_rng(seed)
    lines = ["session_id,item_id,timestamp,booked,market"]
    for s in range(n_sessions):
        taste = s % 8
        book = rng.random() < 0.5
        for k in range(length):
            t = int(rng.integers(8)) if rng.random() < 0.3 else taste
            lines.append(f"s{s},t{t}_{rng.integers(5)},{1000 * s + k},"
                         f"{int(book and k == length - 2)},m{t // 2}")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return str(path)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("airbnb")
    out = str(folder / "out")
    rc = airbnb.main(["--sessions", write_sessions(folder / "s.csv"), "--out", out] + FLAGS)
    assert rc == 0
    return out


def test_metrics_side_by_side(run, capsys):
    m = json.load(open(os.path.join(run, "metrics.json")))
    for model in ("airbnb", "item2vec"):
        for key in ("hr@10", "ndcg@10", "same_market@10"):
            assert 0 <= m[f"{model}_{key}"] <= 1
        # planted tastes: both embeddings rank the next click far above popularity
        assert m[f"{model}_hr@10"] > m["popularity_hr@10"] + 0.2
    assert m["eval_sessions"] == 160 and m["num_items"] == 40 and m["num_markets"] == 4
    assert m["booked_sessions"] > 40 and m["booked_items_out_of_vocabulary"] == 0
    # the booking pairs are extra examples on top of item2vec's window pairs
    assert m["airbnb_examples"] > m["item2vec_examples"]


def test_vectors_model_and_index(run):
    """The index answers i2i by the CSV's own item ids; the model reloads with the same
    vectors as vectors.txt."""
    from twotower.towers.word2vec import load_model, word_vectors

    retriever = load(os.path.join(run, "index"))
    lines = open(os.path.join(run, "vectors.txt")).read().splitlines()
    assert lines[0] == "40 16" and len(lines) == 41
    ids, _ = retriever.i2i(["t0_1", "t5_3"], k=4)
    assert ids.shape == (2, 4) and "t0_1" not in ids[0]
    # planted tastes: a listing's neighbours are mostly of its own taste
    assert np.mean([str(i).startswith("t0_") for i in ids[0]]) >= 0.5
    assert np.mean([str(i).startswith("t5_") for i in ids[1]]) >= 0.5
    model, vocab, config = load_model(os.path.join(run, "model"))
    saved = np.array([[float(x) for x in line.split()[1:]] for line in lines[1:]])
    np.testing.assert_allclose(word_vectors(model, config.arch), saved, atol=1e-5)
    assert len(vocab) == 40 and os.path.getsize(os.path.join(run, "hit_rate.png")) > 1000


def test_single_item_sessions_and_oov_booking(tmp_path, capsys):
    path = tmp_path / "s.csv"
    write_sessions(path, n_sessions=120)
    with open(path, "a") as f:
        f.write("lonely,t0_0,5,1,m0\n")                     # a single-click session
        f.write("rare1,t0_1,6,0,m0\nrare1,only_once,7,1,m9\n")  # its booking is rare
    out = str(tmp_path / "out")
    assert airbnb.main(["--sessions", str(path), "--out", out, "--min-count", "2"] + FLAGS) == 0
    m = json.load(open(os.path.join(out, "metrics.json")))
    assert m["single_item_sessions_dropped"] == 1
    assert m["booked_items_out_of_vocabulary"] == 1       # min_count 2 drops "only_once"


def test_bad_inputs(tmp_path, capsys):
    path = tmp_path / "single.csv"
    path.write_text("session_id,item_id,timestamp,booked,market\na,x,1,0,m\nb,y,2,1,m\n")
    assert airbnb.main(["--sessions", str(path), "--out", str(tmp_path / "o")] + FLAGS) == 2
    assert "single-item" in capsys.readouterr().err
    assert airbnb.main(["--sessions", str(tmp_path / "nope.csv"), "--out",
                        str(tmp_path / "o")] + FLAGS) == 2
    assert "nope.csv" in capsys.readouterr().err
    good = write_sessions(tmp_path / "g.csv", n_sessions=16)
    assert airbnb.main(["--sessions", good, "--out", str(tmp_path / "o"),
                        "--market-negatives", "-1"] + FLAGS) == 2
    assert "--market-negatives" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "o")


def test_non_utf8_sessions_name_the_file_and_line(tmp_path, capsys):
    path = tmp_path / "s.csv"
    write_sessions(path, n_sessions=8)
    data = path.read_bytes().splitlines(keepends=True)
    data[5] = data[5].replace(b",m", b",m\xe9", 1)                # a Latin-1 byte on line 6
    path.write_bytes(b"".join(data))
    out = tmp_path / "o"
    assert airbnb.main(["--sessions", str(path), "--out", str(out)] + FLAGS) == 2
    err = capsys.readouterr().err
    assert str(path) in err and "line 6" in err and "not UTF-8" in err
    assert len(err.strip().splitlines()) == 1 and not out.exists()


def test_out_checked_before_reading_sessions(tmp_path, capsys, monkeypatch):
    def no_work(*a, **k):
        raise AssertionError("the sessions were read before --out was checked")

    monkeypatch.setattr(airbnb, "load_sessions", no_work)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "data.csv").write_text("the user's")
    assert airbnb.main(["--sessions", "whatever.csv", "--out", str(mine)] + FLAGS) == 2
    err = capsys.readouterr().err
    assert str(mine) in err and "--overwrite" in err
    assert (mine / "data.csv").read_text() == "the user's"
