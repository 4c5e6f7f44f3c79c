"""twotower.recipes.word2vec end to end on a small planted corpus: tokenisation of a
user's text, evaluation on a tiny overlap, the exported model and index, --overwrite,
reloading and continuing training, and its bad inputs."""

import json
import os

import numpy as np
import pytest

from twotower import cli
from twotower.metrics.word_vectors import WS353, read_word_pairs, word_similarity
from twotower.data.wheel_data import gensim_test_data
from twotower.recipes import word2vec

# the fourth topic is of WordSim-353 words: a handful of its pairs are in the vocabulary
TOPICS = [[f"fruit{i}" for i in range(6)], [f"tool{i}" for i in range(6)],
          [f"bird{i}" for i in range(6)],
          ["tiger", "cat", "book", "paper", "computer", "keyboard"]]
FLAGS = ["--dim", "16", "--epochs", "8", "--window", "3", "--min-count", "1", "--sample", "0",
         "--batch-size", "64", "--steps-per-call", "4", "--quiet", "--alpha", "0.05"]


@pytest.fixture(autouse=True)
def no_debug(monkeypatch):
    """Bad input is one line and exit status 2 through the CLI, whatever the shell set."""
    monkeypatch.delenv("TWOTOWER_DEBUG", raising=False)


def twotower_word2vec(args):
    """`twotower word2vec ARGS` in this process: the recipe behind the CLI's handler."""
    return cli.main(["word2vec", *args])


def write_planted_corpus(path, n=240, seed=0, topics=TOPICS, noisy=False):
    """Sentences of 8 words, all from one topic: words of a topic co-occur, others never.
    ``noisy``: a third of the tokens capitalised and a third with punctuation attached
    ("Fruit0,", "(tool3", "bird1."), as in a user's raw text."""
    rng = np.random.default_rng(seed)
    with open(path, "w") as f:
        for s in range(n):
            words = list(rng.choice(topics[s % len(topics)], 8))
            if noisy:
                for j, w in enumerate(words):
                    if rng.random() < 0.33:
                        w = w.capitalize()
                    if rng.random() < 0.33:
                        w = str(rng.choice(["{},", "{}.", "({}", '"{}"', "{}!"])).format(w)
                    words[j] = w
            f.write(" ".join(words) + "\n")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    folder = tmp_path_factory.mktemp("w2v")
    corpus = str(folder / "corpus.txt")
    write_planted_corpus(corpus, noisy=True)
    out = str(folder / "out")
    rc = word2vec.main(["--corpus", corpus, "--out", out, "--probe", "fruit0,nothere"] + FLAGS)
    assert rc == 0
    return out


def _read_vectors(path):
    words, vectors = [], []
    with open(path) as f:
        header = tuple(map(int, f.readline().split()))
        for line in f:
            parts = line.split()
            words.append(parts[0])
            vectors.append([float(x) for x in parts[1:]])
    return header, words, np.array(vectors)


def test_planted_topics_are_neighbours(trained, capsys):
    (v, d), words, vectors = _read_vectors(os.path.join(trained, "vectors.txt"))
    # "Fruit0," "(fruit0" and "fruit0" are one word: lower-cased, punctuation stripped
    assert (v, d) == (24, 16) and sorted(words) == sorted(w for t in TOPICS for w in t)
    neighbours = word2vec.nearest_neighbours(words, np.array(vectors), ["fruit0", "tool3"], k=5)
    assert all(w.startswith("fruit") for w, _ in neighbours["fruit0"])
    assert all(w.startswith("tool") for w, _ in neighbours["tool3"])


