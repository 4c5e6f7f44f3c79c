"""twotower.recipes.mns on the planted MovieLens folder."""

import pytest

from twotower.losses import InBatch, MixedNegatives, SampledNegatives
from twotower.recipes import mns


def test_mixed_negatives_train_and_evaluate(planted_ml100k):
    config = mns.Config(source=planted_ml100k, epochs=2, batch_size=32, dim=8,
                        index_negatives=16)
    model, data, metrics = mns.train(config)
    assert isinstance(model.retrieval_loss.candidates, MixedNegatives)
    assert model.retrieval_loss.logq
    assert 0.0 <= metrics["recall@50"] <= 1.0 and metrics["examples_per_sec"] > 0


def test_ablation_modes_build_their_candidates():
    assert isinstance(mns.make_loss(mns.Config(mode="uniform", index_negatives=8), 50)
                      .candidates, SampledNegatives)
    assert isinstance(mns.make_loss(mns.Config(mode="in-batch"), 50).candidates, InBatch)


def test_index_negatives_larger_than_corpus_is_refused(planted_ml100k):
    with pytest.raises(ValueError, match="--index-negatives 500 is larger than the item "
                                         r"corpus \(81 items\)"):
        mns.main(["--data", planted_ml100k, "--index-negatives", "500"])


def test_out_holds_the_servable_index_and_model(planted_ml100k, tmp_path, exported):
    out = str(tmp_path / "mns")
    assert mns.main(["--data", planted_ml100k, "--epochs", "1", "--batch-size", "32",
                    "--dim", "8", "--index-negatives", "16", "--out", out]) == 0
    metrics = exported(out)
    assert 0.0 <= metrics["recall@50"] <= 1.0
