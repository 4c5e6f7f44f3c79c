"""``ShardedSplit``: a training split that lives in Parquet shards on disk, read a shard
at a time, so that memory holds one shard whatever the log's length.

The shards (written by data/streamed_log_task.py) hold one row per training example:
``user`` (the user's row in the users table), ``item`` (the positive's item index) and
``h1`` … ``hN`` (the user's previous N items + 1, most recent first, 0 pads), in an order
already shuffled once over the whole log. Epoch e reads them in an order that is a pure
function of (seed, e): the shards in a permuted order, each shard's rows permuted — so a
resumed run draws exactly the batches the interrupted one would have, starting mid-epoch
without reading the skipped rows.
"""

import dataclasses
import os
import shutil
import weakref

import numpy as np
import pyarrow.parquet as pq


@dataclasses.dataclass
class ShardedSplit:
    """The training examples of a log, in shards.

    folder: the shards' folder (removed with this object when ``owned``).
    files: shard paths. rows: [len(files)] rows of each.
    history_length: N, the ``h1`` … ``hN`` columns.
    user_counts: [n_users] training examples per user row.
    """

    folder: str
    files: list
    rows: np.ndarray
    history_length: int
    user_counts: np.ndarray
    owned: bool = False

    def __post_init__(self):
        self.rows = np.asarray(self.rows, np.int64)
        if self.owned:  # the folder this process wrote goes with the split
            weakref.finalize(self, shutil.rmtree, self.folder, True)

    def __len__(self):
        return int(self.rows.sum())

    def _shard(self, index, seed, epoch):
        """Shard ``index`` as (user, item, history) arrays, rows permuted by (seed, epoch)."""
        table = pq.read_table(self.files[index])
        user = table.column("user").to_numpy().astype(np.int64)
        item = table.column("item").to_numpy().astype(np.int64)
        n = self.history_length
        history = (np.stack([table.column(f"h{k}").to_numpy() for k in range(1, n + 1)], 1)
                   .astype(np.int64) if n else np.zeros((len(user), 0), np.int64))
        order = np.random.default_rng([seed, epoch, index]).permutation(len(user))
        return user[order], item[order], history[order]

    def batches(self, batch_size, seed, epoch, *, first=0, drop_remainder=False):
        """Epoch ``epoch``'s batches from batch ``first`` on: dicts of ``user`` [b],
        ``item`` [b], ``history`` [b, N] (int64). Every batch has ``batch_size`` rows but
        the epoch's last (left out with ``drop_remainder``)."""
        batch_size = int(batch_size)
        order = np.random.default_rng([seed, epoch]).permutation(len(self.files))
        ends = np.cumsum(self.rows[order])
        total = int(ends[-1]) if len(ends) else 0
        stop = total - total % batch_size if drop_remainder else total
        start = int(first) * batch_size
        pending = None
        for j, shard in enumerate(order):
            lo, hi = int(ends[j] - self.rows[shard]), int(ends[j])
            if hi <= start or lo >= stop:
                continue
            part = self._shard(int(shard), seed, epoch)
            a, b = max(start, lo) - lo, min(stop, hi) - lo
            part = tuple(x[a:b] for x in part)
            if pending is not None:
                part = tuple(np.concatenate([p, x]) for p, x in zip(pending, part))
            full = len(part[0]) - len(part[0]) % batch_size
            for k in range(0, full, batch_size):
                yield {"user": part[0][k:k + batch_size], "item": part[1][k:k + batch_size],
                       "history": part[2][k:k + batch_size]}
            pending = tuple(x[full:] for x in part)
        if pending is not None and len(pending[0]):
            yield {"user": pending[0], "item": pending[1], "history": pending[2]}

    def read_all(self):
        """Every row as (user, item, history) arrays in shard order (for tests and small
        logs: memory grows with the split)."""
        parts = [self._shard(i, 0, 0) for i in range(len(self.files))]
        if not parts:
            n = self.history_length
            return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, n), np.int64)
        return tuple(np.concatenate([p[k] for p in parts]) for k in range(3))


def shard_paths(folder, count):
    """The shard file names of a folder: part-00000.parquet, …"""
    return [os.path.join(folder, f"part-{i:05d}.parquet") for i in range(count)]
