"""A log's retrieval task built out of core: whatever the log's length, memory holds the
tables (vocabularies, counts, one row per user), not the log.

DuckDB does the grouping. Sorting every user's interactions by time — for the split,
each interaction's history and the state a served model answers from — is an external
sort of the whole log, and DuckDB's window operator partitions, sorts and spills to disk
under a memory limit. docs/data.md says why DuckDB rather than Polars' streaming engine
or Arrow's dataset API. Our own reader (data/interactions.py ``iter_batches``) still
parses the files, a batch at a time, so a bad line is reported exactly as the in-memory
road reports it; each batch is appended to a DuckDB table on disk.

The result is the same task ``log_task._build`` makes in memory — the same vocabularies
(most frequent first, ties: smaller id first), split, histories, counts and seen items,
checked row for row in tests/data/test_streamed_log_task.py — except that the training
split stays on disk (data/sharded_split.py) and seen items are RaggedRows.
"""

import dataclasses
import os
import shutil
import sys
import tempfile

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from twotower.data.interactions import all_int_like, iter_batches, parse_ratings
from twotower.data.ragged_rows import RaggedRows
from twotower.data.sharded_split import ShardedSplit, shard_paths

# DuckDB's own memory for the grouping; it spills the rest to the work folder
MEMORY_LIMIT_GB = 2.0
ROWS_PER_SHARD = 1 << 18


@dataclasses.dataclass
class HeldOut:
    """One in-memory split's rows: user row, item index, timestamp, history [n, N]."""

    user: np.ndarray
    item: np.ndarray
    timestamp: np.ndarray
    history: np.ndarray


@dataclasses.dataclass
class StreamedLog:
    """What :func:`stream_log` computed: vocabularies of the kept rows (external ids,
    index = position), the training shards, the held-out and serving rows, training
    counts and seen items (RaggedRows over the log's users), and the filters' stats."""

    user_vocab: np.ndarray
    item_vocab: np.ndarray
    train: ShardedSplit
    valid: HeldOut
    test: HeldOut
    serving: HeldOut
    item_counts: np.ndarray
    seen_train: RaggedRows
    seen_valid: RaggedRows
    seen_all: RaggedRows  # seen_train merged with the valid and test rows' items
    stats: dict
    int_ids: dict


def _history_columns(n, prefix=""):
    return ", ".join(f"{prefix}h{k}" for k in range(1, n + 1))


def _load(con, path, columns, with_rating, progress):
    """Appends every batch of the log to table ``raw`` (ids as text); returns whether
    every user / item id is an integer."""
    from tqdm.auto import tqdm

    con.execute("CREATE TABLE raw (user_id VARCHAR, item_id VARCHAR, ts BIGINT, seq BIGINT"
                + (", rating DOUBLE)" if with_rating else ")"))
    int_like = {"user_id": True, "item_id": True}
    seq = 0
    name = os.path.basename(os.path.normpath(os.fspath(path)))
    with tqdm(desc=f"reading {name}", unit=" rows", unit_scale=True, leave=False,
              disable=None if progress else True) as bar:
        for file, row, b in iter_batches(path, columns,
                                         extra=("rating",) if with_rating else ()):
            cols = {}
            for k in ("user_id", "item_id"):
                col = b.column(k)
                int_like[k] = int_like[k] and all_int_like(col)
                cols[k] = col if pa.types.is_string(col.type) else pc.cast(col, pa.string())
            cols["ts"] = b.column("timestamp")
            cols["seq"] = pa.array(np.arange(seq, seq + b.num_rows, dtype=np.int64))
            if with_rating:  # NaN (no rating) as NULL: never >= a --min-rating
                r = parse_ratings(b.column("rating"), file, row)
                cols["rating"] = pa.array(r, pa.float64(), mask=np.isnan(r))
            batch = pa.table(cols)
            con.register("batch", batch)
            con.execute("INSERT INTO raw SELECT * FROM batch")
            con.unregister("batch")
            seq += b.num_rows
            bar.update(b.num_rows)
    return int_like, seq


