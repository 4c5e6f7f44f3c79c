"""A user's own interaction log → the retrieval task the two-tower recipes train on.

The same ``RetrievalData`` that ``movielens.prepare_retrieval`` builds (train / valid /
test splits, leave-last-out or temporal on the timestamp, each interaction's history,
training popularity, seen items, item and user tables), from any log read by
``twotower.data.interactions`` — string or integer ids — and optional feature tables
(``twotower.data.feature_table``):

* the item corpus is every item of the log plus every item of the items table (an item
  nobody interacted with is still retrievable, embedded from its features);
* internal indexes are in order of decreasing count in the log (ties: smaller id first),
  then the table-only items / users in table order; ``item_vocab[i]`` / ``user_vocab[r]``
  are the external ids;
* ``items["item_id"]`` and ``users["user_id"]`` hold the internal indexes (what the id
  features embed); the feature columns are aligned to them, missing values filled
  (``FeatureTable.aligned``).
"""

import os

import numpy as np

from twotower.data import feature_table as feature_tables
from twotower.data import interactions as logs
from twotower.data.ragged_rows import RaggedRows
from twotower.data.retrieval_task import RetrievalConfig, RetrievalData, Split, retrieval_task
from twotower.data.streamed_log_task import MEMORY_LIMIT_GB, stream_log

RESERVED = ("item_id", "user_id", "history")


def _vocab(ids, table_ids=None):
    """Frequency-ordered unique ids of ``ids`` (ties: smaller first), then the ids only in
    ``table_ids`` (in table order). Returns (vocab, index of each of ``ids``)."""
    uniq, inv, counts = np.unique(ids, return_inverse=True, return_counts=True)
    order = np.lexsort((np.arange(len(uniq)), -counts))
    rank = np.empty(len(uniq), np.int64)
    rank[order] = np.arange(len(uniq))
    vocab = uniq[order]
    if table_ids is not None and len(table_ids):
        only = table_ids[~np.isin(table_ids, vocab)]
        vocab = np.concatenate([vocab, only])
    return vocab, rank[inv.reshape(-1)]


def _harmonise(log_ids, table, what, where):
    """Makes a feature table's ids the same type as the log's (int64 or str)."""
    if table is None:
        return None
    t = table.ids
    if log_ids.dtype.kind == t.dtype.kind:
        return t
    if log_ids.dtype.kind in "iu":
        try:
            return t.astype(np.int64)
        except ValueError:
            raise ValueError(f"{table.source}: {what} ids such as {t[0]!r} are not integers, "
                             f"but the log {where} has integer {what} ids") from None
    return t.astype(str)


def _features(table, ids):
    if table is None:
        return {}, {}
    clash = [c for c in table.kinds if c in RESERVED]
    if clash:
        raise ValueError(f"{table.source}: feature column {clash[0]!r} clashes with the "
                         f"recipe's own {clash[0]!r} input; rename it")
    return table.aligned(ids), dict(table.kinds)


def _count(ids):
    return len(np.unique(ids)) if len(ids) else 0


def _filter(log, config):
    """Applies min_rating, then min_user_interactions. Returns (user ids, item ids,
    timestamps, stats): stats counts the rows, users and items read, after each filter,
    and kept."""
    stats = {"read": (len(log), _count(log.user_id), _count(log.item_id))}
    keep = np.ones(len(log), bool)
    if config.min_rating is not None:
        if "rating" not in log.extra:
            raise ValueError(f"min_rating={config.min_rating!r} needs a 'rating' column; the "
                             f"log {log.source!r} has none")
        with np.errstate(invalid="ignore"):
            keep &= log.extra["rating"] >= config.min_rating  # NaN (no rating): dropped
        stats["min_rating"] = (int(keep.sum()), _count(log.user_id[keep]),
                               _count(log.item_id[keep]))
    u_ids, i_ids, ts = log.user_id[keep], log.item_id[keep], log.timestamp[keep]
    if config.min_user_interactions > 1 and len(u_ids):
        uniq, inv, counts = np.unique(u_ids, return_inverse=True, return_counts=True)
        ok = counts[inv.reshape(-1)] >= config.min_user_interactions
        u_ids, i_ids, ts = u_ids[ok], i_ids[ok], ts[ok]
        stats["min_user_interactions"] = (len(u_ids), _count(u_ids), _count(i_ids))
    stats["kept"] = (len(u_ids), _count(u_ids), _count(i_ids))
    if len(u_ids) == 0:
        raise ValueError(f"{log.source}: no interactions left after min_rating="
                         f"{config.min_rating!r} and min_user_interactions="
                         f"{config.min_user_interactions!r}")
    return u_ids, i_ids, ts, stats


