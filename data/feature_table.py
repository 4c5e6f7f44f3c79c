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

Scale. The file is streamed through Arrow's CSV reader (every column read as text, only
an empty field null, as the interaction log is read) and every step after it — blank
lines, empty and duplicate ids, numbers, kind inference, alignment to a vocabulary,
multi-hot splitting — is a vectorised Arrow / NumPy operation, so a table of 10^6–10^7
rows is held as arrays (float64, int64, fixed-width ``<U`` strings), never as one Python
object per cell. A ``<U`` column costs 4 bytes × its longest value per row. Line numbers
in messages are found by re-reading the file, only when one is raised.
"""

import csv
import dataclasses
import io
import os

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from twotower.data.interactions import (INT_LIKE, NULL_MARKERS, looks_like_data, utf8_error,
                                        detect_dialect, no_header_error)
from twotower.data.log_files import open_binary

KINDS = ("categorical", "text", "numeric", "multi_hot")
MULTI_SEP = "|"

_CHUNK = 1 << 16     # rows converted from Arrow to NumPy at a time (bounds the temporaries)


@dataclasses.dataclass
class FeatureTable:
    """A feature table read from a file.

    key: the key column's name; ids: [n] external ids (int64 when all are integers,
      else ``<U``), one per row, unique.
    columns: name → [n] array of raw values: numeric columns float64 with NaN where
      missing; the other kinds fixed-width unicode (``<U``) with surrounding whitespace
      stripped and "" for an empty field (multi_hot values unsplit: "a|b").
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
                tokens, _ = _split_tokens(_arrow_text(v))
                hint = f"{pc.count_distinct(tokens).as_py() if len(tokens) else 0} distinct tokens"
            elif kind == "text":
                words = _word_counts(_arrow_text(v))
                hint = f"mean {np.mean(words) if len(words) else float('nan'):.1f} words"
            else:
                hint = f"{pc.count_distinct(_arrow_text(v)).as_py()} distinct values"
            how = "inferred" if name in self.inferred else "named"
            lines.append(f"  {name:<20} {kind:<12} ({how}; {hint})")
        return "\n".join(lines)

    def rows_of(self, ids):
        """[len(ids)] int64: the row of each of ``ids`` in this table, -1 when absent
        (ids are matched as values of the same kind: integers to int64 ids, strings to
        string ids; a vectorised hash lookup, no per-row Python)."""
        query = np.asarray(ids)
        if query.ndim != 1:
            query = query.reshape(-1)
        table = self.ids
        if query.dtype == object:
            want_int = table.dtype.kind in "iu"
            keep = np.fromiter(((isinstance(v, (int, np.integer)) and not isinstance(v, bool))
                                if want_int else isinstance(v, (str, np.str_))
                                for v in query), bool, len(query))
            vals = query[keep].astype(np.int64 if want_int else str)
            rows = np.full(len(query), -1, np.int64)
            rows[keep] = _positions(table, vals)
            return rows
        if (table.dtype.kind in "iu") != (query.dtype.kind in "iu") or query.dtype.kind not in "iuUS":
            return np.full(len(query), -1, np.int64)
        if query.dtype.kind == "S":
            query = query.astype(str)
        return _positions(table, query)

    def aligned(self, ids):
        """The feature columns re-ordered to ``ids`` (e.g. a vocabulary): a dict name →
        array [len(ids)] (multi_hot: [len(ids), k] strings, "" pads; categorical and
        text ``<U`` strings, or Python strings for a long-tailed column; numeric float32). An id missing from the table gets "" (→ the
        OOV bucket) or, for numeric columns, the column's mean. NaN numeric cells also get
        the mean."""
        rows = self.rows_of(ids)
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
                out[name] = _padded_tokens(col, rows, have)
            else:
                col = col if col.dtype.kind in "UO" else col.astype(str)
                vals = col[np.where(have, rows, 0)] if len(col) else np.full(
                    len(rows), "", col.dtype)
                vals[~have] = ""
                out[name] = vals
        return out


