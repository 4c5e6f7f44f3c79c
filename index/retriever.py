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

import math
import threading
import warnings

import numpy as np
import tensorflow as tf

from twotower.index import towers_io
from twotower.index.builder import embed
from twotower.data.external_ids import (INT64_MAX, INT64_MIN, ExternalIds, UnknownIdError,
                                         check_int_ids)
from twotower.index.scann_index import check_vectors


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
      user_seen: optional dict internal user id -> internal item ids that user has seen
        (excluded by :meth:`u2i_users` unless told otherwise). Works with or without a
        user table: with an id-lookup query tower, the user id is the tower's input.
      item_vocab: optional 1-D array (or ExternalIds) of external item ids, position =
        internal id: the ids :meth:`i2i`, ``exclude`` and the updates take and every
        result returns.
      user_vocab: optional 1-D array (or ExternalIds) of external user ids, position =
        internal user id: the ids :meth:`u2i_users` takes.

    Every ``u2i*`` / ``i2i*`` method returns ``(item_ids, scores)``: numpy arrays
    [B, k]; ``item_ids`` int64 (internal ids, or external ints) or unicode '<U'
    (external strings), ``scores`` float32. A row is padded with -1 (or "") and -inf
    only when fewer than k items remain after exclusions.
    """

    def __init__(self, index, query_tower=None, item_tower=None, *, user_table=None,
                 user_seen=None, item_vocab=None, user_vocab=None):
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
        self.user_seen = None
        if user_seen is not None:
            self.user_seen = {}
            for u, v in user_seen.items():
                (key,) = check_int_ids([u], "user_seen keys").tolist()
                self.user_seen[key] = check_int_ids(v, f"user_seen[{key}]")

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
        if self.query_tower is None:
            raise ValueError("this Retriever has no query_tower: u2i by user id needs one")
        if self.user_vocab is not None:
            users = self.user_vocab.lookup(user_ids, "user_ids")
        else:
            users = check_int_ids(user_ids, "user_ids")
        if len(users) == 0:
            raise ValueError("user_ids is empty: give at least one user id")
        given = np.asarray(user_ids, dtype=object).reshape(-1)
        takes_ids = towers_io.takes_ids(self.query_tower)
        if self.user_table is not None:
            rows = [self._user_rows.get(u, -1) for u in users.tolist()]
            unknown = [given[j] for j, r in enumerate(rows) if r < 0]
            if unknown:
                raise UnknownIdError(unknown, "user", len(self._user_rows))
            if takes_ids:
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
        q = self.embed_queries(features)
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


# -- the towers' inputs as JSON ---------------------------------------------------------
FLOAT_LIMIT = 1e15          # |x| of a JSON number fed to a tower or the index
ID_FEATURES = {"query": "user_id", "item": "item_id"}
OOV_INT, OOV_STR = -1, "[UNK]"  # Keras IntegerLookup / StringLookup's out-of-vocabulary tokens
_JSON_TYPES = {"string": "a string", "integer": "an integer", "number": "a number",
               "boolean": "true or false"}


class FeatureError(ValueError):
    """Request features that do not fit a tower's inputs (the message names the feature
    and the form it takes)."""


def _tower_class(tower):
    if isinstance(tower, towers_io.LoadedTower):
        return tower.info.get("class")
    return type(tower).__name__


def _weight_rows(layer, attr):
    """Rows of a layer's weight (live or restored from a SavedModel), else None."""
    shape = getattr(getattr(layer, attr, None), "shape", None)
    try:
        return int(shape[0])
    except (TypeError, IndexError, ValueError):
        return None


def _json_kind(dtype):
    if dtype == tf.string:
        return "string", object
    if dtype.is_bool:
        return "boolean", bool
    if dtype.is_integer:
        return "integer", dtype.as_numpy_dtype
    if dtype.is_floating:
        return "number", np.float32 if dtype.size <= 4 else dtype.as_numpy_dtype
    return None, None


def _utf8(value):
    """Strings (nested in lists) as UTF-8 bytes, unencodable characters replaced."""
    if isinstance(value, str):
        return value.encode("utf-8", "replace")
    if isinstance(value, list):
        return [_utf8(v) for v in value]
    return value


