"""User-to-item and item-to-item retrieval over a ScaNN index of the item tower.

u2i:  u = f(query features);  top-k_{i ∉ seen} <u, v_i>           (Covington et al. 2016)
i2i:  v = g(item) or the indexed v_item;  top-k_{i ≠ item} <v, v_i> (item2vec, Barkan &
      Koenigstein 2016)

with cosine meaning both sides L2-normalised (the index normalises; see ScannIndex).

Ids: the index holds internal int64 item ids (the ids the towers were trained on). With
an ``item_vocab`` (the user's own ids by internal id, see
:class:`~twotower.data.external_ids.ExternalIds`) every item id going in (``i2i``,
``exclude``, updates) and coming out is the user's own (str or int); with a
``user_vocab``, so are the user ids of :meth:`Retriever.u2i_users`. Without them, ids are
the internal integers, as the index holds them. An id nobody knows raises
:class:`~twotower.data.external_ids.UnknownIdError` naming it, except in ``exclude``:
leaving out an item that does not exist (or is no longer indexed) changes nothing.

:meth:`Retriever.feature_schema` describes what a tower takes, one JSON value or object
per row (:class:`FeatureSchema`): each feature's name, type and width, the padding of
shorter lists, and the id feature (``item_id`` / ``user_id``) that can be left out. The
server documents and validates request ``features`` with it.
"""

import collections.abc
import threading
import warnings

import numpy as np

from twotower.data.external_ids import ExternalIds, UnknownIdError, check_int_ids
from twotower.index import towers_io
from twotower.index.builder import embed
from twotower.index.feature_schema import FeatureSchema
from twotower.index.scann_index import check_vectors


def concatenated(lists):
    """(offsets [len(lists) + 1] int64, items) of a list of int id arrays: list j is
    ``items[offsets[j]:offsets[j + 1]]`` (the layout of :class:`SeenItems`)."""
    offsets = np.zeros(len(lists) + 1, np.int64)
    np.cumsum([len(x) for x in lists], out=offsets[1:])
    items = np.concatenate(lists) if lists else np.zeros(0, np.int64)
    return offsets, items


class SeenItems(collections.abc.Mapping):
    """Each user's seen items as three flat arrays, read as a mapping user id -> items.

    User ``users[j]`` saw ``items[offsets[j]:offsets[j + 1]]``:

      users: [U] internal int user ids, strictly increasing.
      offsets: [U + 1] int64, starting at 0, never decreasing, ending at len(items).
      items: the internal item ids, concatenated (any integer dtype, kept as given:
        int32 stays int32).

    ``seen[u]`` is a read-only view (KeyError for a user with no entry), found by binary
    search; there is no Python object per user, so millions of users cost their arrays
    only. The arrays are what ``user_seen.npz`` holds (index/persistence.py).
    """

    def __init__(self, users, offsets, items):
        users = check_int_ids(users, "user_seen users")
        offsets = np.asarray(offsets)
        items = np.asarray(items)
        if offsets.ndim != 1 or offsets.dtype.kind not in "iu":
            raise ValueError(f"user_seen offsets must be a flat integer array, got "
                             f"{offsets.dtype} shape {offsets.shape}")
        if items.ndim != 1 or items.dtype.kind not in "iu" or items.dtype == np.uint64:
            raise ValueError(f"user_seen items must be a flat array of integer ids, got "
                             f"{items.dtype} shape {items.shape}")
        offsets = offsets.astype(np.int64, copy=False)
        if len(offsets) != len(users) + 1 or offsets[0] != 0 \
                or offsets[-1] != len(items) or np.any(offsets[1:] < offsets[:-1]):
            raise ValueError(f"user_seen offsets must hold len(users) + 1 = {len(users) + 1} "
                             f"values from 0 to len(items) = {len(items)}, never "
                             f"decreasing; got {len(offsets)}")
        if np.any(users[1:] <= users[:-1]):
            raise ValueError("user_seen users must be strictly increasing (sorted, no "
                             "duplicates)")
        self.users, self.offsets, self.items = users.view(), offsets.view(), items.view()
        for a in (self.users, self.offsets, self.items):
            a.flags.writeable = False

    @classmethod
    def from_mapping(cls, mapping):
        """From a mapping user id -> item ids (each validated as int ids)."""
        if isinstance(mapping, cls):
            return mapping
        if not isinstance(mapping, collections.abc.Mapping):
            raise ValueError("user_seen must be a mapping user id -> item ids (or "
                             f"SeenItems), got {type(mapping).__name__}")
        users, lists = [], []
        for u, v in mapping.items():
            (key,) = check_int_ids([u], "user_seen keys").tolist()
            users.append(key)
            lists.append(check_int_ids(v, f"user_seen[{key}]"))
        users = np.asarray(users, np.int64)
        order = np.argsort(users, kind="stable")
        offsets, items = concatenated([lists[j] for j in order])
        return cls(users[order], offsets, items)

    def _position(self, user):
        if isinstance(user, (bool, np.bool_)) or not isinstance(user, (int, np.integer)):
            return -1
        j = int(np.searchsorted(self.users, user))
        return j if j < len(self.users) and self.users[j] == user else -1

    def __getitem__(self, user):
        j = self._position(user)
        if j < 0:
            raise KeyError(user)
        return self.items[self.offsets[j]:self.offsets[j + 1]]

    def __contains__(self, user):
        return self._position(user) >= 0

    def __iter__(self):
        return iter(self.users.tolist())

    def __len__(self):
        return len(self.users)


