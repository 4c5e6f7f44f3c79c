"""The planted log: O(1) draws from a known P(i | u), written to readable Parquet shards."""

import numpy as np
import pytest

from twotower.data import interactions
from twotower.data.planted_log import PlantedLog, write_planted_log


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    planted = PlantedLog(num_items=200, num_interactions=40_000, interactions_per_user=20,
                         cluster_size=20, global_share=0.3, seed=3)
    folder = tmp_path_factory.mktemp("log") / "shards"
    return planted, write_planted_log(planted, str(folder), rows_per_shard=10_000,
                                      progress=False)


def test_shards_hold_the_training_rows_in_the_log_format(written):
    planted, summary = written
    assert len(summary["train_files"]) == 4
    log = interactions.read_interactions(summary["train_files"][0].rsplit("/", 1)[0])
    assert len(log.user_id) == summary["train_rows"] == 2000 * 19
    np.testing.assert_array_equal(np.bincount(log.item_id, minlength=200),
                                  summary["item_counts"])
    per_user = np.bincount(log.user_id, minlength=2000)
    assert (per_user == 19).all()
    assert summary["test_items"].shape == (2000,)


def test_draws_follow_the_planted_distribution(written):
    planted, summary = written
    C = planted.num_clusters
    log = interactions.read_interactions(summary["train_files"][0].rsplit("/", 1)[0])
    home = summary["home_clusters"][log.user_id]
    in_home = np.mean(log.item_id % C == home)
    w, _ = planted._weights()
    expected = (1 - planted.global_share) + planted.global_share * np.mean(w[home])
    assert abs(in_home - expected) < 0.01
    # marginal over items: ρ π + (1 − ρ) Σ_h P(h) ω (cluster of the item is h)
    pi = planted.popularity()
    share_home = np.bincount(summary["home_clusters"], minlength=C) / len(summary["home_clusters"])
    _, omega = planted._weights()
    items = np.arange(200)
    marginal = planted.global_share * pi + (1 - planted.global_share) * \
        share_home[items % C] * omega[items // C]
    observed = summary["item_counts"] / summary["item_counts"].sum()
    assert np.abs(observed - marginal).sum() < 0.05          # total variation


def test_oracle_beats_popularity_and_neighbours_share_a_cluster(written):
    planted, summary = written
    top10 = np.argsort(-summary["item_counts"])[:10]
    popularity = np.isin(summary["test_items"], top10).mean()
    assert summary["oracle_recall@10"] > popularity + 0.1
    nb = planted.true_neighbours(5, k=4)
    assert len(nb) == 4 and 5 not in nb and (planted.cluster_of(nb) == 5 % planted.num_clusters).all()


def test_bad_settings_are_named():
    with pytest.raises(ValueError, match="must be a multiple of cluster_size=30"):
        PlantedLog(num_items=100, cluster_size=30)
    with pytest.raises(ValueError, match="global_share must be in"):
        PlantedLog(global_share=1.5)
    with pytest.raises(ValueError, match="interactions_per_user must be >= 2"):
        PlantedLog(interactions_per_user=1)


def test_the_log_is_the_one_its_settings_wrote_before(written):
    # Values written by the generator before its draws moved to data/samplers.AliasTable:
    # the same settings must keep giving the same log, row for row.
    _, summary = written
    assert summary["item_counts"][:12].tolist() == [647, 1805, 1114, 387, 614, 3538, 410,
                                                    373, 541, 996, 336, 908]
    assert summary["test_items"][:12].tolist() == [38, 20, 95, 5, 51, 1, 155, 1, 24, 71, 17,
                                                   131]
    assert summary["home_clusters"][:12].tolist() == [8, 0, 5, 5, 1, 5, 1, 1, 6, 1, 7, 1]
