"""``twotower convert CSV OUT``: an interaction log to a folder of Parquet shards that every
recipe's ``--interactions`` streams (data/parquet_shards.py does the work)."""

import argparse
import os

import pyarrow.parquet as pq

from twotower.data.interactions import ColumnNames, resolve_columns
from twotower.data.log_files import describe_file, list_files
from twotower.data.parquet_shards import CLI_NAMES, csv_to_parquet


def build_parser():
    """The ``twotower convert`` command line: CSV log → folder of Parquet shards."""
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