def _positions(table, values):
    """For each of ``values``, its row in ``table`` (unique ids), -1 when absent: one
    hash lookup (Arrow's index_in), no sort and no per-row Python."""
    if len(table) == 0 or len(values) == 0:
        return np.full(len(values), -1, np.int64)
    if table.dtype.kind in "iu":
        values = values.astype(table.dtype)     # one Arrow type on both sides
    found = pc.index_in(pa.array(values), value_set=pa.array(table))
    return pc.fill_null(found, -1).to_numpy(zero_copy_only=False).astype(np.int64)


def _arrow_text(values):
    """Strings (a list, a NumPy array, an Arrow array) → an Arrow string array (None → null)."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if isinstance(values, pa.Array):
        return values if pa.types.is_string(values.type) else pc.cast(values, pa.string())
    arr = np.asarray(values)
    if arr.dtype.kind == "U":
        return pa.array(arr.reshape(-1), pa.string())
    return pa.array([None if v is None else str(v) for v in arr.reshape(-1)], pa.string())


def _to_unicode(arr):
    """An Arrow string array (null → "") → a NumPy ``<U`` array as wide as its longest
    value, converted a chunk at a time — or, when that longest value is far longer than
    the typical one (a free-text column with a long tail, where every row would pay for
    the longest), an array of Python strings, each as long as itself."""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    arr = pc.fill_null(arr, "")
    n = len(arr)
    lengths = pc.utf8_length(arr)
    width = max(1, (pc.max(lengths).as_py() or 0) if n else 1)
    mean = (pc.sum(lengths).as_py() or 0) / n if n else 0.0
    if width > max(64, 4 * mean):
        out = np.empty(n, object)
        for start in range(0, n, _CHUNK):
            out[start:start + _CHUNK] = arr.slice(start, _CHUNK).to_pylist()
        return out
    out = np.empty(n, f"<U{width}")
    for start in range(0, n, _CHUNK):
        out[start:start + _CHUNK] = arr.slice(start, _CHUNK).to_numpy(zero_copy_only=False)
    return out


def _split_tokens(arr):
    """'|'-separated values → (tokens, row): every non-empty, stripped token and the row
    it came from (Arrow / NumPy arrays, rows in order)."""
    parts = pc.split_pattern(pc.fill_null(arr, ""), MULTI_SEP)
    flat = pc.utf8_trim_whitespace(pc.list_flatten(parts))
    parent = pc.list_parent_indices(parts).to_numpy(zero_copy_only=False)
    keep = pc.not_equal(flat, "")
    return flat.filter(keep), parent[keep.to_numpy(zero_copy_only=False)]


def _padded_tokens(col, rows, have):
    """[len(rows), k] ``<U`` tokens of multi_hot ``col`` at ``rows`` ("" pads and where a
    row is absent; k ≥ 1, the most tokens any row has)."""
    present = np.flatnonzero(have)
    tokens, parent = _split_tokens(_arrow_text(col).take(pa.array(rows[present])))
    counts = np.bincount(parent, minlength=len(present))
    width = max(1, int(counts.max()) if len(counts) else 1)
    tok = _to_unicode(tokens)
    out = np.full((len(rows), width), "", dtype=tok.dtype)
    if len(tok):
        starts = np.cumsum(counts) - counts
        out[present[parent], np.arange(len(tok)) - starts[parent]] = tok
    return out


def _word_counts(arr):
    """Words (whitespace-separated, as ``str.split()``) in each value; 0 for null/blank."""
    trimmed = pc.utf8_trim_whitespace(pc.fill_null(arr, ""))
    words = pc.list_value_length(pc.utf8_split_whitespace(trimmed)).to_numpy(
        zero_copy_only=False)
    return np.where(pc.equal(trimmed, "").to_numpy(zero_copy_only=False), 0, words)


def split_multi(value):
    """'Action|Comedy' → ['Action', 'Comedy'] (empty tokens dropped)."""
    return [t.strip() for t in str(value).split(MULTI_SEP) if t.strip()]


def _is_number(text):
    try:
        return bool(np.isfinite(float(text)))
    except ValueError:
        return False


_MISSING = frozenset(NULL_MARKERS)
_MARKERS = pa.array(NULL_MARKERS, pa.string())


def is_missing_number(text):
    """True for what a numeric column reads as missing: an empty field or a null marker."""
    return not text.strip() or text.strip() in _MISSING


# what Arrow's cast parses exactly as float() does; other text goes to float() itself
_PLAIN_NUMBER = r"^[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?$"


def _parse_numbers(arr):
    """A text column (Arrow; null = empty field) as numbers: (float64 [n], NaN where
    missing — empty or a null marker; the index of the first value that is not a finite
    number, or None). Plain decimals are parsed by Arrow; the rest, one by one with
    Python's float() (which also reads "1_000" or "١٢"), up to the first that fails."""
    text = pc.utf8_trim_whitespace(arr)
    missing = pc.fill_null(pc.or_(pc.equal(text, ""), pc.is_in(text, value_set=_MARKERS)),
                           True)
    absent = missing.to_numpy(zero_copy_only=False)
    plain = pc.fill_null(pc.match_substring_regex(text, _PLAIN_NUMBER), False)
    values = pc.cast(pc.if_else(plain, text, pa.scalar(None, pa.string())),
                     pa.float64()).to_numpy(zero_copy_only=False).astype(np.float64)
    first_bad = len(values)
    for i in np.flatnonzero(~plain.to_numpy(zero_copy_only=False) & ~absent):
        try:
            values[i] = float(text[int(i)].as_py())
        except ValueError:
            first_bad = int(i)
            break
        if not np.isfinite(values[i]):
            first_bad = int(i)
            break
    values[absent] = np.nan
    nonfinite = np.flatnonzero(~absent[:first_bad] & ~np.isfinite(values[:first_bad]))
    if len(nonfinite):
        first_bad = int(nonfinite[0])
    return values, (first_bad if first_bad < len(values) else None)


