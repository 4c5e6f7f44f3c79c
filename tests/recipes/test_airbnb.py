"""twotower.recipes.airbnb on planted click sessions (a CSV, or an interaction log), the
bookings that end sessions, the popularity row, and its bad inputs."""

import json
import os

import numpy as np
import pytest

from twotower import cli
from twotower.data.sessions import read_session_csv
from twotower.index import load
from twotower.recipes import airbnb

FLAGS = ["--dim", "16", "--epochs", "8", "--batch-size", "64", "--alpha", "0.05",
         "--sample", "0", "--quiet"]


@pytest.fixture(autouse=True)
def no_debug(monkeypatch):
    monkeypatch.delenv("TWOTOWER_DEBUG", raising=False)


def twotower_airbnb(args):
    """`twotower airbnb ARGS` in this process: the recipe behind the CLI's handler."""
    return cli.main(["airbnb", *args])


def write_sessions(path, n_sessions=160, seed=0, length=6, booked_at=-1):
    """8 tastes of 5 listings, market = taste // 2; a session clicks 6 listings of one taste
    (30% from a random taste) and half the sessions book — by default their last event,
    as real booked sessions end (``booked_at``: the event's position)."""
    rng = np.random.default_rng(seed)
    lines = ["session_id,item_id,timestamp,booked,market"]
    booked_at %= length
    for s in range(n_sessions):
        taste = s % 8
        book = rng.random() < 0.5
        for k in range(length):
            t = int(rng.integers(8)) if rng.random() < 0.3 else taste
            lines.append(f"s{s},t{t}_{rng.integers(5)},{1000 * s + k},"
                         f"{int(book and k == booked_at)},m{t // 2}")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return str(path)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("airbnb")
    out = str(folder / "out")
    path = write_sessions(folder / "s.csv")
    rc = airbnb.main(["--sessions", path, "--out", out] + FLAGS)
    assert rc == 0
    return out, read_session_csv(path).num_booked_sessions


def test_metrics_side_by_side(run, capsys):
    run, booked = run
    m = json.load(open(os.path.join(run, "metrics.json")))
    for model in ("airbnb", "item2vec"):
        for key in ("hr@10", "ndcg@10", "same_market@10"):
            assert 0 <= m[f"{model}_{key}"] <= 1
        # planted tastes: both embeddings rank the next click far above popularity
        assert m[f"{model}_hr@10"] > m["popularity_hr@10"] + 0.2
    assert 0 <= m["popularity_ndcg@10"] <= m["popularity_hr@10"]
    assert m["eval_sessions"] == 160 and m["num_items"] == 40 and m["num_markets"] == 4
    # every booking ends its session, and every one of them counts (it read as 0 before)
    assert booked > 60 and m["booked_sessions"] == booked
    assert m["booked_items_out_of_vocabulary"] == 0
    # the booking pairs are extra examples on top of item2vec's window pairs
    assert m["airbnb_examples"] > m["item2vec_examples"]


def test_the_table_has_a_popularity_row(run, tmp_path, capsys):
    """The side-by-side table: one row per model, popularity among them."""
    run, _ = run
    m = json.load(open(os.path.join(run, "metrics.json")))
    table = airbnb.format_table(airbnb.comparison(m))
    lines = table.splitlines()
    assert lines[0].split("|")[1:-1] == [" model      ", " hr@10  ", " ndcg@10 ",
                                         " same_market@10 "]
    rows = {line.split("|")[1].strip(): line for line in lines[2:]}
    assert list(rows) == ["airbnb", "item2vec", "popularity"]
    assert f"{m['popularity_hr@10']:.4f}" in rows["popularity"]
    assert rows["popularity"].split("|")[4].strip() == "-"      # no neighbours to check


def test_vectors_model_and_index(run):
    """The index answers i2i by the CSV's own item ids; the model reloads with the same
    vectors as vectors.txt."""
    from twotower.training.word2vec_trainer import load_model, word_vectors

    run, _ = run
    retriever = load(os.path.join(run, "index"))
    lines = open(os.path.join(run, "vectors.txt")).read().splitlines()
    assert lines[0] == "40 16" and len(lines) == 41
    assert {line.split(" ")[0] for line in lines[1:]} == {f"t{t}_{i}" for t in range(8)
                                                          for i in range(5)}  # the CSV's ids
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
    assert twotower_airbnb(["--sessions", str(path), "--out", str(tmp_path / "o")] + FLAGS) == 2
    assert "single-item" in capsys.readouterr().err
    assert twotower_airbnb(["--sessions", str(tmp_path / "nope.csv"), "--out",
                            str(tmp_path / "o")] + FLAGS) == 2
    assert "nope.csv" in capsys.readouterr().err
    good = write_sessions(tmp_path / "g.csv", n_sessions=16)
    assert twotower_airbnb(["--sessions", good, "--out", str(tmp_path / "o"),
                            "--market-negatives", "-1"] + FLAGS) == 2
    assert "--market-negatives" in capsys.readouterr().err
    assert twotower_airbnb(["--booked-col", "is_booked", "--out", str(tmp_path / "o")]
                           + FLAGS) == 2
    assert "--booked-col 'is_booked' names a column of --sessions" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "o")


