"""The retrieval task of any implicit-feedback log: its split, each interaction's history,
popularity, seen items, the state a served model answers from, and the towers' inputs.

``retrieval_task(rows, items, timestamps, users, items_table, config)`` orders each user's
interactions by time and cuts them leave-last-out (each user's last interaction is test,
the one before it validation) or by a global time cut; each interaction's history is the
user's previous ``history_length`` items, whatever their split, so a test query sees what
a live system would have seen then. ``RetrievalData.serving`` is every user as the whole
log leaves them: what an exported index answers from.

MovieLens (data/movielens.py) and a user's own log (data/log_task.py) both end here.
"""

import dataclasses

import numpy as np

# the MovieLens item-tower inputs; a log's are its item_id and feature-table columns
ITEM_FEATURES = ("item_id", "title", "year", "genres")


@dataclasses.dataclass
class RetrievalConfig:
    """How to turn ratings into a retrieval task.

    min_rating: keep ratings >= this as positives (None: every rating is a positive).
    split: "leave_last_out" (per user by timestamp: last -> test, second-last -> valid)
      or "temporal" (global: the latest ``test_fraction`` of interactions -> test, the
      ``valid_fraction`` before them -> valid).
    history_length: N, the items preceding each interaction kept for history towers.
    zip_prefix: leading characters of the zip code kept as a feature.
    min_user_interactions: users with fewer positives are dropped before splitting
      (leave-last-out needs 3 to have a train, a valid and a test item).
    """

    min_rating: float | None = None
    split: str = "leave_last_out"
    history_length: int = 20
    test_fraction: float = 0.1
    valid_fraction: float = 0.1
    zip_prefix: int = 2
    min_user_interactions: int = 3

    def __post_init__(self):
        if self.split not in ("leave_last_out", "temporal"):
            raise ValueError(f"split must be 'leave_last_out' or 'temporal', got {self.split!r}")
        if self.history_length < 0:
            raise ValueError(f"history_length must be >= 0, got {self.history_length!r}")
        if self.test_fraction + self.valid_fraction >= 1.0:
            raise ValueError(f"test_fraction + valid_fraction must be < 1, got "
                             f"{self.test_fraction!r} + {self.valid_fraction!r}")
        for name in ("test_fraction", "valid_fraction"):
            v = getattr(self, name)
            if not 0.0 <= v < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {v!r}")
        if self.min_user_interactions < 1:
            raise ValueError(
                f"min_user_interactions must be >= 1, got {self.min_user_interactions!r}")


@dataclasses.dataclass
class Split:
    """One split's examples: per-interaction query features and the positive item.

    query: dict of arrays [n, ...] — user features and "history" [n, N] (item_index + 1,
      most recent first, 0 pads; a user with no earlier items has an all-zero row).
    item: [n] item_index of the positive.
    user: [n] row in the users table.
    timestamp: [n].
    """

    query: dict
    item: np.ndarray
    user: np.ndarray
    timestamp: np.ndarray

    def __len__(self):
        return len(self.item)

    def take(self, rows):
        """The examples at ``rows`` (indexes into this split), as a Split."""
        rows = np.asarray(rows, np.int64)
        return Split(query={k: np.asarray(v)[rows] for k, v in self.query.items()},
                     item=np.asarray(self.item)[rows], user=np.asarray(self.user)[rows],
                     timestamp=np.asarray(self.timestamp)[rows])