def _counts(con, table):
    n, u, i = con.execute(f"SELECT count(*), count(DISTINCT user_id), count(DISTINCT item_id) "
                          f"FROM {table}").fetchall()[0]
    return int(n), int(u), int(i)


def _vocab(con, column, int_ids):
    """Table ``{column}_vocab`` (id, idx): ids by decreasing count, ties smaller first.
    Returns the ids in index order."""
    key = f"CAST({column} AS BIGINT)" if int_ids else column
    con.execute(f"CREATE TABLE {column}_vocab AS SELECT {column} AS id, "
                f"(row_number() OVER (ORDER BY n DESC, {key}) - 1)::BIGINT AS idx FROM "
                f"(SELECT {column}, count(*) AS n FROM kept GROUP BY {column})")
    col = _arrow(con, f"SELECT id FROM {column}_vocab ORDER BY idx").column("id") \
        .combine_chunks()
    if int_ids:
        return pc.cast(col, pa.int64()).to_numpy(zero_copy_only=False).astype(np.int64)
    return np.asarray(col.to_pylist(), dtype=str)


def _arrow(con, query):
    return con.sql(query).to_arrow_table()


def _held_out(con, where, n, *, after=False):
    """The rows of table ``w`` matching ``where``, ordered by user then time.
    ``after``: the history after the row (the row's item first), for the serving state."""
    t = _arrow(con, f"SELECT u, i, ts{', ' if n else ''}{_history_columns(n)} FROM w "
                    f"WHERE {where} ORDER BY u, ts, seq")
    u = t.column("u").to_numpy().astype(np.int64)
    i = t.column("i").to_numpy().astype(np.int64)
    hist = (np.stack([t.column(f"h{k}").to_numpy() for k in range(1, n + 1)], 1)
            .astype(np.int64) if n else np.zeros((len(u), 0), np.int64))
    if after and n:
        hist = np.concatenate([(i + 1)[:, None], hist[:, :-1]], 1)
    return HeldOut(u, i, t.column("ts").to_numpy().astype(np.int64), hist)


def _seen(con, where, num_users):
    """Every user's distinct items among the rows matching ``where``, sorted.

    The offsets come from a count a user (GROUP BY, ``num_users`` sized); the values are
    streamed into one int32 array: nothing pair-sized but the values themselves."""
    distinct = f"SELECT DISTINCT u, i FROM w WHERE {where}"
    counts = np.zeros(num_users, np.int64)
    t = _arrow(con, f"SELECT u, count(*) AS c FROM ({distinct}) GROUP BY u")
    counts[t.column("u").to_numpy()] = t.column("c").to_numpy()
    del t
    offsets = np.zeros(num_users + 1, np.int64)
    np.cumsum(counts, out=offsets[1:])
    values = np.empty(int(offsets[-1]), np.int32)
    reader = con.sql(f"SELECT i FROM ({distinct}) ORDER BY u, i").to_arrow_reader(1 << 20)
    at = 0
    for b in reader:
        k = b.num_rows
        values[at:at + k] = b.column(0).to_numpy()
        at += k
    if at != len(values):
        raise RuntimeError(f"seen items: {at} pairs read back, {len(values)} counted")
    return RaggedRows(offsets, values)


def _training_counts(con, column, size):
    """[size] training rows per value of ``column`` (u: user row, i: item index)."""
    counts = np.zeros(size, np.int64)
    t = _arrow(con, f"SELECT {column} AS key, count(*) AS c FROM w WHERE split = 0 "
                    f"GROUP BY {column}")
    counts[t.column("key").to_numpy()] = t.column("c").to_numpy()
    return counts


