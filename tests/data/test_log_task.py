"""Tests for twotower.data.log_task: a generic log (string or integer ids) and its
feature tables → the RetrievalData the recipes train on."""

import numpy as np
import pytest

from twotower.data import feature_table as F
from twotower.data import interactions as I
from twotower.data import parquet_shards
from twotower.data.log_task import load_log_task, log_task
from twotower.data.retrieval_task import RetrievalConfig

# u0: a(1) b(2) c(3) a(4)  u1: b(1) a(2) d(3)   u2: c(5)  (a 3x, b 2x, c 2x, d 1x)
LOG = ("user_id,item_id,timestamp\n"
       "u0,a,1\nu0,b,2\nu1,b,1\nu0,c,3\nu1,a,2\nu0,a,4\nu1,d,3\nu2,c,5\n")


@pytest.fixture
def log_csv(tmp_path):
    p = tmp_path / "my_log.csv"
    p.write_text(LOG)
    return str(p)


def test_string_ids_vocab_split_history(log_csv):
    data = log_task(I.read_interactions(log_csv),
                         RetrievalConfig(history_length=2, min_user_interactions=1))
    # frequency order, ties by id
    assert data.item_vocab.tolist() == ["a", "b", "c", "d"]
    assert data.user_vocab.tolist() == ["u0", "u1", "u2"]
    assert data.name == "my_log.csv" and data.item_kinds == {} and data.num_items == 4
    ix = {k: i for i, k in enumerate(data.item_vocab)}
    test = {data.user_vocab[u]: data.item_vocab[i] for u, i in zip(data.test.user, data.test.item)}
    assert test == {"u0": "a", "u1": "d", "u2": "c"}
    valid = {data.user_vocab[u]: data.item_vocab[i]
             for u, i in zip(data.valid.user, data.valid.item)}
    assert valid == {"u0": "c", "u1": "a"}
    row = list(data.test.user).index(0)
    assert data.test.query["history"][row].tolist() == [ix["c"] + 1, ix["b"] + 1]
    assert data.items["item_id"].tolist() == [0, 1, 2, 3]
    assert data.item_counts.tolist() == [1, 2, 0, 0]  # train: u0 a, b; u1 b


def test_feature_tables_extend_the_corpus_and_align(log_csv, tmp_path):
    items = tmp_path / "items.csv"
    items.write_text("item_id,category\na,x\nb,y\nz,x\n")
    users = tmp_path / "users.csv"
    users.write_text("user_id,country\nu1,FR\nu9,US\n")
    data = load_log_task(log_csv, RetrievalConfig(min_user_interactions=1), items=str(items),
                         users=str(users), verbose=False)
    assert data.item_vocab.tolist() == ["a", "b", "c", "d", "z"]  # z: only in the table
    assert data.items["category"].tolist() == ["x", "y", "", "", "x"]
    assert data.user_vocab.tolist() == ["u0", "u1", "u2", "u9"]
    assert data.users["country"].tolist() == ["", "FR", "", "US"]
    assert data.item_kinds == {"category": "categorical"}
    assert "country" in data.test.query


def test_integer_ids_min_rating_and_mismatched_table(tmp_path):
    p = tmp_path / "r.csv"
    p.write_text("user_id,item_id,rating,timestamp\n1,10,5,1\n1,11,1,2\n1,12,4,3\n2,10,4,1\n")
    data = load_log_task(str(p), RetrievalConfig(min_rating=4, min_user_interactions=1),
                         verbose=False)
    assert data.item_vocab.dtype == np.int64 and sorted(data.item_vocab.tolist()) == [10, 12]
    t = tmp_path / "t.csv"
    t.write_text("item_id,c\nsku1,x\n")
    with pytest.raises(ValueError, match="not integers.*integer item ids"):
        load_log_task(str(p), RetrievalConfig(min_user_interactions=1), items=str(t),
                      verbose=False)
    q = tmp_path / "q.csv"
    q.write_text(LOG)
    with pytest.raises(ValueError, match="--min-rating 4 needs a 'rating' column"):
        load_log_task(str(q), RetrievalConfig(min_rating=4.0), verbose=False)


def test_movielens_ratings_folder_without_movies(tmp_path):
    folder = tmp_path / "ml-latest"
    folder.mkdir()
    lines = [f"{u},{m},{3 + (u + m) % 3}.0,{1000 * u + m}" for u in range(1, 6)
             for m in range(1, 5)]
    (folder / "ratings.csv").write_text("userId,movieId,rating,timestamp\n" + "\n".join(lines))
    data = load_log_task(str(folder), RetrievalConfig(), verbose=False)
    assert len(data.test) == 5 and sorted(data.item_vocab.tolist()) == [1, 2, 3, 4]
    assert data.name == "ml-latest"


def test_feature_column_may_not_shadow_an_input(log_csv, tmp_path):
    items = tmp_path / "items.csv"
    items.write_text("item_id,history\na,x\n")
    with pytest.raises(ValueError, match="'history' clashes"):
        load_log_task(log_csv, RetrievalConfig(min_user_interactions=1), items=str(items),
                      verbose=False)