@dataclasses.dataclass
class RetrievalData:
    """MovieLens as a retrieval task over the whole movie catalog.

    items: feature table indexed by item_index 0..N-1 (every movie in the movie file, so
      movies never rated in training are still in the corpus): item_id (= item_index),
      movie_id, title, year, genres ([N, G] str, "" pads).
    users: feature table indexed by user row: user_id, age_bucket, gender, occupation, zip.
    train / valid / test: Splits.
    item_counts: [N] training interactions per item (popularity).
    seen_train: list per user row of the item_indexes in train.
    seen_valid: list per user row of the item_indexes in valid.
    serving: a Split with one row per user who has any interaction: the user as the
      whole log leaves them — query features with the history ending at (and including)
      their last interaction, ``item``/``timestamp`` of that last interaction. This, not
      the test split, is what a served model answers from.
    seen_all: list per user row of every item_index in the user's log, all splits.
    """

    items: dict
    users: dict
    train: Split
    valid: Split
    test: Split
    item_counts: np.ndarray
    seen_train: list
    seen_valid: list
    config: RetrievalConfig
    # A log's external ids, position = internal index: item_vocab[i] is item i's id in the
    # log, user_vocab[r] the id of user row r (items["item_id"] / users["user_id"] hold the
    # internal indexes). None for MovieLens, whose tables keep the external ids themselves
    # (items["movie_id"], users["user_id"]).
    user_vocab: np.ndarray | None = None
    item_vocab: np.ndarray | None = None
    name: str = "MovieLens"
    # For a generic log: feature column -> kind ("categorical", "text", "numeric",
    # "multi_hot") of the items / users tables; None for MovieLens's fixed features.
    item_kinds: dict | None = None
    user_kinds: dict | None = None
    serving: Split | None = None
    seen_all: list | None = None

    @property
    def num_items(self):
        return len(self.items["item_id"])

    def exclusions(self, split):
        """Items to exclude per example when evaluating ``split``: what the user saw before
        it (train for valid; train and valid for test)."""
        users = np.asarray(split.user, np.int64)
        if split is self.valid:
            return [self.seen_train[u] for u in users]
        # only the split's users (a sample of test rows costs its size, not the log's)
        seen = {u: np.union1d(self.seen_train[u], self.seen_valid[u])
                for u in np.unique(users).tolist()}
        return [seen[u] for u in users.tolist()]

    def head_items(self, fraction=0.2):
        """Boolean [N]: the top ``fraction`` of items by training popularity (the head)."""
        order = np.argsort(-self.item_counts, kind="stable")
        head = np.zeros(self.num_items, bool)
        head[order[: int(round(fraction * self.num_items))]] = True
        return head


def _history(users, items, length):
    """For rows sorted by (user, time): the previous ``length`` items (+1) of that user."""
    n = len(users)
    hist = np.zeros((n, length), np.int64)
    for k in range(1, length + 1):
        if k >= n:
            break
        same = users[k:] == users[:-k]
        hist[k:, k - 1] = np.where(same, items[:-k] + 1, 0)
    return hist


def _after_last(users, items, history):
    """For rows sorted by (user, time) with their :func:`_history` rows: the row index of
    each user's last interaction and the history *after* it — that item first, then the
    previous ``length - 1`` items."""
    last = np.flatnonzero(np.r_[users[1:] != users[:-1], True]) if len(users) else \
        np.zeros(0, np.int64)
    after = np.zeros((len(last), history.shape[1]), np.int64)
    if history.shape[1]:
        after[:, 0] = items[last] + 1
        after[:, 1:] = history[last, :-1]
    return last, after


def positions_in(table, values):
    """For each of ``values``, its position in ``table`` (unique ids), -1 when absent;
    vectorised (ML-25M has 25 million ratings)."""
    table, values = np.asarray(table), np.asarray(values)
    if len(table) == 0:
        return np.full(len(values), -1, np.int64)
    order = np.argsort(table, kind="stable")
    pos = np.clip(np.searchsorted(table[order], values), 0, len(table) - 1)
    return np.where(table[order][pos] == values, order[pos], -1).astype(np.int64)


