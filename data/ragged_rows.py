"""``RaggedRows``: one sorted array of item indexes per user, held as two flat arrays.

A list of NumPy arrays costs ~100 bytes of Python object per user on top of its values;
at millions of users that overhead, not the items, dominates. ``RaggedRows`` keeps the
same contents as CSR arrays (``offsets`` [n + 1] int64, ``values`` int32) and reads like
the list it replaces: ``len(rows)``, ``rows[r]`` (a read-only view), iteration.
"""

import numpy as np


class RaggedRows:
    """Rows of int32 values: row r is ``values[offsets[r]:offsets[r + 1]]``.

    Args:
      offsets: [n + 1] non-decreasing, offsets[0] == 0, offsets[-1] == len(values).
      values: the rows' values, concatenated.
    """

    def __init__(self, offsets, values):
        offsets = np.asarray(offsets, np.int64)
        values = np.asarray(values, np.int32)
        if offsets.ndim != 1 or len(offsets) == 0 or offsets[0] != 0 \
                or offsets[-1] != len(values) or np.any(np.diff(offsets) < 0):
            raise ValueError("offsets must start at 0, never decrease and end at "
                             f"len(values)={len(values)}")
        values.flags.writeable = False
        self.offsets, self.values = offsets, values

    def __len__(self):
        return len(self.offsets) - 1

    def __getitem__(self, row):
        row = int(row)
        if row < 0:
            row += len(self)
        if not 0 <= row < len(self):
            raise IndexError(f"row {row} out of range for {len(self)} rows")
        return self.values[self.offsets[row]:self.offsets[row + 1]]

    def __iter__(self):
        for r in range(len(self)):
            yield self.values[self.offsets[r]:self.offsets[r + 1]]

    def lengths(self):
        """[n] the number of values of each row."""
        return np.diff(self.offsets)

    def union(self, rows, values, chunk_values=1 << 20):
        """RaggedRows whose row r is the sorted distinct values of ``self[r]`` and of
        every ``values[j]`` with ``rows[j] == r`` (pairs in any order).

        Rows are merged a chunk of about ``chunk_values`` values at a time into one int32
        array sized for the inputs (its unused tail, the duplicates dropped, is left out
        of the result's view): no int64 array of the whole size. Sorted rows of ``self``
        are assumed, as everywhere in this class."""
        rows = np.asarray(rows, np.int64).reshape(-1)
        values = np.asarray(values, np.int64).reshape(-1)
        if len(rows) != len(values):
            raise ValueError(f"{len(rows)} rows for {len(values)} values")
        n = len(self)
        if len(rows) and (rows.min() < 0 or rows.max() >= n):
            bad = rows[(rows < 0) | (rows >= n)][0]
            raise IndexError(f"row {int(bad)} out of range for {n} rows")
        order = np.lexsort((values, rows))
        rows, values = rows[order], values[order]
        del order
        width = int(max(self.values.max(initial=-1), values.max(initial=-1))) + 1
        out = np.empty(len(self.values) + len(values), np.int32)
        offsets = np.zeros(n + 1, np.int64)
        # chunk boundaries: rows whose own values add up to about chunk_values
        cuts = np.unique(np.r_[np.searchsorted(self.offsets, np.arange(
            chunk_values, self.offsets[-1], chunk_values)), n])
        at, start = 0, 0
        for stop in cuts.tolist():
            if stop <= start:
                continue
            lo, hi = self.offsets[start], self.offsets[stop]
            a, b = np.searchsorted(rows, [start, stop])
            own = np.repeat(np.arange(start, stop, dtype=np.int64),
                            np.diff(self.offsets[start:stop + 1]))
            key = np.r_[own * width + self.values[lo:hi], rows[a:b] * width + values[a:b]]
            del own
            key.sort()  # (np.unique is many times slower here than a sort and a mask)
            key = key[np.r_[True, key[1:] != key[:-1]]] if len(key) else key
            k = len(key)
            out[at:at + k] = key % width
            offsets[start + 1:stop + 1] = at + np.cumsum(
                np.bincount(key // width - start, minlength=stop - start))
            at += k
            start = stop
        return RaggedRows(offsets, out[:at])

    def take(self, rows, chunk_rows=1 << 14):
        """RaggedRows of ``rows`` (row indexes, in the order given).

        Rows 0..k-1 in order share this object's arrays (views, no copy); any other
        selection copies the values into one int32 array, ``chunk_rows`` rows at a time,
        so the only index array is a chunk's, not the selection's size."""
        rows = np.asarray(rows, np.int64).reshape(-1)
        if len(rows) and (rows.min() < 0 or rows.max() >= len(self)):
            bad = rows[(rows < 0) | (rows >= len(self))][0]
            raise IndexError(f"row {int(bad)} out of range for {len(self)} rows")
        n = len(rows)
        if n == 0 or (rows[0] == 0 and rows[-1] == n - 1
                      and np.array_equal(rows, np.arange(n))):
            return RaggedRows(self.offsets[:n + 1], self.values[:self.offsets[n]])
        starts = self.offsets[rows]
        lengths = self.offsets[rows + 1] - starts
        offsets = np.zeros(n + 1, np.int64)
        np.cumsum(lengths, out=offsets[1:])
        values = np.empty(int(offsets[-1]), np.int32)
        for a in range(0, n, chunk_rows):
            b = min(a + chunk_rows, n)
            lo, hi = offsets[a], offsets[b]
            # position j of the chunk's output reads starts[row] + (j - offsets[row])
            shift = np.repeat(starts[a:b] - offsets[a:b], lengths[a:b])
            values[lo:hi] = self.values[shift + np.arange(lo, hi)]
        return RaggedRows(offsets, values)
