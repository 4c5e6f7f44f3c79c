"""Item and user feature tables: a CSV keyed by id, with typed feature columns.

A table has one row per item (or user), a key column (``item_id`` / ``user_id``, the same
ids as the interaction log) and feature columns of four kinds, the ones the feature
towers embed:

    categorical   a short value out of a set (genre, brand, country)  → embedding lookup
    text          free text (a title, a description)                 → token embeddings
    numeric       a number (price, year, age)                         → standardised
    multi_hot     a ``|``-separated set (Action|Comedy)               → mean embedding

The file is comma-, tab-, semicolon- or pipe-separated (detected, as for the interaction
log: ``interactions.detect_dialect``) and its first line names the columns.

Missing values. Ids and categorical, text and multi_hot values are text, read as written:
``NA``, ``null``, ``NaN``, ``N/A`` are values like any other (a country code, a brand).
Only an empty field is missing. In a numeric column an empty field and the pandas null
markers (``interactions.NULL_MARKERS``: ``NA``, ``NaN``, ``null``, ``N/A``…) are missing
(filled with the column's mean, as an empty cell is).

Kinds are named (``categorical=["brand"]``, as ``--item-categorical brand`` on the command
line) or inferred per column from its values:

* every value that is not empty or a null marker parses as a number (at least one does)
  → numeric;
* some value contains ``|`` → multi_hot;
* the values are long (mean ≥ 24 characters) or multi-word with mostly distinct values
  (mean ≥ 2 words and more than half the rows distinct) → text;
* otherwise (short values that repeat) → categorical.

``FeatureTable.summary()`` says what was read and inferred; the recipes print it.
"""

import csv
import dataclasses
import os
import re

import numpy as np

from twotower.data.interactions import (NULL_MARKERS, looks_like_data, utf8_error,
                                        detect_dialect, no_header_error)

KINDS = ("categorical", "text", "numeric", "multi_hot")
MULTI_SEP = "|"


@dataclasses.dataclass
class FeatureTable:
    """A feature table read from a file.

    key: the key column's name; ids: [n] external ids (int64 when all are integers,
      else ``<U``), one per row, unique.
    columns: name → [n] raw values (object arrays of str; numeric columns float64 with NaN
      for empty cells).
    kinds: name → one of KINDS; inferred: the names whose kind was inferred.
    source: the file.
    """

    key: str
    ids: np.ndarray
    columns: dict
    kinds: dict
    inferred: tuple = ()
    source: str = ""

    def __len__(self):
        return len(self.ids)

    def summary(self):
        """One line per column: its kind, whether inferred, and a hint of its values."""
        lines = [f"{self.source}: {len(self)} rows keyed by {self.key!r}"]
        for name, kind in self.kinds.items():
            v = self.columns[name]
            if kind == "numeric":
                finite = v[np.isfinite(v)]
                hint = (f"{finite.min():g}..{finite.max():g}" if len(finite) else "all empty")
                if 0 < len(finite) < len(v):
                    hint += f", {len(v) - len(finite)} missing"
            elif kind == "multi_hot":
                toks = {t for x in v for t in split_multi(x)}
                hint = f"{len(toks)} distinct tokens"
            elif kind == "text":
                hint = f"mean {np.mean([len(str(x).split()) for x in v]):.1f} words"
            else:
                hint = f"{len(set(v.tolist()))} distinct values"
            how = "inferred" if name in self.inferred else "named"
            lines.append(f"  {name:<20} {kind:<12} ({how}; {hint})")
        return "\n".join(lines)

    def aligned(self, ids):
        """The feature columns re-ordered to ``ids`` (e.g. a vocabulary): a dict name →
        array [len(ids)] (multi_hot: [len(ids), k] strings, "" pads). An id missing from
        the table gets "" (→ the OOV bucket) or, for numeric columns, the column's mean.
        NaN numeric cells also get the mean."""
        pos = {(v.item() if hasattr(v, "item") else v): i for i, v in enumerate(self.ids)}
        rows = np.asarray([pos.get(v.item() if hasattr(v, "item") else v, -1) for v in ids],
                          np.int64)
        have = rows >= 0
        out = {}
        for name, kind in self.kinds.items():
            col = self.columns[name]
            if kind == "numeric":
                mean = float(np.nanmean(col)) if np.isfinite(col).any() else 0.0
                vals = np.full(len(rows), mean, np.float64)
                vals[have] = col[rows[have]]
                vals[~np.isfinite(vals)] = mean
                out[name] = vals.astype(np.float32)
            elif kind == "multi_hot":
                lists = [split_multi(col[r]) if r >= 0 else [] for r in rows]
                width = max(1, max((len(t) for t in lists), default=1))
                arr = np.full((len(rows), width), "", dtype=object)
                for i, t in enumerate(lists):
                    arr[i, : len(t)] = t
                out[name] = arr
            else:
                vals = np.full(len(rows), "", dtype=object)
                vals[have] = col[rows[have]]
                out[name] = vals
        return out


def split_multi(value):
    """'Action|Comedy' → ['Action', 'Comedy'] (empty tokens dropped)."""
    return [t.strip() for t in str(value).split(MULTI_SEP) if t.strip()]


def _is_number(text):
    try:
        return bool(np.isfinite(float(text)))
    except ValueError:
        return False


_MISSING = frozenset(NULL_MARKERS)


