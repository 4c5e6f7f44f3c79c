"""Planted settings (drift, fresh items, heavy skew): each log follows its generating model."""

import numpy as np
import pytest

from twotower.data import planted_settings as ps


def test_draw_in_clusters_follows_the_row_weights():
    rng = np.random.default_rng(0)
    weights = np.array([[1.0, 3.0, 0.0, 4.0], [0.0, 0.0, 0.0, 0.0]])  # row 1: uniform
    homes = np.repeat([0, 1], 40_000)
    items = ps.draw_in_clusters(weights, homes, rng)
    C = 2
    assert (items % C == homes).all()                       # always the home cluster
    member0 = np.bincount(items[homes == 0] // C, minlength=4) / 40_000
    np.testing.assert_allclose(member0, [1 / 8, 3 / 8, 0, 4 / 8], atol=0.01)
    member1 = np.bincount(items[homes == 1] // C, minlength=4) / 40_000
    np.testing.assert_allclose(member1, [0.25] * 4, atol=0.01)


def test_cluster_matrix_puts_item_c_plus_C_j_at_row_c_column_j():
    m = ps.as_cluster_matrix(np.arange(12), 3)
    assert m.shape == (3, 4) and m[2, 1] == 2 + 3 * 1


def test_skew_log_splits_and_heavier_exponent_concentrates_the_head():
    light = ps.skew_log(num_items=2000, num_users=2000, cluster_size=100, zipf_exponent=0.5,
                        seed=1)
    heavy = ps.skew_log(num_items=2000, num_users=2000, cluster_size=100, zipf_exponent=1.2,
                        seed=1)
    assert len(heavy.train_items) == 2000 * 18 and heavy.test_items.shape == (2000,)
    assert (np.bincount(heavy.train_users, minlength=2000) == 18).all()

    def head_share(log):
        c = np.sort(log.item_counts())[::-1]
        return c[:20].sum() / c.sum()                        # top 1% of the catalogue
    assert head_share(heavy) > 2 * head_share(light)
    # taste: a row is in the user's home cluster with probability (1 − ρ) + ρ·E[w_h]
    planted = ps._planted(2000, 2000, 20, 100, 0.5, 1.2, 1)
    w, _ = planted._weights()
    home = heavy.home_clusters[heavy.train_users]
    expected = 0.5 + 0.5 * np.mean(w[home])
    assert abs(np.mean(heavy.train_items % 20 == home) - expected) < 0.01
    assert not heavy.fresh.any()


def test_fresh_items_are_rare_in_training_and_common_in_test():
    log = ps.fresh_log(num_items=2000, num_users=3000, cluster_size=100, fresh_share=0.2,
                       fresh_train_weight=0.0, fresh_boost=3.0, seed=2)
    assert abs(log.fresh.mean() - 0.2) < 0.03
    assert log.item_counts()[log.fresh].sum() == 0           # no train interactions at all
    share = log.fresh[log.test_items].mean()
    assert 0.25 < share < 0.6
    assert abs(share - log.fresh[log.valid_items].mean()) < 0.06   # same distribution
    few = ps.fresh_log(num_items=2000, num_users=3000, cluster_size=100,
                       fresh_train_weight=0.05, seed=2)
    assert 0 < few.fresh[few.train_items].mean() < 0.03      # a few, not none
    np.testing.assert_array_equal(few.item_cluster, np.arange(2000) % 20)


def test_lifecycle_rises_peaks_at_one_and_fades():
    a = ps.lifecycle(np.array([-1.0, 0.0, 0.5, 1.0, 2.0, 5.0, 1e6]))
    assert a[0] == a[1] == 0 and a[3] == pytest.approx(1.0)
    assert a[2] < a[3] and a[4] < a[3] and a[5] < a[4] and a[6] == 0


def test_drift_log_is_in_time_order_and_items_live_their_lifecycle():
    L = 0.1
    log = ps.drift_log(num_items=2000, num_users=3000, cluster_size=100, lifetime=L,
                       window=0.05, time_buckets=50, seed=3)
    assert (np.diff(log.train_times) >= 0).all()
    assert log.train_times.max() < 0.9
    birth = log.info["birth"]
    # no item is drawn before its birth (within half a time bucket of 1/50)
    assert (log.train_times - birth[log.train_items] > -0.5 / 50 - 1e-9).all()
    # age at a draw: about Gamma(2, L) (a(x) = x e^{1−x} over uniform births), mean ≈ 2L
    # (within a cluster the Zipf member weights make it a ratio: not exactly 2L), where
    # the log is long past the first births; without drift it would be ≈ 0.3 here
    late = log.train_times >= 0.6
    age = log.train_times[late] - birth[log.train_items[late]]
    assert 1.6 * L < age.mean() < 2.4 * L
    # what is popular early is not what is popular late
    n = len(log.train_items)
    early = np.bincount(log.train_items[: n // 4], minlength=2000)
    late = np.bincount(log.train_items[-n // 4:], minlength=2000)
    assert np.corrcoef(early, late)[0, 1] < 0.1
    # validation and test windows follow training, in order
    assert len(log.valid_items) > 0 and len(log.test_items) > 0
    assert abs(len(log.test_items) / (3000 * 20) - 0.05) < 0.01


def test_the_same_seed_gives_the_same_log_and_another_seed_another():
    a = ps.fresh_log(num_items=1000, num_users=500, seed=5)
    b = ps.fresh_log(num_items=1000, num_users=500, seed=5)
    c = ps.fresh_log(num_items=1000, num_users=500, seed=6)
    np.testing.assert_array_equal(a.train_items, b.train_items)
    assert not np.array_equal(a.train_items, c.train_items)


def test_bad_settings_are_named():
    with pytest.raises(ValueError, match="interactions_per_user must be >= 3"):
        ps.skew_log(num_items=1000, num_users=10, interactions_per_user=2)
    with pytest.raises(ValueError, match="fresh_share must be in"):
        ps.fresh_log(num_items=1000, num_users=10, fresh_share=1.5)
    with pytest.raises(ValueError, match="window must be in"):
        ps.drift_log(num_items=1000, num_users=10, window=0.5)
    with pytest.raises(ValueError, match="multiple of cluster_size"):
        ps.skew_log(num_items=1050, num_users=10)


def _calibrated(p, hit):
    """The share of rows whose target is in a group against the model's expected share:
    within 4 standard deviations of a sum of independent Bernoulli(p_row) draws."""
    expected, var = p.sum(), (p * (1 - p)).sum()
    assert abs(hit.sum() - expected) < 4 * np.sqrt(var) + 1, (hit.sum(), expected)


@pytest.mark.parametrize("setting", ["skew", "fresh", "drift"])
def test_true_probabilities_are_the_model_that_drew_the_held_out_rows(setting):
    log = ps.SETTINGS[setting](num_items=2000, num_users=6000, cluster_size=100, seed=4)
    C = log.num_items // 100
    times = log.test_times if setting == "drift" else None
    users, items = log.test_users, log.test_items
    keys = (np.minimum((times * 100).astype(int), 99) if times is not None
            else np.zeros(len(users), int))
    in_home, in_group = np.empty(len(users)), np.empty(len(users))
    if setting == "fresh":
        group = log.fresh
    elif setting == "drift":
        group = log.info["birth"] > 0.85          # the items born late: popular at test
    else:
        group = np.zeros(log.num_items, bool)
        group[np.argsort(-np.bincount(log.train_items, minlength=log.num_items))[:50]] = True
    for key in np.unique(keys):
        r = np.flatnonzero(keys == key)
        p = ps.true_probabilities(log, users[r], time=(key + 0.5) / 100)
        assert p.shape == (len(r), log.num_items) and (p >= 0).all()
        np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-9)
        home = (np.arange(log.num_items)[None, :] % C) == log.home_clusters[users[r]][:, None]
        in_home[r] = (p * home).sum(axis=1)
        in_group[r] = p[:, group].sum(axis=1)
    _calibrated(in_home, items % C == log.home_clusters[users])
    _calibrated(in_group, group[items])


def test_oracle_ranks_count_the_items_more_probable_than_the_target():
    log = ps.drift_log(num_items=1000, num_users=500, cluster_size=100, time_buckets=20,
                       seed=2)
    users, items, times = log.test_users[:40], log.test_items[:40], log.test_times[:40]
    ranks = ps.oracle_ranks(log, users, items, times, chunk=7)
    for r in range(40):
        p = ps.true_probabilities(log, users[r:r + 1], time=times[r])[0]
        assert ranks[r] == (p > p[items[r]]).sum()
    assert np.median(ranks) < 50        # the planted model ranks its own draws high
    with pytest.raises(ValueError, match="times is required"):
        ps.oracle_ranks(log, users, items)
