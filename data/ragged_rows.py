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

    @classmethod
    def from_sorted_pairs(cls, rows, values, num_rows):
        """From pairs (rows[j], values[j]) already ordered by row (then value)."""
        counts = np.bincount(np.asarray(rows, np.int64), minlength=num_rows)
        return cls(np.r_[0, np.cumsum(counts)], values)

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
