"""External ids (the user's own str or int ids) ↔ internal int64 positions.

An index addresses items by an int64 row number (the id the towers were trained on). A
user's log names them by its own ids: strings ("sku-123") or integers. A vocabulary is
a 1-D array of those external ids, position = internal id, as gensim's ``index_to_key``
and Keras' ``StringLookup`` vocabularies are. :class:`ExternalIds` keeps that array and
answers both directions; an id it does not hold raises :class:`UnknownIdError`.

Sentinels: a result row is padded (fewer than k items left after exclusions) with -1
for integer ids and "" for string ids; neither can be a real id (negative ids and the
empty string are refused), so a pad never collides with an item.

:func:`check_int_ids` is the one validator of integer ids used across the index (ints
only: bools, floats such as 100.9 and values outside int64 are refused by name).
"""

import threading

import numpy as np

INT64_MIN, INT64_MAX = -(2 ** 63), 2 ** 63 - 1


class UnknownIdError(ValueError):
    """Ids that the index (or its vocabulary) does not know; ``.ids`` holds them.

    A ValueError, so code that catches bad input keeps working; a server answers it
    with 404 naming the ids.
    """

    def __init__(self, ids, what="item", known=None):
        self.ids = list(ids)
        self.what = what
        shown = ", ".join(repr(i) for i in self.ids[:10])
        more = f" (+{len(self.ids) - 10} more)" if len(self.ids) > 10 else ""
        tail = f" ({known} {what}s known)" if known is not None else ""
        super().__init__(f"unknown {what} id{'s' if len(self.ids) > 1 else ''} "
                         f"{shown}{more}{tail}")


def _py(value):
    return value.item() if isinstance(value, np.generic) else value


def check_int_ids(ids, name="item_ids", *, allow_empty=True, nonnegative=False):
    """Validates integer ids; returns int64 [n] (a scalar is one id).

    Refused with a ValueError naming ``name`` and the value: bools, floats (100.9, and
    100.0 too: an id is not a number to round), strings, ids outside int64 (2**70),
    nested lists, and (``nonnegative``) ids below 0, and an empty list unless
    ``allow_empty``.
    """
    if isinstance(ids, np.ndarray) and ids.ndim == 1 and ids.dtype.kind in "iu" \
            and ids.dtype != np.uint64:
        arr = ids.astype(np.int64, copy=False)
    else:
        try:
            raw = np.asarray(ids)
        except (ValueError, OverflowError) as e:
            raise ValueError(f"{name} must be a flat list of integer ids, got {ids!r:.200}"
                             f" ({e})") from None
        if raw.ndim == 0:
            raw = raw.reshape(1)
        if raw.ndim != 1:
            raise ValueError(f"{name} must be a flat list of integer ids, got shape "
                             f"{raw.shape}")
        if raw.size == 0:
            arr = np.zeros(0, np.int64)
        elif raw.dtype.kind in "iu":
            if raw.dtype == np.uint64 and len(raw) and raw.max() > INT64_MAX:
                bad = int(raw[raw > INT64_MAX][0])
                raise ValueError(f"{name} must be int64 ids, got {bad} (outside int64)")
            arr = raw.astype(np.int64)
        elif raw.dtype.kind == "O":
            for v in raw.tolist():
                if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
                    raise ValueError(f"{name} must be integer ids, got {v!r} "
                                     f"({type(v).__name__})")
                if not INT64_MIN <= int(v) <= INT64_MAX:
                    raise ValueError(f"{name} must be int64 ids, got {int(v)} (outside "
                                     f"int64)")
            arr = raw.astype(np.int64)
        else:
            kind = {"b": "bool", "f": "float", "U": "str", "S": "bytes", "c": "complex"}.get(
                raw.dtype.kind, str(raw.dtype))
            bad = raw.tolist()[0] if raw.size else None
            raise ValueError(f"{name} must be integer ids, got {kind} value {bad!r}")
    if not allow_empty and len(arr) == 0:
        raise ValueError(f"{name} is empty: give at least one id")
    if nonnegative and len(arr) and arr.min() < 0:
        raise ValueError(f"{name} must be >= 0 (-1 pads results), got {int(arr.min())}")
    return arr