def test_outputs_and_gensim_reads_vectors(trained):
    metrics = json.load(open(os.path.join(trained, "metrics.json")))
    assert metrics["tokens"] == 240 * 8 and metrics["vocab_size"] == 24
    assert metrics["words_per_sec"] > 0 and metrics["seconds"] > 0
    assert os.path.isfile(os.path.join(trained, "model", "weights.h5"))
    # evaluation ran; no analogy question is in this vocabulary: counted, accuracy left out
    assert metrics["analogy_in_vocab"] == 0 and "analogy_accuracy" not in metrics
    gensim_models = pytest.importorskip("gensim.models")
    kv = gensim_models.KeyedVectors.load_word2vec_format(os.path.join(trained, "vectors.txt"))
    assert kv.vector_size == 16 and len(kv.index_to_key) == 24
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
    assert vectors.shape == (24, 8) and np.isfinite(vectors).all()
    assert np.isfinite(stats["mean_loss"]) and stats["examples"] > 0


def _fails(tmp_path, capsys, lines, extra=(), raw=None):
    corpus = tmp_path / "bad.txt"
    if raw is not None:
        corpus.write_bytes(raw)
    else:
        corpus.write_text(lines)
    out = tmp_path / "out"
    rc = twotower_word2vec(["--corpus", str(corpus), "--out", str(out), "--quiet", *extra])
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


def test_tokenisation_flags_keep_the_raw_split(tmp_path):
    corpus = str(tmp_path / "c.txt")
    write_planted_corpus(corpus, n=80, noisy=True)
    out = str(tmp_path / "raw")
    assert word2vec.main(["--corpus", corpus, "--out", out, "--no-lowercase",
                          "--no-strip-punctuation", "--no-eval", "--epochs", "1"]
                         + FLAGS[:2] + FLAGS[6:]) == 0
    words = [line.split("\t")[0] for line in open(os.path.join(out, "vocab.tsv"))]
    assert "Fruit0," in words or "fruit0." in words or "(fruit0" in words
    assert len(words) > 24
    saved = json.load(open(os.path.join(out, "model", "tokenization.json")))
    assert saved == {"lowercase": False, "strip_punctuation": False, "applied": True}
    help_text = word2vec.build_parser().format_help()
    assert "--no-lowercase" in help_text and "--strip-punctuation" in help_text


def test_tiny_overlap_is_marked_and_left_out_of_the_headline(trained, capsys):
    """The WS353 topic puts a few pairs in the vocabulary: their ρ is printed with the
    count, stored as ws353_spearman_too_few, and kept out of the headline table."""
    metrics = json.load(open(os.path.join(trained, "metrics.json")))
    (_, _), words, vectors = _read_vectors(os.path.join(trained, "vectors.txt"))
    rho, pairs, _ = word_similarity(words, vectors, read_word_pairs(gensim_test_data(WS353)))
    assert 2 <= pairs < word2vec.MIN_SUPPORT and metrics["ws353_pairs"] == pairs
    assert "ws353_spearman" not in metrics
    assert metrics["ws353_spearman_too_few"] == pytest.approx(rho, abs=1e-4)


def test_printed_report_marks_too_few_and_scores_are_distinct(tmp_path, capsys):
    corpus = str(tmp_path / "c.txt")
    write_planted_corpus(corpus, n=120)
    out = str(tmp_path / "o")
    assert word2vec.main(["--corpus", corpus, "--out", out, "--probe", "tiger,fruit0"]
                         + FLAGS) == 0
    printed = capsys.readouterr().out
    metrics = json.load(open(os.path.join(out, "metrics.json")))
    n = metrics["ws353_pairs"]
    assert f"too few to report: ws353_spearman" in printed and f"from {n} pairs" in printed
    table = printed.split("| metric")[1].split("too few")[0]
    assert "ws353_spearman " not in table and "ws353_pairs" in table
    # neighbour scores: as many digits as it takes to tell distinct cosines apart
    for line in printed.splitlines():
        if line.strip().startswith(("tiger:", "fruit0:")):
            shown = [part.rsplit("(", 1)[1].rstrip("), ") for part in line.split(": ", 1)[1]
                     .split("), ")]
            assert len(set(shown)) == len(shown)