def _vocab(values, what):
    if values is None or isinstance(values, ExternalIds):
        return values
    return ExternalIds(values, what=what)


class Retriever:
    """Query tower + item tower + :class:`~twotower.index.scann_index.ScannIndex`.

    Args:
      index: the ScannIndex over the item embeddings (internal int64 item ids).
      query_tower: callable mapping query features to embeddings [B, d] (optional: without
        it, u2i takes embeddings only).
      item_tower: callable mapping item features/ids to embeddings (optional: i2i by
        indexed id needs none; i2i by features and :meth:`upsert_items` with features
        need it).
      user_table: optional dict of equal-length arrays, one row per user, with a
        ``"user_id"`` column of internal int user ids: the query tower's inputs for each
        user (a feature store), so that u2i can be asked by user id. For a query tower
        that takes ids (an IDTower) only the ``"user_id"`` column is fed to it.
      user_seen: optional :class:`SeenItems` (kept as is, no copy) or a dict internal
        user id -> internal item ids that user has seen (excluded by :meth:`u2i_users`
        unless told otherwise); held as SeenItems. Works with or without a user table:
        with an id-lookup query tower, the user id is the tower's input.
      item_vocab: optional 1-D array (or ExternalIds) of external item ids, position =
        internal id: the ids :meth:`i2i`, ``exclude`` and the updates take and every
        result returns.
      user_vocab: optional 1-D array (or ExternalIds) of external user ids, position =
        internal user id: the ids :meth:`u2i_users` takes.
      user_vectors: optional float32 [U, d], row r the query tower's output for row r of
        ``user_table`` (computed once at export, :func:`embed_user_table`): u2i by user
        id then reads the vector instead of running the tower; the tower runs only for
        ``features`` requests.

    Every ``u2i*`` / ``i2i*`` method returns ``(item_ids, scores)``: numpy arrays
    [B, k]; ``item_ids`` int64 (internal ids, or external ints) or unicode '<U'
    (external strings), ``scores`` float32. A row is padded with -1 (or "") and -inf
    only when fewer than k items remain after exclusions.
    """

    def __init__(self, index, query_tower=None, item_tower=None, *, user_table=None,
                 user_seen=None, item_vocab=None, user_vocab=None, user_vectors=None):
        self.index = index
        self.query_tower = query_tower
        self.item_tower = item_tower
        self._lock = threading.RLock()
        self.item_vocab = _vocab(item_vocab, "item")
        self.user_vocab = _vocab(user_vocab, "user")
        if self.item_vocab is not None and index.size:
            top = int(index.item_ids.max())
            if top >= len(self.item_vocab):
                raise ValueError(f"item_vocab has {len(self.item_vocab)} ids but the index "
                                 f"holds internal item id {top}: the vocabulary must cover "
                                 "every indexed item (position = internal id)")
        self.user_table = None
        self._user_rows = None
        if user_table is not None:
            if "user_id" not in user_table:
                raise ValueError(f"user_table needs a 'user_id' column, got {sorted(user_table)}")
            n = len(user_table["user_id"])
            bad = {k: len(v) for k, v in user_table.items() if len(v) != n}
            if bad:
                raise ValueError(f"user_table columns must have {n} rows, got {bad}")
            self.user_table = {k: np.asarray(v) for k, v in user_table.items()}
            try:
                keys = check_int_ids(self.user_table["user_id"], "user_table['user_id']")
            except ValueError as e:
                raise ValueError(f"{e}: the user table is keyed by internal int user ids; "
                                 "pass the user's own ids as user_vocab=") from None
            self._user_rows = {u: r for r, u in enumerate(keys.tolist())}
            if len(self._user_rows) != n:
                raise ValueError("user_table['user_id'] holds duplicate user ids")
        self.user_vectors = None
        if user_vectors is not None:
            if self.user_table is None:
                raise ValueError("user_vectors need the user_table whose rows they embed")
            vectors = check_vectors(user_vectors, index.dim, "user_vectors")
            if len(vectors) != len(self.user_table["user_id"]):
                raise ValueError(f"user_vectors has {len(vectors)} rows, the user table "
                                 f"{len(self.user_table['user_id'])}: one vector a user row")
            self.user_vectors = vectors
        self.user_seen = None if user_seen is None else SeenItems.from_mapping(user_seen)

    # -- counts (for /health) ---------------------------------------------------------
    @property
    def num_items(self):
        """Items in the index now."""
        return self.index.size

    @property
    def num_users(self):
        """Users :meth:`u2i_users` can answer: the user vocabulary's size, else the user
        table's rows, else the id range of an id-lookup query tower; 0 when it cannot
        answer by user id; None when the query tower takes ids of unrecorded range."""
        if self.user_vocab is not None:
            return len(self.user_vocab)
        if self.user_table is not None:
            return len(self.user_table["user_id"])
        if self.query_tower is not None and towers_io.takes_ids(self.query_tower):
            return towers_io.id_range(self.query_tower)
        return 0

    @property
    def num_users_with_seen(self):
        """Users with a seen-items list (0 without ``user_seen``)."""
        return 0 if self.user_seen is None else len(self.user_seen)

    # -- what the towers take (for HTTP clients) ----------------------------------------
    def feature_schema(self, which):
        """The :class:`FeatureSchema` of the ``"query"`` or ``"item"`` tower's inputs, or
        None when there is no such tower or its input signature is unknown."""
        if which not in ("query", "item"):
            raise ValueError(f"which must be 'query' or 'item', got {which!r}")
        cache = self.__dict__.setdefault("_feature_schemas", {})
        if which not in cache:
            tower = self.query_tower if which == "query" else self.item_tower
            vocab = self.user_vocab if which == "query" else self.item_vocab
            try:
                cache[which] = (None if tower is None
                                else FeatureSchema.of_tower(tower, which, vocab=vocab))
            except (AttributeError, KeyError, TypeError, ValueError) as e:
                # a tower whose inputs cannot be read: no features over HTTP, still served
                warnings.warn(f"the {which} tower's inputs cannot be described ({e}); "
                              "features will not be taken for it", RuntimeWarning)
                cache[which] = None
        return cache[which]

    def known_item_ids(self, item_ids):
        """Internal int64 ids of the (external) ``item_ids``, -1 for ids the index's
        vocabulary does not hold (without a vocabulary the ids are the internal ones)."""
        return self._known_items(item_ids, "item_ids")

    # -- id conversion ----------------------------------------------------------------
    def _items_in(self, ids, name="item_ids", allow_empty=True):
        """External item ids -> internal int64 ids (UnknownIdError for unknown ones)."""
        if self.item_vocab is not None:
            out = self.item_vocab.lookup(ids, name)
            if not allow_empty and len(out) == 0:
                raise ValueError(f"{name} is empty: give at least one id")
            return out
        return check_int_ids(ids, name, allow_empty=allow_empty)

    def _external_items(self, internal):
        return internal if self.item_vocab is None else self.item_vocab.external(internal)

    def _known_items(self, ids, name):
        """Internal int64 ids of external item ids, -1 where the vocabulary does not hold
        one (ValueError only for ids of the wrong type)."""
        if self.item_vocab is None:
            return check_int_ids(ids, name)
        vocab = self.item_vocab
        return vocab._find(vocab._coerce(ids, name, empty_ok=True, kind=vocab.kind,
                                         lookup=True))

    def _exclude_in(self, exclude, count, what="query"):
        """Per-query internal ids to leave out. Ids nobody knows are dropped: excluding
        an item that does not exist is a no-op (the index already skips ids that are
        not indexed)."""
        if exclude is None:
            return None
        if isinstance(exclude, (str, bytes)) or not hasattr(exclude, "__len__"):
            raise ValueError(f"exclude must be a list of {count} lists of item ids, got "
                             f"{exclude!r:.200}")
        if len(exclude) != count:
            raise ValueError(f"exclude must have one list per {what} ({count}), got "
                             f"{len(exclude)}")
        out = []
        for e in exclude:
            internal = self._known_items(e, "exclude")
            out.append(internal[internal >= 0] if self.item_vocab is not None else internal)
        return out

    def _check_indexed(self, internal, given):
        """UnknownIdError naming (as given) the ids that are not in the index now."""
        missing = np.flatnonzero(~self.index.indexed(internal)).tolist()
        if missing:
            shown = np.asarray(given).reshape(-1) if self.item_vocab is not None else internal
            raise UnknownIdError([shown[j].item() if hasattr(shown[j], "item") else shown[j]
                                  for j in missing], "item", self.index.size)

    def _search(self, vectors, k, exclude):
        ids, scores = self.index.search(vectors, k, exclude=exclude)
        return self._external_items(ids), scores

    @staticmethod
    def _check_k(k, limit):
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= limit:
            raise ValueError(f"k must be an int in [1, {limit}], got {k!r}")

    # -- u2i --------------------------------------------------------------------------
    def embed_queries(self, query_features, *, batch_size=4096):
        """Query-tower embeddings float32 [B, d] of a batch of query features."""
        if self.query_tower is None:
            raise ValueError("this Retriever has no query_tower: pass query embeddings "
                             "to u2i_embeddings instead")
        return embed(self.query_tower, query_features, batch_size=batch_size,
                     desc="embedding queries", progress=False)

    def u2i(self, query_features, k=10, *, exclude=None):
        """Top-k item ids and scores for each query (features through the query tower).

        Args:
          query_features: what the query tower takes, batched [B, ...] (array or dict).
          k: results per query.
          exclude: optional B iterables of item ids to leave out (e.g. items seen); an
            id that does not exist is ignored.

        Returns:
          (item_ids [B, k], scores float32 [B, k]) numpy arrays (see the class doc).
        """
        self._check_k(k, self.index.size)
        q = self.embed_queries(query_features)
        return self._search(q, k, self._exclude_in(exclude, len(q)))

    def u2i_users(self, user_ids, k=10, *, exclude_seen=True, exclude=None):
        """u2i for known users, excluding their seen items.

        Each user's query-tower input is its row of ``user_table`` or, for a query tower
        that takes ids (an IDTower) and no table, the (internal) user id itself. The
        items in ``user_seen`` are left out (when ``exclude_seen``), and ``exclude``.

        Args:
          user_ids: [B] user ids (external when the Retriever has a ``user_vocab``).
          k: results per user.
          exclude_seen: leave out each user's ``user_seen`` items.
          exclude: optional B lists of further item ids to leave out (unknown ids are
            ignored).

        Returns:
          (item_ids [B, k], scores float32 [B, k]) numpy arrays.

        Raises:
          UnknownIdError: a user id that is not known (``.ids`` lists them).
          ValueError: bad ids or k; no way to embed a user by id.
        """
        if self.query_tower is None and self.user_vectors is None:
            raise ValueError("this Retriever has no query_tower: u2i by user id needs one "
                             "(or user_vectors)")
        if self.user_vocab is not None:
            users = self.user_vocab.lookup(user_ids, "user_ids")
        else:
            users = check_int_ids(user_ids, "user_ids")
        if len(users) == 0:
            raise ValueError("user_ids is empty: give at least one user id")
        given = np.asarray(user_ids, dtype=object).reshape(-1)
        takes_ids = self.query_tower is not None and towers_io.takes_ids(self.query_tower)
        if self.user_table is not None:
            rows = [self._user_rows.get(u, -1) for u in users.tolist()]
            unknown = [given[j] for j, r in enumerate(rows) if r < 0]
            if unknown:
                raise UnknownIdError(unknown, "user", len(self._user_rows))
            if self.user_vectors is not None:
                features = None  # the stored vectors answer: no tower call
            elif takes_ids:
                features = self.user_table["user_id"][rows]
            else:
                features = {name: col[rows] for name, col in self.user_table.items()}
        elif takes_ids:
            limit = towers_io.id_range(self.query_tower)
            unknown = [given[j] for j, u in enumerate(users.tolist())
                       if u < 0 or (limit is not None and u >= limit)]
            if unknown:
                raise UnknownIdError(unknown, "user", limit)
            features = users
        else:
            raise ValueError("this Retriever has no user_table and its query tower does "
                             "not take user ids: pass user_table (query-tower inputs per "
                             "user) or query features to u2i")
        self._check_k(k, self.index.size)
        ex = self._exclude_in(exclude, len(users), "user")
        if ex is None:
            ex = [np.zeros(0, np.int64) for _ in range(len(users))]
        if exclude_seen and self.user_seen is not None:
            empty = np.zeros(0, np.int64)
            ex = [np.concatenate([e, self.user_seen.get(u, empty)])
                  for e, u in zip(ex, users.tolist())]
        q = (self.user_vectors[rows] if features is None else self.embed_queries(features))
        return self._search(q, k, ex)

    def u2i_embeddings(self, query_embeddings, k=10, *, exclude=None):
        """As :meth:`u2i`, from query embeddings [B, d]; returns (item_ids, scores)."""
        self._check_k(k, self.index.size)
        q = check_vectors(query_embeddings, self.index.dim, "query_embeddings")
        return self._search(q, k, self._exclude_in(exclude, len(q)))

    # -- i2i --------------------------------------------------------------------------
    def i2i(self, item_ids, k=10, *, exclude=None):
        """Top-k neighbours of indexed items, each item itself excluded.

        Args:
          item_ids: ids [B] of indexed items (UnknownIdError names an unknown one).
          k: neighbours per item, at most (number of items - 1).
          exclude: optional further ids to leave out per item (unknown ids are ignored).

        Returns:
          (item_ids [B, k], scores float32 [B, k]) numpy arrays.
        """
        ids = self._items_in(item_ids, "item_ids", allow_empty=False)
        self._check_k(k, self.index.size - 1)
        ex = self._exclude_in(exclude, len(ids), "item id")
        self._check_indexed(ids, item_ids)
        vectors = self.index.vectors_of(ids)
        none = np.zeros(0, np.int64)
        ex = [np.concatenate([np.asarray([i], np.int64),
                              none if ex is None else np.asarray(ex[j], np.int64)])
              for j, i in enumerate(ids.tolist())]
        return self._search(vectors, k, ex)

    def i2i_features(self, item_features, k=10, *, exclude=None, batch_size=4096):
        """Top-k neighbours of items given by features (through the item tower).

        When the features describe an indexed item, pass its id in ``exclude`` to leave
        the item itself out; a new (unindexed) item has nothing to exclude. Works on a
        loaded folder that saved its item tower.

        Returns:
          (item_ids [B, k], scores float32 [B, k]) numpy arrays.
        """
        if self.item_tower is None:
            raise ValueError("this Retriever has no item_tower: use i2i with item ids")
        self._check_k(k, self.index.size)
        vectors = embed(self.item_tower, item_features, batch_size=batch_size,
                        desc="embedding items", progress=False)
        return self._search(vectors, k, self._exclude_in(exclude, len(vectors), "item"))

    # -- updates ----------------------------------------------------------------------
    def upsert_items(self, item_ids, *, vectors=None, features=None, batch_size=4096):
        """Adds new items and replaces the vectors of indexed ones, in place.

        Args:
          item_ids: [n] unique item ids (external with an ``item_vocab``: new ids extend
            the vocabulary; without one, internal ints >= 0).
          vectors: float [n, d] item embeddings, or
          features: the item tower's inputs for the n items (embedded here); exactly one
            of ``vectors`` and ``features``.

        Returns:
          {"added": number of new items, "replaced": number of items replaced}.
        """
        if (vectors is None) == (features is None):
            raise ValueError("give exactly one of vectors= and features=")
        if self.item_vocab is not None:
            given = self.item_vocab._coerce(item_ids, "item_ids", kind=self.item_vocab.kind)
        else:
            given = check_int_ids(item_ids, "item_ids", allow_empty=False, nonnegative=True)
        if len(np.unique(given)) != len(given):
            raise ValueError("item_ids to upsert contain duplicates")
        if features is not None:
            if self.item_tower is None:
                raise ValueError("this Retriever has no item_tower: upsert with vectors=")
            vectors = embed(self.item_tower, features, batch_size=batch_size,
                            desc="embedding items", progress=False)
        v = check_vectors(vectors, self.index.dim, "vectors")
        if len(v) != len(given):
            raise ValueError(f"item_ids ({len(given)}) and vectors ({len(v)}) differ in "
                             "length")
        with self._lock:
            if self.item_vocab is not None:
                internal, _ = self.item_vocab.extend(given)
            else:
                internal = given
            present = self.index.indexed(internal)
            if present.any():
                self.index.replace(internal[present], v[present])
            if (~present).any():
                self.index.add(internal[~present], v[~present])
        return {"added": int((~present).sum()), "replaced": int(present.sum())}

    def remove_items(self, item_ids):
        """Removes indexed items (UnknownIdError names ids not in the index).

        External ids stay in the vocabulary (internal ids never move), so an item can
        be upserted again later. Returns the number of items removed.
        """
        with self._lock:
            internal = self._items_in(item_ids, "item_ids", allow_empty=False)
            self._check_indexed(internal, item_ids)
            self.index.remove(internal)
        return len(internal)


def embed_user_table(query_tower, user_table, *, batch_size=4096, progress=True):
    """The query tower's output for every row of ``user_table`` (float32 [U, d]): what a
    Retriever's ``user_vectors`` hold. A tower that takes ids gets the ``user_id`` column
    alone, as :meth:`Retriever.u2i_users` feeds it."""
    inputs = (user_table["user_id"] if towers_io.takes_ids(query_tower)
              else {k: np.asarray(v) for k, v in user_table.items()})
    return embed(query_tower, inputs, batch_size=batch_size, desc="embedding users",
                 progress=progress)
