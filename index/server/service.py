"""The service behind the routes: a Retriever under a read-write lock, requests checked
against the limits, concurrent by-user requests answered in shared batches.
"""

import asyncio
import logging
import threading

import numpy as np

from twotower.index.builder import embed
from twotower.index.feature_schema import FeatureError
from twotower.index.server.schemas import api_models, json_response_class, short


_log = logging.getLogger(__name__)


class ApiError(Exception):
    """A client error answered with ``status`` and ``{"error": message, **extra}``."""

    def __init__(self, status, message, headers=None, **extra):
        super().__init__(message)
        self.status, self.message, self.headers, self.extra = status, message, headers, extra


class _ReadWriteLock:
    """Many concurrent searches, or one update (writer preference).

    The stdlib has no readers/writer lock; a plain Lock would also serialise the query
    towers' TF work, which runs in parallel between updates.
    """

    def __init__(self):
        self._cond = threading.Condition()
        self._readers = 0
        self._writer = False
        self._writers_waiting = 0

    def read(self):
        return _Held(self, False)

    def write(self):
        return _Held(self, True)

    def _acquire(self, write):
        with self._cond:
            if write:
                self._writers_waiting += 1
                while self._writer or self._readers:
                    self._cond.wait()
                self._writers_waiting -= 1
                self._writer = True
            else:
                while self._writer or self._writers_waiting:
                    self._cond.wait()
                self._readers += 1

    def _release(self, write):
        with self._cond:
            if write:
                self._writer = False
            else:
                self._readers -= 1
            self._cond.notify_all()


class _Held:
    def __init__(self, lock, write):
        self.lock, self.write = lock, write

    def __enter__(self):
        self.lock._acquire(self.write)

    def __exit__(self, *exc):
        self.lock._release(self.write)


def _id_array(ids, name):
    """JSON ids (validated ints or strings) as one int64 or unicode array."""
    kinds = {type(i) for i in ids}
    if len(kinds) > 1:
        raise ApiError(400, f"{name} must be all integers or all strings, got both")
    return np.asarray(ids, dtype=np.int64 if kinds == {int} else None)


def _kind_of(req, keys):
    return next(k for k in keys if k in type(req).model_fields)


