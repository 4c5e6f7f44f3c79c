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
from twotower.data import id_vocabulary
from twotower.data import interactions_dataset
from twotower.data import parquet_shards

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
    with pytest.raises(ValueError, match=r"extra column device: .*n\.csv has no such column"):
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
    files = parquet_shards.csv_to_parquet(path, str(out), rows_per_shard=150, batch_size=64, progress=False)
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
    files = parquet_shards.csv_to_parquet(path, str(tmp_path / "p"), progress=False)
    schema = pq.read_schema(files[0])
    assert schema.field("user_id").type == pa.int64() == schema.field("item_id").type


def test_csv_to_parquet_refuses_a_folder_it_did_not_write(tmp_path, log_csv):
    out = tmp_path / "mine"
    out.mkdir()
    _write(out / "notes.txt", "keep me")
    with pytest.raises(OutputPathError, match="mine"):
        parquet_shards.csv_to_parquet(log_csv, str(out), progress=False)
    assert (out / "notes.txt").read_text() == "keep me"
    # an earlier twotower output is replaced only with overwrite=True
    done = tmp_path / "done"
    parquet_shards.csv_to_parquet(log_csv, str(done), progress=False)
    with pytest.raises(OutputPathError):
        parquet_shards.csv_to_parquet(log_csv, str(done), progress=False)
    assert len(parquet_shards.csv_to_parquet(log_csv, str(done), overwrite=True, progress=False)) == 1
    with pytest.raises(ValueError, match="rows_per_shard must be an integer >= 1, got 0"):
        parquet_shards.csv_to_parquet(log_csv, str(tmp_path / "x"), rows_per_shard=0)


def test_vocabularies_frequency_order_counts_and_merging(tmp_path):
    rows = _log_rows()
    path = _csv(tmp_path / "v.csv", rows)
    users, items = id_vocabulary.build_vocabularies(path, batch_size=32, merge_every=5, progress=False)
    want = collections.Counter(r[1] for r in rows)
    # most frequent first, ties by id
    expected = sorted(want, key=lambda k: (-want[k], k))
    assert items.ids.tolist() == expected
    assert items.counts.tolist() == [want[k] for k in expected]
    assert users.counts.sum() == len(rows)
    # a single merge gives the same vocabulary
    _, again = id_vocabulary.build_vocabularies(path, merge_every=1 << 30, progress=False)
    assert again.ids.tolist() == expected
    assert np.isclose(items.probabilities.sum(), 1.0)
    np.testing.assert_array_equal(items.lookup([expected[3], "nope"]), [3, -1])
    _, frequent = id_vocabulary.build_vocabularies(path, min_count=10, progress=False)
    assert set(frequent.ids.tolist()) == {k for k, c in want.items() if c >= 10}


def test_vocabularies_of_integer_ids_over_shards(tmp_path):
    rows = [(u % 7, (u * 3) % 11, u) for u in range(200)]
    path = _csv(tmp_path / "i.csv", rows)
    parquet_shards.csv_to_parquet(path, str(tmp_path / "s"), rows_per_shard=64, progress=False)
    users, items = id_vocabulary.build_vocabularies(str(tmp_path / "s"), progress=False)
    assert items.ids.dtype == np.int64 and users.ids.dtype == np.int64
    csv_users, csv_items = id_vocabulary.build_vocabularies(path, progress=False)
    assert csv_items.ids.dtype == np.int64  # CSV text "3" is the integer id 3
    np.testing.assert_array_equal(items.ids, csv_items.ids)
    np.testing.assert_array_equal(items.lookup(np.asarray([int(items.ids[2])])), [2])


def test_streaming_dataset_reads_every_row_and_shards_by_file(tmp_path):
    rows = _log_rows()
    path = _csv(tmp_path / "d.csv", rows)
    shards = str(tmp_path / "sh")
    parquet_shards.csv_to_parquet(path, shards, rows_per_shard=100, progress=False)
    _, items = id_vocabulary.build_vocabularies(shards, progress=False)

    def collect(ds):
        got = []
        for b in ds:
            got += list(zip([u.decode() for u in b["user_id"].numpy()],
                            b["item_id"].numpy().tolist(), b["timestamp"].numpy().tolist()))
        return got

    want = sorted((u, int(items.lookup([i])[0]), t) for u, i, t in rows)
    ds = interactions_dataset.interactions_dataset(shards, batch_size=32, item_vocab=items)
    assert sorted(collect(ds)) == want
    parts = [collect(interactions_dataset.interactions_dataset(shards, batch_size=32, item_vocab=items,
                                            num_shards=2, shard_index=k)) for k in (0, 1)]
    assert parts[0] and parts[1] and not set(parts[0]) & set(parts[1])
    assert sorted(parts[0] + parts[1]) == want
    with pytest.raises(ValueError, match="num_shards=9 is more than the log's 4 file"):
        interactions_dataset.interactions_dataset(shards, num_shards=9)


