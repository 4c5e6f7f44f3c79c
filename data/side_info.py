"""Categorical side information of items as integer codes, 0 = missing.

EGES (Wang et al., KDD 2018, §2.3) embeds each side-information field of an item (brand,
shop, category…; here genres and release year) in its own table. This turns per-item
values into the codes towers/side_info_tower.py takes: a single-valued field becomes
[N] codes 1..K (0 = missing: None, NaN, ""), a multi-valued field (a tuple/list per item,
e.g. genres) becomes [N, max_values] codes padded with 0. Codes follow the sorted order
of the distinct values, so the same values always get the same codes.

``side_info_from_table`` makes the fields from a user's item table (``--items
items.csv``, read by data/feature_table.py): one field per column.
"""

import re

import numpy as np


def _missing(v):
    return v is None or (isinstance(v, float) and np.isnan(v)) or (isinstance(v, str) and not v)


def encode_field(values, name="field"):
    """(codes, vocabulary) for one field: ``values`` has one entry per item, a scalar or
    a list/tuple of scalars (multi-valued); vocabulary[c - 1] is the value of code c."""
    values = list(values)
    if not values:
        raise ValueError(f"side-information field {name!r} has no items")
    multi = any(isinstance(v, (list, tuple, np.ndarray)) for v in values)
    rows = [[x for x in (v if isinstance(v, (list, tuple, np.ndarray)) else [v])
             if not _missing(x)] for v in values]
    vocab = sorted({str(x) for row in rows for x in row})
    index = {v: i + 1 for i, v in enumerate(vocab)}
    width = max(1, max(len(r) for r in rows))
    codes = np.zeros((len(rows), width), np.int64)
    for i, row in enumerate(rows):
        codes[i, :len(row)] = [index[str(x)] for x in row]
    return (codes if multi else codes[:, 0]), vocab


def encode_side_info(columns):
    """{field: per-item values} → ({field: codes}, {field: vocabulary}); every field must
    have the same number of items."""
    if not isinstance(columns, dict) or not columns:
        raise ValueError(f"columns must be a non-empty dict of fields, got {columns!r}")
    sizes = {k: len(v) for k, v in columns.items()}
    if len(set(sizes.values())) != 1:
        raise ValueError(f"side-information fields must have one value per item; got item "
                         f"counts {sizes}")
    out = {k: encode_field(v, k) for k, v in columns.items()}
    return {k: c for k, (c, _) in out.items()}, {k: v for k, (_, v) in out.items()}


def year_buckets(years, width=5):
    """Release year → "1990-1994"-style bucket labels (None where year <= 0: missing)."""
    if isinstance(width, bool) or not isinstance(width, int) or width < 1:
        raise ValueError(f"width must be an int >= 1, got {width!r}")
    return [None if y <= 0 else f"{y // width * width}-{y // width * width + width - 1}"
            for y in np.asarray(years, np.int64)]


def _quantile_labels(values, buckets):
    """Numbers → "q1".."q<buckets>" labels of their quantile bucket (None where NaN)."""
    v = np.asarray(values, np.float64)
    finite = v[np.isfinite(v)]
    if finite.size == 0:
        return [None] * len(v)
    edges = np.unique(np.quantile(finite, np.linspace(0, 1, buckets + 1)[1:-1]))
    b = np.searchsorted(edges, v, side="right")
    return [None if not np.isfinite(x) else f"q{int(k) + 1}" for x, k in zip(v, b)]


def side_info_from_table(table, item_ids, *, columns=None, buckets=10, flag="--side-info"):
    """EGES side information from a feature table (data/feature_table.py) for the items
    ``item_ids`` (in vocabulary order; ids matched as strings): one field per column —
    categorical as it is, multi-valued ('|'-separated) as its values, text as its
    lower-cased words, numeric as ``buckets`` quantile buckets. An item not in the table
    has every field missing. A categorical column whose values are all distinct (a name,
    a URL) says nothing one item could share with another and is left out, as is a column
    with no value for any item.

    Args:
      table: a FeatureTable.
      item_ids: the catalogue's ids.
      columns: the columns to use (default: every feature column of the table).
      flag: how the caller's command line names ``columns``, for messages.

    Returns ({field: codes} as ``encode_side_info`` makes them, notes: a line per column
    used or left out). Raises ValueError naming ``flag`` for a column the table does not
    have, and when no column is left.
    """
    names = list(table.kinds) if columns is None else list(columns)
    for c in names:
        if c not in table.kinds:
            raise ValueError(f"{flag} {c!r}: {table.source} has no such feature column; it "
                             f"has {list(table.kinds)}")
    row_of = {str(i): r for r, i in enumerate(table.ids.tolist())}
    rows = np.asarray([row_of.get(str(i), -1) for i in item_ids], np.int64)
    have = rows >= 0
    fields, notes = {}, []
    for c in names:
        kind, col = table.kinds[c], table.columns[c]
        if kind == "numeric":
            labels = _quantile_labels(col, buckets)
            values = [labels[r] if r >= 0 else None for r in rows]
            how = f"numeric, {buckets} quantile buckets"
        elif kind == "multi_hot":
            values = [[t for t in str(col[r]).split("|") if t.strip()] if r >= 0 else []
                      for r in rows]
            values = [[t.strip() for t in v] for v in values]
            how = "multi-valued ('|')"
        elif kind == "text":
            values = [sorted(set(re.findall(r"\w+", str(col[r]).lower()))) if r >= 0 else []
                      for r in rows]
            how = "text, as its words"
        else:
            values = [str(col[r]) if r >= 0 and str(col[r]) else None for r in rows]
            how = "categorical"
        present = [v for v in values if not (v is None or (isinstance(v, list) and not v))]
        if not present:
            notes.append(f"  {c:<20} left out: no value for any item")
            continue
        if kind == "categorical" and len(present) > 1 and len(set(present)) == len(present):
            notes.append(f"  {c:<20} left out: every item has its own value (nothing shared)")
            continue
        fields[c] = values
        notes.append(f"  {c:<20} {how}")
    if not fields:
        raise ValueError(f"{table.source}: no column usable as side information "
                         f"({', '.join(names) or 'none'}); see {flag}")
    codes, _ = encode_side_info(fields)
    notes.insert(0, f"side information from {table.source}: {int(have.sum())} of "
                    f"{len(rows)} items in the table, fields:")
    return codes, notes


__all__ = ["encode_field", "encode_side_info", "year_buckets", "side_info_from_table"]
