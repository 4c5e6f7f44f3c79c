"""twotower.recipes.item2vec on the planted MovieLens folder (4 clusters of 20 movies):
metrics, the exported model, index and plot, and the --out checks; on a user's own
interaction log and sessions CSV; its errors through the CLI."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from twotower import cli
from twotower.recipes import item2vec

FAST = ["--dim", "16", "--epochs", "10", "--window", "5", "--sample", "0", "--batch-size",
        "64", "--alpha", "0.05", "--quiet", "--probes", "1"]


@pytest.fixture(autouse=True)
def no_debug(monkeypatch):
    monkeypatch.delenv("TWOTOWER_DEBUG", raising=False)


def test_item2vec_end_to_end(planted_ml100k, tmp_path, capsys):
    out = str(tmp_path / "i2v")
    rc = item2vec.main(["--source", planted_ml100k, "--out", out, "--dim", "16", "--epochs",
                        "15", "--window", "5", "--sample", "0", "--batch-size", "64",
                        "--alpha", "0.05", "--quiet", "--probes", "2"])
    assert rc == 0
    metrics = json.load(open(os.path.join(out, "metrics.json")))
    for key in ("hr@10", "ndcg@10", "hr@10_two_tower", "ndcg@10_two_tower",
                "popularity_hr@10", "words_per_sec", "vocab_size"):
        assert key in metrics
    assert metrics["eval_users"] == 80 and 0 <= metrics["ndcg@10"] <= metrics["hr@10"] <= 1
    printed = capsys.readouterr().out
    assert "Movie" in printed                      # neighbours are printed with titles
    # planted co-occurrence: a movie's nearest neighbours come from its own cluster
    names, vectors = [], []
    with open(os.path.join(out, "vectors.txt")) as f:
        f.readline()
        for line in f:
            parts = line.split()
            names.append(parts[0])
            vectors.append([float(x) for x in parts[1:]])
    vectors = np.array(vectors)
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    colour = [n.split(":")[1].split("_")[0] for n in names]
    same = []
    for i in range(len(names)):
        sims = unit @ unit[i]
        sims[i] = -np.inf
        same += [colour[j] == colour[i] for j in np.argsort(-sims)[:5]]
    assert np.mean(same) > 0.8

    # exported: the model reloads with the same vectors, the index answers by movie id
    from twotower.index import load
    from twotower.training.word2vec_trainer import load_model, word_vectors

    model, vocab, config = load_model(os.path.join(out, "model"))
    assert [f"{w}:" for w in vocab.words] == [n.split(":")[0] + ":" for n in names]
    np.testing.assert_allclose(word_vectors(model, config.arch), vectors, atol=1e-5)
    retriever = load(os.path.join(out, "index"))
    movie_id = vocab.words[0] + 1                  # planted movie ids are index + 1
    ids, _ = retriever.i2i([movie_id], k=5)
    cluster = lambda m: (int(m) - 1) // 20
    assert ids.shape == (1, 5) and movie_id not in ids[0]
    assert np.mean([cluster(m) == cluster(movie_id) for m in ids[0]]) >= 0.6
    assert metrics["index_items"] == len(vocab) and metrics["index_recall_vs_exact"] >= 0.95
    assert os.path.getsize(os.path.join(out, "hit_rate.png")) > 1000


def test_leave_last_out():
    train, held = item2vec.leave_last_out([np.array([1, 2, 3, 4]), np.array([5, 6])])
    assert train == [[1, 2, 3], [5, 6]]
    assert held == [(3, 4, {1, 2, 3})]


@pytest.mark.parametrize("kind", ["foreign folder", "file", "earlier output"])
def test_out_checked_before_any_work(tmp_path, capsys, monkeypatch, kind):
    def no_work(*a, **k):
        raise AssertionError("MovieLens was read before --out was checked")

    monkeypatch.setattr(item2vec, "load_movielens", no_work)
    out = tmp_path / "out"
    if kind == "file":
        out.write_text("keep")
    else:
        out.mkdir()
        (out / ("notes.txt" if kind == "foreign folder" else ".twotower-artifact")).write_text("x")
    assert cli.main(["item2vec", "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert str(out) in err and "--overwrite" in err and len(err.strip().splitlines()) == 1


def write_log(folder, users=80, seed=0):
    """A shop's log with string ids: user "c<u>" buys, one a minute, 9 products of line
    u % 4 ("p-<line>-<k>", 12 per line) and one of any line; every user comes back after
    a week for 3 more of the same line."""
    rng = np.random.default_rng(seed)
    log = os.path.join(folder, "log.csv")
    sessions = os.path.join(folder, "sessions.csv")
    with open(log, "w") as f, open(sessions, "w") as g:
        f.write("customer_id,item_id,timestamp\n")
        g.write("session_id,item_id,timestamp\n")
        for u in range(users):
            t = 1_700_000_000 + 1000 * u
            for visit, n in ((0, 10), (1, 3)):
                for k in range(n):
                    line = int(rng.integers(4)) if k == 5 else u % 4
                    item = f"p-{line}-{int(rng.integers(12))}"
                    f.write(f"c{u},{item},{t}\n")
                    g.write(f"c{u}/{visit},{item},{k}\n")
                    t += 60
                t += 7 * 86400
    return log, sessions


def _keys(out):
    return [line.split(" ")[0] for line in open(os.path.join(out, "vectors.txt"))][1:]


def test_own_interaction_log_and_sessions(tmp_path, capsys):
    """--interactions: each user's history is one sequence (--session-gap splits it);
    --sessions: the CSV's sessions. The vectors and the index keep the log's own ids, and
    the table sets popularity beside the model."""
    log, sessions = write_log(str(tmp_path))
    out = str(tmp_path / "log")
    assert item2vec.main(["--interactions", log, "--user-col", "customer_id", "--out", out]
                         + FAST) == 0
    printed = capsys.readouterr().out
    assert "log.csv: 1040 events, 80 sessions" in printed
    m = json.load(open(os.path.join(out, "metrics.json")))
    assert m["eval_users"] == 80 and m["vocab_size"] == 48
    assert m["hr@10"] > m["popularity_hr@10"]             # product lines are learnt
    table = printed[printed.index("| model"):].splitlines()
    assert [row.split("|")[1].strip() for row in table[2:5]] == [
        "item2vec (cosine)", "item2vec (two-tower score)", "popularity"]
    assert f"{m['popularity_hr@10']:.4f}" in table[4]
    keys = _keys(out)
    assert len(keys) == 48 and all(k.startswith("p-") for k in keys)
    saved = json.load(open(os.path.join(out, "model", "vocab.json")))
    assert saved["item_ids"] == keys                     # the model folder knows them too
    from twotower.index import load

    ids, _ = load(os.path.join(out, "index")).i2i(["p-2-3"], k=5)
    assert np.mean([str(i).startswith("p-2-") for i in ids[0]]) >= 0.6

    split = str(tmp_path / "split")
    assert item2vec.main(["--interactions", log, "--user-col", "customer_id",
                          "--session-gap", "3600", "--out", split] + FAST) == 0
    assert "160 sessions" in capsys.readouterr().out
    assert json.load(open(os.path.join(split, "metrics.json")))["eval_users"] == 160
    from_csv = str(tmp_path / "csv")
    assert item2vec.main(["--sessions", sessions, "--out", from_csv] + FAST) == 0
    assert "sessions.csv: 1040 events, 160 sessions" in capsys.readouterr().out
    assert sorted(_keys(from_csv)) == sorted(keys)


def test_source_pointing_at_a_log_and_conflicting_flags(tmp_path, capsys):
    log, sessions = write_log(str(tmp_path), users=4)
    out = str(tmp_path / "o")
    assert cli.main(["item2vec", "--source", log, "--out", out]) == 2
    err = capsys.readouterr().err
    assert "--interactions" in err and err.count("\n") == 1       # advised, and taken now
    assert cli.main(["item2vec", "--source", "auto", "--interactions", log, "--out", out]) == 2
    assert "give one source of sessions" in capsys.readouterr().err
    assert cli.main(["item2vec", "--sessions", log, "--out", out]) == 2
    assert "goes to --interactions" in capsys.readouterr().err
    assert cli.main(["item2vec", "--interactions", log, "--session-gap", "soon",
                     "--out", out]) == 2
    assert "--session-gap must be a number of seconds > 0 or 'none', got 'soon'" in \
        capsys.readouterr().err
    assert not os.path.exists(out)


def test_errors_raise_for_the_cli_and_debug_shows_them(tmp_path, capsys, monkeypatch):
    """One error policy: main raises; `twotower item2vec` prints one line and exits 2;
    TWOTOWER_DEBUG=1 lets the error through, for its traceback."""
    args = ["--interactions", str(tmp_path / "nope.csv"), "--out", str(tmp_path / "o")]
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        item2vec.main(args)
    assert cli.main(["item2vec", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("twotower item2vec: error: --interactions ") and err.count("\n") == 1
    monkeypatch.setenv("TWOTOWER_DEBUG", "1")
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        cli.main(["item2vec", *args])


# runs each word2vec-family recipe as `python -m twotower.recipes.<name>` would (runpy,
# run_name "__main__"), in one process, with a missing input; prints how each ended
MODULE_RUNS = """
import runpy, sys
try:  # the CLI filters native stderr once per process: a second filter would stack
    import twotower._quiet as quiet
    first = quiet.filter_native_stderr
    def once():
        quiet.filter_native_stderr = lambda: None
        first()
    quiet.filter_native_stderr = once