def infer_kind(values):
    """The kind of a column of strings (see the module docstring for the rules), from
    every value (a list, a NumPy array or an Arrow string array, null = empty), with
    vectorised Arrow operations."""
    arr = _arrow_text(values)
    nonempty = arr.filter(pc.fill_null(pc.not_equal(pc.utf8_trim_whitespace(arr), ""), False))
    if len(nonempty) == 0:
        return "categorical"
    numbers, bad = _parse_numbers(nonempty)
    if bad is None and np.isfinite(numbers).any():
        return "numeric"
    if pc.any(pc.match_substring(nonempty, MULTI_SEP)).as_py():
        return "multi_hot"
    mean_len = pc.mean(pc.utf8_length(nonempty)).as_py()
    mean_words = float(np.mean(_word_counts(nonempty)))
    distinct = pc.count_distinct(nonempty).as_py() / len(nonempty)
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


def _records(path, dialect):
    """(line number, fields) of every record after the header, as ``csv.reader`` reads
    them (a record's number counts records, blank ones included, from 1 for the header)."""
    with open_binary(path) as f:
        text = io.TextIOWrapper(f, encoding="utf-8-sig", errors="replace", newline="")
        reader = csv.reader(text, delimiter=dialect.delimiter)
        next(reader, None)
        yield from enumerate(reader, start=2)


def _line_of(path, dialect, index):
    """The line number of data row ``index`` (0-based, blank records skipped)."""
    seen = -1
    for lineno, r in _records(path, dialect):
        if any(x.strip() for x in r):
            seen += 1
            if seen == index:
                return lineno
    return index + 2


def _ragged_error(path, dialect, width):
    for lineno, r in _records(path, dialect):
        if any(x.strip() for x in r) and len(r) != width:
            return ValueError(f"{path}: line {lineno} has {len(r)} fields, the header has "
                              f"{width}")
    return ValueError(f"{path}: a line has more or fewer fields than the header's {width}")