def _tables(vocabulary, item_ids, user_ids, items, users, source):
    """The items and users tables of a task: for each side, ``vocabulary(log ids, the
    feature table's ids)`` → (vocab, extra), the feature table aligned to the vocab.
    Returns {"item": (vocab, extra, table, kinds), "user": …}."""
    out = {}
    for side, ids, table in (("item", item_ids, items), ("user", user_ids, users)):
        table_ids = _harmonise(ids, table, side, source)
        vocab, extra = vocabulary(ids, table_ids)
        if table is not None:
            table = type(table)(**{**table.__dict__, "ids": table_ids})
        cols, kinds = _features(table, vocab)
        out[side] = (vocab, extra,
                     {f"{side}_id": np.arange(len(vocab), dtype=np.int64), **cols}, kinds)
    return out


def _build(log, config, items, users, name):
    u_ids, i_ids, ts, stats = _filter(log, config)
    t = _tables(_vocab, i_ids, u_ids, items, users, log.source)
    (item_vocab, item_index, items_table, item_kinds) = t["item"]
    (user_vocab, user_rows, users_table, user_kinds) = t["user"]
    data = retrieval_task(user_rows, item_index, ts, users_table, items_table, config,
                          user_vocab=user_vocab, item_vocab=item_vocab,
                          name=name or log.name or os.path.basename(log.source),
                          item_kinds=item_kinds, user_kinds=user_kinds)
    return data, stats


def _with_table_only(vocab, table_ids):
    """The log's vocabulary, then the ids only in a feature table (in table order)."""
    if table_ids is None or not len(table_ids):
        return vocab
    return np.concatenate([vocab, table_ids[~np.isin(table_ids, vocab)]])


def _streamed_split(rows, users_table):
    """A held-out or serving Split from streamed rows (data/streamed_log_task.py)."""
    query = {k: v[rows.user] for k, v in users_table.items()}
    query["history"] = rows.history
    return Split(query=query, item=rows.item, user=rows.user, timestamp=rows.timestamp)


def _build_streamed(path, config, items, users, name, columns, with_rating, verbose, seed,
                    memory_limit_gb=None):
    """The retrieval task of a log read out of core (data/streamed_log_task.py): the
    training split stays in shards on disk, seen items are RaggedRows."""
    say = (lambda line: print(line, flush=True)) if verbose else None
    log = stream_log(path, config, columns, with_rating=with_rating, seed=seed,
                     progress=verbose, say=say,
                     memory_limit_gb=memory_limit_gb or MEMORY_LIMIT_GB)
    t = _tables(lambda ids, table_ids: (_with_table_only(ids, table_ids), None),
                log.item_vocab, log.user_vocab, items, users, path)
    item_vocab, _, items_table, item_kinds = t["item"]
    user_vocab, _, users_table, user_kinds = t["user"]
    extra_users = len(user_vocab) - len(log.user_vocab)

    def grown(rows):  # the table-only users have no rows
        return RaggedRows(np.r_[rows.offsets, np.full(extra_users, rows.offsets[-1])],
                          rows.values)

    train = log.train
    train.user_counts = np.r_[train.user_counts, np.zeros(extra_users, np.int64)]
    counts = np.r_[log.item_counts, np.zeros(len(item_vocab) - len(log.item_vocab), np.int64)]
    data = RetrievalData(
        items=items_table, users=users_table, train=train,
        valid=_streamed_split(log.valid, users_table),
        test=_streamed_split(log.test, users_table), item_counts=counts,
        seen_train=grown(log.seen_train), seen_valid=grown(log.seen_valid), config=config,
        user_vocab=user_vocab, item_vocab=item_vocab,
        name=name or os.path.basename(os.path.normpath(os.fspath(path))),
        item_kinds=item_kinds, user_kinds=user_kinds,
        serving=_streamed_split(log.serving, users_table), seen_all=grown(log.seen_all))
    return data, log.stats, log.int_ids


def log_task(log, config=None, *, items=None, users=None, name=None):
    """Builds a RetrievalData from an interaction log and optional feature tables.

    Args:
      log: an ``interactions.Interactions`` (``read_interactions``) or a path to read.
      config: a movielens.RetrievalConfig (split, history_length, min_rating — applied to
        a ``rating`` column when the log has one; a row with no rating is dropped —,
        min_user_interactions).
      items, users: ``feature_table.FeatureTable`` or None.
      name: the data's name in titles (default: the log's file name).

    Returns:
      a RetrievalData with user_vocab, item_vocab (external ids), name, item_kinds and
      user_kinds (feature column → kind).
    """
    config = config or RetrievalConfig()
    if not isinstance(log, logs.Interactions):
        log = logs.read_interactions(log, extra=("rating",) if config.min_rating is not None
                                     else ())
    return _build(log, config, items, users, name)[0]


def _plural(n, word):
    return f"{n:,} {word}" + ("" if n == 1 else "s")