def test_index_folder_serves_i2i_by_word(trained):
    from twotower.index import load

    retriever = load(os.path.join(trained, "index"))
    assert retriever.index.size == 24
    ids, scores = retriever.i2i(["fruit0", "tool3"], k=4)
    assert ids.shape == (2, 4) and np.all(np.diff(scores, axis=1) <= 1e-6)
    assert all(str(w).startswith("fruit") for w in ids[0])
    assert all(str(w).startswith("tool") for w in ids[1])
    with pytest.raises(ValueError, match="not-a-word"):    # UnknownIdError names it
        retriever.i2i(["not-a-word"], k=3)


def test_output_refused_before_any_work(tmp_path, capsys, monkeypatch):
    def no_work(*a, **k):
        raise AssertionError("the corpus was read before --out was checked")

    monkeypatch.setattr(word2vec, "load_corpus", no_work)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("a b c\n")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("the user's own file")
    a_file = tmp_path / "a_file.txt"
    a_file.write_text("keep me")
    for out in (mine, a_file, a_file / "sub"):
        for extra in ([], ["--overwrite"]):
            rc = twotower_word2vec(["--corpus", str(corpus), "--out", str(out), "--quiet"]
                                   + extra)
            err = capsys.readouterr().err
            assert rc == 2 and str(out if out != a_file / "sub" else a_file) in err
            assert len(err.strip().splitlines()) == 1
    assert (mine / "notes.txt").read_text() == "the user's own file"
    assert a_file.read_text() == "keep me" and corpus.read_text() == "a b c\n"


