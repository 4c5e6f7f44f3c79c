"""Categorical side information of items as integer codes, 0 = missing.

EGES (Wang et al., KDD 2018, §2.3) embeds each side-information field of an item (brand,
shop, category…; here genres and release year) in its own table. This turns per-item
values into the codes towers/side_info_tower.py takes: a single-valued field becomes
[N] codes 1..K (0 = missing: None, NaN, ""), a multi-valued field (a tuple/list per item,
e.g. genres) becomes [N, max_values] codes padded with 0. Codes follow the sorted order
of the distinct values, so the same values always get the same codes.
"""

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


__all__ = ["encode_field", "encode_side_info", "year_buckets"]