class FeatureInput:
    """One input tensor of a tower as a JSON request gives it: one value per row.

    Attributes:
      name: the feature's key (None when the tower takes one tensor, not a dict).
      type: the JSON type of the scalars: "string", "integer", "number" or "boolean".
      dims: the dimensions of one row's value (() for a scalar); None where any length
        is taken (shorter lists are padded to the batch's longest).
      pad: what shorter lists are padded with (None: a list must have exactly its width).
      minimum, maximum: bounds of the numbers (inclusive).
      id_kind: for the id feature (``item_id`` / ``user_id`` of a FeatureTower): "int"
        or "str", the index's own ids (mapped to the ids the tower was trained on); the
        feature may then be left out or null (the out-of-vocabulary bucket).
      what: a few words on the feature (the docs).
    """

    def __init__(self, name, type_, np_dtype, dims=(), *, pad=None, minimum=None,
                 maximum=None, id_kind=None, fill=None, what=None):
        self.name, self.type, self.np_dtype = name, type_, np_dtype
        self.dims, self.pad = tuple(dims), pad
        self.minimum, self.maximum = minimum, maximum
        self.id_kind, self.fill, self.what = id_kind, fill, what

    # -- the docs --
    def _scalar_words(self):
        if self.id_kind is not None:
            return ("this index's " + ("string" if self.id_kind == "str" else "integer")
                    + " id")
        words = _JSON_TYPES[self.type]
        if self.minimum is not None and self.maximum is not None and self.type == "integer":
            if self.minimum >= 0 and self.maximum < 2 ** 62:
                words += f" in [{self.minimum}, {self.maximum}]"
        return words

    def form(self):
        """The expected form of one row's value, in words."""
        words = self._scalar_words()
        for d in reversed(self.dims):
            plural = words.replace("a string", "strings").replace("an integer", "integers") \
                .replace("a number", "numbers").replace("true or false", "booleans")
            if d is None:
                words = f"a list of {plural}"
            elif self.pad is not None:
                words = f"a list of at most {d} {plural}"
            else:
                words = f"a list of exactly {d} {plural}"
        if self.dims and self.pad is not None:
            words += f" (shorter lists are padded with {self.pad!r})"
        if self.id_kind is not None:
            words += (", or null; a known id gets its trained embedding, any other the "
                      "out-of-vocabulary bucket, as does leaving it out")
        return words

    def describe(self):
        """A JSON-able description (name, type, shape, padding, bounds, form)."""
        kind = {"str": "string", "int": "integer"}.get(self.id_kind, self.type)
        out = {"name": self.name, "type": kind, "shape": list(self.dims),
               "required": self.id_kind is None, "form": self.form()}
        if self.pad is not None and self.dims:
            out["pad"] = self.pad
        if self.minimum is not None and self.id_kind is None:
            out["minimum"] = self.minimum
        if self.maximum is not None and self.id_kind is None:
            out["maximum"] = self.maximum
        if self.what:
            out["what"] = self.what
        return out

    def json_schema(self):
        """The JSON Schema of one row's value."""
        if self.id_kind == "str":
            scalar = {"type": "string"}
        elif self.id_kind == "int":
            scalar = {"type": "integer", "minimum": INT64_MIN, "maximum": INT64_MAX}
        else:
            scalar = {"type": self.type}
            if self.minimum is not None:
                scalar["minimum"] = self.minimum
            if self.maximum is not None:
                scalar["maximum"] = self.maximum
        for d in reversed(self.dims):
            scalar = {"type": "array", "items": scalar}
            if d is not None:
                scalar["maxItems"] = d
                if self.pad is None:
                    scalar["minItems"] = d
        if self.id_kind is not None:
            scalar = {"anyOf": [scalar, {"type": "null"}]}
        return scalar

    # -- validation --
    def _where(self, label):
        return label + ("" if self.name is None else f"[{self.name!r}]")

    def _fail(self, where, problem):
        taker = f"{self.name!r}" if self.name is not None else "each row"
        raise FeatureError(f"{where}: {problem}; {taker} takes {self.form()}")

    def _scalar_ok(self, v):
        if self.type == "string":
            return isinstance(v, str)
        if self.type == "boolean":
            return isinstance(v, bool)
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            return False
        if self.type == "integer" and not (isinstance(v, int) or v.is_integer()):
            return False  # JSON Schema: 3.0 is an integer, 3.5 is not
        if self.type == "number" and not math.isfinite(v):
            return False
        return ((self.minimum is None or v >= self.minimum)
                and (self.maximum is None or v <= self.maximum))

    def check(self, value, where):
        """Validates one row's value (not the id feature); returns it."""
        def walk(v, depth, at):
            if depth == len(self.dims):
                if not self._scalar_ok(v):
                    self._fail(at, f"expected {self._scalar_words()}, got {v!r:.80}")
                return
            d = self.dims[depth]
            if not isinstance(v, list):
                self._fail(at, f"expected a list, got {v!r:.80}")
            if d is not None and len(v) > d:
                self._fail(at, f"{len(v)} values, more than the {d} the tower was trained "
                               "with (send at most that many)")
            if d is not None and self.pad is None and len(v) != d:
                self._fail(at, f"{len(v)} values where the tower takes exactly {d}")
            for j, x in enumerate(v):
                walk(x, depth + 1, f"{at}[{j}]")
        walk(value, 0, where)
        return value

    def array(self, values):
        """The batch of validated row values as one array, shorter lists padded (strings
        as UTF-8 bytes: a lone surrogate from JSON becomes U+FFFD, not an error)."""
        if self.type == "string":
            values = _utf8(values)
        if not self.dims:
            return np.asarray(values, dtype=self.np_dtype)
        shape = [len(values)]
        for depth, d in enumerate(self.dims):
            if d is None:
                longest = 0
                level = values
                for _ in range(depth):
                    level = [x for v in level for x in v]
                longest = max((len(v) for v in level), default=0)
                d = max(1, longest)
            shape.append(d)
        zero = self.pad if self.pad is not None else ("" if self.type == "string" else 0)
        if self.type == "string":
            zero = zero.encode()
        out = np.full(shape, zero, dtype=self.np_dtype)

        def put(dst, v, depth):
            if depth == len(self.dims) - 1:
                if len(v):
                    dst[:len(v)] = np.asarray(v, dtype=self.np_dtype) \
                        if self.np_dtype is not object else v
                return
            for j, x in enumerate(v):
                put(dst[j], x, depth + 1)

        for r, v in enumerate(values):
            put(out[r], v, 0)
        return out


