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


def test_clustered_draws_follow_the_mixture():
    from twotower.data.synthetic import ClusteredConfig, clustered_model

    cfg = ClusteredConfig(num_users=3, num_items=60, interactions_per_user=20000,
                          num_clusters=4, beta=4.0, seed=2)
    model = clustered_model(cfg)
    draws = model.draw(np.arange(3), np.random.default_rng(0))
    assert draws.shape == (3, 20000) and draws.min() >= 0 and draws.max() < 60
    # P(i | u) = P(k_i | u) π_i / Π_{k_i}
    p = model.cluster_probabilities(np.arange(3))[:, model.item_cluster] * \
        (model.popularity / model.cluster_mass[model.item_cluster])[None, :]
    np.testing.assert_allclose(p.sum(axis=1), 1.0)
    for u in range(3):
        freq = np.bincount(draws[u], minlength=60) / 20000
        assert np.abs(freq - p[u]).max() < 0.02
    top = model.true_top_items(np.arange(3), k=5)
    brute = np.argsort(-p, axis=1, kind="stable")[:, :5]
    np.testing.assert_allclose(np.take_along_axis(p, top, 1), np.take_along_axis(p, brute, 1))


def test_planted_shards_in_the_log_format(tmp_path):
    from twotower.data import interactions as I
    from twotower.data.synthetic import ClusteredConfig, load_planted, write_planted_shards

    cfg = ClusteredConfig(num_users=50, num_items=200, interactions_per_user=6,
                          num_clusters=5, seed=3)
    files, model = write_planted_shards(str(tmp_path / "planted"), cfg, rows_per_shard=128,
                                        chunk_users=16, progress=False)
    assert len(files) == 3  # 300 rows in shards of 128
    log = I.read_interactions(str(tmp_path / "planted"))
    assert len(log) == 300 and log.item_id.dtype == np.int64
    assert np.bincount(log.user_id).tolist() == [6] * 50
    # each user's draws are stamped in order: the last one is the held-out one
    assert np.all(np.diff(log.timestamp) > 0)
    again = load_planted(str(tmp_path / "planted"))
    np.testing.assert_array_equal(again.item_cluster, model.item_cluster)
    assert again.config == cfg
    with pytest.raises(ValueError, match="num_clusters must be <= num_items=3"):
        ClusteredConfig(num_items=3, num_clusters=5)