except (ImportError, AttributeError):
    pass
folder = sys.argv[1]
for name, flag in (("word2vec", "--corpus"), ("item2vec", "--interactions"),
                   ("airbnb", "--sessions"), ("eges", "--sessions")):
    sys.argv = [name, flag, folder + "/missing.csv", "--out", folder + "/o"]
    try:
        runpy.run_module("twotower.recipes." + name, run_name="__main__", alter_sys=True)
    except SystemExit as e:
        print(name, "exit", e.code, flush=True)
    except Exception as e:
        print(name, "raised", type(e).__name__, flush=True)
"""


@pytest.mark.parametrize("debug", [False, True], ids=["plain", "TWOTOWER_DEBUG=1"])
def test_recipes_run_as_modules_follow_the_cli(tmp_path, debug):
    """`python -m twotower.recipes.<recipe>` (word2vec, item2vec, airbnb, eges) behaves as
    `twotower <recipe>`: one line and exit status 2, or with TWOTOWER_DEBUG=1 the error
    itself (its traceback)."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    env.pop("TWOTOWER_DEBUG", None)
    if debug:
        env["TWOTOWER_DEBUG"] = "1"
    proc = subprocess.run([sys.executable, "-c", MODULE_RUNS, str(tmp_path)],
                          capture_output=True, text=True, env=env, timeout=300)
    names = ("word2vec", "item2vec", "airbnb", "eges")
    if debug:
        assert proc.stdout.split("\n")[:4] == [
            "word2vec raised ValueError", "item2vec raised FileNotFoundError",
            "airbnb raised FileNotFoundError", "eges raised FileNotFoundError"], proc.stderr
    else:
        assert proc.stdout.split("\n")[:4] == [f"{n} exit 2" for n in names], proc.stderr
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        assert [line.split(": error: ")[0] for line in lines] == [
            f"twotower {n}" for n in names], proc.stderr
        assert all("missing.csv" in line for line in lines)
    assert not (tmp_path / "o").exists()
