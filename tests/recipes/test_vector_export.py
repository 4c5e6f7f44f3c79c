"""twotower.recipes.vector_export: the word2vec family's model folder, tuned index, plots."""

import argparse
import json

import numpy as np
import pytest

from twotower.data.vocab import Vocabulary
from twotower.recipes import vector_export


def test_score_decimals_tells_distinct_values_apart():
    assert vector_export.score_decimals([0.51, 0.42, 0.3]) == 2
    assert vector_export.score_decimals([0.9991, 0.9987, 0.9]) == 4
    assert vector_export.score_decimals([0.99991, 0.99987]) == 5
    assert vector_export.score_decimals([0.5, 0.5]) == 2          # equal values: the minimum
    assert vector_export.score_decimals([1e-9, 2e-9]) == 6        # capped


def test_index_over_string_ids_is_tuned_and_answers_by_id(tmp_path):
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 8))
    vectors = np.repeat(centres, 10, axis=0) + 0.05 * rng.normal(size=(30, 8))
    words = np.array([f"{c}{i}" for c in "abc" for i in range(10)])
    retriever, tuned, external = vector_export.build_vector_index(vectors, words, k=5,
                                                                  progress=False)
    assert external and tuned.k == 5 and tuned.recall >= 0.95
    ids, _ = retriever.i2i(["a0", "c3"], k=5)
    assert all(w.startswith("a") for w in ids[0]) and all(w.startswith("c") for w in ids[1])
    folder = str(tmp_path / "index")
    vector_export.save_vector_index(folder, retriever, tuned, {"recipe": "test"})
    from twotower.index import load
    again = load(folder)
    np.testing.assert_array_equal(again.i2i(["b1"], k=3)[0], retriever.i2i(["b1"], k=3)[0])
    assert again.manifest["extra"]["tuned"]["k"] == 5
    metrics = vector_export.index_metrics(retriever, tuned)
    assert metrics["index_items"] == 30 and metrics["index_recall_vs_exact"] == tuned.recall
    with pytest.raises(ValueError, match="one id per vector"):
        vector_export.build_vector_index(vectors, words[:5], progress=False)


def test_index_arguments_are_checked():
    parser = argparse.ArgumentParser()
    vector_export.add_output_arguments(parser)
    args = parser.parse_args(["--out", "x", "--target-recall", "1.5"])
    with pytest.raises(ValueError, match=r"--target-recall must be in \(0, 1\], got 1.5"):
        vector_export.check_index_arguments(args)
    args = parser.parse_args(["--out", "x", "--index-k", "0"])
    with pytest.raises(ValueError, match="--index-k must be an int >= 1, got 0"):
        vector_export.check_index_arguments(args)
    assert parser.parse_args(["--out", "x"]).overwrite is False


def test_model_folder_round_trip_keeps_int_item_ids(tmp_path):
    from twotower.training.word2vec_trainer import ModelConfig, build_model, load_model, word_vectors

    vocab = Vocabulary([7, 3, 11], [5, 4, 2])              # item ids, not words
    config = ModelConfig(dim=4)
    model = build_model(vocab, config, seed=3)
    folder = str(tmp_path / "model")
    vector_export.save_model_folder(folder, model, config, vocab)
    assert json.load(open(f"{folder}/vocab.json")) == {"words": [7, 3, 11], "counts": [5, 4, 2]}
    again, vocab2, config2 = load_model(folder)
    assert vocab2.words == [7, 3, 11] and config2 == config
    np.testing.assert_array_equal(word_vectors(again, "sg"), word_vectors(model, "sg"))


def test_hit_rate_curves_rank_popularity_by_the_chosen_vocabulary():
    vectors = np.eye(4, dtype=np.float32)
    held = [(0, 1, {0}), (2, 3, {2})]
    many = Vocabulary([0, 1, 2, 3], [1, 9, 1, 8])          # 1 and 3 are the popular ones
    few = Vocabulary([0, 1, 2, 3], [9, 1, 8, 1])
    curves = vector_export.hit_rate_curves({"a": (few, vectors, held), "b": (many, vectors, held)},
                                           ks=(1, 2, 10), popularity_of="b")
    assert curves["a"][0] == [1, 2] and curves["popularity"] == ([1, 2], [0.5, 1.0])
