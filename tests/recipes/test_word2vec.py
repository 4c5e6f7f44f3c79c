"""twotower.recipes.word2vec end to end on a small planted corpus, and its bad inputs."""

import json
import os

import numpy as np
import pytest

from twotower.recipes import word2vec

TOPICS = [[f"fruit{i}" for i in range(6)], [f"tool{i}" for i in range(6)],
          [f"bird{i}" for i in range(6)]]


def write_planted_corpus(path, n=240, seed=0):
    """Sentences of 8 words, all from one topic: words of a topic co-occur, others never."""
    rng = np.random.default_rng(seed)
    with open(path, "w") as f:
        for s in range(n):
            topic = TOPICS[s % len(TOPICS)]
            f.write(" ".join(rng.choice(topic, 8)) + "\n")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    folder = tmp_path_factory.mktemp("w2v")
    corpus = str(folder / "corpus.txt")
    write_planted_corpus(corpus)
    out = str(folder / "out")
    rc = word2vec.main(["--corpus", corpus, "--out", out, "--dim", "16", "--epochs", "8",
                        "--window", "3", "--min-count", "1", "--sample", "0", "--batch-size",
                        "64", "--steps-per-call", "4", "--quiet",
                        "--alpha", "0.05", "--probe", "fruit0,nothere"])
    assert rc == 0
    return out


def test_planted_topics_are_neighbours(trained, capsys):
    words, vectors = [], []
    with open(os.path.join(trained, "vectors.txt")) as f:
        v, d = map(int, f.readline().split())
        for line in f:
            parts = line.split()
            words.append(parts[0])
            vectors.append([float(x) for x in parts[1:]])
    assert (v, d) == (18, 16)
    neighbours = word2vec.nearest_neighbours(words, np.array(vectors), ["fruit0", "tool3"], k=5)
    assert all(w.startswith("fruit") for w, _ in neighbours["fruit0"])
    assert all(w.startswith("tool") for w, _ in neighbours["tool3"])


def test_outputs_and_gensim_reads_vectors(trained):
    metrics = json.load(open(os.path.join(trained, "metrics.json")))
    assert metrics["tokens"] == 240 * 8 and metrics["vocab_size"] == 18
    assert metrics["words_per_sec"] > 0 and metrics["seconds"] > 0
    assert os.path.isfile(os.path.join(trained, "model", "weights.h5"))
    # evaluation ran; no analogy question is in this vocabulary: counted, accuracy left out
    assert metrics["analogy_in_vocab"] == 0 and "analogy_accuracy" not in metrics
    gensim_models = pytest.importorskip("gensim.models")
    kv = gensim_models.KeyedVectors.load_word2vec_format(os.path.join(trained, "vectors.txt"))
    assert kv.vector_size == 16 and len(kv.index_to_key) == 18
    assert kv.most_similar("bird2", topn=1)[0][0].startswith("bird")


@pytest.mark.parametrize("arch,head", [("cbow", "neg"), ("sg", "hs"), ("sg", "nce"),
                                       ("cbow", "sampled-softmax")])
def test_other_archs_and_heads_train(tmp_path, arch, head):
    corpus = str(tmp_path / "c.txt")
    write_planted_corpus(corpus, n=60)
    data = word2vec.DataConfig(corpus=corpus, min_count=1)
    model_config = word2vec.ModelConfig(arch=arch, head=head, dim=8, window=2, sample=0)
    train = word2vec.TrainConfig(epochs=2, batch_size=32, steps_per_call=2)
    vocab, model, stats = word2vec.train_word2vec(
        word2vec.load_corpus(corpus), data, model_config, train, progress=False)
    vectors = word2vec.word_vectors(model, arch)
    assert vectors.shape == (18, 8) and np.isfinite(vectors).all()
    assert np.isfinite(stats["mean_loss"]) and stats["examples"] > 0


def _fails(tmp_path, capsys, lines, extra=(), raw=None):
    corpus = tmp_path / "bad.txt"
    if raw is not None:
        corpus.write_bytes(raw)
    else:
        corpus.write_text(lines)
    out = tmp_path / "out"
    rc = word2vec.main(["--corpus", str(corpus), "--out", str(out), "--quiet", *extra])
    assert rc == 2 and not out.exists()           # nothing half written
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".tmp")]
    return capsys.readouterr().err


def test_bad_inputs_give_clear_messages(tmp_path, capsys):
    assert "is empty" in _fails(tmp_path, capsys, "")
    assert "min_count=5 leaves no vocabulary" in _fails(tmp_path, capsys, "a b c\n")
    assert "not more than --window=5" in _fails(tmp_path, capsys, "a b c\n",
                                                ["--min-count", "1"])
    assert "not UTF-8" in _fails(tmp_path, capsys, None, ["--min-count", "1"],
                                 raw=b"a b \xff c d e f g h\n")
    assert "--window must be an int >= 1, got 0" in _fails(tmp_path, capsys, "a b\n",
                                                            ["--window", "0"])
