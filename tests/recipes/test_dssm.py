"""twotower.recipes.dssm on the planted MovieLens folder."""

import numpy as np
import pytest

from twotower.recipes import dssm


def test_learned_temperature_is_reported(planted_ml100k):
    config = dssm.Config(source=planted_ml100k, epochs=2, batch_size=32, dim=8,
                         learn_temperature=True, temperature=0.2)
    model, data, metrics = dssm.train(config)
    assert 0 < metrics["temperature"] and metrics["temperature"] != pytest.approx(0.2)
    assert 0.0 <= metrics["coverage@50"] <= 1.0 and np.isfinite(metrics["mrr"])
    assert model.retrieval_loss.logq is False and model.retrieval_loss.similarity == "cosine"


def test_bad_values_are_named():
    with pytest.raises(ValueError, match="epochs must be an int >= 1, got 0"):
        dssm.main(["--epochs", "0"])  # refused before any data is loaded
    with pytest.raises(ValueError, match="temperature must be > 0, got -1"):
        dssm.Config(temperature=-1.0).validate()


def test_out_holds_the_servable_index_and_model(planted_ml100k, tmp_path, exported):
    out = str(tmp_path / "dssm")
    assert dssm.main(["--data", planted_ml100k, "--epochs", "1", "--batch-size", "32",
                      "--dim", "8", "--out", out]) == 0
    metrics = exported(out)
    assert 0.0 <= metrics["recall@50"] <= 1.0
