"""TopKRecall: whole-catalogue recall@K in model.evaluate / fit(validation_data=...), equal to
metrics/ranking.py's exact recall on the same embeddings, with seen items excluded and
repeats handled the same way; worked by hand, on the planted data set, and through a
searcher (a TFRS top-k layer, or any object with search(queries, k))."""

import functools

import numpy as np
import pytest

import twotower  # noqa: F401  (Keras 2)
import tensorflow as tf
import tensorflow_recommenders as tfrs

from twotower.data.synthetic import PlantedConfig, planted_interactions
from twotower.losses import HierarchicalSoftmax, InBatch, RetrievalLoss
from twotower.metrics import TopKRecall, pad_exclusions
from twotower.towers import FeatureTower, IDTower, TwoTowerModel
from twotower.metrics.ranking import evaluate

Q = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]], np.float32)
V = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]], np.float32)
POSITIVES = np.array([1, 2, 3])
SEEN = pad_exclusions([[0], [2, 3], []])  # query 1's positive 2 is a repeat


@pytest.mark.parametrize("repeats, recall1, recall2", [
    # q0: item 1 (item 0 seen) → rank 1. q1: item 2 was seen → dropped / rank 1 (item 3
    # still excluded) / a miss. q2: item 3 below item 2 → rank 2.
    ("new", 1 / 2, 2 / 2), ("all", 2 / 3, 3 / 3), ("miss", 1 / 3, 2 / 3)])
def test_worked_by_hand(repeats, recall1, recall2):
    metric = TopKRecall(ks=(1, 2), candidates=V, repeats=repeats, chunk_size=3)
    metric.update_state(Q, POSITIVES, SEEN)
    got = {k: float(v) for k, v in metric.result().items()}
    assert got == pytest.approx({"recall@1": recall1, "recall@2": recall2})
    ref = evaluate(Q, V, POSITIVES, exclude=[[0], [2, 3], []], ks=(1, 2), repeats=repeats)
    assert got == pytest.approx({"recall@1": ref["recall@1"], "recall@2": ref["recall@2"]})
    metric.reset_state()
    metric.update_state(Q[2:], POSITIVES[2:])
    assert float(metric.result()["recall@1"]) == 0.0


def test_pad_exclusions():
    np.testing.assert_array_equal(pad_exclusions([[4, 5], [], [6]]),
                                  [[4, 5], [-1, -1], [6, -1]])
    assert pad_exclusions([[], []]).shape == (2, 1)
    with pytest.raises(ValueError, match="width=1 is shorter than the longest"):
        pad_exclusions([[1, 2]], width=1)


# -- the planted data set of test_two_tower_model.py ------------------------------------
CONFIG = PlantedConfig(num_users=400, num_items=300, interactions_per_user=30,
                       zipf_exponent=0.5, seed=0)
DATA = planted_interactions(CONFIG)
TRAIN, TEST = DATA.split_last()
SEEN_LISTS = [np.unique(DATA.items[TRAIN][DATA.users[TRAIN] == u]) for u in range(400)]
TEST_SEEN = [SEEN_LISTS[u] for u in DATA.users[TEST]]
KS = (1, 10, 50)


def _train_ds():
    return (tf.data.Dataset.from_tensor_slices(
        {"query": DATA.users[TRAIN], "item": DATA.items[TRAIN]})
        .shuffle(20_000, seed=0).batch(128, drop_remainder=True))


def _val_ds(exclude=True):
    batch = {"query": DATA.users[TEST], "item": DATA.items[TEST]}
    if exclude:
        batch["exclude"] = pad_exclusions(TEST_SEEN)
    return tf.data.Dataset.from_tensor_slices(batch).batch(64)


@functools.lru_cache(maxsize=None)
def _trained():
    tf.keras.utils.set_random_seed(0)
    model = TwoTowerModel(IDTower(400, 16, name="user"), IDTower(300, 16, name="item"),
                          RetrievalLoss("softmax", InBatch()))
    model.compile(optimizer=tf.keras.optimizers.Adam(0.05))
    model.fit(_train_ds(), epochs=3, verbose=0)
    return model


def _exact(model, repeats, exclude=True):
    u = model.query_embeddings(DATA.users[TEST])
    v = model.item_embeddings(np.arange(300))
    return evaluate(u, v, DATA.items[TEST], exclude=TEST_SEEN if exclude else None, ks=KS,
                    repeats=repeats)


