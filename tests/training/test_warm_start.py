"""training/warm_start.py on two tiny days of a log: the merge by external id before any
new step (towers, frequency estimator, Adam's moments), with training to follow (new ids
keep their fresh rows)."""

import dataclasses
import os

import numpy as np
import pytest
import tensorflow as tf

from twotower.artifacts import atomic_directory
from twotower.data.frequency import StreamingFrequencyEstimator
from twotower.data.log_task import load_log_task
from twotower.data.retrieval_task import RetrievalConfig, item_inputs
from twotower.losses import InBatch, RetrievalLoss
from twotower.towers.retrieval_towers import build_towers, item_table
from twotower.towers.two_tower_model import TwoTowerModel, embed
from twotower.training.resumable_fit import fit
from twotower.training.warm_start import (STATE_DIR, WarmStart, WarmStartError,
                                          load_previous, save_state)

CATEGORIES = ("red", "blue", "green", "gold")


@dataclasses.dataclass
class Settings:
    epochs: int = 1
    batch_size: int = 64
    lr: float = 0.01
    seed: int = 0
    verbose: int = 0
    checkpoint_dir: str = None
    checkpoint_every: int = 50
    jit_compile: bool = False
    steps_per_execution: int = 1
    dim: int = 8
    hidden: tuple = (16,)
    oov_rate: float = 0.02
    history_pooling: str = "mean"


def _day(path, users, items, seed):
    rng = np.random.default_rng(seed)
    items = np.asarray(items)
    with open(path, "w") as f:
        f.write("user_id,item_id,timestamp\n")
        for u in users:
            mine = items[items % 4 == u % 4]
            for t in range(6):
                f.write(f"u{u},item_{int(rng.choice(mine)):03d},{1_700_000_000 + 60 * t}\n")
    return path


def _data(folder, name, users, items, seed):
    table = os.path.join(folder, "items.csv")
    if not os.path.exists(table):
        with open(table, "w") as f:
            f.write("item_id,category\n")
            for i in range(101):
                f.write(f"item_{i:03d},{CATEGORIES[i % 4]}\n")
    log = _day(os.path.join(folder, f"{name}.csv"), users, items, seed)
    return load_log_task(log, RetrievalConfig(history_length=5), items=table, verbose=False)


def _model(data, settings, towers=None):
    tf.keras.utils.set_random_seed(settings.seed)
    q, i = towers or build_towers(data, settings, l2_normalize=True)
    loss = RetrievalLoss("softmax", InBatch(frequencies=StreamingFrequencyEstimator(
        num_buckets=data.num_items, alpha=0.1)), temperature=0.1, similarity="cosine")
    return TwoTowerModel(q, i, loss, item_features=item_table(i, data))


@pytest.fixture(scope="module")
def day_one(tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("warm"))
    settings = Settings()
    data = _data(folder, "day1", range(0, 60), range(0, 80), 1)
    model = _model(data, settings)
    fit(model, data, settings)
    prev = os.path.join(folder, "prev")
    with atomic_directory(prev) as tmp:
        save_state(os.path.join(tmp, STATE_DIR), model, data, settings)
    return folder, prev, model, data


def _rows(model, data, var):
    """{external item id: row} of one of model's item-id-indexed tables."""
    spec = next(f for f in model.item_tower.features if f["name"] == "item_id")
    table = var.numpy()
    return {data.item_vocab[v]: table[1 + p] for p, v in enumerate(spec["vocabulary"])}