def test_parquet_shards_give_the_same_task_as_the_csv(log_csv, tmp_path):
    shards = str(tmp_path / "shards")
    parquet_shards.csv_to_parquet(log_csv, shards, rows_per_shard=3, progress=False)
    config = RetrievalConfig(history_length=2, min_user_interactions=1)
    a = load_log_task(log_csv, config, verbose=False)
    b = load_log_task(shards, config, verbose=False)
    assert a.item_vocab.tolist() == b.item_vocab.tolist()
    assert a.user_vocab.tolist() == b.user_vocab.tolist()
    for split in ("valid", "test"):
        np.testing.assert_array_equal(getattr(a, split).item, getattr(b, split).item)
        np.testing.assert_array_equal(getattr(a, split).query["history"],
                                      getattr(b, split).query["history"])
    for x, y in zip(a.train.read_all(), b.train.read_all()):  # the same shuffle (seed 0)
        np.testing.assert_array_equal(x, y)
    assert b.name == "shards"


# u0: a5 b4 c3 d4 | u1: a2 b1 c5 | u2: a1 b2 | u3: b4 c4 d5 e1
RATED = ("user_id,item_id,rating,timestamp\n"
         "u0,a,5,1\nu0,b,4,2\nu0,c,3,3\nu0,d,4,4\n"
         "u1,a,2,1\nu1,b,1,2\nu1,c,5,3\n"
         "u2,a,1,1\nu2,b,2,2\n"
         "u3,b,4,1\nu3,c,4,2\nu3,d,5,3\nu3,e,1,4\n")


def test_summary_says_what_the_filters_kept_and_dropped(tmp_path, capsys):
    p = tmp_path / "rated.csv"
    p.write_text(RATED)
    data = load_log_task(str(p), RetrievalConfig(min_rating=4))
    out = capsys.readouterr().out
    # read: 13 rows, 4 users, 5 items
    assert "(comma-separated text; columns 'user_id', 'item_id', 'timestamp', 'rating'; " \
        "string user ids, string item ids): read 13 rows, 4 users, 5 items" in out
    # --min-rating 4 keeps 7 rows (u0 a b d, u1 c, u3 b c d): u2 and item e are gone
    assert "--min-rating 4: kept 7 rows rated 4 or more; dropped 6 rows, 1 user, 1 item" in out
    # u1 has one row left, fewer than the 3 a user needs
    assert "users with fewer than 3 interactions: dropped 1 row, 1 user, 0 items" in out
    assert "kept 6 rows, 2 users, 4 items; dropped in all 7 rows, 2 users, 1 item" in out
    assert data.user_vocab.tolist() == ["u0", "u3"] and len(data.item_vocab) == 4
    # nothing filtered: said so
    q = tmp_path / "plain.csv"
    q.write_text(LOG)
    load_log_task(str(q), RetrievalConfig(min_user_interactions=1))
    assert "kept every row: 8 rows, 3 users, 4 items" in capsys.readouterr().out


def test_null_marker_ids_and_values_in_the_log_and_the_tables(tmp_path, capsys):
    """'NA' is an item id in the log and in items.csv, and a category value; only an
    empty cell is a missing feature."""
    log = tmp_path / "log.tsv"
    log.write_text("user_id\titem_id\ttimestamp\n"
                   "u0\tNA\t1\nu0\tnull\t2\nu1\tNA\t1\nu1\tb\t2\nNA\tb\t1\n")
    items = tmp_path / "items.tsv"
    items.write_text("item_id\tcategory\tprice\nNA\tNA\t3\nnull\tx\tNA\nb\t\t5\n")
    data = load_log_task(str(log), RetrievalConfig(min_user_interactions=1), items=str(items))
    out = capsys.readouterr().out
    assert "(tab-separated text;" in out
    assert data.item_vocab.tolist() == ["NA", "b", "null"]
    assert data.user_vocab.tolist() == ["u0", "u1", "NA"]
    assert data.items["category"].tolist() == ["NA", "", "x"]
    assert data.item_kinds == {"category": "categorical", "price": "numeric"}
    np.testing.assert_allclose(data.items["price"], [3, 5, 4])  # NA price: the mean


def test_table_only_items_are_counted_in_the_summary(log_csv, tmp_path, capsys):
    items = tmp_path / "items.csv"
    items.write_text("item_id,category\na,x\nz,y\nw,y\n")
    load_log_task(log_csv, RetrievalConfig(min_user_interactions=1), items=str(items))
    assert "items in the corpus: 6 (4 in the kept rows, 2 only in --items items.csv)" in \
        capsys.readouterr().out


def test_missing_log_names_the_flag(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"--interactions '.*nowhere\.csv' does not "
                                                r"exist"):
        load_log_task(str(tmp_path / "nowhere.csv"), verbose=False)
