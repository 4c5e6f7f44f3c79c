"""A ScaNN searcher addressed by item id: exact-k search with exclusions, and updates.

ScaNN's pybind searcher stores points by position. This class keeps the position → item
id array, the id → position map and the (normalised, for cosine) vectors next to it, so
that results come back as item ids, a query can exclude items it has seen, and items can
be added, removed and replaced in place (ScaNN's ``upsert``/``delete``; ``delete`` moves
the last point into the freed slot, and the map follows it).

Why not the pybind wrapper's own ``docids``: it maps every result through a Python list
comprehension (slow for large batches) and pickles the ids; we keep int64 numpy arrays.

One query (what ``twotower serve`` does per request) takes a short path: one dot product
checks finiteness and gives the norm, then the pybind ``search``, then the id lookup.

CPU kernels: the scann 1.4.2 wheel never detects the CPU. Its static initialiser leaves
``research_scann::flags_internal::should_use_avx2`` / ``should_use_avx512`` false, so
every search runs the SSE4 LUT16 and AVX1 float kernels although the AVX2 / AVX-512 ones
are in the same .so. :func:`enable_cpu_dispatch` sets those two exported flags where
/proc/cpuinfo lists the features (what ScaNN's own ``ScopedPlatformOverride`` does in its
tests); docs/benchmarks.md has the evidence and the measured gain.
``TWOTOWER_SCANN_DISPATCH=off`` leaves the wheel as shipped.
"""

import ctypes
import math
import os
import threading
import warnings

import numpy as np

from twotower.index.brute_force import exact_top_k
from twotower.index.config import IndexConfig
from twotower.data.external_ids import UnknownIdError, check_ids_list, check_int_ids


_DISPATCH_SYMBOLS = {
    "avx2": "_ZN14research_scann14flags_internal15should_use_avx2E",
    "avx512": "_ZN14research_scann14flags_internal17should_use_avx512E",
}
# what each flag needs from the CPU: ScaNN's own test (AVX512F, DQ, BW; AVX2), plus what
# its kernels are compiled for beside them (FMA with AVX2, VL with AVX-512), so a flag is
# never set where an instruction it unlocks could fault
_DISPATCH_NEEDS = {"avx2": ("avx", "avx2", "fma"),
                   "avx512": ("avx512f", "avx512dq", "avx512bw", "avx512vl")}
_DISPATCH_MODES = {"auto": True, "on": True, "1": True, "true": True, "yes": True,
                   "off": False, "0": False, "false": False, "no": False}
_dispatch_state = None
_dispatch_lock = threading.Lock()


def _cpu_flags():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def enable_cpu_dispatch():
    """Lets the scann wheel run its AVX2 / AVX-512 kernels on a CPU that has them.

    Idempotent and cheap after the first call (ScannIndex and build_index call it). Sets
    ScaNN's exported ``should_use_avx2`` / ``should_use_avx512`` flags (read on every
    search call; the LUT16 data layout does not depend on them) only where they are
    false, the CPU lists the features, and ``TWOTOWER_SCANN_DISPATCH`` is not ``off``.

    Returns:
      dict: ``{"avx2": bool, "avx512": bool}`` as ScaNN now has them, plus ``"changed"``
      (the flags set here) and ``"why"`` when nothing could be read or set.
    """
    global _dispatch_state
    if _dispatch_state is not None:
        return _dispatch_state
    with _dispatch_lock:
        if _dispatch_state is None:
            _dispatch_state = _enable_cpu_dispatch()
    return _dispatch_state


def _enable_cpu_dispatch():
    state = {"avx2": False, "avx512": False, "changed": []}
    mode = os.environ.get("TWOTOWER_SCANN_DISPATCH", "auto").strip().lower()
    if mode not in _DISPATCH_MODES:
        raise ValueError(f"TWOTOWER_SCANN_DISPATCH must be auto or off, got {mode!r}")
    try:
        flags = _dispatch_flags()
    except (ImportError, OSError, ValueError, AttributeError) as e:
        state["why"] = f"scann's dispatch flags not found ({e.__class__.__name__}: {e})"
        return state
    cpu = _cpu_flags()
    for name in ("avx2", "avx512"):  # the AVX-512 kernels sit beside AVX2 ones: AVX2 first
        if (_DISPATCH_MODES[mode] and not flags[name].value
                and all(f in cpu for f in _DISPATCH_NEEDS[name])
                and (name == "avx2" or flags["avx2"].value)):
            flags[name].value = True
            state["changed"].append(name)
        state[name] = bool(flags[name].value)
    if not _DISPATCH_MODES[mode]:
        state["why"] = f"TWOTOWER_SCANN_DISPATCH={mode}"
    return state


