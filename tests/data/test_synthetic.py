import numpy as np
import pytest

from twotower.data.synthetic import PlantedConfig, planted_interactions


def test_planted_draws_follow_the_model():
    cfg = PlantedConfig(num_users=50, num_items=40, interactions_per_user=400, beta=6.0, seed=1)
    data = planted_interactions(cfg)
    assert data.users.shape == data.items.shape == (50 * 400,)
    # empirical item frequencies of user 0 match P(i | u) ∝ π_i exp(β <x_u, y_i>)
    logits = cfg.beta * data.user_factors[0] @ data.item_factors.T + np.log(data.popularity)
    p = np.exp(logits - logits.max())
    p /= p.sum()
    freq = np.bincount(data.items[data.users == 0], minlength=40) / 400
    assert np.abs(freq - p).max() < 0.06
    train, test = data.split_last()
    assert test.size == 50 and np.all(data.users[test] == np.arange(50))


def test_bad_config_is_named():
    with pytest.raises(ValueError, match="num_items must be an int >= 1, got 0"):
        PlantedConfig(num_items=0)
    with pytest.raises(ValueError, match="beta must be a finite number >= 0, got -1"):
        PlantedConfig(beta=-1)