def is_missing_number(text):
    """True for what a numeric column reads as missing: an empty field or a null marker."""
    return not text.strip() or text.strip() in _MISSING


def infer_kind(values):
    """The kind of a column of strings (see the module docstring for the rules)."""
    nonempty = [v for v in values if v.strip()]
    if not nonempty:
        return "categorical"
    present = [v for v in nonempty if not is_missing_number(v)]
    if present and all(_is_number(v) for v in present):
        return "numeric"
    if any(MULTI_SEP in v for v in nonempty):
        return "multi_hot"
    mean_len = np.mean([len(v) for v in nonempty])
    mean_words = np.mean([len(v.split()) for v in nonempty])
    distinct = len(set(nonempty)) / len(nonempty)
    if mean_len >= 24 or (mean_words >= 2 and distinct > 0.5):
        return "text"
    return "categorical"


def _names(arg, flag):
    if arg is None:
        return []
    if isinstance(arg, str):
        arg = arg.split(",")
    names = [a.strip() for a in arg if a and a.strip()]
    for n in names:
        if not isinstance(n, str):
            raise ValueError(f"{flag}: column names must be strings, got {n!r}")
    return names


def read_feature_table(path, key, *, categorical=None, text=None, numeric=None,
                       multi_hot=None, infer=True, flag_prefix="--item"):
    """Reads a CSV feature table (UTF-8, header line; the delimiter detected) keyed by
    column ``key``.

    Args:
      path: the CSV file.
      key: the id column ("item_id", "user_id"); ids are int64 when every one is an
        integer written without leading zeros, else strings (as in the interaction log).
      categorical, text, numeric, multi_hot: column names (lists or comma-separated
        strings) of each kind.
      infer: give every other column a kind from its values (``infer_kind``); False:
        only the named columns are read.
      flag_prefix: how the caller's command line names these options, for messages.

    Raises:
      FileNotFoundError: no such file.
      ValueError: an empty file, a first line that is data rather than a header, no
        ``key`` column, a named column that is not in the file, a column named twice, a
        duplicate or empty id, a numeric column with a non-number (all naming the file,
        the line and the value), bytes that are not UTF-8.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"feature table {path!r} does not exist")
    if os.path.getsize(path) == 0:
        raise ValueError(f"{path}: the feature table is empty (expected a header line with "
                         f"{key!r} and feature columns)")
    dialect = detect_dialect(path)
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            rows = list(csv.reader(f, delimiter=dialect.delimiter))
    except UnicodeDecodeError:
        raise utf8_error(path) from None
    header = [h.strip() for h in rows[0]]
    body = [(lineno, r) for lineno, r in enumerate(rows[1:], start=2) if any(x.strip() for x in r)]
    if key not in header:
        if looks_like_data(header) is not None:
            raise no_header_error(path, dialect, (key,))
        raise ValueError(f"{path}: no key column {key!r}; the file has columns {header} "
                         f"({dialect.description})")
    named = {}
    for kind, arg in (("categorical", categorical), ("text", text), ("numeric", numeric),
                      ("multi_hot", multi_hot)):
        flag = f"{flag_prefix}-{kind.replace('_', '-')}"
        for n in _names(arg, flag):
            if n not in header:
                raise ValueError(f"{flag} {n!r}: {path} has no such column; it has {header}")
            if n == key:
                raise ValueError(f"{flag} {n!r}: that is the key column of {path}")
            if n in named:
                raise ValueError(f"column {n!r} of {path} is named as both {named[n]} and {kind}")
            named[n] = kind
    width = len(header)
    for lineno, r in body:
        if len(r) != width:
            raise ValueError(f"{path}: line {lineno} has {len(r)} fields, the header has {width}")
    k = header.index(key)
    raw_ids = [r[k].strip() for _, r in body]
    for (lineno, _), v in zip(body, raw_ids):
        if not v:
            raise ValueError(f"{path}: line {lineno}: empty {key!r}")
    as_int = bool(raw_ids) and all(re.fullmatch(r"-?(0|[1-9][0-9]{0,17})", v) for v in raw_ids)
    ids = np.asarray([int(v) for v in raw_ids], np.int64) if as_int else np.asarray(raw_ids, str)
    first = {}
    for (lineno, _), v in zip(body, raw_ids):
        if v in first:
            raise ValueError(f"{path}: duplicate {key} {v!r} at lines {first[v]} and {lineno}")
        first[v] = lineno
    kinds, inferred, columns = {}, [], {}
    for j, name in enumerate(header):
        if name == key or not name:
            continue
        values = [r[j] for _, r in body]
        if name in named:
            kind = named[name]
        elif infer:
            kind = infer_kind(values)
            inferred.append(name)
        else:
            continue
        if kind == "numeric":
            col = np.full(len(values), np.nan)
            for i, ((lineno, _), v) in enumerate(zip(body, values)):
                if not is_missing_number(v):
                    if not _is_number(v):
                        raise ValueError(f"{path}: line {lineno}: numeric column {name!r} "
                                         f"holds {v!r}")
                    col[i] = float(v)
        else:
            col = np.asarray([v.strip() for v in values], dtype=object)
        kinds[name], columns[name] = kind, col
    return FeatureTable(key=key, ids=ids, columns=columns, kinds=kinds,
                        inferred=tuple(inferred), source=path)
