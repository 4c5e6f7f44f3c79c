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
``csv_to_parquet`` turns a CSV into shards in bounded memory; ``interactions_dataset``
streams shards into ``tf.data``; ``build_vocabularies`` makes the user and item vocabularies
(external id → int64 index in order of decreasing count) and their counts — what the logQ
correction needs — in one pass.

Text files (``detect_dialect``). The delimiter is detected from the first 64 KiB: comma,
tab, semicolon or pipe, whichever splits the first line into two or more fields and the
other lines into as many (ties: comma first, tab first for ``.tsv``). The first line is
always the header, as pandas' ``read_csv`` reads it; a file whose first line holds data
(a number or a date where a column name should be) and lacks the wanted columns is refused
with an error that says so and what header line to add — twotower does not guess what an
unnamed column means.

Missing values. Ids are strings, read as written: ``NA``, ``N/A``, ``null``, ``NaN``,
``#N/A``, ``None`` are ids like any other (pandas and pyarrow would read them as missing).
Only an empty field (or ``""``) is missing, and a missing user, item or timestamp is an
error. In numeric columns only — ``rating``, numeric features — the pandas null markers
(``NULL_MARKERS``) and an empty field are a missing value.

Why Parquet and not TFRecord. The log is a table, and Parquet (Apache Arrow's pyarrow) is
the table format the people who produce logs already use: pandas, Spark, DuckDB, BigQuery
and Hive read and write it directly, so a log exported from a warehouse needs no
conversion, and the shards can be inspected with ``pandas.read_parquet``. It is columnar
and typed: string ids stay strings and integer ids stay int64 (TFRecord stores untyped
serialized protos and every reader must agree on a feature spec), a reader fetches only
the columns it needs (building a vocabulary reads one column), and the columns compress
well (ids repeat). Each shard holds row groups, so a file is streamed batch by batch
(``ParquetFile.iter_batches``) and never has to fit in memory. TFRecord's one advantage,
a native tf.data reader op, matters little here: the rows are decoded by Arrow's C++ code
in a ``tf.data`` generator, interleaved over files.

Errors: a missing column, an empty file, a first line that is data (no header), a line
with more or fewer fields than the header, bytes that are not UTF-8, an empty field, a
timestamp that cannot be parsed or a rating that is not a number raise a ValueError naming
the file, the line (CSV) or row (Parquet) and the value.
"""

import csv
import dataclasses
import datetime
import gzip
import io
import os

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from twotower.artifacts import atomic_directory, check_output_dir

COLUMNS = ("user_id", "item_id", "timestamp")
PARQUET_SUFFIXES = (".parquet", ".pq")
CSV_SUFFIXES = (".csv", ".csv.gz", ".tsv", ".tsv.gz")
# the field delimiters a text log may use, in order of preference when several fit
DELIMITERS = {",": "comma", "\t": "tab", ";": "semicolon", "|": "pipe"}
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
_INT_LIKE = r"^-?(0|[1-9][0-9]{0,17})$"


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


# ----------------------------------------------------------------------------- files

def list_files(path, *, name="interactions path"):
    """The files of a log: ``[path]`` for a file; for a folder its Parquet shards in name
    order, else its one CSV (``interactions.csv`` or ``ratings.csv`` when there are several).

    ``name``: how messages call ``path`` (the caller's flag, e.g. ``--interactions``).

    Raises FileNotFoundError for a missing path, ValueError for a folder with no log.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise ValueError(f"{name} must be a file or folder path, got {path!r}")
    path = os.fspath(path)
    if os.path.isfile(path):
        return [path]
    if not os.path.isdir(path):
        raise FileNotFoundError(f"{name} {path!r} does not exist")
    names = sorted(n for n in os.listdir(path) if not n.startswith((".", "_")))
    shards = [os.path.join(path, n) for n in names if n.endswith(PARQUET_SUFFIXES)]
    if shards:
        return shards
    csvs = [n for n in names if n.endswith(CSV_SUFFIXES)]
    for preferred in ("interactions.csv", "ratings.csv"):
        if preferred in csvs:
            return [os.path.join(path, preferred)]
    if len(csvs) == 1:
        return [os.path.join(path, csvs[0])]
    raise ValueError(
        f"{name} {path!r} is a folder with no .parquet shards and "
        + (f"several CSV files {csvs}: pass the file itself" if csvs else "no CSV file"))


def _is_parquet(file):
    return file.endswith(PARQUET_SUFFIXES)


def _open_binary(file):
    return gzip.open(file, "rb") if file.endswith(".gz") else open(file, "rb")


def _utf8_error(file, data=None):
    """The ValueError for the first line of ``file`` that is not UTF-8."""
    with _open_binary(file) as f:
        for lineno, line in enumerate(f, start=1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as e:
                return ValueError(
                    f"{file}: line {lineno} is not valid UTF-8 (byte {line[e.start]:#04x} at "
                    f"column {e.start + 1}: {line[:60]!r}); re-encode the file as UTF-8, "
                    f"e.g. iconv -f latin1 -t utf-8")
    return ValueError(f"{file}: invalid UTF-8 data")


@dataclasses.dataclass(frozen=True)
class CsvDialect:
    """What ``detect_dialect`` found in a text file.

    delimiter: one of DELIMITERS; header: the first line's fields, stripped (() for an
    empty file, ("",) for a blank first line).
    """

    delimiter: str
    header: tuple

    @property
    def description(self):
        """'comma-separated', 'tab-separated', …"""
        return f"{DELIMITERS[self.delimiter]}-separated"


def detect_dialect(file, *, sample_bytes=1 << 16):
    """The delimiter and header of a text file, from its first ``sample_bytes`` bytes.

    Each of DELIMITERS (comma, tab, semicolon, pipe) splits the sample into records (CSV
    quoting respected, blank lines skipped); a candidate must split the first line into 2
    or more fields, and the one whose other lines most often have that many fields wins
    (ties: the order of DELIMITERS, tab first for a ``.tsv`` file). With no candidate (a
    one-column file) the delimiter is a comma (a tab for ``.tsv``). The first line is the
    header: whether it holds names or data is the caller's question (``_looks_like_data``).

    Raises ValueError (naming the line) for bytes that are not UTF-8.
    """
    with _open_binary(file) as f:
        raw = f.read(sample_bytes + 1)
    complete = len(raw) <= sample_bytes
    errors = "strict"
    if not complete:
        raw = raw[:sample_bytes]
        cut = raw.rfind(b"\n")
        if cut >= 0:
            raw = raw[:cut + 1]
        else:  # one very long first line: it may end inside a character
            errors = "ignore"
    try:
        text = raw.decode("utf-8-sig", errors=errors)
    except UnicodeDecodeError:
        raise _utf8_error(file) from None
    order = list(DELIMITERS)
    if file.endswith((".tsv", ".tsv.gz", ".tab")):
        order.remove("\t")
        order.insert(0, "\t")
    best, best_score = order[0], -1.0
    for d in order:
        try:
            records = [r for r in csv.reader(io.StringIO(text), delimiter=d) if r]
        except csv.Error:
            continue
        if not complete and len(records) > 1:
            records = records[:-1]  # the sample may end inside it
        if not records or len(records[0]) < 2:
            continue
        width = len(records[0])
        score = sum(len(r) == width for r in records) / len(records)
        if score > best_score:
            best, best_score = d, score
    try:
        first = next(csv.reader(io.StringIO(text), delimiter=best), [])
    except csv.Error:
        first = text.splitlines()[:1]
    if not first and text.strip(" \t\r\n") != "":
        first = [""]  # a blank first line
    return CsvDialect(best, tuple(x.strip() for x in first))


def _looks_like_data(fields):
    """The first field of a header line that is a number or a date/time (a value, not a
    column name), or None."""
    for v in fields:
        if not v:
            continue
        try:
            _parse_datetime(v)
            return v
        except (ValueError, TypeError, OverflowError):
            pass
    return None


def no_header_error(file, dialect, names):
    """The ValueError for a text file whose first line is data: it names the line, the
    value that gave it away and the header line to add (``names`` first, e.g. user_id,
    item_id, timestamp, rating for a log)."""
    value = _looks_like_data(dialect.header)
    width = len(dialect.header)
    want = list(names)[:width] + [f"column{j}" for j in range(len(names) + 1, width + 1)]
    example = dialect.delimiter.join(want)
    return ValueError(
        f"{file}: the file appears to have no header line: line 1 holds values such as "
        f"{value!r}, not column names. twotower reads the first line as the header (as "
        f"pandas does): add a first line naming the {width} columns in their order, such as "
        f"{example!r} ({dialect.description})")


def _csv_header(file):
    """The header fields of a text file (ValueError: empty file, blank first line, not
    UTF-8)."""
    if os.path.getsize(file) == 0:
        raise ValueError(f"{file}: the file is empty (expected a header line such as "
                         f"{','.join(COLUMNS)} and one row per interaction)")
    fields = list(detect_dialect(file).header)
    if not any(fields):
        raise ValueError(f"{file}: line 1 is blank; expected a header line such as "
                         f"{','.join(COLUMNS)}")
    return fields


def _file_columns(file):
    if _is_parquet(file):
        try:
            return list(pq.read_schema(file).names)
        except (pa.ArrowInvalid, OSError) as e:
            raise ValueError(f"{file}: not a readable Parquet file ({e})") from None
    return _csv_header(file)


def describe_file(file):
    """How a log file is read, for summaries: 'Parquet' or 'tab-separated text' and so on."""
    if _is_parquet(file):
        return "Parquet"
    return f"{detect_dialect(file).description} text"


def resolve_columns(file, columns=None, extra=(), *, extra_flag="extra column"):
    """Maps the wanted columns onto ``file``'s columns: returns (ColumnNames actually in the
    file, list of extra columns present). A default name that is absent falls back to a
    known alias (``userId``, ``movieId``…).

    Raises ValueError, naming the file: a text file whose first line is data rather than
    a header; a missing column (naming the column, the flag that renames it — ``--user-col``
    … — and the columns the file has); a missing extra column (naming ``extra_flag``).
    """
    columns = columns or ColumnNames()
    have = _file_columns(file)
    resolved = {}
    for field, default in (("user", "user_id"), ("item", "item_id"), ("time", "timestamp")):
        name = getattr(columns, field)
        if name is None:
            resolved[field] = None
            continue
        if name not in have and name == default:
            name = next((a for a in ALIASES[default] if a in have), name)
        if name not in have:
            if not _is_parquet(file) and _looks_like_data(have) is not None:
                raise no_header_error(file, detect_dialect(file),
                                      COLUMNS + ("rating",))
            hint = ""
            if not _is_parquet(file) and len(have) == 1:
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


# ----------------------------------------------------------------------------- batches

def _csv_line_of_row(file, row):
    """The 1-based line number of data row ``row`` (0-based; blank lines skipped)."""
    seen = -1
    with _open_binary(file) as f:
        f.readline()
        for lineno, line in enumerate(f, start=2):
            if line.strip():
                seen += 1
                if seen == row:
                    return lineno
    return row + 2


def _where(file, row):
    if _is_parquet(file):
        return f"{file}: row {row + 1}"
    return f"{file}: line {_csv_line_of_row(file, row)}"


def _parse_datetime(text):
    t = text.strip()
    for number in (int, float):
        try:
            v = number(t)
            if np.isfinite(v):
                return int(np.floor(v))
        except ValueError:
            pass
    if t.endswith("Z"):
        t = t[:-1] + "+00:00"
    d = datetime.datetime.fromisoformat(t)
    if d.tzinfo is None:
        d = d.replace(tzinfo=datetime.timezone.utc)
    return int(d.timestamp())


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
            raise ValueError(f"{_where(file, first_row + bad)}: timestamp {v[bad]!r} is not a "
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
            out[i] = _parse_datetime(text)
        except (ValueError, TypeError, OverflowError):
            raise ValueError(
                f"{_where(file, first_row + i)}: cannot parse timestamp {text!r} (expected "
                f"Unix seconds such as 1714564800 or ISO-8601 such as 2024-05-01T12:00:00)"
            ) from None
    return out


def _check_no_nulls(batch, names, file, first_row):
    for name in names:
        col = batch.column(name)
        if col.null_count:
            bad = int(np.flatnonzero(col.is_null().to_numpy(zero_copy_only=False))[0])
            raise ValueError(f"{_where(file, first_row + bad)}: empty {name!r} field")


def _ratings(col, file, first_row, name="rating"):
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
                f"{_where(file, first_row + i)}: {name!r} value {v!r} is not a number (a "
                f"rating must be a number; an empty field is a missing rating)") from None
    raise ValueError(f"{file}: {name!r} column is not numeric")


def _raw_batches(file, names, batch_size):
    """Arrow record batches of the columns ``names`` of one file (text: every column read
    as text, so an id column is never typed from its first block alone; the delimiter
    detected by ``detect_dialect``; only an empty field is null — ``NA``, ``null``… are
    text)."""
    if _is_parquet(file):
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
            raise _utf8_error(file) from None
        if "Expected" in str(e) and "columns" in str(e):
            raise _ragged_line_error(file, dialect) from None
        raise ValueError(f"{file}: {e}") from None


def _ragged_line_error(file, dialect):
    """The ValueError for the first line whose field count differs from the header's."""
    width = len(dialect.header)
    with _open_binary(file) as f:
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


def _all_int_like(arr):
    """True when every value of a text column is an integer written without leading zeros."""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if not (pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)):
        return pa.types.is_integer(arr.type)
    if len(arr) == 0:
        return True
    return bool(pc.all(pc.match_substring_regex(arr, _INT_LIKE)).as_py())


def _ids_to_numpy(arr, as_int):
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if as_int:
        return pc.cast(arr, pa.int64()).to_numpy(zero_copy_only=False).astype(np.int64)
    if pa.types.is_integer(arr.type):
        arr = pc.cast(arr, pa.string())
    return np.asarray(arr.to_pylist(), dtype=str)


def read_interactions(path, columns=None, *, extra=(), id_type="auto"):
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

    Raises ValueError naming file and line/row for bad input (see the module docstring).
    """
    if id_type not in ("auto", "string", "int"):
        raise ValueError(f"id_type must be 'auto', 'string' or 'int', got {id_type!r}")
    batches, ratings = [], []
    for file, row, b in iter_batches(path, columns, extra=extra):
        batches.append(b)
        if "rating" in extra:
            ratings.append(_ratings(b.column("rating"), file, row))
    files = list_files(path)
    if not batches or sum(b.num_rows for b in batches) == 0:
        raise ValueError(f"{files[0] if len(files) == 1 else path}: no interactions (the file "
                         f"has a header but no rows)")
    table = pa.Table.from_batches(batches)
    ids = {}
    for name in ("user_id", "item_id"):
        col = table.column(name).combine_chunks()
        as_int = {"auto": _all_int_like(col), "int": True, "string": False}[id_type]
        if id_type == "int" and not _all_int_like(col):
            raise ValueError(f"{path}: id_type='int' but {name} holds non-integer ids")
        ids[name] = _ids_to_numpy(col, as_int)
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


# ----------------------------------------------------------------------------- converter

# how csv_to_parquet's messages name its arguments (``arg_names`` overrides them; the
# ``twotower convert`` command line passes CLI_NAMES)
API_NAMES = {"csv_path": "csv_path", "out_dir": "out_dir", "rows_per_shard": "rows_per_shard",
             "id_type": "id_type", "extra": "extra column", "rating_col": "rating_col"}
CLI_NAMES = {"csv_path": "CSV", "out_dir": "OUT", "rows_per_shard": "--rows-per-shard",
             "id_type": "--id-type", "extra": "--extra", "rating_col": "--rating-col"}


def csv_to_parquet(csv_path, out_dir, columns=None, *, extra=(), rating_col="auto",
                   rows_per_shard=1_000_000, batch_size=65536, id_type="auto",
                   compression="zstd", overwrite=False, progress=True, arg_names=None):
    """Converts a CSV log into a folder of Parquet shards, streaming (memory: one batch).

    The shards have the columns user_id, item_id (int64 when every id is an integer and
    ``id_type`` is "auto", else string), timestamp (int64 Unix seconds), rating (float64,
    NaN where missing) when there is one, and ``extra`` (text), and are named
    part-00000.parquet, part-00001.parquet, … with ``rows_per_shard`` rows each (the last
    one fewer), in row groups of ``batch_size`` rows. "auto" reads the CSV twice (the first
    pass only looks at the id columns). The folder is written atomically
    (twotower.artifacts.atomic_directory): it appears complete or not at all, and only a
    missing or empty folder, or (``overwrite=True``) an earlier twotower output, is
    accepted — checked before the CSV is read.

    Args:
      rating_col: the column stored as ``rating``: "auto" (the default) keeps a column
        named ``rating`` when the log has one; a name keeps that column (it must exist);
        None keeps none.
      arg_names: how messages name the arguments (API_NAMES by default; CLI_NAMES for the
        command line).

    Returns the list of shard paths.
    """
    n = {**API_NAMES, **(arg_names or {})}
    if not isinstance(rows_per_shard, (int, np.integer)) or isinstance(rows_per_shard, bool) \
            or rows_per_shard < 1:
        raise ValueError(f"{n['rows_per_shard']} must be an integer >= 1, got "
                         f"{rows_per_shard!r}")
    if id_type not in ("auto", "string", "int"):
        raise ValueError(f"{n['id_type']} must be 'auto', 'string' or 'int', got {id_type!r}")
    if rating_col is not None and (not isinstance(rating_col, str) or not rating_col.strip()):
        raise ValueError(f"{n['rating_col']} must be a column name, got {rating_col!r}")
    extra = tuple(extra)
    files = list_files(csv_path, name=n["csv_path"])
    if any(_is_parquet(f) for f in files):
        raise ValueError(f"{n['csv_path']} {os.fspath(csv_path)!r} is already Parquet: "
                         f"nothing to convert (read it as it is)")
    check_output_dir(out_dir, overwrite=overwrite, flag=n["out_dir"])  # before any work
    # the header (cheap) is checked before any work too
    cols, _ = resolve_columns(files[0], columns, extra, extra_flag=n["extra"])
    have = _file_columns(files[0])
    if rating_col == "auto":
        rating_col = "rating" if "rating" in have else None
    elif rating_col is not None and rating_col not in have:
        raise ValueError(f"{n['rating_col']} {rating_col}: {files[0]} has no such column; it "
                         f"has columns {have}")
    used = {cols.user: "user_id", cols.item: "item_id"}
    if cols.time:
        used[cols.time] = "timestamp"
    if rating_col is not None:
        if rating_col in used:
            raise ValueError(f"{n['rating_col']} {rating_col}: that column is read as "
                             f"{used[rating_col]}")
        used[rating_col] = "rating"
    extra = tuple(c for c in dict.fromkeys(extra) if c != rating_col)
    source = {v: k for k, v in used.items()}
    for c in extra:
        if c in used:
            raise ValueError(f"{n['extra']} {c}: that column is already kept, as "
                             f"{used[c]}")
        if c in source:
            raise ValueError(f"{n['extra']} {c}: the output's {c!r} column is the log's "
                             f"{source[c]!r}; a second one cannot be kept")
    read_extra = extra + ((rating_col,) if rating_col is not None else ())
    from tqdm.auto import tqdm

    as_int = {"user_id": id_type == "int", "item_id": id_type == "int"}
    total = None
    if id_type != "string":  # first pass: are all ids integers?
        total, flags, example = 0, {k: True for k in as_int}, {}
        for file, first_row, b in iter_batches(csv_path, columns, batch_size=batch_size):
            total += b.num_rows
            for k in flags:
                if flags[k] and not _all_int_like(b.column(k)):
                    flags[k] = False
                    ok = pc.match_substring_regex(b.column(k), _INT_LIKE).to_numpy(
                        zero_copy_only=False)
                    bad_row = int(np.flatnonzero(~ok)[0])
                    example[k] = (_where(file, first_row + bad_row),
                                  b.column(k)[bad_row].as_py())
        if total == 0:
            raise ValueError(f"{files[0]}: no interactions (the file has a header but no rows)")
        bad = [k for k, ok in flags.items() if not ok]
        if id_type == "int" and bad:
            where, value = example[bad[0]]
            raise ValueError(f"{where}: {n['id_type']} 'int' but the {bad[0].split('_')[0]} "
                             f"id {value!r} is not an integer")
        as_int = flags
    schema = pa.schema([("user_id", pa.int64() if as_int["user_id"] else pa.string()),
                        ("item_id", pa.int64() if as_int["item_id"] else pa.string()),
                        ("timestamp", pa.int64())]
                       + ([("rating", pa.float64())] if rating_col is not None else [])
                       + [(c, pa.string()) for c in extra])
    written, rows = [], 0
    with atomic_directory(out_dir, overwrite=overwrite, flag=n["out_dir"]) as tmp:
        writer, in_shard = None, 0
        with tqdm(total=total, unit=" rows", unit_scale=True, desc="csv -> parquet",
                  disable=not progress) as bar:
            for file, first_row, b in iter_batches(csv_path, columns, extra=read_extra,
                                                   batch_size=batch_size):
                arrays = []
                for name in schema.names:
                    if name == "rating":
                        arrays.append(pa.array(_ratings(b.column(rating_col), file,
                                                        first_row, rating_col),
                                               pa.float64(), from_pandas=True))
                    else:
                        arrays.append(pc.cast(b.column(name), schema.field(name).type))
                b = pa.RecordBatch.from_arrays(arrays, schema=schema)
                bar.update(b.num_rows)
                while b.num_rows:
                    if writer is None:
                        shard = f"part-{len(written):05d}.parquet"
                        writer = pq.ParquetWriter(os.path.join(tmp, shard), schema,
                                                  compression=compression)
                        written.append(shard)
                        in_shard = 0
                    take = min(b.num_rows, rows_per_shard - in_shard)
                    writer.write_batch(b.slice(0, take), row_group_size=batch_size)
                    in_shard += take
                    rows += take
                    b = b.slice(take)
                    if in_shard == rows_per_shard:
                        writer.close()
                        writer = None
        if writer is not None:
            writer.close()
        if rows == 0:
            raise ValueError(f"{files[0]}: no interactions (the file has a header but no rows)")
    return [os.path.join(os.path.abspath(out_dir), w) for w in written]


# ----------------------------------------------------------------------------- vocabularies

@dataclasses.dataclass
class IdVocabulary:
    """External ids → int64 indexes, most frequent first (ties: smaller id first).

    ids: [V] external ids (int64 or ``<U``), position = index.
    counts: [V] int64 occurrences in the log (for logQ: p(i) = counts[i] / counts.sum()).
    """

    ids: np.ndarray
    counts: np.ndarray

    def __len__(self):
        return len(self.ids)

    def _arrow_type(self):
        return pa.int64() if self.ids.dtype.kind in "iu" else pa.string()

    def _sorted_ids(self):
        # built once (O(V log V)): then a batch costs O(B log V). Arrow's index_in rebuilds
        # its hash table of all V ids at every call, O(V) a batch: at 10⁷ items that, not
        # the training step, would set the speed of a streamed log.
        cached = self.__dict__.get("_sorted")
        if cached is None or len(cached[0]) != len(self.ids):
            order = np.argsort(self.ids, kind="stable")
            cached = self.__dict__["_sorted"] = (self.ids[order], order)
        return cached

    @property
    def probabilities(self):
        """counts / total: the unigram sampling probability the logQ correction uses."""
        return self.counts / max(int(self.counts.sum()), 1)

    def lookup(self, values):
        """Indexes of ``values`` (an array or Arrow column of ids); -1 for unknown ids."""
        values = values if isinstance(values, (pa.Array, pa.ChunkedArray)) else pa.array(
            np.asarray(values))
        if isinstance(values, pa.ChunkedArray):
            values = values.combine_chunks()
        vocab_type = self._arrow_type()
        if pa.types.is_integer(vocab_type) and not pa.types.is_integer(values.type):
            ok = pc.match_substring_regex(values, _INT_LIKE)
            values = pc.cast(pc.if_else(ok, values, pa.scalar(None, values.type)), pa.int64())
        elif not pa.types.is_integer(vocab_type) and pa.types.is_integer(values.type):
            values = pc.cast(values, pa.string())
        elif pa.types.is_integer(vocab_type):
            values = pc.cast(values, pa.int64())
        elif not pa.types.is_string(values.type):
            values = pc.cast(values, pa.string())
        if len(values) == 0 or len(self.ids) == 0:
            return np.full(len(values), -1, np.int64)
        valid = pc.is_valid(values).to_numpy(zero_copy_only=False)
        filler = 0 if pa.types.is_integer(vocab_type) else ""
        flat = pc.fill_null(values, filler).to_numpy(zero_copy_only=False)
        if not pa.types.is_integer(vocab_type):
            flat = flat.astype(str)  # object -> '<U' as wide as the longest value
        ids_sorted, order = self._sorted_ids()
        pos = np.minimum(np.searchsorted(ids_sorted, flat), len(ids_sorted) - 1)
        found = valid & (ids_sorted[pos] == flat)
        return np.where(found, order[pos], -1).astype(np.int64)


def _merge_counts(tables):
    t = pa.concat_tables(tables)
    return t.group_by("id").aggregate([("n", "sum")]).rename_columns(["id", "n"])


def _finish_vocab(table, min_count, as_int):
    if min_count > 1:
        table = table.filter(pc.greater_equal(table.column("n"), min_count))
    ids = table.column("id").combine_chunks()
    if as_int and not pa.types.is_integer(ids.type):
        ids = pc.cast(ids, pa.int64())
    table = pa.table({"id": ids, "n": table.column("n")})
    order = pc.sort_indices(table, sort_keys=[("n", "descending"), ("id", "ascending")])
    table = table.take(order)
    return IdVocabulary(_ids_to_numpy(table.column("id"), pa.types.is_integer(ids.type)),
                        table.column("n").to_numpy().astype(np.int64))


def build_vocabularies(path, columns=None, *, min_count=1, batch_size=65536,
                       merge_every=1 << 20, progress=True):
    """User and item vocabularies with their counts, in one streaming pass over a log.

    Memory is bounded by the number of distinct ids plus ``merge_every`` buffered
    (id, count) pairs: each batch is reduced to its distinct ids and counts (Arrow's
    ``value_counts``), and the buffered partial counts are merged by a hash aggregation
    whenever they exceed ``merge_every`` — the log itself is never held.

    Args:
      path: a log (CSV, Parquet file or folder of shards).
      min_count: ids seen fewer times are left out (rows with them map to -1 in lookup).

    Returns:
      (users, items): IdVocabulary each; ids are int64 when every id is an integer (CSV
      text like "42" included, "007" excluded), else strings.
    """
    if not isinstance(min_count, (int, np.integer)) or min_count < 1:
        raise ValueError(f"min_count must be an int >= 1, got {min_count!r}")
    from tqdm.auto import tqdm

    state = {k: {"merged": None, "buffer": [], "buffered": 0, "int": True}
             for k in ("user_id", "item_id")}
    rows = 0
    with tqdm(desc="vocabulary", unit=" rows", unit_scale=True, disable=not progress) as bar:
        for _, _, b in iter_batches(path, columns, batch_size=batch_size):
            rows += b.num_rows
            bar.update(b.num_rows)
            for k, s in state.items():
                col = b.column(k)
                s["int"] = s["int"] and _all_int_like(col)
                vc = pc.value_counts(col)
                part = pa.table({"id": vc.field("values"),
                                 "n": pc.cast(vc.field("counts"), pa.int64())})
                s["buffer"].append(part)
                s["buffered"] += part.num_rows
                if s["buffered"] >= merge_every:
                    s["merged"] = _merge_counts(
                        ([s["merged"]] if s["merged"] is not None else []) + s["buffer"])
                    s["buffer"], s["buffered"] = [], 0
    if rows == 0:
        raise ValueError(f"{path}: no interactions (the file has a header but no rows)")
    out = []
    for k, s in state.items():
        merged = _merge_counts(([s["merged"]] if s["merged"] is not None else []) + s["buffer"])
        out.append(_finish_vocab(merged, min_count, s["int"]))
    return tuple(out)


# ----------------------------------------------------------------------------- tf.data

def _tf_dtype(arrow_type, tf):
    if pa.types.is_integer(arrow_type):
        return tf.int64
    if pa.types.is_floating(arrow_type):
        return tf.float32
    return tf.string


def interactions_dataset(path, columns=None, *, extra=(), batch_size=4096, user_vocab=None,
                         item_vocab=None, drop_unknown=True, num_shards=1, shard_index=0,
                         input_context=None, cycle_length=2, deterministic=True):
    """A streaming ``tf.data.Dataset`` over a log's files: batches of
    {"user_id", "item_id", "timestamp", *extra} (the last batch of a file may be smaller).

    Built as ``Dataset.from_tensor_slices(files)`` → ``shard`` → ``interleave`` of a
    generator that reads Arrow record batches of one file (``ParquetFile.iter_batches``),
    so memory is a few batches whatever the log's size and files are read in parallel.

    Sharding across workers is by FILE: pass ``num_shards``/``shard_index``, or the
    ``tf.distribute.InputContext`` that ``strategy.distribute_datasets_from_function``
    gives (its ``num_input_pipelines``/``input_pipeline_id``). (tf.data's automatic FILE
    auto-shard only recognises its own reader ops — TFRecordDataset and friends — not a
    Python generator, so the file list is sharded explicitly here; give each worker at
    least one shard.)

    With ``user_vocab``/``item_vocab`` (IdVocabulary) the ids come out as int64 indexes;
    rows with an unknown id are dropped (``drop_unknown``) or kept as -1.
    """
    import tensorflow as tf

    files = list_files(path)
    if input_context is not None:
        num_shards, shard_index = input_context.num_input_pipelines, \
            input_context.input_pipeline_id
    if not 0 <= shard_index < num_shards:
        raise ValueError(f"shard_index must be in [0, num_shards={num_shards}), got "
                         f"{shard_index!r}")
    if num_shards > len(files):
        raise ValueError(f"num_shards={num_shards} is more than the log's {len(files)} "
                         f"file(s) ({path}): write more shards (csv_to_parquet rows_per_shard)")
    if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
    # output types from the first file's first batch (Parquet: its schema)
    _, _, first = next(iter_batches(files[0], columns, extra=extra, batch_size=1))
    vocabs = {"user_id": user_vocab, "item_id": item_vocab}
    spec = {}
    for name in first.schema.names:
        dtype = tf.int64 if vocabs.get(name) is not None else _tf_dtype(
            first.schema.field(name).type, tf)
        spec[name] = tf.TensorSpec([None], dtype)

    # Arrow work (reading, id lookup: a hash table of the vocabulary per call) is done on
    # blocks of at least 64K rows, then cut into batch_size batches
    block = max(int(batch_size), 1 << 16)

    def blocks(file):
        for _, _, b in iter_batches(file, columns, extra=extra, batch_size=block):
            out = {}
            for name in spec:
                col = b.column(name)
                if vocabs.get(name) is not None:
                    out[name] = vocabs[name].lookup(col)
                elif spec[name].dtype == tf.string:
                    out[name] = np.asarray(pc.cast(col, pa.string()).to_pylist(), dtype=object)
                else:
                    out[name] = col.to_numpy(zero_copy_only=False)
            if drop_unknown and (user_vocab is not None or item_vocab is not None):
                keep = np.ones(b.num_rows, bool)
                for name in ("user_id", "item_id"):
                    if vocabs[name] is not None:
                        keep &= out[name] >= 0
                if not keep.all():
                    out = {k: v[keep] for k, v in out.items()}
            if len(out["item_id"]):
                yield out

    def generate(file):
        file = file.decode() if isinstance(file, bytes) else str(file)
        for out in blocks(file):
            n = len(out["item_id"])
            for start in range(0, n, batch_size):
                yield {k: v[start:start + batch_size] for k, v in out.items()}

    ds = tf.data.Dataset.from_tensor_slices(files)
    if num_shards > 1:
        ds = ds.shard(num_shards, shard_index)
    return ds.interleave(
        lambda f: tf.data.Dataset.from_generator(generate, args=(f,), output_signature=spec),
        cycle_length=max(1, min(cycle_length, len(files))), block_length=1,
        num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic)


# ----------------------------------------------------------------------------- command line

def build_parser():
    """The ``twotower convert`` command line: CSV log → folder of Parquet shards."""
    import argparse

    p = argparse.ArgumentParser(
        prog="twotower convert",
        description="Convert an interaction log (a text file whose first line names the "
        "columns, e.g. user_id,item_id,timestamp[,rating]; comma-, tab-, semicolon- or "
        "pipe-separated, detected) into a folder of Parquet shards, streaming in bounded "
        "memory. The folder is what --interactions, read_interactions, interactions_dataset "
        "and build_vocabularies read. Ids are kept as written (NA, null, NaN are ids; only "
        "an empty field is missing).")
    p.add_argument("csv", metavar="CSV", help="the log (or a folder holding one)")
    p.add_argument("out", metavar="OUT", help="the output folder (written atomically; a "
                   "folder twotower did not write is never replaced)")
    p.add_argument("--rows-per-shard", type=int, default=1_000_000,
                   help="rows per Parquet file; give each training worker at least one file "
                   "(default %(default)s)")
    p.add_argument("--user-col", default="user_id", help="user column (default %(default)s)")
    p.add_argument("--item-col", default="item_id", help="item column (default %(default)s)")
    p.add_argument("--time-col", default="timestamp",
                   help="timestamp column: Unix seconds or ISO-8601 (default %(default)s)")
    p.add_argument("--rating-col", default=None, metavar="NAME",
                   help="column stored as the numeric 'rating' that --min-rating filters on "
                   "(default: the column named rating, when the log has one)")
    p.add_argument("--extra", default="", help="comma-separated further columns to keep "
                   "(query features), stored as text")
    p.add_argument("--id-type", choices=("auto", "string", "int"), default="auto",
                   help="id column type: auto (int64 when every id is an integer, which "
                   "reads the CSV twice), string or int (default %(default)s)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an earlier twotower output at OUT")
    return p


def main(argv=None):
    """``twotower convert CSV OUT``. Bad input raises ValueError / FileNotFoundError with
    messages that name the command line's arguments (CSV, OUT, --rows-per-shard…);
    ``twotower.cli`` prints it as one line, ``twotower convert: error: …``, exit code 2."""
    args = build_parser().parse_args(argv)
    columns = ColumnNames(args.user_col, args.item_col, args.time_col)
    files = csv_to_parquet(
        args.csv, args.out, columns,
        extra=tuple(c.strip() for c in args.extra.split(",") if c.strip()),
        rating_col=args.rating_col if args.rating_col is not None else "auto",
        rows_per_shard=args.rows_per_shard, id_type=args.id_type,
        overwrite=args.overwrite, arg_names=CLI_NAMES)
    source = list_files(args.csv)[0]
    cols, _ = resolve_columns(source, columns)
    schema = pq.read_schema(files[0])
    origin = {"user_id": cols.user, "item_id": cols.item, "timestamp": cols.time,
              "rating": args.rating_col or "rating"}
    described = ", ".join(
        f"{f.name} ({f.type}" + (f", from {origin[f.name]!r})" if origin.get(f.name, f.name)
                                 != f.name else ")") for f in schema)
    rows = sum(pq.ParquetFile(f).metadata.num_rows for f in files)
    print(f"read {source} ({describe_file(source)} with a header line)")
    print(f"wrote {len(files)} shard(s), {rows:,} rows, to {os.path.abspath(args.out)}: "
          f"columns {described}")
    return 0