def _write_shards(con, folder, n, seed, rows_per_shard):
    """The training rows, shuffled once (ordered by a hash of the row and the seed), as
    Parquet shards of ``rows_per_shard`` rows. Returns (files, rows of each)."""
    os.makedirs(folder)
    reader = con.sql(
        f"SELECT u::INTEGER AS user, i::INTEGER AS item{', ' if n else ''}"
        f"{_history_columns(n)} FROM w WHERE split = 0 ORDER BY hash(seq, {int(seed)}), seq"
    ).to_arrow_reader(rows_per_shard)
    rows, pending = [], []
    count = 0

    def flush(tables):
        table = pa.concat_tables(tables)
        pq.write_table(table, shard_paths(folder, len(rows) + 1)[-1], compression="zstd")
        rows.append(table.num_rows)

    for b in reader:
        pending.append(pa.Table.from_batches([b]))
        count += b.num_rows
        if count >= rows_per_shard:
            flush(pending)
            pending, count = [], 0
    if count:
        flush(pending)
    return shard_paths(folder, len(rows)), np.asarray(rows, np.int64)


def stream_log(path, config, columns=None, *, with_rating=False, seed=0, progress=False,
               memory_limit_gb=MEMORY_LIMIT_GB, work_dir=None, rows_per_shard=ROWS_PER_SHARD,
               say=None):
    """Reads a log in bounded memory and computes its retrieval task's parts.

    Args:
      path: the log (CSV, Parquet file or folder of shards).
      config: a RetrievalConfig (min_rating, min_user_interactions, split,
        history_length, test_fraction, valid_fraction).
      columns: interactions.ColumnNames.
      with_rating: read the ``rating`` column (needed by ``config.min_rating``).
      seed: the training rows' one global shuffle.
      memory_limit_gb: DuckDB's memory; the rest spills to the work folder.
      work_dir: where the work folder is made (default ``$TWOTOWER_DATA``, else the
        system's temporary folder). The training shards stay there while the returned
        split lives; the database and its spill files are removed before returning.
      say: called with a line as each grouping step starts (None: silent).

    Returns a StreamedLog.
    """
    import duckdb

    n = int(config.history_length)
    folder = tempfile.mkdtemp(prefix="twotower-log-",
                              dir=work_dir or os.environ.get("TWOTOWER_DATA") or None)
    try:
        db = os.path.join(folder, "log.duckdb")
        con = duckdb.connect(db)
        try:
            con.execute(f"SET memory_limit = '{float(memory_limit_gb)}GB'")
            con.execute(f"SET temp_directory = '{os.path.join(folder, 'spill')}'")
            con.execute("SET preserve_insertion_order = false")
            # DuckDB's own bar for its long statements, on a terminal (as tqdm's)
            bar = bool(progress) and sys.stderr.isatty()
            con.execute(f"SET enable_progress_bar = {str(bar).lower()}")
            int_ids, total = _load(con, path, columns, with_rating, progress)
            if total == 0:
                raise ValueError(f"{path}: no interactions (the file has a header but no rows)")
            say = say or (lambda line: None)
            say("grouping the log by user (DuckDB, out of core): vocabularies, the split, "
                "each interaction's history")
            data = _group(con, config, int_ids, n, path)
            say("writing the shuffled training shards")
            files, rows = _write_shards(con, os.path.join(folder, "train"), n, seed,
                                        rows_per_shard)
            num_users = len(data["user_vocab"])
            user_counts = _training_counts(con, "u", num_users)
            item_counts = _training_counts(con, "i", len(data["item_vocab"]))
            say("collecting held-out rows, serving state and seen items")
            out = StreamedLog(
                user_vocab=data["user_vocab"], item_vocab=data["item_vocab"],
                train=ShardedSplit(folder, files, rows, n, user_counts, owned=True),
                valid=_held_out(con, "split = 1", n), test=_held_out(con, "split = 2", n),
                serving=_held_out(con, "rn = cnt", n, after=True), item_counts=item_counts,
                seen_train=_seen(con, "split = 0", num_users),
                seen_valid=_seen(con, "split = 1", num_users), seen_all=None,
                stats=data["stats"], int_ids=int_ids)
        finally:
            con.close()
        # every split's items: the training ones merged with the held-out rows, once
        # DuckDB's memory is given back (no third pass over the log)
        out.seen_all = out.seen_train.union(np.r_[out.valid.user, out.test.user],
                                            np.r_[out.valid.item, out.test.item])
        for leftover in (db, db + ".wal"):
            if os.path.exists(leftover):
                os.remove(leftover)
        shutil.rmtree(os.path.join(folder, "spill"), ignore_errors=True)
        return out
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise


def _group(con, config, int_ids, n, path):
    """Filters, vocabularies and the windowed table ``w`` (u, i, ts, seq, rn, cnt, split,
    h1…hN)."""
    stats = {"read": _counts(con, "raw")}
    source = "raw"
    if config.min_rating is not None:
        con.execute(f"CREATE VIEW rated AS SELECT * FROM raw WHERE rating >= "
                    f"{float(config.min_rating)!r}")
        stats["min_rating"] = _counts(con, "rated")
        source = "rated"
    if config.min_user_interactions > 1:
        con.execute(f"CREATE TABLE kept AS SELECT * FROM {source} WHERE user_id IN (SELECT "
                    f"user_id FROM {source} GROUP BY user_id HAVING count(*) >= "
                    f"{int(config.min_user_interactions)})")
        stats["min_user_interactions"] = _counts(con, "kept")
    else:
        con.execute(f"CREATE VIEW kept AS SELECT * FROM {source}")
    stats["kept"] = _counts(con, "kept")
    if stats["kept"][0] == 0:
        raise ValueError(f"{path}: no interactions left after min_rating="
                         f"{config.min_rating!r} and min_user_interactions="
                         f"{config.min_user_interactions!r}")
    user_vocab = _vocab(con, "user_id", int_ids["user_id"])
    item_vocab = _vocab(con, "item_id", int_ids["item_id"])
    con.execute("CREATE TABLE ev AS SELECT uv.idx::INTEGER AS u, iv.idx::INTEGER AS i, "
                "k.ts AS ts, k.seq AS seq FROM kept k JOIN user_id_vocab uv ON "
                "k.user_id = uv.id JOIN item_id_vocab iv ON k.item_id = iv.id")
    lags = "".join(f", lag(i + 1, {k}, 0) OVER w AS h{k}" for k in range(1, n + 1))
    if config.split == "leave_last_out":
        split = "CASE WHEN rn = cnt THEN 2 WHEN rn = cnt - 1 THEN 1 ELSE 0 END"
    else:
        q_test, q_valid = 1.0 - config.test_fraction, \
            1.0 - config.test_fraction - config.valid_fraction
        cut_test = (con.execute(f"SELECT quantile_cont(ts, {q_test!r}) FROM ev").fetchall()[0][0]
                    if config.test_fraction else None)
        cut_valid = (con.execute(f"SELECT quantile_cont(ts, {q_valid!r}) FROM ev").fetchall()[0][0]
                     if config.valid_fraction else cut_test)
        test = f"ts > {cut_test!r}" if cut_test is not None else "false"
        valid = f"ts > {cut_valid!r}" if cut_valid is not None else "false"
        split = f"CASE WHEN {test} THEN 2 WHEN {valid} THEN 1 ELSE 0 END"
    con.execute(f"CREATE TABLE w AS SELECT *, ({split})::TINYINT AS split FROM ("
                f"SELECT u, i, ts, seq, row_number() OVER w AS rn, count(*) OVER "
                f"(PARTITION BY u) AS cnt{lags} FROM ev WINDOW w AS (PARTITION BY u ORDER BY "
                f"ts, seq))")
    return {"user_vocab": user_vocab, "item_vocab": item_vocab, "stats": stats}