class IndexService:
    """The HTTP endpoints' work on a :class:`~twotower.index.retriever.Retriever`.

    Every method but :meth:`health` runs in a worker thread. Searches hold the read side
    and updates the write side of one lock, so a search sees an update wholly or not at
    all. Ids are passed to the Retriever as the client sent them (its vocabulary, if any,
    maps them; an unknown one raises UnknownIdError, answered with 404; an unknown one
    in ``exclude`` is ignored). ``models`` are the request schemas (:func:`api_models`).
    """

    def __init__(self, retriever, *, max_batch, max_cost):
        self.retriever = retriever
        self.max_batch = int(max_batch)
        self.max_cost = int(max_cost)
        self.lock = _ReadWriteLock()
        self.updates_since_load = 0  # items added or removed over HTTP since the load
        self.batch_fallbacks = 0  # batches re-run request by request after an error
        self.models = api_models(retriever, max_batch=self.max_batch,
                                 max_cost=self.max_cost)
        # what /health says of the towers: computed once (the towers never change)
        self._asks = self.asks()
        self._features_doc = {
            who: None if schema is None else schema.describe()
            for who, schema in (("query", self.models.query_features),
                                ("item", self.models.item_features))}

    def swap(self, retriever):
        """Serves ``retriever`` (loaded beside the old one, with the same API) from now
        on: one reference swap under the write lock, so searches in flight finish on the
        old index. HTTP updates made to the old one are dropped with it."""
        with self.lock.write():
            self.retriever = retriever
            self.updates_since_load = 0

    def tuned_k(self):
        """The k the index's search knobs were tuned for (None: never tuned)."""
        return int(getattr(self.retriever.index.config, "tuned_k", 0) or 0) or None

    def asks(self):
        """The ways /u2i, /i2i and /items take their queries (body keys)."""
        m = self.models
        out = {}
        for endpoint, names in (("/u2i", ("U2IByUsers", "user_ids", "U2IByFeatures",
                                          "features", "U2IByEmbeddings", "embeddings")),
                                ("/i2i", ("I2IByItems", "item_ids", "I2IByFeatures",
                                          "features")),
                                ("/items", ("ItemByEmbedding", "embedding", "ItemByFeatures",
                                            "features"))):
            out[endpoint] = [names[j + 1] for j in range(0, len(names), 2)
                             if hasattr(m, names[j])]
        return out

    def health(self, read_only):
        """Cheap facts only: answered on the event loop, so it stays quick under load."""
        r = self.retriever
        config = r.index.config
        m = self.models
        return {"status": "ok", "num_items": int(r.index.size), "dim": int(r.index.dim),
                "distance": config.distance, "exact": bool(config.brute_force),
                "tuned_k": self.tuned_k(), "users": r.num_users,
                "users_with_seen": r.num_users_with_seen, "read_only": read_only,
                "id_kind": m.item_kind, "user_id_kind": m.user_kind,
                "towers": {"query": r.query_tower is not None,
                           "item": r.item_tower is not None},
                "asks": self._asks, "features": self._features_doc,
                "config": config.to_dict(),
                "limits": {"max_batch": self.max_batch, "max_cost": self.max_cost}}

    # -- bounds --
    def _check_bounds(self, rows, k, exclude):
        if rows < 1 or rows > self.max_batch:
            raise ApiError(400, f"batch size must be in [1, {self.max_batch}] (--max-batch), "
                                f"got {rows}")
        extra = len(exclude) if exclude else 0
        cost = rows * (k + extra)
        if cost > self.max_cost:
            raise ApiError(413, f"request cost {cost} = batch {rows} x (k {k} + exclude "
                                f"list {extra}) exceeds --max-cost {self.max_cost}: send "
                                "fewer queries per request or a smaller k")

    def _answer(self, result, k, available):
        """The JSON answer: ids and scores [rows, k], null where a row has fewer than k
        items (exclusions, or k above the ``available`` items); warnings."""
        ids, scores = result
        ids, scores = np.asarray(ids), np.asarray(scores, dtype=np.float64)
        id_rows, score_rows = ids.tolist(), scores.tolist()
        pad = ~np.isfinite(scores)
        for r, c in zip(*np.nonzero(pad)):  # rows with fewer than k items left
            id_rows[r][c] = score_rows[r][c] = None
        short = k - ids.shape[1] if ids.ndim == 2 else k
        if short > 0:
            for row in id_rows:
                row.extend([None] * short)
            for row in score_rows:
                row.extend([None] * short)
        return {"item_ids": id_rows, "scores": score_rows, "k": int(k),
                "warnings": self._warnings(k, available)}

    def _warnings(self, k, available):
        warnings = []
        tuned = self.tuned_k()
        if tuned is not None and k > tuned:
            if self.retriever.index.config.brute_force:
                # exact search scores every item: no recall to lose at a larger k
                warnings.append(f"k={k} exceeds the k={tuned} this index was tuned for; "
                                "the index is exact (brute force), so the answer is exact "
                                "at any k: nothing to re-tune")
            else:
                warnings.append(f"k={k} exceeds the k={tuned} this index was tuned for: "
                                "recall may be below the tuned target (re-tune with a "
                                "larger k)")
        if k > available:
            warnings.append(f"k={k} exceeds the {available} items a query can get here: "
                            f"each row ends with {k - available} nulls")
        return warnings

    def _limit(self, k, self_excluded=False):
        """(k to search, items a query can get): k is capped by the index size (one
        less for i2i by id, whose item is left out). Call under the read lock."""
        available = max(0, int(self.retriever.index.size) - (1 if self_excluded else 0))
        return min(k, available), available

    @staticmethod
    def _tower(fn, *args, what, **kwargs):
        """Calls into a tower; its rejections (TF's InvalidArgumentError, ...) are 400s
        that name no TF internals (the inputs already matched the tower's schema)."""
        try:
            return fn(*args, **kwargs)
        except (ApiError, ValueError):
            raise
        except Exception as e:  # noqa: BLE001
            if not type(e).__module__.startswith("tensorflow") and not isinstance(
                    e, (TypeError, KeyError, IndexError)):
                raise
            _log.info("the %s tower rejected a request's inputs: %s", what, short(e))
            raise ApiError(400, f"the {what} tower could not embed these inputs "
                                f"({type(e).__name__}): they have the form GET /health "
                                f"lists under features.{what}, so a value is outside what "
                                "the tower was trained on (e.g. an id at or above its "
                                "vocabulary size)") from None

    def _features(self, schema, rows, what, **kwargs):
        if schema is None:
            raise ApiError(400, f"this index's {what} tower takes no features it can "
                                "describe: send " + ("embeddings" if what == "query"
                                                     else "item_ids"))
        try:
            return schema.prepare(rows, **kwargs)
        except FeatureError as e:
            raise ApiError(400, str(e)) from None

    # -- endpoints --
    def u2i(self, req):
        r = self.retriever
        kind = _kind_of(req, ("user_ids", "features", "embeddings"))
        exclude = req.exclude or None
        if kind == "embeddings":
            q = np.asarray(req.embeddings, dtype=np.float32).reshape(-1, r.index.dim)
            self._check_bounds(len(q), req.k, exclude)
            with self.lock.read():
                r = self.retriever  # the one served now (a reload swaps it)
                k, available = self._limit(req.k)
                return self._answer(r.u2i_embeddings(
                    q, k, exclude=None if exclude is None else [exclude] * len(q)),
                    req.k, available)
        if kind == "user_ids":
            users = _id_array(req.user_ids, "user_ids")
            self._check_bounds(len(users), req.k, exclude)
            with self.lock.read():
                r = self.retriever  # the one served now (a reload swaps it)
                k, available = self._limit(req.k)
                return self._answer(self._tower(
                    r.u2i_users, users, k, exclude_seen=req.exclude_seen,
                    exclude=None if exclude is None else [exclude] * len(users),
                    what="query"), req.k, available)
        return self._by_features(req, exclude, "query")

    def _by_features(self, req, exclude, which):
        """u2i ("query") or i2i ("item") by tower features: the schema's checks (400)
        before the limits (413), then one tower call and one search on the index served
        now (a reload swaps it)."""
        features = self.models.query_features if which == "query" else self.models.item_features
        inputs = self._features(features, req.features, which)
        n = len(req.features)
        self._check_bounds(n, req.k, exclude)
        with self.lock.read():
            r = self.retriever
            search = r.u2i if which == "query" else r.i2i_features
            k, available = self._limit(req.k)
            return self._answer(self._tower(
                search, inputs, k, exclude=None if exclude is None else [exclude] * n,
                what=which), req.k, available)

    def u2i_users_batch(self, requests):
        """Several /u2i-by-user requests with one (k, exclude_seen, id kind) in one
        retriever call; returns a JSONResponse or an exception per request.

        A batch that fails (an unknown user in one request) is re-run request by request,
        so that each request gets its own answer or error.
        """
        JSONResponse = json_response_class()
        k, exclude_seen = requests[0].k, requests[0].exclude_seen
        if len(requests) > 1:
            users = [_id_array(req.user_ids, "user_ids") for req in requests]
            exclude = None
            if any(req.exclude for req in requests):
                exclude = [list(req.exclude or []) for req, u in zip(requests, users)
                           for _ in range(len(u))]
            try:
                with self.lock.read():
                    r = self.retriever  # the one served now (a reload swaps it)
                    k_search, available = self._limit(k)
                    ids, scores = self._tower(
                        r.u2i_users, np.concatenate(users), k_search,
                        exclude_seen=exclude_seen, exclude=exclude, what="query")
            except Exception:  # noqa: BLE001  re-run one by one below, for the right errors
                self.batch_fallbacks += 1
            else:
                out, start = [], 0
                for u in users:
                    stop = start + len(u)
                    out.append(JSONResponse(self._answer((ids[start:stop],
                                                          scores[start:stop]), k,
                                                         available)))
                    start = stop
                return out
        out = []
        for req in requests:
            try:
                out.append(JSONResponse(self.u2i(req)))
            except Exception as e:  # noqa: BLE001  answered by the app's error handlers
                out.append(e)
        return out

    def i2i(self, req):
        r = self.retriever
        kind = _kind_of(req, ("item_ids", "features"))
        exclude = req.exclude or None
        if kind == "item_ids":
            ids = _id_array(req.item_ids, "item_ids")
            self._check_bounds(len(ids), req.k, exclude)
            with self.lock.read():
                r = self.retriever  # the one served now (a reload swaps it)
                k, available = self._limit(req.k, self_excluded=True)
                if k < 1:  # a one-item index: the item has no neighbour
                    r._check_indexed(r._items_in(ids, "item_ids", allow_empty=False), ids)
                    empty = np.zeros((len(ids), 0))
                    return self._answer((empty.astype(np.int64), empty), req.k, available)
                return self._answer(r.i2i(
                    ids, k, exclude=None if exclude is None else [exclude] * len(ids)),
                    req.k, available)
        return self._by_features(req, exclude, "item")

    def upsert(self, req):
        r = self.retriever
        last = {}
        for j, row in enumerate(req.items):  # an id given twice: the last row wins
            last[row.item_id] = j
        rows = [req.items[j] for j in sorted(last.values())]
        ids = _id_array([row.item_id for row in rows], "items[].item_id")
        vectors = np.zeros((len(rows), r.index.dim), np.float32)
        by_features = [j for j, row in enumerate(rows) if hasattr(row, "features")]
        for j, row in enumerate(rows):
            if not hasattr(row, "features"):
                vectors[j] = row.embedding
        if by_features:
            schema = self.models.item_features
            inputs = self._features(
                schema, [rows[j].features for j in by_features], "item",
                ids=[rows[j].item_id for j in by_features],
                labels=[f"items[{last[rows[j].item_id]}].features" for j in by_features])
            vectors[by_features] = self._tower(
                embed, r.item_tower, inputs, desc="embedding items", progress=False,
                what="item")
        with self.lock.write():
            r = self.retriever  # the one served now (a reload swaps it)
            done = r.upsert_items(ids, vectors=vectors)
            self.updates_since_load += len(ids)
            return {**done, "num_items": int(r.index.size), "item_ids": ids.tolist()}

    def delete(self, req):
        """Removes the indexed items among ``item_ids``; the others (unknown, or removed
        already) are listed in ``unknown_ids``: a delete is idempotent."""
        r = self.retriever
        given = list(dict.fromkeys(req.item_ids))  # an id given twice is removed once
        ids = _id_array(given, "item_ids")
        with self.lock.write():
            r = self.retriever  # the one served now (a reload swaps it)
            internal = r.known_item_ids(ids)
            present = (internal >= 0) & r.index.indexed(internal)
            keep = ids[present]
            if len(keep) >= r.index.size:
                raise ApiError(409, f"removing these {len(keep)} items would leave the "
                                    f"index empty ({r.index.size} items): an index keeps at "
                                    "least one item")
            removed = int(r.remove_items(keep)) if len(keep) else 0
            self.updates_since_load += removed
            return {"removed": removed, "num_items": int(r.index.size),
                    "item_ids": keep.tolist(), "unknown_ids": ids[~present].tolist()}


