"""A user's own interaction log: one format, one reader, from a CSV to sharded Parquet.

The log is a table with one row per interaction (a click, a watch, a purchase):

    user_id     string or integer   who
    item_id     string or integer   what
    timestamp   integer seconds     when (or ISO-8601 text such as 2024-05-01T12:00:00,
                                    converted to Unix seconds); orders each user's history
                                    and drives the leave-last-out / temporal split
    (optional)  any other columns   per-interaction query features (device, country…)
                                    and ``rating`` (``--min-rating`` keeps rows >= it)

It is read from a delimited text file with a header line (``.csv``, ``.tsv``, optionally
gzipped; the three column names can be renamed: ``ColumnNames``), from one Parquet file, or
from a folder of Parquet shards (``part-00000.parquet``, …, read in name order).
``csv_to_parquet`` (data/parquet_shards.py) turns a CSV into shards in bounded memory;
``interactions_dataset`` (data/interactions_dataset.py) streams shards into ``tf.data``;
``build_vocabularies`` (data/id_vocabulary.py) makes the user and item vocabularies and
their counts in one pass. docs/data.md says why Parquet.

Text files: data/log_files.py (the delimiter is detected; the first line is the header).

Missing values. Ids are strings, read as written: ``NA``, ``N/A``, ``null``, ``NaN``,
``#N/A``, ``None`` are ids like any other (pandas and pyarrow would read them as missing).
Only an empty field (or ``""``) is missing, and a missing user, item or timestamp is an
error. In numeric columns only — ``rating``, numeric features — the pandas null markers
(``NULL_MARKERS``) and an empty field are a missing value.

Errors: a missing column, an empty file, a first line that is data (no header), a line
with more or fewer fields than the header, bytes that are not UTF-8, an empty field, a
timestamp that cannot be parsed or a rating that is not a number raise a ValueError naming
the file, the line (CSV) or row (Parquet) and the value.
"""

import csv
import dataclasses
import io
import os

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from twotower.data.log_files import (COLUMNS, DELIMITERS, file_columns, is_parquet,  # noqa: F401
                                      list_files, looks_like_data, no_header_error,
                                      open_binary, parse_datetime, describe_file, detect_dialect,
                                      utf8_error)



# What pandas (read_csv na_values) and pyarrow (ConvertOptions.null_values) read as a
# missing value by default. Ids and categorical features are text, read as written ("NA"
# is a country, "null" a user name); only numeric columns (rating, numeric features) read
# these as missing.
NULL_MARKERS = ("#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND",
                "1.#QNAN", "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null")


# Column names other tools use for the same thing, accepted when the default is absent
# (MovieLens's ratings.csv says userId, movieId).
ALIASES = {
    "user_id": ("userId", "user", "userid", "UserID", "customer_id", "visitor_id"),
    "item_id": ("itemId", "movieId", "item", "itemid", "ItemID", "product_id", "article_id"),
    "timestamp": ("ts", "time", "event_time", "datetime", "date", "Timestamp"),
}


# int64 without leading zeros ("007" stays a string id, it is not 7)
INT_LIKE = r"^-?(0|[1-9][0-9]{0,17})$"


@dataclasses.dataclass(frozen=True)
class ColumnNames:
    """The log's column names for user, item and timestamp (``time=None``: no timestamp
    column; rows are in time order, each one a step later than the previous)."""

    user: str = "user_id"
    item: str = "item_id"
    time: str | None = "timestamp"

    def __post_init__(self):
        for field in ("user", "item"):
            v = getattr(self, field)
            if not isinstance(v, str) or not v:
                raise ValueError(f"the {field} column name must be a non-empty string, got {v!r}")
        if self.time is not None and (not isinstance(self.time, str) or not self.time):
            raise ValueError(f"the time column name must be a non-empty string or None, "
                             f"got {self.time!r}")


@dataclasses.dataclass
class Interactions:
    """A log read into memory.

    user_id, item_id: [n] external ids, int64 or unicode (``<U``) arrays.
    timestamp: [n] int64 Unix seconds (or row numbers when the log has no time column).
    extra: dict of [n] arrays, the other columns that were asked for (strings, or float64
      for ``rating``).
    source: the path read; name: its base name (for titles).
    """

    user_id: np.ndarray
    item_id: np.ndarray
    timestamp: np.ndarray
    extra: dict
    source: str = ""
    name: str = ""

    def __len__(self):
        return len(self.item_id)


