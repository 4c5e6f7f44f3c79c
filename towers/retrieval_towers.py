"""The recipes' towers for a retrieval task: FeatureTowers over its tables.

MovieLens — query: user id (with an OOV bucket that teaches a cold-start embedding), age
bucket, gender, occupation, zip prefix and, optionally, the pooled watch history; item:
item id, title tokens, year, genres. A user's own log: the user and item ids, the
history, and one feature per column of its user / item tables by kind (categorical,
text, numeric, multi-hot; data/feature_table.py).

    query_tower, item_tower = build_towers(data, settings, history=True)
"""

import numpy as np

from twotower.data.retrieval_task import is_log, item_inputs, train_user_counts
from twotower.towers import feature_tower as ft


def _as_str(col):
    """A column of values as a flat NumPy unicode array (vectorised for ``<U`` columns)."""
    col = np.asarray(col).reshape(-1)
    return col if col.dtype.kind == "U" else col.astype(str)


def _distinct_strings(col):
    """The distinct non-empty values of a column as strings, sorted (np.unique: no
    per-row Python, for tables of 10^6-10^7 rows)."""
    values = np.unique(_as_str(col))
    return values[values != ""]


def _table_specs(table, kinds, dim):
    """FeatureTower specs for a log's feature-table columns (see data/feature_table.py)."""
    d = max(8, dim // 2)
    specs = []
    for name, kind in kinds.items():
        col = table[name]
        if kind == "numeric":
            specs.append(ft.dense(name, col))
        elif kind == "multi_hot":
            # the distinct tokens, sorted (as ft.multi_hot sorts them), "" pads left out
            tokens = _distinct_strings(col)
            if len(tokens):
                specs.append(ft.multi_hot(name, vocabulary=tokens.tolist(), dim=d))
        elif kind == "text":
            if np.any(np.strings.str_len(np.strings.strip(_as_str(col))) > 0):
                specs.append(ft.text(name, col, dim=d, sequence_length=16))
        else:
            values = _distinct_strings(col)
            if len(values):
                specs.append(ft.categorical(name, vocabulary=values.tolist(),
                                            dim=min(d, max(2, len(values)))))
    return specs


def _history_spec(data, config):
    """The query tower's watch-history feature (ids come from this toolkit's data code,
    always in range: no per-step assertion)."""
    return ft.sequence("history", data.num_items + 1, dim=config.dim, validate_ids=False,
                       pooling=config.history_pooling,
                       max_length=data.config.history_length)


def _log_towers(data, config, history, l2_normalize):
    """FeatureTowers for a user's own log: user id + history + user-table columns;
    item id + item-table columns."""
    # users by training examples, most first (ties: smaller row first), as
    # ft.categorical orders the values it counts; the counts, not the examples, so a
    # training split streamed from shards needs no pass over them
    counts = train_user_counts(data)
    rows = np.flatnonzero(counts)
    users = rows[np.lexsort((rows, -counts[rows]))]
    q_specs = [ft.categorical("user_id", vocabulary=users.tolist(), dim=config.dim,
                              oov_rate=config.oov_rate)]
    q_specs += _table_specs(data.users, data.user_kinds or {}, config.dim)
    if history and data.config.history_length > 0:
        q_specs.append(_history_spec(data, config))
    seen_items = np.flatnonzero(data.item_counts > 0)
    i_specs = [ft.categorical("item_id", vocabulary=seen_items.tolist(), dim=config.dim,
                              oov_rate=config.oov_rate)]
    i_specs += _table_specs(data.items, data.item_kinds or {}, config.dim)
    common = dict(output_dim=config.dim, hidden_units=tuple(config.hidden),
                  l2_normalize=l2_normalize)
    return (ft.FeatureTower(q_specs, name="query_tower", **common),
            ft.FeatureTower(i_specs, name="item_tower", **common))


def build_towers(data, config, *, history=True, l2_normalize=False):
    """Query and item FeatureTowers.

    MovieLens — query: user id (OOV bucket: a new user is embedded from the rest), age
    bucket, gender, occupation, zip prefix, and — when ``history`` — the pooled watch
    history. Item: item id (only items seen in training are in the vocabulary; a
    never-rated movie is embedded from its features), title tokens, year, genres.

    A user's own log (``--interactions``): the same id and history features, plus one
    feature per column of ``--users`` / ``--items`` by its kind (categorical, text,
    numeric, multi-hot).
    """
    if is_log(data):
        return _log_towers(data, config, history, l2_normalize)
    train = data.train
    d = max(8, config.dim // 2)
    q_specs = [ft.categorical("user_id", train.query["user_id"], dim=config.dim,
                              oov_rate=config.oov_rate)]
    for name, dim in (("age_bucket", 4), ("gender", 2), ("occupation", 8), ("zip", 8)):
        if name in data.users:
            q_specs.append(ft.categorical(name, data.users[name], dim=dim))
    if history and data.config.history_length > 0:
        q_specs.append(_history_spec(data, config))
    seen_items = np.flatnonzero(data.item_counts > 0)
    i_specs = [
        ft.categorical("item_id", vocabulary=seen_items.tolist(), dim=config.dim,
                       oov_rate=config.oov_rate),
        ft.text("title", data.items["title"], dim=d, sequence_length=12),
        ft.dense("year", np.where(data.items["year"] > 0, data.items["year"],
                                  np.median(data.items["year"][data.items["year"] > 0]))),
        ft.multi_hot("genres", data.items["genres"], dim=d),
    ]
    common = dict(output_dim=config.dim, hidden_units=tuple(config.hidden),
                  l2_normalize=l2_normalize)
    return (ft.FeatureTower(q_specs, name="query_tower", **common),
            ft.FeatureTower(i_specs, name="item_tower", **common))


def preprocessed(tower, inputs, *, keep=()):
    """``tower.preprocess(inputs)`` as numpy arrays (strings -> ids once, outside the
    training step; towers/feature_tower.py), or ``inputs`` unchanged for a tower that
    has no preprocessing."""
    if not hasattr(tower, "preprocess"):
        return inputs
    return {k: np.asarray(v) for k, v in tower.preprocess(inputs, keep=keep).items()}


def item_table(item_tower, data):
    """The item feature table a TwoTowerModel gathers sampled items from: every item
    preprocessed once by the item tower (the raw ``item_id`` kept for the loss)."""
    return preprocessed(item_tower, item_inputs(data), keep=("item_id",))