class Batcher:
    """Coalesces concurrent requests of one kind into one call (dynamic batching, as TF
    Serving's batching does, without a wait: a batch is whatever arrived while the
    previous ones ran).

    At most ``parallel`` batches of a kind run at once; a request arriving while a slot
    is free starts at once, alone. ``run(requests)`` (in a worker thread) returns one
    response or exception per request; a batch holds at most ``max_batch`` rows.
    """

    def __init__(self, run, work, *, max_batch, parallel=2, histogram=None):
        self.run, self.work, self.histogram = run, work, histogram
        self.max_batch, self.parallel = int(max_batch), int(parallel)
        self.pending = {}   # key -> [(request, rows, future)]
        self.running = {}   # key -> batches in flight
        self.batches = 0    # batches run (for tests and metrics)

    async def submit(self, key, request, rows):
        future = asyncio.get_running_loop().create_future()
        self.pending.setdefault(key, []).append((request, rows, future))
        if self.running.get(key, 0) < self.parallel:
            self.running[key] = self.running.get(key, 0) + 1
            asyncio.ensure_future(self._drain(key))
        result = await future
        if isinstance(result, BaseException):
            raise result
        return result

    async def _drain(self, key):
        try:
            while self.pending.get(key):
                queue, batch, rows = self.pending[key], [], 0
                while queue and (not batch or rows + queue[0][1] <= self.max_batch):
                    item = queue.pop(0)
                    if not item[2].done():  # skip requests whose client went away
                        batch.append(item)
                        rows += item[1]
                if not queue:
                    del self.pending[key]
                if not batch:
                    continue
                self.batches += 1
                if self.histogram is not None:
                    self.histogram.observe(len(batch))
                try:
                    results = await self.work(self.run, [item[0] for item in batch])
                except Exception as e:  # noqa: BLE001  every request gets the error
                    results = [e] * len(batch)
                for (_, _, future), result in zip(batch, results):
                    if not future.done():
                        future.set_result(result)
        finally:
            self.running[key] -= 1