def resolve_columns(file, columns=None, extra=(), *, extra_flag="extra column"):
    """Maps the wanted columns onto ``file``'s columns: returns (ColumnNames actually in the
    file, list of extra columns present). A default name that is absent falls back to a
    known alias (``userId``, ``movieId``…).

    Raises ValueError, naming the file: a text file whose first line is data rather than
    a header; a missing column (naming the column, the flag that renames it — ``--user-col``
    … — and the columns the file has); a missing extra column (naming ``extra_flag``).
    """
    columns = columns or ColumnNames()
    have = file_columns(file)
    resolved = {}
    for field, default in (("user", "user_id"), ("item", "item_id"), ("time", "timestamp")):
        name = getattr(columns, field)
        if name is None:
            resolved[field] = None
            continue
        if name not in have and name == default:
            name = next((a for a in ALIASES[default] if a in have), name)
        if name not in have:
            if not is_parquet(file) and looks_like_data(have) is not None:
                raise no_header_error(file, detect_dialect(file),
                                      COLUMNS + ("rating",))
            hint = ""
            if not is_parquet(file) and len(have) == 1:
                hint = (f" (line 1 has a single field: twotower reads fields separated by "
                        f"{', '.join(DELIMITERS.values())})")
            raise ValueError(
                f"{file}: no {field} column {getattr(columns, field)!r}; the file has columns "
                f"{have}{hint}. Name the {field} column with --{field}-col")
        resolved[field] = name
    missing = [c for c in extra if c not in have]
    if missing:
        raise ValueError(f"{extra_flag} {', '.join(missing)}: {file} has no such column; it "
                         f"has columns {have}")
    return ColumnNames(**resolved), list(extra)


def _csv_line_of_row(file, row):
    """The 1-based line number of data row ``row`` (0-based; blank lines skipped)."""
    seen = -1
    with open_binary(file) as f:
        f.readline()
        for lineno, line in enumerate(f, start=2):
            if line.strip():
                seen += 1
                if seen == row:
                    return lineno
    return row + 2


def where_in_file(file, row):
    if is_parquet(file):
        return f"{file}: row {row + 1}"
    return f"{file}: line {_csv_line_of_row(file, row)}"


def _timestamps(arr, file, first_row):
    """An Arrow column of times → int64 Unix seconds. Integers are taken as seconds,
    floats are floored, Arrow timestamps/dates converted, strings parsed as integers,
    numbers or ISO-8601 dates (naive times are UTC)."""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    t = arr.type
    if pa.types.is_integer(t):
        return arr.to_numpy(zero_copy_only=False).astype(np.int64)
    if pa.types.is_floating(t):
        v = arr.to_numpy(zero_copy_only=False)
        if not np.all(np.isfinite(v)):
            bad = int(np.flatnonzero(~np.isfinite(v))[0])
            raise ValueError(f"{where_in_file(file, first_row + bad)}: timestamp {v[bad]!r} is not a "
                             f"finite number")
        return np.floor(v).astype(np.int64)
    if pa.types.is_timestamp(t):
        return pc.cast(arr, pa.timestamp("s", tz=t.tz)).cast(pa.int64()).to_numpy(
            zero_copy_only=False)
    if pa.types.is_date(t):
        return pc.cast(pc.cast(arr, pa.timestamp("s")), pa.int64()).to_numpy(
            zero_copy_only=False)
    if not (pa.types.is_string(t) or pa.types.is_large_string(t)):
        raise ValueError(f"{file}: timestamp column has type {t}, expected integers, "
                         f"floats, dates or text")
    for target in (pa.int64(), pa.float64()):
        try:
            return _timestamps(pc.cast(pc.utf8_trim_whitespace(arr), target), file, first_row)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            pass
    values = arr.to_pylist()
    out = np.empty(len(values), np.int64)
    for i, text in enumerate(values):
        try:
            out[i] = parse_datetime(text)
        except (ValueError, TypeError, OverflowError):
            raise ValueError(
                f"{where_in_file(file, first_row + i)}: cannot parse timestamp {text!r} (expected "
                f"Unix seconds such as 1714564800 or ISO-8601 such as 2024-05-01T12:00:00)"
            ) from None
    return out