def test_merge_before_any_step(day_one):
    folder, prev, old_model, old_data = day_one
    settings = Settings()
    data = _data(folder, "day2", range(30, 90), range(40, 100), 2)
    warm = WarmStart(prev, settings)
    tf.keras.utils.set_random_seed(settings.seed)
    q, i = warm.towers(data, *build_towers(data, settings, l2_normalize=True))
    model = _model(data, settings, (q, i))
    callback = warm.apply(model)

    # towers: every item the previous model had an id row for is embedded as before
    old = dict(zip(old_data.item_vocab.tolist(), embed(old_model.item_tower,
                                                       item_inputs(old_data))))
    new = dict(zip(data.item_vocab.tolist(), embed(model.item_tower, item_inputs(data))))
    old_rows = _rows(old_model, old_data, old_model.item_tower._emb["item_id"].embeddings)
    new_rows = _rows(model, data, model.item_tower._emb["item_id"].embeddings)
    known = sorted(set(old_rows) & set(new))
    # day 1's items: 40..79 in day 2's log, 0..39 only in its items table — all keep rows
    assert len(known) >= 70 and set(known) <= set(new_rows)
    for k in known:
        np.testing.assert_allclose(new[k], old[k], atol=1e-6)
        np.testing.assert_array_equal(new_rows[k], old_rows[k])
    # new ids (trained today) keep a fresh row: not the OOV bucket's
    oov = model.item_tower._emb["item_id"].embeddings.numpy()[0]
    fresh = sorted(set(new_rows) - set(old_rows))
    assert {f"item_{n:03d}" for n in range(80, 100)} <= set(fresh)
    assert all(not np.allclose(new_rows[k], oov) for k in fresh)
    # the history's item table moved by item id too
    old_h = old_model.query_tower._emb["history"].embeddings.numpy()
    new_h = model.query_tower._emb["history"].embeddings.numpy()
    for k in known:
        a = list(old_data.item_vocab).index(k) + 1
        b = list(data.item_vocab).index(k) + 1
        np.testing.assert_array_equal(new_h[b], old_h[a])

    # the frequency estimator: the clock carries on, each known item's state moves
    est0 = old_model.retrieval_loss.candidates.frequency_estimator
    est1 = model.retrieval_loss.candidates.frequency_estimator
    assert int(est1.occurrences.numpy()) == int(est0.occurrences.numpy()) > 0
    assert int(est1.step.numpy()) == int(est0.step.numpy())
    for k in known:
        a, b = list(old_data.item_vocab).index(k), list(data.item_vocab).index(k)
        assert est1.delta.numpy()[b] == est0.delta.numpy()[a]
        assert est1.last_seen.numpy()[b] == est0.last_seen.numpy()[a]
    # an item the stream has not seen counts as seen now, with the median seen gap (left
    # unseen, its first gap would run from the stream's origin: p̂ = 1/t, far too rare)
    d0 = est0.delta.numpy()
    carried = [d0[a] for a, e in enumerate(old_data.item_vocab) if e in set(data.item_vocab)]
    median = np.median([d for d in carried if d > 0])
    for k in fresh:
        b = list(data.item_vocab).index(k)
        assert est1.delta.numpy()[b] == pytest.approx(median, rel=1e-6)
        assert est1.last_seen.numpy()[b] == int(est0.occurrences.numpy())

    # Adam: moments of known rows and of the MLP carried, new rows zero, step count too
    model.compile(optimizer=tf.keras.optimizers.Adam(0.01))
    callback.set_model(model)
    callback.on_train_begin()
    opt0, opt1 = old_model.optimizer, model.optimizer
    assert int(opt1.iterations.numpy()) == int(opt0.iterations.numpy()) > 0
    for slots in ("_momentums", "_velocities"):
        def slot(opt, var):
            return getattr(opt, slots)[opt._index_dict[opt._var_key(var)]]

        var0 = old_model.item_tower._emb["item_id"].embeddings
        var1 = model.item_tower._emb["item_id"].embeddings
        m0, m1 = _rows(old_model, old_data, slot(opt0, var0)), _rows(model, data, slot(opt1, var1))
        for k in known:
            np.testing.assert_array_equal(m1[k], m0[k])
        for k in fresh:
            assert not m1[k].any()
        np.testing.assert_array_equal(slot(opt1, model.item_tower._out.kernel).numpy(),
                                      slot(opt0, old_model.item_tower._out.kernel).numpy())


def test_refusals(day_one, tmp_path):
    folder, prev, _, _ = day_one
    with pytest.raises(WarmStartError, match="other tower shapes: --dim was 8 there, 16 now"):
        load_previous(prev, dataclasses.replace(Settings(), dim=16))
    with pytest.raises(WarmStartError, match="not a folder twotower wrote"):
        load_previous(str(tmp_path), Settings())
    with pytest.raises(WarmStartError, match="no such folder"):
        load_previous(str(tmp_path / "absent"), Settings())
    # a changed array is caught by its checksum
    copy = str(tmp_path / "copy")
    with atomic_directory(copy) as tmp:
        import shutil

        shutil.rmtree(tmp)
        shutil.copytree(prev, tmp)
    with open(os.path.join(copy, STATE_DIR, "item_vocab.npy"), "ab") as f:
        f.write(b"\0")
    with pytest.raises(WarmStartError, match="does not match its checksum"):
        load_previous(copy, Settings())
