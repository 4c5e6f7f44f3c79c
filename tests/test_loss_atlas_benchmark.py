"""benchmarks/loss_atlas.py: its ranking, metrics, HS scoring, goal test and flags."""

import importlib.util
import os
import re

import numpy as np
import pytest

import twotower  # noqa: F401  (Keras 2 before TensorFlow)
import tensorflow as tf

from twotower.data.huffman import HuffmanTree
from twotower.losses import leaf_log_probabilities

_PATH = os.path.join(os.path.dirname(__file__), "..", "benchmarks", "loss_atlas.py")
_spec = importlib.util.spec_from_file_location("twotower_bench_loss_atlas", _PATH)
la = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(la)


def test_ranks_count_the_items_scoring_above_the_target_minus_exclusions():
    rng = np.random.default_rng(0)
    U, V = rng.normal(size=(6, 4)), rng.normal(size=(30, 4))
    users, items = np.array([0, 1, 2, 3, 4, 5, 0]), np.array([3, 7, 0, 29, 5, 5, 11])
    ranks = la.ranks_of_targets(U, V, users, items, chunk=4)
    s = U @ V.T
    ref = [(s[u] > s[u, i]).sum() for u, i in zip(users, items)]
    np.testing.assert_array_equal(ranks, ref)
    exclude = [np.arange(30)] * 7                     # everything but the target excluded
    assert (la.ranks_of_targets(U, V, users, items, exclude=exclude) == 0).all()


def test_rank_metrics_split_tail_and_fresh_targets():
    counts = np.array([100, 50, 1, 1, 1, 1, 1, 1, 1, 1])         # head: top 20% = items 0, 1
    ranks = np.array([0, 60, 20, 49, 50])
    targets = np.array([0, 1, 2, 3, 4])
    fresh = np.zeros(10, bool)
    fresh[3] = fresh[4] = True
    m = la.rank_metrics(ranks, targets, counts, fresh)
    assert m["recall@10"] == pytest.approx(1 / 5) and m["recall@50"] == pytest.approx(3 / 5)
    assert m["tail_recall@50"] == pytest.approx(2 / 3)              # items 2, 3, 4
    assert m["fresh_recall@50"] == pytest.approx(1 / 2)             # items 3, 4
    assert np.isnan(la.rank_metrics(ranks, targets, counts)["fresh_recall@50"])


def test_hs_log_probabilities_match_the_loss_module_and_sum_to_one():
    rng = np.random.default_rng(1)
    tree = HuffmanTree(rng.integers(1, 1000, size=41))
    theta = rng.normal(size=(40, 6)).astype(np.float32)
    u = rng.normal(size=(5, 6)).astype(np.float32)
    ref = leaf_log_probabilities(tf.constant(u), tf.constant(theta), tree).numpy()
    got = la.hs_log_probabilities(u, theta, tree.points, tree.codes, tree.lengths)
    np.testing.assert_allclose(got, ref, atol=1e-4)
    np.testing.assert_allclose(np.exp(got).sum(axis=1), 1.0, rtol=1e-4)


def test_summary_and_the_goal_need_the_spreads_apart():
    runs = {"ours": [{"recall@50": 0.50}, {"recall@50": 0.52}, {"recall@50": 0.54}],
            "tfrs_logq": [{"recall@50": 0.40}, {"recall@50": 0.41}, {"recall@50": 0.42}],
            "close": [{"recall@50": 0.40}, {"recall@50": 0.45}, {"recall@50": 0.50}]}
    flat = la.summarize("s", runs)
    assert flat["s_ours_recall@50"] == pytest.approx(0.52)
    assert flat["s_ours_recall@50_std"] == pytest.approx(0.02)
    assert flat["s_ours_runs"] == 3 and "s_ours_recall@10" not in flat
    ratio, clear = la.beats_peer(flat, "s", "ours")
    assert ratio == pytest.approx(0.52 / 0.41) and clear
    ratio, clear = la.beats_peer(flat, "s", "close")            # ≥ 1.05x but spreads overlap
    assert ratio >= 1.05 and not clear