def _read_text_columns(path, dialect, wanted):
    """The columns at positions ``wanted`` of every non-blank data line, as one Arrow
    table of strings (null = an empty field), streamed block by block. Raises the
    module's ValueErrors for bytes that are not UTF-8 and for a ragged line."""
    width = len(dialect.header)
    names = [f"c{j}" for j in range(width)]     # positions: header names may repeat
    ragged = []

    def on_invalid(row):
        if not row.text.strip():
            return "skip"       # a line of spaces: blank, as csv.reader's caller reads it
        ragged.append(row)
        return "error"

    try:
        reader = pacsv.open_csv(
            path,
            read_options=pacsv.ReadOptions(block_size=1 << 24, column_names=names,
                                           skip_rows=1),
            parse_options=pacsv.ParseOptions(delimiter=dialect.delimiter,
                                             newlines_in_values=True,
                                             invalid_row_handler=on_invalid),
            convert_options=pacsv.ConvertOptions(
                include_columns=[names[j] for j in wanted],
                column_types={names[j]: pa.string() for j in wanted},
                null_values=[""], strings_can_be_null=True, quoted_strings_can_be_null=True))
        table = reader.read_all()
    except pa.ArrowInvalid as e:
        if ragged or ("Expected" in str(e) and "columns" in str(e)):
            raise _ragged_error(path, dialect, width) from None
        if "utf8" in str(e).lower():
            raise utf8_error(path) from None
        raise ValueError(f"{path}: {e}") from None
    # a line whose every field is blank (",,", " ; ") is no row, as a blank line is not
    blank = None
    for col in table.columns:
        b = pc.fill_null(pc.equal(pc.utf8_trim_whitespace(col), ""), True)
        blank = b if blank is None else pc.and_(blank, b)
    if blank is not None and pc.any(blank).as_py():
        table = table.filter(pc.invert(blank))
    return {j: table.column(names[j]).combine_chunks() for j in wanted}


def read_feature_table(path, key, *, categorical=None, text=None, numeric=None,
                       multi_hot=None, infer=True, flag_prefix="--item"):
    """Reads a CSV feature table (UTF-8, header line; the delimiter detected) keyed by
    column ``key``, streamed through Arrow's CSV reader into arrays (see the module
    docstring: no Python object per cell).

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
        line with more or fewer fields than the header, a duplicate or empty id, a
        numeric column with a non-number (all naming the file, the line and the value),
        bytes that are not UTF-8.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"feature table {path!r} does not exist")
    if os.path.getsize(path) == 0:
        raise ValueError(f"{path}: the feature table is empty (expected a header line with "
                         f"{key!r} and feature columns)")
    dialect = detect_dialect(path)
    header = list(dialect.header)
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
    k = header.index(key)
    features = [j for j, name in enumerate(header)
                if j != k and name and name != key and (infer or name in named)]
    raw = _read_text_columns(path, dialect, [k] + features)

    raw_ids = pc.utf8_trim_whitespace(raw.pop(k))
    empty = pc.fill_null(pc.equal(raw_ids, ""), True)
    if pc.any(empty).as_py():
        first = int(np.flatnonzero(empty.to_numpy(zero_copy_only=False))[0])
        raise ValueError(f"{path}: line {_line_of(path, dialect, first)}: empty {key!r}")
    as_int = len(raw_ids) > 0 and pc.all(pc.match_substring_regex(raw_ids, INT_LIKE)).as_py()
    ids = (pc.cast(raw_ids, pa.int64()).to_numpy(zero_copy_only=False).astype(np.int64)
           if as_int else _to_unicode(raw_ids))
    # "-0" is the one integer id that another spelling ("0") can repeat
    if pc.count_distinct(raw_ids).as_py() < len(raw_ids) or (
            as_int and pc.any(pc.equal(raw_ids, "-0")).as_py()
            and len(np.unique(ids)) < len(ids)):
        order = np.argsort(ids, kind="stable")
        same = ids[order][1:] == ids[order][:-1]
        second = int(order[1:][same].min())
        first = int(np.flatnonzero(ids == ids[second])[0])
        raise ValueError(f"{path}: duplicate {key} {raw_ids[second].as_py()!r} at lines "
                         f"{_line_of(path, dialect, first)} and "
                         f"{_line_of(path, dialect, second)}")
    del raw_ids, empty

    kinds, inferred, columns = {}, [], {}
    for j in features:
        name = header[j]
        values = raw.pop(j)
        if name in named:
            kind = named[name]
        else:
            kind = infer_kind(values)
            inferred.append(name)
        if kind == "numeric":
            col, bad = _parse_numbers(values)
            if bad is not None:
                raise ValueError(f"{path}: line {_line_of(path, dialect, bad)}: numeric "
                                 f"column {name!r} holds {values[bad].as_py()!r}")
        else:
            col = _to_unicode(pc.utf8_trim_whitespace(values))
        kinds[name], columns[name] = kind, col
    return FeatureTable(key=key, ids=ids, columns=columns, kinds=kinds,
                        inferred=tuple(inferred), source=path)