def test_overwrite_replaces_an_earlier_output(tmp_path, capsys):
    corpus = str(tmp_path / "c.txt")
    write_planted_corpus(corpus, n=40)
    out = tmp_path / "out"
    args = ["--corpus", corpus, "--out", str(out), "--no-eval", "--epochs", "1"] + FLAGS[:2] \
        + FLAGS[6:]
    assert word2vec.main(args) == 0
    first = (out / "vectors.txt").read_text()
    capsys.readouterr()
    assert twotower_word2vec(args + ["--seed", "7"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (out / "vectors.txt").read_text() == first
    assert word2vec.main(args + ["--seed", "7", "--overwrite"]) == 0
    assert (out / "vectors.txt").read_text() != first
    assert not [p for p in os.listdir(tmp_path) if "twotower-tmp" in p or "lock" in p]


def test_reload_and_continue_training(trained, tmp_path, capsys):
    """load_model rebuilds the model/ folder with the same vectors; --resume-from trains
    it further on new text, the vocabulary grown by the new words with --min-count
    occurrences (none here: the default 5) and rarer unknown words counted."""
    from twotower.training.word2vec_trainer import load_model

    model, vocab, config = load_model(os.path.join(trained, "model"))
    (_, _), words, saved = _read_vectors(os.path.join(trained, "vectors.txt"))
    assert vocab.words == words and config.dim == 16
    np.testing.assert_allclose(word2vec.word_vectors(model, config.arch), saved, atol=1e-5)

    new_text = tmp_path / "more.txt"
    write_planted_corpus(str(new_text), n=60, seed=3)
    with open(new_text, "a") as f:
        f.write("fruit1 fruit2 Banana fruit3 kiwi kiwi\n")
    out = str(tmp_path / "continued")
    assert word2vec.main(["--corpus", str(new_text), "--resume-from",
                          os.path.join(trained, "model"), "--out", out, "--no-eval",
                          "--epochs", "2", "--quiet", "--alpha", "0.02"]) == 0
    printed = capsys.readouterr().out
    assert "vocabulary grown from 24 to 24 words" in printed and "; 3 of " in printed
    assert "(2 distinct words)" in printed
    metrics = json.load(open(os.path.join(out, "metrics.json")))
    assert metrics["new_text_tokens_dropped"] == 3 and metrics["resumed"] == 1
    assert metrics["new_words"] == 0
    (v, d), words2, continued = _read_vectors(os.path.join(out, "vectors.txt"))
    assert words2 == words and (v, d) == (24, 16)
    assert not np.allclose(continued, saved, atol=1e-3)        # it trained
    unit = continued / np.linalg.norm(continued, axis=1, keepdims=True)
    fruit, tool = words.index("fruit0"), [words.index(f"tool{i}") for i in range(6)]
    others = [words.index(f"fruit{i}") for i in range(1, 6)]
    assert (unit[others] @ unit[fruit]).min() > (unit[tool] @ unit[fruit]).max()


def test_resume_grows_the_vocabulary_as_gensim_update(trained, tmp_path, capsys):
    """--resume-from on text with a new word: as gensim's build_vocab(update=True), the
    saved words keep their ids, vectors (before any new step) and add their new counts;
    a new word with --min-count occurrences joins with a fresh row (W in ±0.5/d, W'
    zero); a rarer one is dropped."""
    from twotower.training.word2vec_trainer import grow_model, load_model

    model, vocab, config = load_model(os.path.join(trained, "model"))
    text = [["fruit1", "kiwi", "fruit2", "kiwi"], ["banana", "fruit1"]]
    grown = vocab.grown(text, min_count=2)
    assert grown.words == vocab.words + ["kiwi"]
    assert grown.counts[-1] == 2 and grown.counts[vocab.index["fruit1"]] == \
        vocab.counts[vocab.index["fruit1"]] + 2
    bigger = grow_model(model, grown, config, seed=1)
    before = word2vec.word_vectors(model, config.arch)
    after = word2vec.word_vectors(bigger, config.arch)
    np.testing.assert_array_equal(after[:len(vocab)], before)
    assert after.shape == (len(vocab) + 1, config.dim)
    assert 0 < np.abs(after[-1]).max() <= 0.5 / config.dim
    out_rows = bigger.item_tower.weights[0].numpy()
    np.testing.assert_array_equal(out_rows[:len(vocab)], model.item_tower.weights[0].numpy())
    assert not out_rows[-1].any()

    new_text = tmp_path / "more.txt"
    write_planted_corpus(str(new_text), n=60, seed=3)
    with open(new_text, "a") as f:
        f.write("fruit1 fruit2 Banana fruit3 kiwi kiwi\n")
    out = str(tmp_path / "grown")
    assert word2vec.main(["--corpus", str(new_text), "--resume-from",
                          os.path.join(trained, "model"), "--out", out, "--no-eval",
                          "--epochs", "1", "--quiet", "--min-count", "2"]) == 0
    assert "vocabulary grown from 24 to 25 words" in capsys.readouterr().out
    metrics = json.load(open(os.path.join(out, "metrics.json")))
    assert metrics["new_words"] == 1 and metrics["new_text_tokens_dropped"] == 1
    (v, _), words, _ = _read_vectors(os.path.join(out, "vectors.txt"))
    assert v == 25 and words == vocab.words + ["kiwi"]


def test_resume_from_a_folder_that_is_not_a_model(tmp_path, capsys):
    corpus = tmp_path / "c.txt"
    corpus.write_text("a b c d\n")
    empty = tmp_path / "empty"
    empty.mkdir()
    for where, message in ((tmp_path / "nope", "is not a folder"),
                           (empty, "no config.json")):
        assert twotower_word2vec(["--corpus", str(corpus), "--resume-from", str(where),
                                  "--out", str(tmp_path / "o"), "--quiet"]) == 2
        err = capsys.readouterr().err
        assert message in err and str(where) in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_serve_answers_i2i_by_word_over_http(trained, served):
    """recipe → `twotower serve OUT/index` → POST /i2i {"item_ids": ["fruit0"]} (loopback,
    port chosen by the OS, stopped at the end)."""
    from twotower.index import load

    words = ("fruit0", "nothere")
    answers = dict(zip(words, served(load(os.path.join(trained, "index")),
                                     [("/i2i", {"item_ids": [w], "k": 3}) for w in words])))
    status, body = answers["fruit0"]
    assert status == 200 and all(w.startswith("fruit") for w in body["item_ids"][0])
    status, body = answers["nothere"]
    assert status == 404 and "nothere" in body["error"]


def test_builtin_corpora_keep_their_own_tokeniser(tmp_path, capsys, monkeypatch):
    seen = {}

    def fake_load(name, **kwargs):
        seen[name] = kwargs
        raise ValueError("stop here")

    monkeypatch.setattr(word2vec, "load_corpus", fake_load)
    for corpus in ("enwiki-sample", "text8", str(tmp_path / "mine.txt")):
        assert twotower_word2vec(["--corpus", corpus, "--out", str(tmp_path / "o"),
                                  "--quiet"]) == 2
        assert "stop here" in capsys.readouterr().err
    assert seen["enwiki-sample"] == {"encoding_errors": "strict"} == seen["text8"]
    assert seen[str(tmp_path / "mine.txt")] == {"encoding_errors": "strict", "lowercase": True,
                                                "strip_punctuation": True}


def test_hogwild_elements_keep_threads_far_apart():
    from twotower.training.word2vec_trainer import HOGWILD_ELEMENT_EXAMPLES, TrainConfig, hogwild_steps

    for batch in (256, 4096, 16384):
        train = TrainConfig(batch_size=batch, steps_per_call=64)
        assert hogwild_steps(train, "hogwild") * batch >= HOGWILD_ELEMENT_EXAMPLES
        assert hogwild_steps(train, "batched") == 64
    big = TrainConfig(batch_size=2 ** 16, steps_per_call=64)
    assert hogwild_steps(big, "hogwild") == 64      # already past the floor


def test_bad_input_raises_for_the_cli_to_report(tmp_path, capsys, monkeypatch):
    """One error policy: main lets bad input raise; `twotower word2vec` prints one line
    and exits 2, and TWOTOWER_DEBUG=1 shows the traceback (the error is raised)."""
    args = ["--corpus", str(tmp_path / "missing.txt"), "--out", str(tmp_path / "o"), "--quiet"]
    with pytest.raises(ValueError, match="missing.txt"):
        word2vec.main(args)
    assert twotower_word2vec(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("twotower word2vec: error: ") and err.count("\n") == 1
    assert "missing.txt" in err and "Traceback" not in err
    monkeypatch.setenv("TWOTOWER_DEBUG", "1")
    with pytest.raises(ValueError, match="missing.txt"):
        twotower_word2vec(args)
    assert not (tmp_path / "o").exists()


def test_divergence_is_reported_as_a_setting_to_change(tmp_path, capsys, monkeypatch):
    """A diverged run (FloatingPointError naming --alpha) is a setting, not a bug: one
    line and exit 2, and the original error chained under TWOTOWER_DEBUG=1."""
    def diverge(*a, **k):
        raise FloatingPointError("the loss became nan: use a smaller alpha (this one: 9.0)")

    monkeypatch.setattr(word2vec, "train_word2vec", diverge)
    corpus = tmp_path / "c.txt"
    write_planted_corpus(str(corpus), n=20)
    args = ["--corpus", str(corpus), "--out", str(tmp_path / "o"), "--quiet", "--no-eval"]
    assert twotower_word2vec(args) == 2
    err = capsys.readouterr().err
    assert err == ("twotower word2vec: error: the loss became nan: use a smaller alpha (this "
                   "one: 9.0)\n")
    monkeypatch.setenv("TWOTOWER_DEBUG", "1")
    with pytest.raises(ValueError, match="smaller alpha") as raised:
        twotower_word2vec(args)
    assert isinstance(raised.value.__cause__, FloatingPointError)
    assert not (tmp_path / "o").exists()