def test_setting_summary_picks_the_best_on_validation_not_test():
    runs = {"a": [{"recall@50": 0.6, "val_recall@50": 0.3}] * 2,
            "b": [{"recall@50": 0.5, "val_recall@50": 0.4}] * 2,
            "tfrs_logq": [{"recall@50": 0.45, "val_recall@50": 0.35}] * 2}
    flat, best = la.setting_summary("s", runs, {"a": (0.1, 0.01, None),
                                                "b": (0.2, 0.01, 0.3),
                                                "tfrs_logq": (0.1, 0.01, None)})
    assert best == "b" and flat["s_b_alpha"] == 0.3 and "s_a_alpha" not in flat
    assert flat["s_best_recall@50_ratio_vs_tfrs"] == pytest.approx(0.5 / 0.45)
    assert flat["s_best_beats_tfrs"] == 1 and flat["s_models_beating_tfrs"] == 2


def test_the_oracle_is_reported_beside_the_models_and_each_model_as_its_share():
    runs = {"a": [{"recall@50": 0.3, "val_recall@50": 0.3}] * 2,
            "tfrs_logq": [{"recall@50": 0.4, "val_recall@50": 0.35}] * 2}
    oracle = {"recall@10": 0.3, "recall@50": 0.5, "tail_recall@50": 0.1,
              "fresh_recall@50": float("nan")}
    flat, _ = la.setting_summary("s", runs, {"a": (0.1, 0.01, None),
                                             "tfrs_logq": (0.1, 0.01, None)}, oracle)
    assert flat["s_oracle_recall@50"] == 0.5 and "s_oracle_fresh_recall@50" not in flat
    assert flat["s_tfrs_logq_recall@50_share_of_oracle"] == pytest.approx(0.8)
    text = la.table("s", runs, flat)
    assert "oracle (true model)" in text and "0.800" in text


def test_a_planted_task_carries_its_oracle_on_the_capped_test_rows():
    scale = la.Scale(num_items=1000, num_users=600, interactions_per_user=20,
                     cluster_size=100, epochs=1, batch_size=64, num_negatives=8, dim=4,
                     max_eval_rows=500)
    task = la.planted_task("drift", scale)
    assert len(task.test_items) == 500
    assert 0 < task.oracle["recall@10"] <= task.oracle["recall@50"] <= 1


def test_every_model_gets_the_shared_grid_and_only_streaming_its_alphas(tmp_path):
    args = la.parse_args(["--out", str(tmp_path / "o"), "--temperatures", "0.1,0.3",
                          "--lrs", "0.01", "--stream-alphas", "0.01,0.3"])
    assert la.model_grid("inbatch", args) == [(0.1, 0.01, None), (0.3, 0.01, None)]
    assert la.model_grid("tfrs_logq", args) == la.model_grid("inbatch", args)
    assert len(la.model_grid("inbatch_stream", args)) == 4
    assert la.model_grid("hs", args) == [(0.1, 0.01, None)]


def test_hierarchical_softmax_is_left_out_where_items_are_fresh():
    def task(fresh):
        return la.Task("t", 2, 3, np.array([0]), np.array([1]), np.array([0]), np.array([1]),
                       np.array([0]), np.array([1]), np.zeros(3, np.int64), fresh, True)
    assert not la.applies("hs", task(np.array([False, False, True])))
    assert la.applies("hs", task(np.zeros(3, bool)))
    assert la.applies("mixed", task(np.array([False, False, True])))


@pytest.mark.parametrize("argv, message", [
    (["--settings", "drift,nope"], "--settings names unknown settings ['nope']"),
    (["--models", "inbatch,bogus"], "--models names unknown models ['bogus']"),
    (["--temperatures", "0.1,-1"], "--temperatures must hold numbers > 0"),
    (["--lrs", "fast"], "--lrs must be comma-separated numbers"),
    (["--seeds", "0"], "--seeds must be >= 1"),
    (["--stream-alphas", "0.1,2"], "--stream-alphas must be in (0, 1]"),
])
def test_bad_flags_are_named_before_any_work(argv, message, tmp_path, capsys):
    with pytest.raises(ValueError, match=re.escape(message)):
        la.parse_args(["--out", str(tmp_path / "o")] + argv)
    assert la.main(["--out", str(tmp_path / "o")] + argv) == 2
    assert message.split(" ")[0] in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
