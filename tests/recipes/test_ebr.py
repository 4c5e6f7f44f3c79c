"""twotower.recipes.ebr on the planted MovieLens folder."""

import pytest

from twotower.losses import Triplet
from twotower.recipes import ebr


@pytest.mark.parametrize("mining,expected", [("hard", "hardest")])
def test_triplet_recipe_trains(planted_ml100k, mining, expected):
    config = ebr.Config(source=planted_ml100k, epochs=2, batch_size=32, dim=8, mining=mining,
                        margin=0.3)
    model, data, metrics = ebr.train(config)
    head = model.retrieval_loss.head
    assert isinstance(head, Triplet) and head.mining == expected and head.margin == 0.3
    assert metrics["loss_last_epoch"] < metrics["loss_first_epoch"]
    assert metrics["num_queries"] == len(data.test)


def test_bad_mining_is_named():
    with pytest.raises(ValueError, match="mining must be one of .* got 'soft'"):
        ebr.Config(mining="soft").validate()


def test_out_holds_the_servable_index_and_model(planted_ml100k, tmp_path, exported):
    out = str(tmp_path / "ebr")
    assert ebr.main(["--data", planted_ml100k, "--epochs", "1", "--batch-size", "32",
                    "--dim", "8", "--out", out]) == 0
    metrics = exported(out)
    assert 0.0 <= metrics["recall@50"] <= 1.0
