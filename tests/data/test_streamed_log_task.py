"""The out-of-core road (data/streamed_log_task.py, through load_log_task) builds the same
retrieval task as the in-memory one (log_task), row for row, on small logs."""

import os

import numpy as np
import pytest

from twotower.data.log_task import load_log_task, log_task
from twotower.data.ragged_rows import RaggedRows
from twotower.data.retrieval_task import RetrievalConfig, Split, example_inputs
from twotower.data.sharded_split import ShardedSplit


@pytest.fixture(scope="module")
def rated_log(tmp_path_factory):
    """5,000 rows, 300 users, Zipf items, timestamps with many ties, ratings 1-5."""
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("log") / "log.csv"
    n = 5000
    users, items = rng.integers(0, 300, n), rng.zipf(1.5, n) % 400
    ts, ratings = rng.integers(0, 1000, n), rng.integers(1, 6, n)
    with open(path, "w") as f:
        f.write("user_id,item_id,timestamp,rating\n")
        f.writelines(f"u{u},i{i},{t},{r}\n" for u, i, t, r in zip(users, items, ts, ratings))
    return str(path)


def _sorted_rows(user, item, history):
    order = np.lexsort((item, user, *np.asarray(history).T[::-1]))
    return user[order], item[order], np.asarray(history)[order]


@pytest.mark.parametrize("split", ["leave_last_out", "temporal"])
@pytest.mark.parametrize("min_rating", [None, 3])
def test_streamed_task_equals_the_in_memory_task(rated_log, split, min_rating):
    config = RetrievalConfig(split=split, history_length=5, min_rating=min_rating)
    a = log_task(rated_log, config)
    b = load_log_task(rated_log, config, verbose=False)
    assert isinstance(b.train, ShardedSplit) and isinstance(b.seen_all, RaggedRows)
    np.testing.assert_array_equal(a.user_vocab, b.user_vocab)
    np.testing.assert_array_equal(a.item_vocab, b.item_vocab)
    np.testing.assert_array_equal(a.item_counts, b.item_counts)
    for name in ("valid", "test", "serving"):
        x, y = getattr(a, name), getattr(b, name)
        for field in ("item", "user", "timestamp"):
            np.testing.assert_array_equal(getattr(x, field), getattr(y, field))
        assert sorted(x.query) == sorted(y.query)
        for k in x.query:
            np.testing.assert_array_equal(x.query[k], y.query[k])
    for name in ("seen_train", "seen_valid", "seen_all"):
        x, y = getattr(a, name), getattr(b, name)
        assert len(x) == len(y)
        for r in range(len(x)):
            np.testing.assert_array_equal(x[r], y[r])
    assert len(b.train) == len(a.train)
    got = _sorted_rows(*b.train.read_all())
    want = _sorted_rows(a.train.user, a.train.item, a.train.query["history"])
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)
    np.testing.assert_array_equal(
        b.train.user_counts, np.bincount(a.train.user, minlength=len(b.user_vocab)))
    for i in range(len(b.test)):  # the evaluation's exclusions read the same
        np.testing.assert_array_equal(a.exclusions(a.test)[i], b.exclusions(b.test)[i])


def test_integer_ids_and_table_only_items(tmp_path):
    log = tmp_path / "log.csv"
    log.write_text("user_id,item_id,timestamp\n" + "".join(
        f"{u},{i},{t}\n" for t, (u, i) in enumerate(
            [(10, 7), (10, 30), (10, 7), (2, 30), (2, 5), (2, 7), (10, 5)])))
    items = tmp_path / "items.csv"
    items.write_text("item_id,brand\n7,a\n30,b\n5,a\n99,c\n")
    config = RetrievalConfig(history_length=2, min_user_interactions=1)
    from twotower.data.feature_table import read_feature_table

    table = read_feature_table(str(items), "item_id", infer=True)
    a = log_task(str(log), config, items=table)
    b = load_log_task(str(log), config, items=str(items), verbose=False)
    assert b.item_vocab.dtype.kind == "i" and b.item_vocab.tolist() == a.item_vocab.tolist()
    assert b.item_vocab.tolist() == [7, 5, 30, 99]  # 7 thrice; 5 and 30 twice, 5 first
    np.testing.assert_array_equal(a.items["brand"], b.items["brand"])
    assert b.item_counts[-1] == 0 and len(b.item_counts) == 4


def test_batches_are_a_pure_function_of_seed_and_epoch(rated_log):
    split = load_log_task(rated_log, RetrievalConfig(history_length=3), verbose=False,
                          seed=4).train
    n = len(split)

    def epoch(e, first=0, drop=False):
        return list(split.batches(64, seed=1, epoch=e, first=first, drop_remainder=drop))

    whole = epoch(0)
    assert sum(len(b["user"]) for b in whole) == n
    assert all(len(b["user"]) == 64 for b in whole[:-1])
    # every training row once an epoch, in another order the next epoch
    rows = _sorted_rows(*split.read_all())
    got = _sorted_rows(*(np.concatenate([b[k] for b in whole])
                         for k in ("user", "item", "history")))
    for g, w in zip(got, rows):
        np.testing.assert_array_equal(g, w)
    assert not np.array_equal(whole[0]["item"], epoch(1)[0]["item"])
    # a resumed run starts mid-epoch at exactly the batch it would have drawn
    for k in ("user", "item", "history"):
        np.testing.assert_array_equal(epoch(0, first=7)[0][k], whole[7][k])
    dropped = epoch(0, drop=True)
    assert len(dropped) == n // 64 and all(len(b["user"]) == 64 for b in dropped)


def test_example_inputs_of_a_streamed_task(rated_log):
    data = load_log_task(rated_log, RetrievalConfig(history_length=3), verbose=False)
    query, item = example_inputs(data)
    assert sorted(query) == ["history", "user_id"] and query["history"].shape == (2, 3)
    assert isinstance(data.serving, Split) and len(item["item_id"]) == 2


def test_the_work_folder_goes_with_the_split(rated_log, tmp_path):
    import gc

    from twotower.data.streamed_log_task import stream_log

    log = stream_log(rated_log, RetrievalConfig(history_length=2), work_dir=str(tmp_path))
    folder = log.train.folder
    assert os.path.isdir(folder) and not os.path.exists(os.path.join(folder, "log.duckdb"))
    assert log.train.files and all(os.path.isfile(f) for f in log.train.files)
    del log
    gc.collect()
    assert not os.path.exists(folder) and os.listdir(tmp_path) == []


def test_bad_lines_are_reported_as_on_the_in_memory_road(tmp_path, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.setenv("TWOTOWER_DATA", str(work))  # where the work folder is made
    log = tmp_path / "log.csv"
    log.write_text("user_id,item_id,timestamp\nu1,a,1\nu1,,2\n")
    with pytest.raises(ValueError, match="line 3"):
        load_log_task(str(log), RetrievalConfig(min_user_interactions=1), verbose=False)
    assert os.listdir(work) == []  # the half-made work folder is gone