def _dispatch_flags():
    from scann.scann_ops.py import scann_ops_pybind  # noqa: F401 (puts scann_pybind on the path)
    import scann_pybind
    lib = ctypes.CDLL(scann_pybind.__file__, mode=getattr(os, "RTLD_NOLOAD", 0))
    return {k: ctypes.c_bool.in_dll(lib, sym) for k, sym in _DISPATCH_SYMBOLS.items()}


def cpu_dispatch_flags():
    """ScaNN's ``should_use_avx2`` / ``should_use_avx512`` as they are now (read live)."""
    return {k: bool(f.value) for k, f in _dispatch_flags().items()}


class kernels_as_shipped:
    """Context manager: ScaNN's AVX2/AVX-512 flags off inside (the wheel as shipped), as
    they were after (for measuring what :func:`enable_cpu_dispatch` gives on one index:
    the flags are read per search call, so one index serves both)."""

    def __enter__(self):
        self._flags = list(_dispatch_flags().values())
        self._was = [f.value for f in self._flags]
        for f in self._flags:
            f.value = False
        return self

    def __exit__(self, *exc):
        for f, v in zip(self._flags, self._was):
            f.value = v
        return False


def _as_ids(ids, name="item_ids"):
    """Item ids to index: integers >= 0 (-1 pads results, so no real id can be -1)."""
    return check_int_ids(ids, name, nonnegative=True)


def check_vectors(vectors, dim, name="vectors"):
    """Validates a float matrix [n, dim] (or a vector [dim], returned as [1, dim])."""
    if (isinstance(vectors, np.ndarray) and vectors.dtype == np.float32
            and vectors.ndim in (1, 2) and vectors.flags.c_contiguous
            and (dim is None or vectors.shape[-1] == dim)):
        # fast path (the single-query hot loop): only the finiteness check remains
        if not np.isfinite(vectors).all():
            raise ValueError(f"{name} contains NaN or inf")
        return vectors.reshape(1, -1) if vectors.ndim == 1 else vectors
    arr = np.asarray(vectors)
    if arr.dtype.kind not in "f":
        raise ValueError(f"{name} must be floating point, got dtype {arr.dtype}")
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2 or (dim is not None and arr.shape[1] != dim):
        raise ValueError(f"{name} must have shape [n, {dim}], got {np.asarray(vectors).shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or inf")
    return np.ascontiguousarray(arr, dtype=np.float32)


_MIN_NORM = np.float32(1e-12)


def squared_norms(vectors):
    """Squared L2 norm of each row of ``vectors`` [n, d] -> [n].

    Each row's x·x is numpy's vector dot (``matmul`` of [1, d] by [d, 1] per row), the
    same routine as ``row @ row`` on one row, so :meth:`ScannIndex._search_one` computes
    a single query's norm with one cheap call and gets the same bits as this batch form.
    """
    return np.matmul(vectors[:, None, :], vectors[:, :, None])[:, 0, 0]


def normalize(vectors):
    """Row-wise L2 normalisation x / max(‖x‖, 1e-12) (cosine similarity = inner product
    of unit vectors); ‖x‖ = sqrt of :func:`squared_norms`, in the input's precision."""
    norms = np.sqrt(squared_norms(vectors))[:, None]
    return vectors / np.maximum(norms, 1e-12)