def test_non_utf8_sessions_name_the_file_and_line(tmp_path, capsys):
    path = tmp_path / "s.csv"
    write_sessions(path, n_sessions=8)
    data = path.read_bytes().splitlines(keepends=True)
    data[5] = data[5].replace(b",m", b",m\xe9", 1)                # a Latin-1 byte on line 6
    path.write_bytes(b"".join(data))
    out = tmp_path / "o"
    assert twotower_airbnb(["--sessions", str(path), "--out", str(out)] + FLAGS) == 2
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
    assert twotower_airbnb(["--sessions", "whatever.csv", "--out", str(mine)] + FLAGS) == 2
    err = capsys.readouterr().err
    assert str(mine) in err and "--overwrite" in err
    assert (mine / "data.csv").read_text() == "the user's"


def _load(argv, capsys):
    args = airbnb.build_parser().parse_args(argv + ["--out", "unused"])
    log, origin, external, movielens = airbnb.load_sessions(args)
    return log, capsys.readouterr().err


def test_warns_when_booking_like_columns_give_no_booking(tmp_path, capsys):
    path = tmp_path / "s.csv"
    text = open(write_sessions(path, n_sessions=16)).read()
    path.write_text(text.replace(",booked,", ",is_booked,", 1))
    log, err = _load(["--sessions", str(path)], capsys)
    assert not log.booked.any()
    assert err.count("\n") == 1 and "twotower airbnb: warning: " in err
    assert "--booked-col is_booked" in err
    log, err = _load(["--sessions", str(path), "--booked-col", "is_booked"], capsys)
    assert log.booked.any() and err == ""
    lines = text.splitlines()
    path.write_text("\n".join([lines[0]] + [l[: l.rindex(",", 0, l.rindex(","))] + ",0,"
                                            + l.rsplit(",", 1)[1] for l in lines[1:]]) + "\n")
    log, err = _load(["--sessions", str(path)], capsys)
    assert not log.booked.any() and "'booked' marks no booking" in err


def test_own_interaction_log_with_bookings_and_markets(tmp_path, capsys):
    """An interaction log (user_id,item_id,timestamp + booked, market) split into sessions
    at --session-gap: bookings count, vectors.txt and the index keep the log's ids."""
    rng = np.random.default_rng(1)
    lines = ["user_id,item_id,timestamp,booked,market"]
    for u in range(40):
        taste, t = u % 4, 1_700_000_000 + 100_000 * u
        for visit in range(3):                       # three visits, 2 hours apart
            for k in range(5):
                lines.append(f"guest {u},home {taste}-{rng.integers(5)},{t},"
                             f"{int(k == 4 and visit == 0)},city{taste % 2}")
                t += 60
            t += 7200
    log = tmp_path / "log.csv"
    log.write_text("\n".join(lines) + "\n")
    out = tmp_path / "o"
    assert airbnb.main(["--interactions", str(log), "--session-gap", "1800", "--out",
                        str(out), "--epochs", "2"] + FLAGS[:2] + FLAGS[4:]) == 0
    m = json.load(open(out / "metrics.json"))
    assert m["sessions"] == 120 and m["booked_sessions"] == 40 and m["num_markets"] == 2
    printed = capsys.readouterr().out
    assert "| popularity |" in printed
    keys = [line.split(" ")[0] for line in open(out / "vectors.txt").read().splitlines()[1:]]
    assert "home_0-1" in keys and len(keys) == m["num_items"]   # whitespace -> '_'
    ids, _ = load(str(out / "index")).i2i(["home 0-1"], k=3)    # the index: the exact ids
    assert ids.shape == (1, 3)
    # without a market column, same-market negatives are refused by name
    plain = tmp_path / "plain.csv"
    plain.write_text("\n".join(l.rsplit(",", 2)[0] for l in lines) + "\n")
    assert twotower_airbnb(["--interactions", str(plain), "--out", str(tmp_path / "p")]
                           + FLAGS) == 2
    err = capsys.readouterr().err
    assert "--market-negatives 5" in err and "--market-negatives 0" in err
    assert err.startswith("twotower airbnb: error: ") and err.count("\n") == 1


def test_errors_raise_for_the_cli_and_debug_shows_them(tmp_path, capsys, monkeypatch):
    args = ["--sessions", str(tmp_path / "nope.csv"), "--out", str(tmp_path / "o")] + FLAGS
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        airbnb.main(args)
    monkeypatch.setenv("TWOTOWER_DEBUG", "1")
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        twotower_airbnb(args)
    monkeypatch.delenv("TWOTOWER_DEBUG")
    assert twotower_airbnb(args) == 2
    assert capsys.readouterr().err.startswith("twotower airbnb: error: --sessions ")