def retrieval_task(rows, items_raw, ts, users, items, config, **fields):
    """The split, histories, popularity and seen items of any implicit-feedback log.

    Args:
      rows: [n] int64 user row (into ``users``) of each interaction.
      items_raw: [n] int64 item index (into ``items``).
      ts: [n] timestamps.
      users: user feature table, columns [n_users, ...] (split queries gather from it).
      items: item feature table, columns [n_items, ...], with "item_id" = 0..n_items-1.
      config: a RetrievalConfig (its split, history_length; filtering is the caller's).
      fields: further RetrievalData fields (user_vocab, item_vocab, name, kinds).

    Returns:
      a RetrievalData.
    """
    rows = np.asarray(rows, np.int64)
    items_raw = np.asarray(items_raw, np.int64)
    ts = np.asarray(ts, np.int64)
    n_users = len(next(iter(users.values())))
    order = np.lexsort((np.arange(len(rows)), ts, rows))  # by user, then time, then file
    rows, items_raw, ts = rows[order], items_raw[order], ts[order]
    history = _history(rows, items_raw, config.history_length)

    split = np.zeros(len(rows), np.int8)  # 0 train, 1 valid, 2 test
    if config.split == "leave_last_out":
        last = np.r_[rows[1:] != rows[:-1], True]
        split[last] = 2
        second = np.r_[last[1:], False] & ~last
        split[second] = 1
    else:
        cut_test = np.quantile(ts, 1.0 - config.test_fraction) if config.test_fraction else np.inf
        cut_valid = (np.quantile(ts, 1.0 - config.test_fraction - config.valid_fraction)
                     if config.valid_fraction else cut_test)
        split[ts > cut_valid] = 1
        split[ts > cut_test] = 2

    def make(mask):
        q = {k: v[rows[mask]] for k, v in users.items()}
        q["history"] = history[mask]
        return Split(query=q, item=items_raw[mask], user=rows[mask], timestamp=ts[mask])

    n_items = len(items["item_id"])
    tr = split == 0
    counts = np.bincount(items_raw[tr], minlength=n_items).astype(np.int64)

    def seen(mask):
        out = [np.zeros(0, np.int64)] * n_users
        r_, i_ = rows[mask], items_raw[mask]
        if len(r_):
            bounds = np.flatnonzero(np.r_[True, r_[1:] != r_[:-1], True])
            for a, b in zip(bounds[:-1], bounds[1:]):
                out[r_[a]] = np.unique(i_[a:b])
        return out

    last, after = _after_last(rows, items_raw, history)
    serving_query = {k: v[rows[last]] for k, v in users.items()}
    serving_query["history"] = after
    serving = Split(query=serving_query, item=items_raw[last], user=rows[last],
                    timestamp=ts[last])
    return RetrievalData(items=items, users=users, train=make(tr), valid=make(split == 1),
                         test=make(split == 2), item_counts=counts, seen_train=seen(tr),
                         seen_valid=seen(split == 1), config=config, serving=serving,
                         seen_all=seen(np.ones(len(rows), bool)), **fields)


def is_log(data):
    """Whether ``data`` is a user's own log (feature kinds known), not MovieLens."""
    return getattr(data, "item_kinds", None) is not None


def query_inputs(data, split):
    """The query-tower inputs of a split: user features and history."""
    return dict(split.query)


def item_inputs(data, index=None):
    """Item-tower inputs for item indexes (all items when None): MovieLens's
    ITEM_FEATURES, or a log's item_id and its feature-table columns."""
    rows = slice(None) if index is None else np.asarray(index)
    names = ("item_id", *data.item_kinds) if is_log(data) else ITEM_FEATURES
    return {k: data.items[k][rows] for k in names}


def example_inputs(data, n=2):
    """The query- and item-tower inputs of ``n`` training examples — the first rows of an
    in-memory training split, or (a split streamed from shards, data/sharded_split.py)
    the first users' serving rows — for building a model before it trains."""
    split = data.train if isinstance(data.train, Split) else data.serving
    rows = np.arange(min(n, len(split)))
    return ({k: np.asarray(v)[rows] for k, v in query_inputs(data, split).items()},
            item_inputs(data, np.asarray(split.item)[rows]))


def train_user_counts(data):
    """[n_users] training examples of each user row."""
    counts = getattr(data.train, "user_counts", None)
    if counts is not None:
        return np.asarray(counts, np.int64)
    return np.bincount(np.asarray(data.train.user, np.int64),
                       minlength=len(next(iter(data.users.values()))))