class FeatureSchema:
    """What a tower takes, as JSON: one value (a tower of one tensor) or one object
    (a tower of named features) per row. Built from the tower's input signature
    (:func:`~twotower.index.towers_io.input_spec`) and, for twotower's own towers, its
    layers (id ranges, the out-of-vocabulary bucket of a FeatureTower's lookups).

    Attributes:
      which: "query" or "item".
      inputs: the :class:`FeatureInput` of each input (one, unnamed, for a tower that
        takes one tensor).
      rows_are_objects: whether a row is an object keyed by feature name.
    """

    def __init__(self, which, inputs, rows_are_objects, *, vocab=None):
        self.which, self.inputs = which, list(inputs)
        self.rows_are_objects = bool(rows_are_objects)
        self.vocab = vocab
        self.by_name = {i.name: i for i in self.inputs}

    @classmethod
    def of_tower(cls, tower, which, *, vocab=None):
        """The schema of ``tower`` (a live tower or a LoadedTower), or None when its
        input signature is unknown or not a tensor / a dict of tensors."""
        try:
            spec = towers_io.input_spec(tower)
        except ValueError:
            return None
        name = _tower_class(tower)
        # the layers: the live tower's, or those restored with a loaded SavedModel
        inner = (getattr(tower._module, "tower", None)
                 if isinstance(tower, towers_io.LoadedTower) else tower)
        if isinstance(spec, tf.TensorSpec):
            one = cls._input(None, spec, name, inner, which, vocab, tower=tower)
            return None if one is None else cls(which, [one], False, vocab=vocab)
        if isinstance(spec, dict) and spec and all(isinstance(v, tf.TensorSpec)
                                                  for v in spec.values()):
            inputs = [cls._input(k, spec[k], name, inner, which, vocab)
                      for k in sorted(spec)]
            if any(i is None for i in inputs):
                return None
            return cls(which, inputs, True, vocab=vocab)
        return None

    @staticmethod
    def _input(key, spec, tower_class, inner, which, vocab, tower=None):
        json_type, np_dtype = _json_kind(spec.dtype)
        if json_type is None or spec.shape.rank is None or spec.shape.rank < 1:
            return None
        dims = tuple(spec.shape.as_list()[1:])
        lo = hi = None
        if json_type == "integer":
            info = np.iinfo(np_dtype)
            lo, hi = max(int(info.min), INT64_MIN), min(int(info.max), INT64_MAX)
        elif json_type == "number":
            lo, hi = -FLOAT_LIMIT, FLOAT_LIMIT
        pad, what, id_kind, fill = None, None, None, None
        if tower_class == "FeatureTower" and key is not None:
            emb, pre = getattr(inner, "_emb", None), getattr(inner, "_pre", None)
            layer = emb.get(key) if hasattr(emb, "get") else None
            config = {f.get("name"): f for f in getattr(inner, "features", [])
                      if isinstance(f, dict) and "kind" in f}.get(key, {})
            # a dense feature is the only one preprocessed (normalised) but not embedded
            dense = config.get("kind") == "dense" or (
                layer is None and hasattr(pre, "get") and pre.get(key) is not None)
            if dense and json_type in ("integer", "number"):
                what = "a number (standardised by the tower)" if not dims else "numbers"
            elif not dims and key == ID_FEATURES[which] and json_type in ("integer", "string"):
                id_kind = ("str" if json_type == "string"
                           else (vocab.kind if vocab is not None else "int"))
                fill = OOV_STR if json_type == "string" else OOV_INT
                what = (f"the {which} id; a lookup with an out-of-vocabulary bucket")
            elif len(dims) == 1 and json_type == "string":
                pad, what = "", "a set of tokens (multi-hot)"
            elif len(dims) == 1 and json_type == "integer":
                size = config.get("vocab_size") or _weight_rows(layer, "embeddings")
                longest = config.get("max_length") or _weight_rows(layer, "positions")
                pad, lo, what = 0, 0, "a sequence of item ids, 0 = padding"
                if size:
                    hi = int(size) - 1
                if dims[0] is None and longest:
                    dims = (int(longest),)
            elif not dims and json_type == "string":
                what = "a category or a text (unseen values: the out-of-vocabulary bucket)"
            elif not dims and json_type == "integer":
                what = "a category (unseen values: the out-of-vocabulary bucket)"
        elif key is None and json_type == "integer":
            size = towers_io.id_range(tower) if tower is not None else None
            if tower_class in ("PooledIDTower", "AttentionPooledIDTower") and len(dims) == 1:
                size = size or _weight_rows(inner, "embeddings")
                pad, what = 0, "a sequence of ids, 0 = padding"
                longest = _weight_rows(inner, "positions")
                if dims[0] is None and longest:
                    dims = (longest,)
            elif not dims:
                size = size or (_weight_rows(inner, "embeddings")
                                if tower_class == "IDTower" else None)
                what = "an id the tower was trained on"
            if size:
                lo, hi = 0, int(size) - 1
        if any(d is None for d in dims) and pad is None:
            pad = "" if json_type == "string" else (0.0 if json_type == "number" else
                                                    (False if json_type == "boolean" else 0))
        return FeatureInput(key, json_type, np_dtype, dims, pad=pad, minimum=lo, maximum=hi,
                            id_kind=id_kind, fill=fill, what=what)

    # -- the docs --
    def describe(self):
        """A JSON-able description: how a row is given, and each feature."""
        if self.rows_are_objects:
            how = ("features: a list with one object per " + self.which + ", keyed by "
                   "feature name")
        else:
            how = "features: a list with one value per " + self.which
        return {"rows": "objects" if self.rows_are_objects else "values", "how": how,
                "features": [i.describe() for i in self.inputs]}

    def row_json_schema(self):
        """The JSON Schema of one row."""
        if not self.rows_are_objects:
            return self.inputs[0].json_schema()
        return {"type": "object", "additionalProperties": False,
                "properties": {i.name: i.json_schema() for i in self.inputs},
                "required": [i.name for i in self.inputs if i.id_kind is None]}

    # -- validation --
    def prepare(self, rows, *, name="features", ids=None, labels=None):
        """Validates JSON rows and returns the tower's inputs (array or dict of arrays).

        Args:
          rows: a list with one value (or one object) per row.
          name: the request field, for messages.
          ids: for the id feature, the default per row when a row leaves it out
            (external ids, e.g. the item ids of an upsert); else the out-of-vocabulary
            bucket.
          labels: how messages name each row (default ``name[row]``).

        Raises:
          FeatureError: naming the row, the feature and the form it takes.
        """
        if not isinstance(rows, list) or not rows:
            raise FeatureError(f"{name} must be a non-empty list with one "
                               f"{'object' if self.rows_are_objects else 'value'} per "
                               f"{self.which}, got {rows!r:.80}")
        labels = labels or [f"{name}[{r}]" for r in range(len(rows))]
        if not self.rows_are_objects:
            inp = self.inputs[0]
            values = [inp.check(v, inp._where(label)) for v, label in zip(rows, labels)]
            return inp.array(values)
        columns = {i.name: [] for i in self.inputs}
        for row, label in zip(rows, labels):
            if not isinstance(row, dict):
                raise FeatureError(f"{label} must be an object keyed by feature name "
                                   f"({', '.join(self.by_name)}), got {row!r:.80}")
            unknown = sorted(set(row) - set(self.by_name))
            if unknown:
                raise FeatureError(f"{label}: unknown features {unknown}; the {self.which} "
                                   f"tower takes {sorted(self.by_name)}")
            missing = [i.name for i in self.inputs if i.id_kind is None and i.name not in row]
            if missing:
                first = self.by_name[missing[0]]
                raise FeatureError(f"{label}: missing features {missing}; "
                                   f"{first.name!r} takes {first.form()}")
            for inp in self.inputs:
                where = inp._where(label)
                if inp.id_kind is not None:
                    v = row.get(inp.name)
                    if isinstance(v, float) and v.is_integer() and inp.id_kind == "int":
                        v = int(v)  # JSON Schema: 3.0 is the integer 3
                    ok = v is None or (isinstance(v, str) if inp.id_kind == "str" else (
                        isinstance(v, int) and not isinstance(v, bool)
                        and INT64_MIN <= v <= INT64_MAX))
                    if not ok:
                        inp._fail(where, f"expected {inp._scalar_words()} or null, got "
                                         f"{v!r:.80}")
                    columns[inp.name].append(v)
                else:
                    columns[inp.name].append(inp.check(row[inp.name], where))
        out = {}
        for inp in self.inputs:
            values = columns[inp.name]
            out[inp.name] = (self._ids(inp, values, ids) if inp.id_kind is not None
                             else inp.array(values))
        return out

    def _ids(self, inp, values, defaults):
        """The id feature's column: given ids mapped to the tower's ids; left out or
        null: the row's default id, else the out-of-vocabulary token."""
        if defaults is not None:
            values = [d if v is None else v for v, d in zip(values, defaults)]
        if inp.type == "string":
            return np.asarray(_utf8([inp.fill if v is None else v for v in values]),
                              dtype=object)
        out = np.full(len(values), inp.fill, dtype=np.int64)
        given = [j for j, v in enumerate(values) if v is not None]
        if given:
            ext = [values[j] for j in given]
            if self.vocab is not None:
                vocab = self.vocab
                try:
                    internal = vocab._find(vocab._coerce(ext, inp.name, empty_ok=True,
                                                         kind=vocab.kind, lookup=True))
                except ValueError as e:
                    raise FeatureError(f"{inp.name!r}: {e}") from None
            else:
                internal = np.asarray(ext, dtype=np.int64)
            out[given] = np.where(internal >= 0, internal, inp.fill)
        return out
