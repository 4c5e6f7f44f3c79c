"""Tests for twotower.data.interactions: the log format, its readers, the CSV → Parquet
converter, the streaming tf.data pipeline and the one-pass vocabularies, on small files."""

import collections
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from twotower.artifacts import OutputPathError
from twotower.data import interactions as I

LOG = ("user_id,item_id,timestamp\n"
       "u0,item_001,100\n"
       "u0,item_002,200\n"
       "u1,item_001,150\n"
       "u1,item_003,2024-05-01T12:00:00\n"
       "u2,item_001,300\n")


def _write(path, text, mode="w"):
    with open(path, mode) as f:
        f.write(text)
    return str(path)


@pytest.fixture
def log_csv(tmp_path):
    return _write(tmp_path / "log.csv", LOG)


def _log_rows(n_users=40, n_items=30, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for t in range(400):
        rows.append((f"u{rng.integers(n_users)}", f"item_{int(rng.zipf(1.5)) % n_items:03d}",
                     1_700_000_000 + t))
    return rows


def _csv(path, rows, header="user_id,item_id,timestamp"):
    return _write(path, header + "\n" + "".join(",".join(map(str, r)) + "\n" for r in rows))


def test_csv_string_ids_and_iso_timestamps(log_csv):
    log = I.read_interactions(log_csv)
    assert log.user_id.tolist() == ["u0", "u0", "u1", "u1", "u2"]
    assert log.item_id.dtype.kind == "U"
    # 2024-05-01T12:00:00 (naive: UTC) = 1714564800
    assert log.timestamp.tolist() == [100, 200, 150, 1714564800, 300]
    assert log.name == "log.csv" and len(log) == 5


def test_integer_ids_become_int64_but_leading_zeros_stay_strings(tmp_path):
    log = I.read_interactions(_csv(tmp_path / "a.csv", [(1, 10, 5), (2, 11, 6)]))
    assert log.user_id.dtype == np.int64 and log.item_id.tolist() == [10, 11]
    log = I.read_interactions(_csv(tmp_path / "b.csv", [(1, 10, 5), (2, "007", 6)]))
    assert log.user_id.dtype == np.int64 and log.item_id.tolist() == ["10", "007"]
    assert I.read_interactions(str(tmp_path / "a.csv"), id_type="string").user_id.tolist() == \
        ["1", "2"]


def test_renamed_columns_and_aliases(tmp_path):
    path = _csv(tmp_path / "r.csv", [("a", "x", 1)], header="who,what,when")
    log = I.read_interactions(path, I.ColumnNames("who", "what", "when"))
    assert log.user_id.tolist() == ["a"] and log.timestamp.tolist() == [1]
    # MovieLens's ratings.csv column names are accepted for the defaults
    ml = _csv(tmp_path / "ratings.csv", [(1, 31, 2.5, 1260759144)],
              header="userId,movieId,rating,timestamp")
    log = I.read_interactions(ml, extra=("rating",))
    assert log.item_id.tolist() == [31] and log.extra["rating"].tolist() == [2.5]


def test_missing_column_names_file_column_and_columns(tmp_path):
    path = _csv(tmp_path / "m.csv", [("a", 1)], header="user_id,when")
    with pytest.raises(ValueError, match=r"m\.csv.*no item column 'item_id'.*\['user_id', "
                                         r"'when'\].*--item-col"):
        I.read_interactions(path)
    with pytest.raises(ValueError, match=r"no column\(s\) \['device'\]"):
        I.read_interactions(_csv(tmp_path / "n.csv", [("a", "b", 1)]), extra=("device",))


def test_empty_file_and_header_only(tmp_path):
    with pytest.raises(ValueError, match=r"e\.csv: the file is empty"):
        I.read_interactions(_write(tmp_path / "e.csv", ""))
    with pytest.raises(ValueError, match=r"h\.csv: no interactions"):
        I.read_interactions(_write(tmp_path / "h.csv", "user_id,item_id,timestamp\n"))


def test_non_utf8_bytes_name_file_and_line(tmp_path):
    path = _write(tmp_path / "latin.csv",
                  b"user_id,item_id,timestamp\nu0,caf\xc3\xa9,1\nu1,caf\xe9,2\n", "wb")
    with pytest.raises(ValueError, match=r"latin\.csv: line 3 is not valid UTF-8 \(byte 0xe9"):
        I.read_interactions(path)


def test_bad_timestamp_names_file_line_and_value(tmp_path):
    path = _write(tmp_path / "t.csv", "user_id,item_id,timestamp\n\nu0,a,1\nu1,b,yesterday\n")
    # the blank line 2 is skipped by the reader, and still counted in the line number
    with pytest.raises(ValueError, match=r"t\.csv: line 4: cannot parse timestamp 'yesterday'"):
        I.read_interactions(path)


def test_empty_field_names_line(tmp_path):
    path = _write(tmp_path / "f.csv", "user_id,item_id,timestamp\nu0,a,1\n,b,2\n")
    with pytest.raises(ValueError, match=r"f\.csv: line 3: empty 'user_id'"):
        I.read_interactions(path)


def test_csv_to_parquet_shards_round_trip(tmp_path):
    rows = _log_rows()
    path = _csv(tmp_path / "big.csv", rows)
    out = tmp_path / "shards"
    files = I.csv_to_parquet(path, str(out), rows_per_shard=150, batch_size=64, progress=False)
    assert [os.path.basename(f) for f in files] == [
        "part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]
    assert [pq.ParquetFile(f).metadata.num_rows for f in files] == [150, 150, 100]
    schema = pq.read_schema(files[0])
    assert schema.field("user_id").type == pa.string()
    assert schema.field("timestamp").type == pa.int64()
    back = I.read_interactions(str(out))
    a = I.read_interactions(path)
    np.testing.assert_array_equal(back.user_id, a.user_id)
    np.testing.assert_array_equal(back.item_id, a.item_id)
    np.testing.assert_array_equal(back.timestamp, a.timestamp)


def test_csv_to_parquet_keeps_integer_ids_typed(tmp_path):
    path = _csv(tmp_path / "ints.csv", [(3, 30, 1), (4, 40, 2)])
    files = I.csv_to_parquet(path, str(tmp_path / "p"), progress=False)
    schema = pq.read_schema(files[0])
    assert schema.field("user_id").type == pa.int64() == schema.field("item_id").type


def test_csv_to_parquet_refuses_a_folder_it_did_not_write(tmp_path, log_csv):
    out = tmp_path / "mine"
    out.mkdir()
    _write(out / "notes.txt", "keep me")
    with pytest.raises(OutputPathError, match="mine"):
        I.csv_to_parquet(log_csv, str(out), progress=False)
    assert (out / "notes.txt").read_text() == "keep me"
    # an earlier twotower output is replaced only with overwrite=True
    done = tmp_path / "done"
    I.csv_to_parquet(log_csv, str(done), progress=False)
    with pytest.raises(OutputPathError):
        I.csv_to_parquet(log_csv, str(done), progress=False)
    assert len(I.csv_to_parquet(log_csv, str(done), overwrite=True, progress=False)) == 1
    with pytest.raises(ValueError, match="rows_per_shard must be an int >= 1, got 0"):
        I.csv_to_parquet(log_csv, str(tmp_path / "x"), rows_per_shard=0)


def test_vocabularies_frequency_order_counts_and_merging(tmp_path):
    rows = _log_rows()
    path = _csv(tmp_path / "v.csv", rows)
    users, items = I.build_vocabularies(path, batch_size=32, merge_every=5, progress=False)
    want = collections.Counter(r[1] for r in rows)
    # most frequent first, ties by id
    expected = sorted(want, key=lambda k: (-want[k], k))
    assert items.ids.tolist() == expected
    assert items.counts.tolist() == [want[k] for k in expected]
    assert users.counts.sum() == len(rows)
    # a single merge gives the same vocabulary
    _, again = I.build_vocabularies(path, merge_every=1 << 30, progress=False)
    assert again.ids.tolist() == expected
    assert np.isclose(items.probabilities.sum(), 1.0)
    np.testing.assert_array_equal(items.lookup([expected[3], "nope"]), [3, -1])
    _, frequent = I.build_vocabularies(path, min_count=10, progress=False)
    assert set(frequent.ids.tolist()) == {k for k, c in want.items() if c >= 10}


def test_vocabularies_of_integer_ids_over_shards(tmp_path):
    rows = [(u % 7, (u * 3) % 11, u) for u in range(200)]
    path = _csv(tmp_path / "i.csv", rows)
    I.csv_to_parquet(path, str(tmp_path / "s"), rows_per_shard=64, progress=False)
    users, items = I.build_vocabularies(str(tmp_path / "s"), progress=False)
    assert items.ids.dtype == np.int64 and users.ids.dtype == np.int64
    csv_users, csv_items = I.build_vocabularies(path, progress=False)
    assert csv_items.ids.dtype == np.int64  # CSV text "3" is the integer id 3
    np.testing.assert_array_equal(items.ids, csv_items.ids)
    np.testing.assert_array_equal(items.lookup(np.asarray([int(items.ids[2])])), [2])


def test_streaming_dataset_reads_every_row_and_shards_by_file(tmp_path):
    rows = _log_rows()
    path = _csv(tmp_path / "d.csv", rows)
    shards = str(tmp_path / "sh")
    I.csv_to_parquet(path, shards, rows_per_shard=100, progress=False)
    _, items = I.build_vocabularies(shards, progress=False)

    def collect(ds):
        got = []
        for b in ds:
            got += list(zip([u.decode() for u in b["user_id"].numpy()],
                            b["item_id"].numpy().tolist(), b["timestamp"].numpy().tolist()))
        return got

    want = sorted((u, int(items.lookup([i])[0]), t) for u, i, t in rows)
    ds = I.interactions_dataset(shards, batch_size=32, item_vocab=items)
    assert sorted(collect(ds)) == want
    parts = [collect(I.interactions_dataset(shards, batch_size=32, item_vocab=items,
                                            num_shards=2, shard_index=k)) for k in (0, 1)]
    assert parts[0] and parts[1] and not set(parts[0]) & set(parts[1])
    assert sorted(parts[0] + parts[1]) == want
    with pytest.raises(ValueError, match="num_shards=9 is more than the log's 4 file"):
        I.interactions_dataset(shards, num_shards=9)


def test_streaming_dataset_drops_unknown_items(tmp_path, log_csv):
    known = I.IdVocabulary(np.asarray(["item_001"]), np.asarray([3]))
    ds = I.interactions_dataset(log_csv, batch_size=2, item_vocab=known)
    got = np.concatenate([b["item_id"].numpy() for b in ds])
    assert got.tolist() == [0, 0, 0]


def test_parquet_timestamp_types(tmp_path):
    t = pa.table({"user_id": ["a", "b"], "item_id": [1, 2],
                  "timestamp": pa.array([0, 86_400_000], pa.timestamp("ms"))})
    pq.write_table(t, tmp_path / "t.parquet")
    log = I.read_interactions(str(tmp_path / "t.parquet"))
    assert log.timestamp.tolist() == [0, 86_400] and log.item_id.dtype == np.int64


def test_folder_with_ratings_csv_is_a_log(tmp_path):
    folder = tmp_path / "ml"
    folder.mkdir()
    _csv(folder / "ratings.csv", [(1, 31, 2.5, 1260759144), (1, 1029, 3.0, 1260759179)],
         header="userId,movieId,rating,timestamp")
    assert I.list_files(str(folder)) == [str(folder / "ratings.csv")]
    assert I.read_interactions(str(folder)).item_id.tolist() == [31, 1029]
    with pytest.raises(FileNotFoundError, match="does not exist"):
        I.read_interactions(str(tmp_path / "nowhere.csv"))


def test_convert_command_line(tmp_path, log_csv, capsys):
    out = str(tmp_path / "conv")
    assert I.main([log_csv, out, "--rows-per-shard", "2"]) == 0
    assert "wrote 3 shard(s), 5 rows" in capsys.readouterr().out
    assert I.main([log_csv, out]) == 2  # an earlier output needs --overwrite
    err = capsys.readouterr().err
    assert err.startswith("twotower convert: ") and "--overwrite" in err and err.count("\n") == 1
    assert I.main([log_csv, out, "--overwrite", "--item-col", "sku"]) == 2
    assert "no item column 'sku'" in capsys.readouterr().err


def test_lookup_agrees_with_a_dict_for_every_kind_of_value():
    """IdVocabulary.lookup (a sorted search, O(B log V) a batch) against a plain dict:
    unknowns, nulls, int-like strings for int ids, ints for string ids, values longer than
    any vocabulary string, an empty batch."""
    rng = np.random.default_rng(0)
    int_ids = rng.choice(10**12, 500, replace=False).astype(np.int64)
    vocab = I.IdVocabulary(ids=int_ids, counts=np.ones(500, np.int64))
    ref = {int(v): i for i, v in enumerate(int_ids)}
    probe = np.concatenate([int_ids[rng.integers(0, 500, 300)], rng.integers(0, 10**12, 300)])
    np.testing.assert_array_equal(vocab.lookup(probe), [ref.get(int(v), -1) for v in probe])
    text = pa.array([str(int_ids[7]), "x1", None, str(int_ids[0]), "07"])
    np.testing.assert_array_equal(vocab.lookup(text), [7, -1, -1, 0, -1])
    assert vocab.lookup(np.array([], np.int64)).shape == (0,)

    str_ids = np.array([f"sku-{i}" for i in rng.permutation(300)])
    svocab = I.IdVocabulary(ids=str_ids, counts=np.ones(300, np.int64))
    sref = {v: i for i, v in enumerate(str_ids)}
    sprobe = np.concatenate([str_ids[rng.integers(0, 300, 200)],
                             np.array(["sku-", "sku-12345678901", "zzz", ""])])
    np.testing.assert_array_equal(svocab.lookup(sprobe), [sref.get(v, -1) for v in sprobe])
    num = I.IdVocabulary(ids=np.array(["5", "17", "a"]), counts=np.ones(3, np.int64))
    np.testing.assert_array_equal(num.lookup(pa.array([17, 5, None, 4])), [1, 0, -1, -1])
