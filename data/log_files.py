"""The files of an interaction log and the dialect of a text one.

``list_files`` gives a log path's files (one CSV/TSV, optionally gzipped, one Parquet
file, or a folder of Parquet shards read in name order). ``detect_dialect`` reads the
first 64 KiB of a text file: the delimiter (comma, tab, semicolon or pipe, whichever
splits the first line into two or more fields and the other lines into as many; ties:
comma first, tab first for ``.tsv``) and its header line. The first line is always the
header, as pandas' ``read_csv`` reads it; ``no_header_error`` says what line to add when
the first line holds data.
"""

import csv
import dataclasses
import datetime
import gzip
import io
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq


COLUMNS = ("user_id", "item_id", "timestamp")
PARQUET_SUFFIXES = (".parquet", ".pq")


CSV_SUFFIXES = (".csv", ".csv.gz", ".tsv", ".tsv.gz")


# the field delimiters a text log may use, in order of preference when several fit
DELIMITERS = {",": "comma", "\t": "tab", ";": "semicolon", "|": "pipe"}


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


def is_parquet(file):
    return file.endswith(PARQUET_SUFFIXES)


def open_binary(file):
    return gzip.open(file, "rb") if file.endswith(".gz") else open(file, "rb")


def utf8_error(file, data=None):
    """The ValueError for the first line of ``file`` that is not UTF-8."""
    with open_binary(file) as f:
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
    header: whether it holds names or data is the caller's question (``looks_like_data``).

    Raises ValueError (naming the line) for bytes that are not UTF-8.
    """
    with open_binary(file) as f:
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
        raise utf8_error(file) from None
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


def looks_like_data(fields):
    """The first field of a header line that is a number or a date/time (a value, not a
    column name), or None."""
    for v in fields:
        if not v:
            continue
        try:
            parse_datetime(v)
            return v
        except (ValueError, TypeError, OverflowError):
            pass
    return None


def no_header_error(file, dialect, names):
    """The ValueError for a text file whose first line is data: it names the line, the
    value that gave it away and the header line to add (``names`` first, e.g. user_id,
    item_id, timestamp, rating for a log)."""
    value = looks_like_data(dialect.header)
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


def file_columns(file):
    if is_parquet(file):
        try:
            return list(pq.read_schema(file).names)
        except (pa.ArrowInvalid, OSError) as e:
            raise ValueError(f"{file}: not a readable Parquet file ({e})") from None
    return _csv_header(file)


def describe_file(file):
    """How a log file is read, for summaries: 'Parquet' or 'tab-separated text' and so on."""
    if is_parquet(file):
        return "Parquet"
    return f"{detect_dialect(file).description} text"


def parse_datetime(text):
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
