"""End-to-end test of twotower.recipes.youtube on the planted MovieLens folder."""

import json
import os

import numpy as np
import pytest

import twotower  # noqa: F401
import tensorflow as tf

from twotower.artifacts import OutputPathError
from twotower.recipes import two_tower_kit as common
from twotower.training import resumable_fit
from twotower.towers import retrieval_towers
from twotower.recipes import youtube

EXPECTED_KEYS = {"recall@10", "recall@20", "recall@50", "recall@100", "ndcg@10", "ndcg@50",
                 "mrr", "coverage@50", "head_recall@50", "tail_recall@50",
                 "examples_per_sec", "popularity_recall@50"}


def test_cli_exports_index_and_model_and_beats_popularity(planted_ml100k, tmp_path, capsys,
                                                          exported):
    out = str(tmp_path / "yt")
    argv = ["--data", planted_ml100k, "--epochs", "8", "--batch-size", "32", "--lr", "0.02",
            "--dim", "16", "--out", out]
    assert youtube.main(argv) == 0
    metrics = exported(out)
    assert EXPECTED_KEYS <= set(metrics)
    assert os.path.getsize(os.path.join(out, "recall_at_k.png")) > 0
    text = capsys.readouterr().out
    assert "recall@50" in text and f"twotower serve {os.path.join(out, 'index')}" in text
    # no user is served an item of their own log, the held-out last one included
    from twotower.index import persistence

    logged = {}
    for line in open(os.path.join(planted_ml100k, "u.data")):
        u, m = line.split("\t")[:2]
        logged.setdefault(int(u), set()).add(int(m))
    users = sorted(logged)
    found, _ = persistence.load(os.path.join(out, "index")).u2i_users(users, 10)
    assert not any(logged[u] & set(row.tolist()) for u, row in zip(users, found))
    # a second run is refused before any work unless told to replace the first
    before = open(os.path.join(out, "metrics.json")).read()
    with pytest.raises(OutputPathError, match="--overwrite"):
        youtube.main(argv)
    assert open(os.path.join(out, "metrics.json")).read() == before
    assert common.check_outputs(youtube.Config(out=out, overwrite=True)) is None
    config = youtube.Config(source=planted_ml100k)
    pop = common.popularity(common.load_data(config))
    # 81 movies in 4 planted clusters: ids/history reveal the cluster, popularity cannot.
    assert metrics["recall@10"] > pop["recall@10"] + 0.1, (metrics["recall@10"], pop)


def test_cold_start_user_and_item_get_embeddings(planted_ml100k):
    config = youtube.Config(source=planted_ml100k, epochs=1, batch_size=64, dim=8, logq=False)
    model, data, metrics = youtube.train(config)
    assert np.isfinite(metrics["recall@50"])
    row = list(data.users["user_id"]).index(81)  # in the user file, no ratings at all
    query = {k: v[row:row + 1] for k, v in data.users.items()}
    query["history"] = np.zeros((1, config.history_length), np.int64)
    u = model.query_tower({k: tf.constant(v) for k, v in query.items()}).numpy()
    assert u.shape == (1, 8) and np.all(np.isfinite(u))
    cold_item = list(data.items["movie_id"]).index(81)  # never rated: OOV id, real features
    assert data.item_counts[cold_item] == 0
    v = model.item_embeddings()
    assert v.shape == (data.num_items, 8) and np.all(np.isfinite(v[cold_item]))