def test_streaming_dataset_drops_unknown_items(tmp_path, log_csv):
    known = id_vocabulary.IdVocabulary(np.asarray(["item_001"]), np.asarray([3]))
    ds = interactions_dataset.interactions_dataset(log_csv, batch_size=2, item_vocab=known)
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


def _convert(argv, capsys):
    """``twotower convert ARGV`` as the command line runs it: (exit code, stdout, stderr)."""
    from twotower import cli

    code = cli.main(["convert", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_convert_command_line(tmp_path, log_csv, capsys):
    out = str(tmp_path / "conv")
    code, printed, _ = _convert([log_csv, out, "--rows-per-shard", "2"], capsys)
    assert code == 0 and "wrote 3 shard(s), 5 rows" in printed
    assert "comma-separated" in printed
    code, _, err = _convert([log_csv, out], capsys)  # an earlier output needs --overwrite
    assert code == 2 and err.startswith("twotower convert: error: OUT ")
    assert "--overwrite" in err and err.count("\n") == 1
    code, _, err = _convert([log_csv, out, "--overwrite", "--item-col", "sku"], capsys)
    assert code == 2 and "no item column 'sku'" in err and "--item-col" in err


def test_convert_errors_are_one_line_naming_the_command_line(tmp_path, log_csv, capsys):
    """Every error of ``twotower convert`` is one line, ``twotower convert: error: ...``,
    exit code 2, and names the arguments as typed (CSV, OUT, --rows-per-shard...), never
    a Python parameter (out_dir, rows_per_shard, csv_path, ColumnNames)."""
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    _write(foreign / "notes.txt", "keep me")
    shards = str(tmp_path / "shards")
    parquet_shards.csv_to_parquet(log_csv, shards, progress=False)
    ints = _csv(tmp_path / "ints.csv", [(1, 10, 5), (2, "x7", 6)])
    new = str(tmp_path / "new")
    cases = [
        ([log_csv, new, "--rows-per-shard", "0"], "--rows-per-shard must be an integer >= 1"),
        ([str(tmp_path / "nowhere.csv"), new], "CSV '"),
        ([log_csv, str(foreign)], "OUT '"),
        ([shards, new], "is already Parquet"),
        ([log_csv, new, "--item-col", "sku"], "--item-col"),
        ([log_csv, new, "--rating-col", "stars"], "--rating-col stars: "),
        ([log_csv, new, "--extra", "device"], "--extra device: "),
        ([log_csv, new, "--extra", "user_id"], "--extra user_id: that column is already kept"),
        ([ints, new, "--id-type", "int"], "line 3: --id-type 'int' but the item id 'x7'"),
    ]
    for argv, expected in cases:
        code, printed, err = _convert(argv, capsys)
        assert code == 2, argv
        assert err.startswith("twotower convert: error: ") and err.count("\n") == 1, err
        assert expected in err, (expected, err)
        for api_name in ("out_dir", "rows_per_shard", "csv_path", "id_type", "ColumnNames",
                         "rating_col"):
            assert api_name not in err, (api_name, err)
    assert not os.path.exists(new)
    assert (foreign / "notes.txt").read_text() == "keep me"


def test_convert_keeps_the_rating_column_as_numbers(tmp_path, capsys):
    path = _write(tmp_path / "r.csv", "user_id,item_id,rating,timestamp,device\n"
                  "u0,a,4.5,1,phone\nu1,b,,2,tv\nu2,c,NA,3,\n")
    out = str(tmp_path / "p")
    code, printed, _ = _convert([path, out], capsys)  # kept by default: it is named rating
    assert code == 0 and "rating (double)" in printed
    t = pq.read_table(out)
    assert t.schema.names == ["user_id", "item_id", "timestamp", "rating"]
    assert t.column("rating").to_pylist() == [4.5, None, None]  # empty and NA: missing
    back = I.read_interactions(out, extra=("rating",))
    np.testing.assert_array_equal(back.extra["rating"], [4.5, np.nan, np.nan])
    # --rating-col names another column; --extra keeps text columns beside it
    scored = _write(tmp_path / "s.csv", "user_id,item_id,timestamp,score,device\n"
                    "u0,a,1,3,phone\nu1,b,2,5,\n")
    code, printed, _ = _convert([scored, out, "--overwrite", "--rating-col", "score",
                                 "--extra", "device"], capsys)
    assert code == 0 and "rating (double, from 'score')" in printed
    t = pq.read_table(out)
    assert t.column("rating").to_pylist() == [3.0, 5.0]
    assert t.column("device").to_pylist() == ["phone", None]
    # the Python API: rating_col=None keeps none, extra=("rating",) does not duplicate it
    files = parquet_shards.csv_to_parquet(path, str(tmp_path / "q"), rating_col=None, progress=False)
    assert "rating" not in pq.read_schema(files[0]).names
    files = parquet_shards.csv_to_parquet(path, str(tmp_path / "r"), extra=("rating", "device"),
                             progress=False)
    assert pq.read_schema(files[0]).names == ["user_id", "item_id", "timestamp", "rating",
                                              "device"]
    bad = _write(tmp_path / "bad.csv", "user_id,item_id,timestamp,rating\nu,a,1,5\nu,b,2,good\n")
    code, _, err = _convert([bad, str(tmp_path / "b")], capsys)
    assert code == 2 and "bad.csv: line 3: 'rating' value 'good' is not a number" in err


def test_delimiter_is_detected(tmp_path):
    """Tab, semicolon and pipe files read as the comma file does (quoting respected);
    spaces around header names do not matter."""
    want = I.read_interactions(_write(tmp_path / "c.csv", LOG))
    for sep, suffix in (("\t", "tsv"), (";", "csv"), ("|", "txt")):
        path = _write(tmp_path / f"log.{suffix}", LOG.replace(",", sep))
        assert I.detect_dialect(path).delimiter == sep
        got = I.read_interactions(path)
        assert got.user_id.tolist() == want.user_id.tolist()
        assert got.item_id.tolist() == want.item_id.tolist()
        assert got.timestamp.tolist() == want.timestamp.tolist()
    assert I.detect_dialect(str(tmp_path / "log.tsv")).description == "tab-separated"
    # a quoted field holding the delimiter; spaces after the header's commas
    quoted = _write(tmp_path / "q.csv", 'user_id, item_id, timestamp, title\n'
                    'u0,a,1,"Hello, world"\nu1,b,2,"x, y, z"\n')
    assert I.detect_dialect(quoted).delimiter == ","
    log = I.read_interactions(quoted, extra=("title",))
    assert log.extra["title"].tolist() == ["Hello, world", "x, y, z"]
    # a semicolon file whose ratings have decimal commas
    semi = _write(tmp_path / "eu.csv", "user_id;item_id;timestamp;rating\nu0;a;1;3,5\n"
                  "u1;b;2;4,5\n")
    assert I.detect_dialect(semi).delimiter == ";"
    # gzipped text
    import gzip

    with gzip.open(tmp_path / "z.tsv.gz", "wt") as f:
        f.write(LOG.replace(",", "\t"))
    assert I.read_interactions(str(tmp_path / "z.tsv.gz")).user_id.tolist() == \
        want.user_id.tolist()


def test_a_line_with_the_wrong_number_of_fields_names_it(tmp_path):
    path = _write(tmp_path / "g.csv", "user_id,item_id,timestamp\nu,a,1\nv,b,2,3\n")
    with pytest.raises(ValueError, match=r"g\.csv: line 3 has 4 fields, the header has 3 "
                                         r"\(comma-separated\)"):
        I.read_interactions(path)


def test_a_file_without_a_header_is_refused_saying_what_to_add(tmp_path):
    rows = "u0,item_1,1000,4\nu1,item_2,1001,5\n"
    path = _write(tmp_path / "nohdr.csv", rows)
    with pytest.raises(ValueError, match=r"nohdr\.csv: the file appears to have no header "
                       r"line: line 1 holds values such as '1000'.*"
                       r"'user_id,item_id,timestamp,rating' \(comma-separated\)"):
        I.read_interactions(path)
    tsv = _write(tmp_path / "nohdr.tsv", "u0\titem_1\t2024-05-01T12:00:00\n")
    with pytest.raises(ValueError, match=r"no header line.*'2024-05-01T12:00:00'.*"
                                         r"'user_id\\titem_id\\ttimestamp' \(tab-separated\)"):
        I.read_interactions(tsv)
    # a header that has the columns is a header, whatever its other names
    ok = _write(tmp_path / "ok.csv", "user_id,item_id,timestamp,2024\nu0,a,1,x\n")
    assert I.read_interactions(ok).user_id.tolist() == ["u0"]
    # a header without the columns and without values: the usual missing-column error
    with pytest.raises(ValueError, match=r"no user column 'user_id'.*--user-col"):
        I.read_interactions(_write(tmp_path / "who.csv", "who,what,when\nu0,a,1\n"))
    # a one-field header: the delimiters twotower reads are named
    with pytest.raises(ValueError, match=r"single field: twotower reads fields separated by "
                                         r"comma, tab, semicolon, pipe"):
        I.read_interactions(_write(tmp_path / "sp.csv", "user_id item_id timestamp\nu0 a 1\n"))


def test_null_markers_are_ids_only_an_empty_field_is_missing(tmp_path):
    """NA, N/A, null, NaN, #N/A, None... are ids as written (pandas/pyarrow would read
    them as missing); an empty field, quoted or not, is missing and an error."""
    markers = ["NA", "N/A", "null", "NaN", "#N/A", "None", "nan", "NULL", "-NaN", "<NA>"]
    rows = [(m, f"i{k}", k) for k, m in enumerate(markers)] + [("u9", "NA", 99)]
    path = _csv(tmp_path / "na.csv", rows)
    log = I.read_interactions(path)
    assert log.user_id.tolist() == markers + ["u9"]
    assert log.item_id.tolist()[-1] == "NA"
    users, items = id_vocabulary.build_vocabularies(path, progress=False)
    assert sorted(users.ids.tolist()) == sorted(markers + ["u9"])
    assert items.lookup(["NA"]).tolist() == [items.ids.tolist().index("NA")]
    out = str(tmp_path / "p")
    parquet_shards.csv_to_parquet(path, out, progress=False)
    assert pq.read_table(out).column("user_id").to_pylist() == markers + ["u9"]
    with pytest.raises(ValueError, match=r"q\.csv: line 3: empty 'item_id' field"):
        I.read_interactions(_write(tmp_path / "q.csv", 'user_id,item_id,timestamp\n'
                                   'u0,a,1\nu1,"",2\n'))


def test_ratings_read_null_markers_as_missing(tmp_path):
    path = _write(tmp_path / "r.csv", "user_id,item_id,rating,timestamp\n"
                  "u,a,4,1\nu,b,NA,2\nu,c,,3\nu,d,n/a,4\nu,e, 3.5 ,5\n")
    log = I.read_interactions(path, extra=("rating",))
    np.testing.assert_array_equal(log.extra["rating"], [4, np.nan, np.nan, np.nan, 3.5])
    with pytest.raises(ValueError, match=r"line 2: 'rating' value 'five' is not a number"):
        I.read_interactions(_write(tmp_path / "b.csv", "user_id,item_id,rating,timestamp\n"
                                   "u,a,five,1\n"), extra=("rating",))


def test_lookup_agrees_with_a_dict_for_every_kind_of_value():
    """IdVocabulary.lookup (a sorted search, O(B log V) a batch) against a plain dict:
    unknowns, nulls, int-like strings for int ids, ints for string ids, values longer than
    any vocabulary string, an empty batch."""
    rng = np.random.default_rng(0)
    int_ids = rng.choice(10**12, 500, replace=False).astype(np.int64)
    vocab = id_vocabulary.IdVocabulary(ids=int_ids, counts=np.ones(500, np.int64))
    ref = {int(v): i for i, v in enumerate(int_ids)}
    probe = np.concatenate([int_ids[rng.integers(0, 500, 300)], rng.integers(0, 10**12, 300)])
    np.testing.assert_array_equal(vocab.lookup(probe), [ref.get(int(v), -1) for v in probe])
    text = pa.array([str(int_ids[7]), "x1", None, str(int_ids[0]), "07"])
    np.testing.assert_array_equal(vocab.lookup(text), [7, -1, -1, 0, -1])
    assert vocab.lookup(np.array([], np.int64)).shape == (0,)

    str_ids = np.array([f"sku-{i}" for i in rng.permutation(300)])
    svocab = id_vocabulary.IdVocabulary(ids=str_ids, counts=np.ones(300, np.int64))
    sref = {v: i for i, v in enumerate(str_ids)}
    sprobe = np.concatenate([str_ids[rng.integers(0, 300, 200)],
                             np.array(["sku-", "sku-12345678901", "zzz", ""])])
    np.testing.assert_array_equal(svocab.lookup(sprobe), [sref.get(v, -1) for v in sprobe])
    num = id_vocabulary.IdVocabulary(ids=np.array(["5", "17", "a"]), counts=np.ones(3, np.int64))
    np.testing.assert_array_equal(num.lookup(pa.array([17, 5, None, 4])), [1, 0, -1, -1])