def _check_no_nulls(batch, names, file, first_row):
    for name in names:
        col = batch.column(name)
        if col.null_count:
            bad = int(np.flatnonzero(col.is_null().to_numpy(zero_copy_only=False))[0])
            raise ValueError(f"{where_in_file(file, first_row + bad)}: empty {name!r} field")


def parse_ratings(col, file, first_row, name="rating"):
    """A rating column (Arrow, one batch) → float64 numpy, NaN where missing: an empty
    field or one of NULL_MARKERS. Raises ValueError naming the file, line and value for
    text that is not a number."""
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    t = col.type
    if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_null(t):
        return pc.cast(col, pa.float64()).to_numpy(zero_copy_only=False)
    if not (pa.types.is_string(t) or pa.types.is_large_string(t)):
        raise ValueError(f"{file}: {name!r} column has type {t}, expected numbers")
    text = pc.utf8_trim_whitespace(col)
    missing = pc.fill_null(pc.or_(pc.equal(text, ""),
                                  pc.is_in(text, value_set=pa.array(NULL_MARKERS))), True)
    text = pc.if_else(missing, pa.scalar(None, text.type), text)
    try:
        return pc.cast(text, pa.float64()).to_numpy(zero_copy_only=False)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pass
    values = text.to_pylist()
    for i, v in enumerate(values):
        if v is None:
            continue
        try:
            float(v)
        except ValueError:
            raise ValueError(
                f"{where_in_file(file, first_row + i)}: {name!r} value {v!r} is not a number (a "
                f"rating must be a number; an empty field is a missing rating)") from None
    raise ValueError(f"{file}: {name!r} column is not numeric")


def _raw_batches(file, names, batch_size):
    """Arrow record batches of the columns ``names`` of one file (text: every column read
    as text, so an id column is never typed from its first block alone; the delimiter
    detected by ``detect_dialect``; only an empty field is null — ``NA``, ``null``… are
    text)."""
    if is_parquet(file):
        try:
            pf = pq.ParquetFile(file)
            for b in pf.iter_batches(batch_size=batch_size, columns=names):
                yield b
        except (pa.ArrowInvalid, OSError) as e:
            raise ValueError(f"{file}: not a readable Parquet file ({e})") from None
        return
    dialect = detect_dialect(file)
    try:
        reader = pacsv.open_csv(
            file,
            # the header as detect_dialect read it (names stripped of spaces)
            read_options=pacsv.ReadOptions(block_size=1 << 22,
                                           column_names=list(dialect.header), skip_rows=1),
            parse_options=pacsv.ParseOptions(delimiter=dialect.delimiter),
            convert_options=pacsv.ConvertOptions(
                include_columns=names, column_types={n: pa.string() for n in names},
                null_values=[""], strings_can_be_null=True,
                quoted_strings_can_be_null=True))
        pending = None
        for b in reader:
            # rebatch to batch_size rows (the CSV reader cuts by bytes)
            pending = b if pending is None else pa.Table.from_batches([pending, b]) \
                .combine_chunks().to_batches()[0]
            while pending.num_rows >= batch_size:
                yield pending.slice(0, batch_size)
                pending = pending.slice(batch_size)
        if pending is not None and pending.num_rows:
            yield pending
    except pa.ArrowInvalid as e:
        if "UTF8" in str(e) or "utf8" in str(e).lower():
            raise utf8_error(file) from None
        if "Expected" in str(e) and "columns" in str(e):
            raise _ragged_line_error(file, dialect) from None
        raise ValueError(f"{file}: {e}") from None


def _ragged_line_error(file, dialect):
    """The ValueError for the first line whose field count differs from the header's."""
    width = len(dialect.header)
    with open_binary(file) as f:
        text = io.TextIOWrapper(f, encoding="utf-8-sig", errors="replace", newline="")
        reader = csv.reader(text, delimiter=dialect.delimiter)
        for record in reader:
            if record and len(record) != width and reader.line_num > 1:
                return ValueError(
                    f"{file}: line {reader.line_num} has {len(record)} fields, the header has "
                    f"{width} ({dialect.description}): "
                    f"{dialect.delimiter.join(record)[:80]!r}")
    return ValueError(f"{file}: a line has more or fewer fields than the header's {width}")