def test_input_order_is_a_function_of_seed_and_epoch(planted_ml100k):
    """What resuming relies on: the batches of global step s are the same whichever
    step the stream starts at."""
    config = youtube.Config(source=planted_ml100k, epochs=3, batch_size=32)
    data = common.load_data(config)
    start = tf.Variable(0, dtype=tf.int64)
    ds, steps = resumable_fit.resumable_dataset(data, config, start)
    full = [b["item"]["item_id"].numpy() for b in ds]
    assert len(full) == 3 * steps and steps == -(-len(data.train) // 32)
    epoch = np.concatenate(full[:steps])
    assert sorted(epoch.tolist()) == sorted(data.items["item_id"][data.train.item].tolist())
    assert not np.array_equal(np.concatenate(full[steps:2 * steps]), epoch)  # reshuffled
    start.assign(steps + 5)  # read when the iterator starts
    resumed = [b["item"]["item_id"].numpy() for b in ds]
    assert len(resumed) == len(full) - steps - 5
    for a, b in zip(resumed, full[steps + 5:]):
        np.testing.assert_array_equal(a, b)


def test_a_log_with_string_ids_exports_an_index_in_those_ids(tmp_path, exported):
    """--interactions with the log's own string ids: the exported index is asked and
    answers in them (the vocabularies travel to the Retriever)."""
    rng = np.random.default_rng(0)
    rows = ["user_id,item_id,timestamp"]
    for u in range(48):
        for t in range(8):
            rows.append(f"u{u},sku-{u % 3}-{rng.integers(12)},{1_000_000 + 100 * u + t}")
    log = tmp_path / "log.csv"
    log.write_text("\n".join(rows) + "\n")
    out = str(tmp_path / "out")
    assert youtube.main(["--interactions", str(log), "--epochs", "2", "--batch-size", "32",
                         "--dim", "8", "--out", out]) == 0
    exported(out)
    from twotower.index import persistence

    retriever = persistence.load(os.path.join(out, "index"))
    ids, _ = retriever.i2i(["sku-0-1"], 3)
    assert ids.dtype.kind == "U" and all(i.startswith("sku-") for i in ids[0])


def test_fit_compiles_the_preprocessed_step_with_xla(planted_ml100k):
    """Strings become ids before the step, so fit compiles it with XLA (loss included)
    and runs steps_per_execution steps per call; --no-jit trains the same model."""
    config = youtube.Config(source=planted_ml100k, epochs=2, batch_size=32, dim=8)
    _, data, metrics = youtube.train(config)
    assert metrics["jit_compile"] == 1 and metrics["steps_per_execution"] == 32
    assert metrics["loss_last_epoch"] < metrics["loss_first_epoch"]
    table = retrieval_towers.item_table(retrieval_towers.build_towers(data, config)[1], data)
    assert not any(np.asarray(v).dtype.kind in "OUS" for v in table.values())
    _, _, plain = youtube.train(youtube.Config(source=planted_ml100k, epochs=2, batch_size=32,
                                               dim=8, jit_compile=False,
                                               steps_per_execution=1))
    assert plain["jit_compile"] == 0 and plain["steps_per_execution"] == 1
    assert np.isfinite(plain["recall@50"])


def test_throughput_counts_every_step_of_an_execution():
    """With steps_per_execution, Keras calls back once per call, with its last step."""
    meter = resumable_fit.Throughput(10, 95, 2)  # 10 steps an epoch, the last one of 5 rows
    meter.on_train_begin()
    for epoch in range(2):
        meter.on_epoch_begin(epoch)
        for last in (3, 7, 9):  # calls of 4, 4 and 2 steps
            meter.on_train_batch_end(last)
    meter.on_train_end()
    assert meter.steps == 20 - 4  # the first call (tracing) is not timed
    assert meter.examples == 2 * 95 - 40


def test_the_one_shape_stream_is_the_full_batches_of_the_plain_one(planted_ml100k):
    """drop_remainder (the XLA step's stream, gathered in blocks) yields, for every
    global step, the plain stream's batch of that step, less each epoch's smaller last
    batch; resuming mid-stream still starts at the given step."""
    config = youtube.Config(source=planted_ml100k, epochs=2, batch_size=32)
    data = common.load_data(config)
    start = tf.Variable(0, dtype=tf.int64)
    plain, steps = resumable_fit.resumable_dataset(data, config, start)
    full = [b["item"]["item_id"].numpy() for b in plain]
    one, kept = resumable_fit.resumable_dataset(data, config, start, drop_remainder=True)
    assert kept == len(data.train) // 32 < steps
    want = [b for e in range(2) for b in full[e * steps:e * steps + kept]]
    got = [b["item"]["item_id"].numpy() for b in one]
    assert len(got) == len(want)
    for a, b in zip(got, want):
        np.testing.assert_array_equal(a, b)
    start.assign(kept + 3)
    resumed = [b["item"]["item_id"].numpy() for b in one]
    assert len(resumed) == kept - 3
    np.testing.assert_array_equal(resumed[0], want[kept + 3])


def test_attention_history_tower_compiles_trains_and_beats_popularity(planted_ml100k):
    """--history-pooling attention: the query tower's history is an
    AttentionPooledIDTower; the step still compiles with XLA and the model learns the
    planted clusters."""
    config = youtube.Config(source=planted_ml100k, epochs=8, batch_size=32, lr=0.02, dim=16,
                            history_pooling="attention")
    model, data, metrics = youtube.train(config)
    assert metrics["jit_compile"] == 1
    assert metrics["loss_last_epoch"] < metrics["loss_first_epoch"]
    assert "history_attention" in {layer.name for layer in model.query_tower._emb.values()}
    pop = common.popularity(data)
    assert metrics["recall@10"] > pop["recall@10"] + 0.1, (metrics["recall@10"], pop)
    with pytest.raises(ValueError, match="history_pooling"):
        youtube.Config(history_pooling="max").validate()