def test_evaluate_equals_exact_recall_on_planted_data():
    model = _trained()
    repeats = sum(int(t in s) for t, s in zip(DATA.items[TEST], TEST_SEEN))
    assert repeats > 20  # the planted log has repeat consumption to tell the modes apart
    metrics = [TopKRecall(ks=KS, repeats=r, name=r, chunk_size=64) for r in ("new", "all", "miss")]
    metrics.append(TopKRecall(ks=KS))  # default: "new", one chunk
    model.compile(optimizer=tf.keras.optimizers.Adam(0.05), metrics=metrics)
    got = model.evaluate(_val_ds(), verbose=0, return_dict=True)
    assert np.isfinite(got["loss"])
    for mode in ("new", "all", "miss"):
        want = _exact(model, mode)
        for k in KS:
            assert got[f"{mode}_recall@{k}"] == pytest.approx(want[f"recall@{k}"], abs=1e-6)
    assert got["recall@10"] == pytest.approx(got["new_recall@10"], abs=1e-6)
    assert got["all_recall@50"] > got["new_recall@50"] > got["miss_recall@50"]
    # without an "exclude" key, every item is ranked
    model.compile(optimizer=tf.keras.optimizers.Adam(0.05), metrics=[TopKRecall(ks=KS)])
    got = model.evaluate(_val_ds(exclude=False), verbose=0, return_dict=True)
    want = _exact(model, "all", exclude=False)
    assert [got[f"recall@{k}"] for k in KS] == pytest.approx(
        [want[f"recall@{k}"] for k in KS], abs=1e-6)


def test_fit_reports_validation_recall_from_the_current_item_tower():
    tf.keras.utils.set_random_seed(1)
    model = TwoTowerModel(IDTower(400, 16), IDTower(300, 16), RetrievalLoss("softmax", InBatch()))
    model.compile(optimizer=tf.keras.optimizers.Adam(0.05), metrics=[TopKRecall(ks=(10,))])
    history = model.fit(_train_ds(), validation_data=_val_ds(), epochs=2, verbose=0)
    val = history.history["val_recall@10"]
    assert "recall@10" not in history.history  # computed on validation data only
    assert len(val) == 2 and val[1] > val[0]  # the candidates were re-embedded each epoch
    assert val[1] == pytest.approx(_exact(model, "new")["recall@10"], abs=1e-6)


class NumpySearcher:
    """A brute-force stand-in for an index: search(queries, k) -> (ids, scores)."""

    def __init__(self, vectors):
        self.vectors = vectors

    def search(self, queries, k):
        s = np.asarray(queries) @ self.vectors.T
        ids = np.argsort(-s, axis=1, kind="stable")[:, :k]
        return ids, np.take_along_axis(s, ids, 1)


class ExcludingSearcher(NumpySearcher):
    def search(self, queries, k, exclude=None):
        s = np.asarray(queries) @ self.vectors.T
        for row, ex in enumerate(exclude or []):
            s[row, list(ex)] = -np.inf
        ids = np.argsort(-s, axis=1, kind="stable")[:, :k]
        return ids, np.take_along_axis(s, ids, 1)


def test_searchers_give_the_exact_recall():
    model = _trained()
    v = model.item_embeddings(np.arange(300))
    tfrs_layer = tfrs.layers.factorized_top_k.BruteForce(k=50)
    tfrs_layer.index(tf.constant(v), tf.range(300, dtype=tf.int64))
    # TFRS's ScaNN layer searching every leaf and reordering every item: exact answers
    scann = tfrs.layers.factorized_top_k.ScaNN(k=50, num_leaves=10, num_leaves_to_search=10,
                                               num_reordering_candidates=300)
    scann.index(tf.constant(v), tf.range(300, dtype=tf.int64))
    searchers = {"python": NumpySearcher(v), "exclude_arg": ExcludingSearcher(v),
                 "tfrs": tfrs_layer, "scann": scann}
    metrics = [TopKRecall(ks=KS, searcher=s, name=n) for n, s in searchers.items()]
    model.compile(optimizer=tf.keras.optimizers.Adam(0.05), metrics=metrics)
    got = model.evaluate(_val_ds(), verbose=0, return_dict=True)
    want = _exact(model, "new")
    for name in searchers:
        assert [got[f"{name}_recall@{k}"] for k in KS] == pytest.approx(
            [want[f"recall@{k}"] for k in KS], abs=1e-6), name


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match=r"ks must be ints >= 1, got \(0,\)"):
        TopKRecall(ks=(0,))
    with pytest.raises(ValueError, match="repeats must be one of"):
        TopKRecall(repeats="seen")
    with pytest.raises(ValueError, match="searcher must be a tfrs"):
        TopKRecall(searcher=object())
    with pytest.raises(ValueError, match="candidates= or searcher=, not both"):
        TopKRecall(candidates=V, searcher=NumpySearcher(V))
    model = TwoTowerModel(IDTower(5, 2), IDTower(4, 2), RetrievalLoss())
    with pytest.raises(ValueError, match="takes twotower.TopKRecall metrics, got 'accuracy'"):
        model.compile(metrics=["accuracy"])
    items = FeatureTower([FeatureTower.hashed("title", 8)], output_dim=2)
    model = TwoTowerModel(IDTower(5, 2), items, RetrievalLoss())
    with pytest.raises(ValueError, match="TopKRecall needs the catalogue's embeddings"):
        model.compile(metrics=[TopKRecall()])
    model.compile(metrics=[TopKRecall(candidates=V)])  # a fixed catalogue is fine
    hs = TwoTowerModel(IDTower(5, 2), IDTower(4, 2),
                       RetrievalLoss(HierarchicalSoftmax([1, 2, 3, 4], 2), candidates=None))
    with pytest.raises(ValueError, match="hierarchical-softmax model"):
        hs.compile(metrics=[TopKRecall()])