def iter_batches(path, columns=None, *, extra=(), batch_size=65536):
    """Streams a log as Arrow record batches with the columns renamed to ``user_id``,
    ``item_id``, ``timestamp`` (int64 seconds) plus ``extra``. Ids keep their file type
    (CSV: text). Memory: one batch.

    Yields (file, first_row, batch).
    """
    for file in list_files(path):
        cols, extra_cols = resolve_columns(file, columns, extra)
        names = [cols.user, cols.item] + ([cols.time] if cols.time else []) + \
            [c for c in extra_cols if c not in (cols.user, cols.item, cols.time)]
        row = 0
        for b in _raw_batches(file, names, batch_size):
            _check_no_nulls(b, [cols.user, cols.item] + ([cols.time] if cols.time else []),
                            file, row)
            ts = (_timestamps(b.column(cols.time), file, row) if cols.time
                  else np.arange(row, row + b.num_rows, dtype=np.int64))
            arrays = {"user_id": b.column(cols.user), "item_id": b.column(cols.item),
                      "timestamp": pa.array(ts, pa.int64())}
            for c in extra_cols:
                arrays[c] = b.column(c)
            yield file, row, pa.RecordBatch.from_pydict(arrays)
            row += b.num_rows


def all_int_like(arr):
    """True when every value of a text column is an integer written without leading zeros."""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if not (pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)):
        return pa.types.is_integer(arr.type)
    if len(arr) == 0:
        return True
    return bool(pc.all(pc.match_substring_regex(arr, INT_LIKE)).as_py())


def ids_to_numpy(arr, as_int):
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if as_int:
        return pc.cast(arr, pa.int64()).to_numpy(zero_copy_only=False).astype(np.int64)
    if pa.types.is_integer(arr.type):
        arr = pc.cast(arr, pa.string())
    return np.asarray(arr.to_pylist(), dtype=str)


def read_interactions(path, columns=None, *, extra=(), id_type="auto", progress=False):
    """Reads a whole log (CSV with a header, a Parquet file or a folder of shards) into an
    Interactions.

    Args:
      path: the file or folder.
      columns: ColumnNames (default user_id, item_id, timestamp; ``userId``/``movieId``
        and other aliases are accepted when the default is absent).
      extra: other columns to keep (query features, as text; ``rating``, as float64 with
        NaN for an empty field or a NULL_MARKERS value).
      id_type: "auto" (integer ids when every id of a column is an integer, else strings),
        "string" or "int".
      progress: a bar of the rows read (on a terminal only: none in a log file).

    Raises ValueError naming file and line/row for bad input (see the module docstring).
    """
    if id_type not in ("auto", "string", "int"):
        raise ValueError(f"id_type must be 'auto', 'string' or 'int', got {id_type!r}")
    from tqdm.auto import tqdm

    batches, ratings = [], []
    name = os.path.basename(os.path.normpath(os.fspath(path)))
    with tqdm(desc=f"reading {name}", unit=" rows", unit_scale=True, leave=False,
              disable=None if progress else True) as bar:
        for file, row, b in iter_batches(path, columns, extra=extra):
            batches.append(b)
            if "rating" in extra:
                ratings.append(parse_ratings(b.column("rating"), file, row))
            bar.update(b.num_rows)
    files = list_files(path)
    if not batches or sum(b.num_rows for b in batches) == 0:
        raise ValueError(f"{files[0] if len(files) == 1 else path}: no interactions (the file "
                         f"has a header but no rows)")
    table = pa.Table.from_batches(batches)
    ids = {}
    for name in ("user_id", "item_id"):
        col = table.column(name).combine_chunks()
        as_int = {"auto": all_int_like(col), "int": True, "string": False}[id_type]
        if id_type == "int" and not all_int_like(col):
            raise ValueError(f"{path}: id_type='int' but {name} holds non-integer ids")
        ids[name] = ids_to_numpy(col, as_int)
    extras = {}
    for c in extra:
        col = table.column(c).combine_chunks()
        if c == "rating":
            extras[c] = np.concatenate(ratings).astype(np.float64)
        else:
            extras[c] = np.asarray(["" if v is None else str(v) for v in col.to_pylist()],
                                   dtype=object)
    src = os.fspath(path)
    return Interactions(ids["user_id"], ids["item_id"],
                        table.column("timestamp").to_numpy().astype(np.int64), extras,
                        source=src, name=os.path.basename(os.path.normpath(src)))
