"""External ids to int64 rows, most frequent first, with their counts (for logQ), built in
one streaming pass over a log: ``build_vocabularies(path) -> (users, items)``.
"""

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from twotower.data.external_ids import ExternalIds
from twotower.data.interactions import INT_LIKE, all_int_like, ids_to_numpy, iter_batches


class IdVocabulary:
    """A log's vocabulary: external ids → int64 indexes, most frequent first (ties:
    smaller id first), with their counts.

    ids: [V] external ids (int64 or ``<U``), position = index.
    counts: [V] int64 occurrences in the log (for logQ: p(i) = counts[i] / counts.sum()).

    Lookups go through :class:`~twotower.data.external_ids.ExternalIds` (a sorted search,
    O(log V) an id; built once), the one id-lookup of the toolkit: Arrow's ``index_in``
    rebuilds its hash table of all V ids at every call, O(V) a batch, which at 10⁷ items
    would set the speed of a streamed log.
    """

    def __init__(self, ids, counts):
        self.ids = np.asarray(ids)
        self.counts = np.asarray(counts, np.int64)
        if len(self.counts) != len(self.ids):
            raise ValueError(f"counts must have one entry per id ({len(self.ids)}), got "
                             f"{len(self.counts)}")
        self._index = None

    def __len__(self):
        return len(self.ids)

    def __eq__(self, other):
        return (isinstance(other, IdVocabulary) and np.array_equal(self.ids, other.ids)
                and np.array_equal(self.counts, other.counts))

    def __repr__(self):
        return f"IdVocabulary({len(self)} ids, {int(self.counts.sum())} occurrences)"

    def _arrow_type(self):
        return pa.int64() if self.ids.dtype.kind in "iu" else pa.string()

    @property
    def index(self):
        """The ExternalIds over :attr:`ids` (built on first use)."""
        if self._index is None or len(self._index) != len(self.ids):
            self._index = ExternalIds(self.ids)
        return self._index

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
            ok = pc.match_substring_regex(values, INT_LIKE)
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
        flat = flat.astype(np.int64) if pa.types.is_integer(vocab_type) else flat.astype(str)
        return np.where(valid, self.index.find(flat), -1).astype(np.int64)


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
    return IdVocabulary(ids_to_numpy(table.column("id"), pa.types.is_integer(ids.type)),
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
                s["int"] = s["int"] and all_int_like(col)
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