def filter_summary(stats, config):
    """The lines that say what the filters kept and dropped (``_filter``'s stats): rows,
    users and items read, what ``--min-rating`` and the minimum of interactions per user
    each dropped, and what is left."""
    def counts(t):
        return f"{_plural(t[0], 'row')}, {_plural(t[1], 'user')}, {_plural(t[2], 'item')}"

    def dropped(before, after):
        return ", ".join(_plural(b - a, w) for b, a, w in zip(before, after,
                                                                ("row", "user", "item")))

    lines = []
    prev = stats["read"]
    if "min_rating" in stats:
        now = stats["min_rating"]
        lines.append(f"--min-rating {config.min_rating:g}: kept {_plural(now[0], 'row')} "
                     f"rated {config.min_rating:g} or more; dropped {dropped(prev, now)}")
        prev = now
    if "min_user_interactions" in stats:
        now = stats["min_user_interactions"]
        if now != prev:
            lines.append(f"users with fewer than {config.min_user_interactions} "
                         f"interactions: dropped {dropped(prev, now)}")
        prev = now
    kept = stats["kept"]
    if kept == stats["read"]:
        lines.append(f"kept every row: {counts(kept)}")
    else:
        lines.append(f"kept {counts(kept)}; dropped in all {dropped(stats['read'], kept)}")
    return lines


def load_log_task(interactions, config=None, *, items=None, users=None, columns=None,
                  item_kinds=None, user_kinds=None, infer=True, verbose=True, seed=0,
                  memory_limit_gb=None):
    """Reads a log and its feature tables from files and builds the retrieval task.

    Messages name the recipes' flags (``--interactions``, ``--items``, ``--min-rating``).

    Args:
      interactions: the log (CSV, Parquet file or folder of shards; a MovieLens folder
        with ratings.csv reads as userId,movieId,rating,timestamp).
      items, users: feature-table CSV paths or None; keyed by the log's item / user column.
      columns: interactions.ColumnNames.
      item_kinds, user_kinds: dict kind → column names (``{"categorical": ["brand"],
        "text": ["title"]}``); other columns are inferred unless ``infer`` is False.
      seed: the one shuffle of the training rows (kept on disk, read shard by shard:
        data/streamed_log_task.py reads the log out of core, so memory holds the tables,
        not the log).
      memory_limit_gb: the memory the out-of-core grouping may take (default
        MEMORY_LIMIT_GB, 2).
      verbose: print what was read (the file's format, the rows, users and items read,
        what each filter kept and dropped, what is left) and the tables' inferred kinds,
        with a bar of the rows read on a terminal.
    """
    config = config or RetrievalConfig()
    columns = columns or logs.ColumnNames()
    files = logs.list_files(interactions, name="--interactions")
    first = files[0]
    have = logs.resolve_columns(first, columns)[0]
    file_columns = logs.file_columns(first)
    extra = ("rating",) if "rating" in file_columns else ()
    if config.min_rating is not None and not extra:
        raise ValueError(f"--min-rating {config.min_rating:g} needs a 'rating' column; "
                         f"{first} has columns {file_columns}")
    tables = {}
    for what, path, kinds, key in (("items", items, item_kinds, have.item),
                                   ("users", users, user_kinds, have.user)):
        if path is None:
            tables[what] = None
            continue
        kinds = dict(kinds or {})
        bad = [k for k in kinds if k not in feature_tables.KINDS]
        if bad:
            raise ValueError(f"{what} kinds must be among {feature_tables.KINDS}, got {bad[0]!r}")
        if not os.path.isfile(path):
            raise FileNotFoundError(f"--{what} {path!r}: no such file")
        header = logs.detect_dialect(path).header if os.path.getsize(path) else ()
        fkey = key if key in header else ("item_id" if what == "items" else "user_id")
        tables[what] = feature_tables.read_feature_table(
            path, fkey, infer=infer, flag_prefix=f"--{what[:-1]}", **kinds)
    data, stats, int_ids = _build_streamed(interactions, config, tables["items"],
                                           tables["users"], None, columns, bool(extra),
                                           verbose, seed, memory_limit_gb)
    if verbose:
        fmt = (f"{_plural(len(files), 'Parquet file')}" if logs.is_parquet(first)
               else logs.describe_file(first))
        kind = {True: "integer", False: "string"}
        read = stats["read"]
        print(f"{os.fspath(interactions)} ({fmt}; columns {have.user!r}, {have.item!r}, "
              f"{have.time!r}" + (", 'rating'" if extra else "") + f"; "
              f"{kind[int_ids['user_id']]} user ids, {kind[int_ids['item_id']]} item ids): read "
              f"{_plural(read[0], 'row')}, {_plural(read[1], 'user')}, "
              f"{_plural(read[2], 'item')}")
        for line in filter_summary(stats, config):
            print("  " + line)
        for what, vocab, n_log in (("items", data.item_vocab, stats["kept"][2]),
                                   ("users", data.user_vocab, stats["kept"][1])):
            if len(vocab) > n_log:
                print(f"  {what} in the corpus: {len(vocab):,} ({n_log:,} in the kept rows, "
                      f"{len(vocab) - n_log:,} only in --{what} "
                      f"{os.path.basename(tables[what].source)})")
        for t in tables.values():
            if t is not None:
                print(t.summary())
    return data