def check_ids_list(lists, name, count):
    """``count`` per-query id lists (e.g. ``exclude``), each validated by check_int_ids."""
    if isinstance(lists, (str, bytes)) or not hasattr(lists, "__len__"):
        raise ValueError(f"{name} must be a list of {count} lists of ids, got {lists!r:.200}")
    if len(lists) != count:
        raise ValueError(f"{name} must have one entry per query ({count}), got {len(lists)}")
    return [check_int_ids(e, name) for e in lists]


class ExternalIds:
    """A vocabulary: external ids (all int or all str) by internal id (position).

    ``ExternalIds(["u7", "u3"])``: "u7" is internal 0, "u3" internal 1.

    Args:
      values: 1-D sequence of unique ids, all integers (stored int64, >= 0) or all
        strings (stored as numpy unicode '<U', non-empty).
      what: "item" or "user", for messages.

    Lookups are vectorised (a sorted copy + ``np.searchsorted``; O(log n) per id, about
    16 bytes an id, where a Python dict would take ~100 bytes an id at 10⁷ items); ids
    added later sit in a small dict until the next re-sort.
    """

    def __init__(self, values, *, what="item"):
        self.what = what
        self._lock = threading.Lock()
        arr = self._coerce(values, f"{what} vocabulary", empty_ok=True)
        self.kind = "str" if arr.dtype.kind == "U" else "int"
        uniq = np.unique(arr)
        if len(uniq) != len(arr):
            vals, counts = np.unique(arr, return_counts=True)
            dup = [_py(v) for v in vals[counts > 1][:5]]
            raise ValueError(f"{what} vocabulary holds duplicate ids, e.g. {dup}")
        self._values = arr
        self._index()

    # -- validation -------------------------------------------------------------------
    def _coerce(self, values, name, *, empty_ok=False, kind=None, lookup=False):
        """values → int64 or '<U' 1-D array, refusing mixed, bool, float, "", and < 0
        (a negative id is refused as a new id and merely unknown in a lookup)."""
        if isinstance(values, (str, bytes, int, np.integer)):
            values = [values]
        if isinstance(values, np.ndarray):
            raw = values
        else:  # as objects: np.asarray(["a", 1]) would silently make "1" a string
            try:
                raw = np.asarray(list(values), dtype=object)
            except (TypeError, ValueError) as e:
                raise ValueError(f"{name} must be a flat list of ids, got {values!r:.200}"
                                 f" ({e})") from None
        if raw.ndim == 0:
            raw = raw.reshape(1)
        if raw.ndim != 1:
            raise ValueError(f"{name} must be a flat list of ids, got shape {raw.shape}")
        if len(raw) == 0:
            if not empty_ok:
                raise ValueError(f"{name} is empty: give at least one id")
            return np.zeros(0, np.int64) if kind != "str" else np.zeros(0, "<U1")
        if raw.dtype.kind == "O":
            items = raw.tolist()
            if all(isinstance(v, str) for v in items):
                raw = np.asarray(items, dtype=str)
            elif all(isinstance(v, (int, np.integer)) and not isinstance(v, bool)
                     for v in items):
                raw = check_int_ids(raw, name)
            else:
                first = str if isinstance(items[0], str) else int
                bad = next(v for v in items if isinstance(v, bool) or not (
                    isinstance(v, str) if first is str else isinstance(v, (int, np.integer))))
                raise ValueError(f"{name} must be all strings or all integers, got "
                                 f"{bad!r} ({type(bad).__name__}) among them")
        if raw.dtype.kind == "S":
            raise ValueError(f"{name} must be str or int ids, got bytes {raw[0]!r}")
        if raw.dtype.kind == "U":
            if kind == "int":
                raise ValueError(f"{name} must be integer ids (this {self.what} vocabulary "
                                 f"holds integers), got {str(raw[0])!r}")
            if not lookup and (raw == "").any():
                raise ValueError(f"{name} must not contain the empty string (it pads "
                                 f"results)")
            return raw
        if kind == "str":
            v = raw.tolist()[0]
            raise ValueError(f"{name} must be string ids (this {self.what} vocabulary "
                             f"holds strings), got {v!r} ({type(v).__name__})")
        return check_int_ids(raw, name, nonnegative=not lookup)

    # -- lookups ----------------------------------------------------------------------
    def _index(self):
        # one tuple, swapped in whole: a concurrent lookup sees the old or the new state
        order = np.argsort(self._values, kind="stable")
        self._state = (order, self._values[order], {})

    def __len__(self):
        return len(self._values)

    @property
    def values(self):
        """The external ids by internal id (a read-only view)."""
        v = self._values.view()
        v.flags.writeable = False
        return v

    @property
    def pad(self):
        """The value padding a result row: -1 (int ids) or "" (str ids)."""
        return "" if self.kind == "str" else -1

    def _find(self, arr):
        """Internal ids of the external ids ``arr`` (already coerced); -1 where unknown."""
        order, ordered, extra = self._state
        out = np.full(len(arr), -1, dtype=np.int64)
        if len(ordered):
            at = np.searchsorted(ordered, arr)
            at = np.minimum(at, len(ordered) - 1)
            hit = ordered[at] == arr
            out[hit] = order[at[hit]]
        if extra:
            for j in np.flatnonzero(out < 0).tolist():
                out[j] = extra.get(_py(arr[j]), -1)
        return out

    def find(self, ids):
        """Internal int64 ids [n] of ``ids`` (a 1-D array of this vocabulary's kind,
        already validated), -1 where an id is unknown: the lookup without the checks and
        without raising, for a stream of a log's ids (data/id_vocabulary.py)."""
        return self._find(np.asarray(ids))

    def lookup(self, ids, name=None):
        """Internal int64 ids [n] of external ``ids``; UnknownIdError names unknown ones."""
        name = name or f"{self.what}_ids"
        arr = self._coerce(ids, name, empty_ok=True, kind=self.kind, lookup=True)
        pos = self._find(arr)
        if (pos < 0).any():
            raise UnknownIdError([_py(v) for v in arr[pos < 0]], self.what, len(self))
        return pos

    def __contains__(self, external_id):
        try:
            return bool((self._find(self._coerce([external_id], "id", kind=self.kind,
                                                 lookup=True))
                         >= 0).all())
        except ValueError:
            return False

    def external(self, internal_ids):
        """External ids of internal ids (any shape); -1 maps to :attr:`pad`."""
        pos = np.asarray(internal_ids, dtype=np.int64)
        if pos.size and pos.max() >= len(self._values):
            raise ValueError(f"internal {self.what} id {int(pos.max())} is outside the "
                             f"vocabulary of {len(self)}")
        out = self._values[np.maximum(pos, 0)]
        if (pos < 0).any():
            if self.kind == "str":
                out = out.astype(object)
                out[pos < 0] = ""
                out = out.astype(str)
            else:
                out = np.where(pos < 0, -1, out)
        return out

    def extend(self, ids, name=None):
        """Internal ids of ``ids``, appending the unknown ones (in order) to the end.

        Returns (internal int64 [n], number of ids added).
        """
        name = name or f"{self.what}_ids"
        arr = self._coerce(ids, name, kind=self.kind if len(self) else None)
        with self._lock:
            if not len(self):
                self.kind = "str" if arr.dtype.kind == "U" else "int"
            pos = self._find(arr)
            new, pending = [], {}
            for j in np.flatnonzero(pos < 0).tolist():
                key = _py(arr[j])
                got = pending.get(key)
                if got is None:
                    got = len(self._values) + len(new)
                    pending[key] = got
                    new.append(arr[j])
                pos[j] = got
            if new:
                grown = np.concatenate([self._values, np.asarray(new, dtype=arr.dtype)])
                if self.kind == "int":
                    grown = grown.astype(np.int64)
                self._values = grown  # values first: a found id always has its value
                order, ordered, extra = self._state
                if len(extra) + len(pending) > max(1024, len(grown) // 20):
                    self._index()  # re-sort once the side dict grows
                else:
                    self._state = (order, ordered, {**extra, **pending})
        return pos, len(new)

    def __repr__(self):
        return f"ExternalIds({len(self)} {self.kind} {self.what} ids)"