class ScannIndex:
    """Item ids + vectors + a ScaNN pybind searcher kept in step.

    Build one with :func:`twotower.index.builder.build_index`. Search-time parameters
    (``config.num_leaves_to_search``, ``config.reorder``) can be changed with
    :meth:`set_search_params` (the tuner does).
    """

    def __init__(self, searcher, item_ids, vectors, config):
        # ``searcher`` is the raw ``scann_pybind.ScannNumpy`` (the wrapper refuses updates
        # without its own docids, see the module docstring).
        self.searcher = getattr(searcher, "searcher", searcher)
        self.config = config
        ids = _as_ids(item_ids)
        if len(ids) != len(vectors) or len(ids) != self.searcher.size():
            raise ValueError(f"item_ids ({len(ids)}), vectors ({len(vectors)}) and searcher "
                             f"({self.searcher.size()}) must have the same length")
        self._ids = ids
        self._vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        self._pos = {int(i): p for p, i in enumerate(ids.tolist())}
        if len(self._pos) != len(ids):
            raise ValueError("item_ids contain duplicates")
        self._lock = threading.RLock()
        enable_cpu_dispatch()

    def _replace_searcher(self, searcher, config):
        """Swaps in a searcher built over the same items in the same order (the tuner's
        rebuilds with other build-time knobs)."""
        searcher = getattr(searcher, "searcher", searcher)
        with self._lock:
            if searcher.size() != self.size:
                raise ValueError(f"new searcher holds {searcher.size()} points, the index "
                                 f"{self.size}")
            self.searcher = searcher
            self.config = config
            self.__dict__.pop("_warned_k", None)

    # -- read access ----------------------------------------------------------------
    @property
    def size(self):
        return len(self._ids)

    @property
    def dim(self):
        return self._vectors.shape[1]

    @property
    def item_ids(self):
        """Item ids by position (a copy)."""
        return self._ids.copy()

    @property
    def vectors(self):
        """Indexed vectors by position (normalised for cosine; a read-only view)."""
        v = self._vectors.view()
        v.flags.writeable = False
        return v

    def __contains__(self, item_id):
        try:
            (i,) = check_int_ids([item_id], "item_id").tolist()
        except ValueError:
            return False
        return i in self._pos

    def indexed(self, item_ids, name="item_ids"):
        """bool [n]: which of the (integer) ``item_ids`` are indexed now."""
        pos = self._pos
        return np.fromiter((i in pos for i in check_int_ids(item_ids, name).tolist()),
                           dtype=bool)

    def positions(self, item_ids, name="item_ids"):
        """Positions of ``item_ids`` (int64 [n]); UnknownIdError (a ValueError) names
        every id not indexed; non-integer ids are a ValueError naming ``name``."""
        out, unknown = [], []
        for i in check_int_ids(item_ids, name).tolist():
            p = self._pos.get(i)
            if p is None:
                unknown.append(i)
            out.append(p)
        if unknown:
            raise UnknownIdError(unknown, "item", self.size)
        return np.asarray(out, dtype=np.int64)

    def vectors_of(self, item_ids):
        """The indexed vectors of ``item_ids`` [n, dim]."""
        return self._vectors[self.positions(item_ids)]

    def set_search_params(self, *, num_leaves_to_search=None, reorder=None, tuned_k=None):
        """Changes the search-time knobs (validated through IndexConfig); ``tuned_k``
        records the k they were tuned for."""
        import dataclasses
        changes = {}
        if num_leaves_to_search is not None:
            changes["num_leaves_to_search"] = int(num_leaves_to_search)
        if reorder is not None:
            changes["reorder"] = int(reorder)
        if tuned_k is not None:
            changes["tuned_k"] = int(tuned_k)
        self.config = dataclasses.replace(self.config, **changes)
        self.__dict__.pop("_warned_k", None)

    # -- search ---------------------------------------------------------------------
    def prepare_queries(self, queries):
        """Validated float32 queries [Q, dim] (normalised for cosine); ValueError for an
        empty batch (ScaNN would raise a RuntimeError)."""
        q = check_vectors(queries, self.dim, "queries")
        if len(q) == 0:
            raise ValueError("queries is an empty batch: give at least one query")
        return normalize(q) if self.config.distance == "cosine" else q

    def _warn_beyond_tuned_k(self, k, stacklevel=3):
        tuned = self.config.tuned_k
        if tuned and k > tuned and not self.config.brute_force:
            warned = self.__dict__.setdefault("_warned_k", set())
            if k not in warned:
                warned.add(k)
                warnings.warn(f"search with k={k} on an index tuned for k={tuned}: recall "
                              f"at k={k} was not measured and may be lower; re-tune with "
                              f"tune(index, queries, k={k})", UserWarning,
                              stacklevel=stacklevel)

    def search(self, queries, k, *, exclude=None, num_leaves_to_search=None, reorder=None):
        """Approximate top-k item ids per query, leaving out excluded ids.

        Args:
          queries: float [Q, dim] (or [dim]) query embeddings.
          k: results per query, 1 <= k <= number of items.
          exclude: optional list of Q iterables of item ids to leave out (seen items).
            The search fetches k + |excluded| and filters, so exactly k results come
            back whenever k items remain. Ids must be integers (a float such as 127.9 or
            an id outside int64 is a ValueError); ids not indexed are simply absent.
          num_leaves_to_search, reorder: override the configured search knobs.

        Returns:
          (item_ids int64 [Q, k], scores float32 [Q, k]); -1 / -inf pad a row only when
          fewer than k items remain after exclusion (no item id is negative).

        Warns (once per k) when k exceeds the k the index was tuned for
        (``config.tuned_k``).
        """
        if (num_leaves_to_search is None and reorder is None and type(k) is int
                and isinstance(queries, np.ndarray)):
            one = self._search_one(queries, k, exclude)
            if one is not None:
                return one
        q = self.prepare_queries(queries)
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= self.size:
            raise ValueError(f"k must be an int in [1, {self.size}], got {k!r}")
        self._warn_beyond_tuned_k(int(k))
        ex_sets = None
        extra = 0
        if exclude is not None:
            ex_sets = [set(e.tolist()) for e in check_ids_list(exclude, "exclude", len(q))]
            extra = max((len(s) for s in ex_sets), default=0)
        with self._lock:
            fetch = min(int(k) + extra, self.size)
            pos, scores = self._search_positions(q, fetch, num_leaves_to_search, reorder)
            ids = np.where(pos >= 0, self._ids[np.maximum(pos, 0)], -1)
        if ex_sets is None and fetch == k:
            return ids, scores
        out_ids = np.full((len(q), k), -1, dtype=np.int64)
        out_scores = np.full((len(q), k), -np.inf, dtype=np.float32)
        for r in range(len(q)):
            s = ex_sets[r] if ex_sets is not None else ()
            keep = [j for j, i in enumerate(ids[r].tolist()) if i != -1 and i not in s][:k]
            out_ids[r, :len(keep)] = ids[r, keep]
            out_scores[r, :len(keep)] = scores[r, keep]
        return out_ids, out_scores

    def _search_one(self, q, k, exclude):
        """The one-query path (what a server does per request), or None where the general
        path must decide (validation errors included). Same results as the general path:
        the same query, to the last bit, and the same knobs reach the same ScaNN call."""
        ids_all = self._ids
        if (q.dtype != np.float32 or q.size != self._vectors.shape[1] or q.ndim not in (1, 2)
                or not q.flags.c_contiguous or not 1 <= k <= ids_all.shape[0]):
            return None
        v = q.reshape(-1) if q.ndim == 2 else q
        # x·x is finite iff every entry is (barring overflow: general path); ``v @ v`` is
        # the per-row dot of squared_norms(), so the normalised query is the one
        # normalize() gives, to the last bit (a last-bit change may flip a near-tied leaf)
        ss = v @ v
        if not math.isfinite(ss):
            return None
        c = self.config
        if c.distance == "cosine":
            v = v / max(np.sqrt(ss), _MIN_NORM)
        fetch = k
        if exclude is not None:
            ex = set(check_ids_list(exclude, "exclude", 1)[0].tolist())
            fetch = min(k + len(ex), ids_all.shape[0])
        else:
            ex = None
        brute = c.brute_force
        if c.tuned_k and k > c.tuned_k and not brute:
            self._warn_beyond_tuned_k(k, stacklevel=4)
        pre = (c.reorder if c.reorder > fetch else fetch) if (c.reorder and not brute) else -1
        with self._lock:
            p, d = self.searcher.search(v, fetch, pre,
                                        c.num_leaves_to_search if c.num_leaves else -1)
            if p.shape[0] < fetch:
                return None  # fewer found than asked: the general path pads
            ids = self._ids[p]
        if not ex:
            if fetch == k:
                return ids[None], d[None]
            return ids[None, :k], d[None, :k]
        keep = [j for j, i in enumerate(ids.tolist()) if i not in ex][:k]
        if len(keep) < k:
            return None
        return ids[keep][None], d[keep][None]

    def _search_positions(self, q, fetch, leaves, reorder):
        c = self.config
        leaves = c.num_leaves_to_search if leaves is None else leaves
        reorder = c.reorder if reorder is None else reorder
        pre = max(reorder, fetch) if (reorder and not c.brute_force) else -1
        if len(q) == 1:
            # The single-query path skips the batching overhead (it matters at > 10k QPS).
            p, d = self.searcher.search(q[0], fetch, pre, leaves if c.num_leaves else -1)
            p, d = np.asarray(p)[None, :], np.asarray(d)[None, :]
        else:
            p, d = self.searcher.search_batched(q, fetch, pre, leaves if c.num_leaves else -1,
                                                False, 0)
        p = np.asarray(p, dtype=np.int64)
        d = np.asarray(d, dtype=np.float32)
        if p.shape[1] < fetch:  # ScaNN may return fewer when leaves hold fewer points
            pad = fetch - p.shape[1]
            p = np.pad(p, ((0, 0), (0, pad)), constant_values=-1)
            d = np.pad(d, ((0, 0), (0, pad)), constant_values=-np.inf)
        return p, d

    def exact_search(self, queries, k, *, exclude=None):
        """Exact (numpy brute-force) top-k ids and scores, same contract as :meth:`search`."""
        q = self.prepare_queries(queries)
        ex = None
        if exclude is not None:
            ex = [np.asarray([self._pos[i] for i in e.tolist() if i in self._pos],
                             dtype=np.int64)
                  for e in check_ids_list(exclude, "exclude", len(q))]
        with self._lock:
            pos, scores = exact_top_k(q, self._vectors, k, exclude=ex)
            ids = np.where(pos >= 0, self._ids[np.maximum(pos, 0)], -1)
        return ids, scores

    # -- updates --------------------------------------------------------------------
    def _prepare_items(self, vectors):
        v = check_vectors(vectors, self.dim, "vectors")
        return normalize(v) if self.config.distance == "cosine" else v

    def add(self, item_ids, vectors):
        """Adds new items (ValueError if an id is already indexed)."""
        ids = _as_ids(item_ids)
        v = self._prepare_items(vectors)
        if len(ids) != len(v):
            raise ValueError(f"item_ids ({len(ids)}) and vectors ({len(v)}) differ in length")
        if len(set(ids.tolist())) != len(ids):
            raise ValueError("item_ids to add contain duplicates")
        with self._lock:
            present = [i for i in ids.tolist() if i in self._pos]
            if present:
                raise ValueError(f"item ids already indexed: {present[:10]} (use replace)")
            self.searcher.upsert([None] * len(ids), v, len(ids))
            start = len(self._ids)
            self._ids = np.concatenate([self._ids, ids])
            self._vectors = np.concatenate([self._vectors, v])
            for j, i in enumerate(ids.tolist()):
                self._pos[i] = start + j

    def replace(self, item_ids, vectors):
        """Replaces the vectors of indexed items (ValueError if an id is unknown)."""
        ids = check_int_ids(item_ids, "item_ids")
        v = self._prepare_items(vectors)
        if len(ids) != len(v):
            raise ValueError(f"item_ids ({len(ids)}) and vectors ({len(v)}) differ in length")
        with self._lock:
            pos = self.positions(ids)
            self.searcher.upsert([int(p) for p in pos], v, len(ids))
            self._vectors[pos] = v

    def remove(self, item_ids):
        """Removes indexed items (ValueError if an id is unknown)."""
        ids = check_int_ids(item_ids, "item_ids")
        if len(set(ids.tolist())) != len(ids):
            raise ValueError("item_ids to remove contain duplicates")
        with self._lock:
            self.positions(ids)  # validates every id before anything changes
            if len(ids) >= self.size:
                raise ValueError(f"cannot remove all {self.size} items from an index")
            order = []
            id_list = self._ids.tolist()
            vectors = self._vectors
            for i in ids.tolist():
                # ScaNN's delete moves the last point into the freed slot, one at a time.
                p = self._pos.pop(i)
                last = len(id_list) - 1
                order.append(p)
                if p != last:
                    moved = id_list[last]
                    id_list[p] = moved
                    vectors[p] = vectors[last]
                    self._pos[moved] = p
                id_list.pop()
                vectors = vectors[:last]
            self.searcher.delete(order)
            self._ids = np.asarray(id_list, dtype=np.int64)
            self._vectors = np.ascontiguousarray(vectors)
