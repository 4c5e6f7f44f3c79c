"""``csv_to_parquet``: a CSV interaction log to a folder of Parquet shards, streamed in bounded
memory and written atomically (what ``twotower convert`` runs).
"""

import os

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from twotower.artifacts import atomic_directory, check_output_dir
from twotower.data.interactions import (INT_LIKE, all_int_like, iter_batches, parse_ratings,
                                        resolve_columns, where_in_file)
from twotower.data.log_files import file_columns, is_parquet, list_files

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
    if any(is_parquet(f) for f in files):
        raise ValueError(f"{n['csv_path']} {os.fspath(csv_path)!r} is already Parquet: "
                         f"nothing to convert (read it as it is)")
    check_output_dir(out_dir, overwrite=overwrite, flag=n["out_dir"])  # before any work
    # the header (cheap) is checked before any work too
    cols, _ = resolve_columns(files[0], columns, extra, extra_flag=n["extra"])
    have = file_columns(files[0])
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
                if flags[k] and not all_int_like(b.column(k)):
                    flags[k] = False
                    ok = pc.match_substring_regex(b.column(k), INT_LIKE).to_numpy(
                        zero_copy_only=False)
                    bad_row = int(np.flatnonzero(~ok)[0])
                    example[k] = (where_in_file(file, first_row + bad_row),
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
                        arrays.append(pa.array(parse_ratings(b.column(rating_col), file,
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
