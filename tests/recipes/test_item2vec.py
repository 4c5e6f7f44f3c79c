"""twotower.recipes.item2vec on the planted MovieLens folder (4 clusters of 20 movies):
metrics, the exported model, index and plot, and the --out checks."""

import json
import os

import numpy as np
import pytest

from twotower.recipes import item2vec


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
    from twotower.towers.word2vec import load_model, word_vectors

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
    assert item2vec.main(["--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert str(out) in err and "--overwrite" in err and len(err.strip().splitlines()) == 1
