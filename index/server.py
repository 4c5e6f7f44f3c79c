"""`twotower serve DIR`: a saved index folder behind an HTTP JSON API (FastAPI on uvicorn).

    GET    /health        status, num_items, dim, distance, tuned_k, users, read_only,
                          "features": what each tower takes, "asks": the ways to ask, ...
    POST   /u2i           exactly one of {"user_ids": [..]} | {"features": [rows]} |
                          {"embeddings": [[..]]}; optional "k" (10), "exclude": [ids]
                          (left out of every answer), "exclude_seen" (true; by user_ids)
                          -> {"item_ids": [[..]], "scores": [[..]], "k", "warnings": [..]}
    POST   /i2i           exactly one of {"item_ids": [..]} | {"features": [rows]};
                          optional "k", "exclude"
    POST   /items         {"items": [{"item_id", "embedding": [..]} | {"item_id",
                          "features": row}, ..]}  (upsert; an id twice: the last wins)
    DELETE /items         {"item_ids": [..]}   (also POST /items/delete; ids not indexed
                          are listed in "unknown_ids", nothing fails)
    GET    /metrics       Prometheus text format (text/plain)
    GET    /docs, /openapi.json   OpenAPI (Swagger UI needs its assets from a CDN)

The OpenAPI schema is this index's own and says what the server takes: its ids'
kind (integers within int64, or strings without NUL), its embeddings' dimension, each
tower's features, the lists' bounds (--max-batch; k <= --max-cost). A request valid by
the schema is answered, or gets a 413 for a limit that spans fields (batch x (k +
len(exclude)) over --max-cost, body bytes); one that is not gets a 400 naming the field.

Ids are the folder's own: integers, or strings when the index was saved with a string
vocabulary. "user_ids" look each user up (feature table, or an ID-lookup query tower) and
exclude the items that user has seen unless "exclude_seen" is false. An unknown id in
"exclude" is ignored. A k above the items a query can get ends each row with nulls.
"features" are what the query (or item) tower takes, one row per query: a value (a tower
of one tensor) or an object keyed by feature name (GET /health "features" lists each
name, type, shape and padding; twotower.index.retriever.FeatureSchema). Lists shorter
than the width the tower was trained with are padded ("" or 0), longer ones are a 400;
a FeatureTower's id feature (item_id / user_id) takes the index's own ids and may be left
out (its out-of-vocabulary bucket, as for a new item). A wrong feature is a 400 naming it
and the form it takes, never TensorFlow's message.

Every answer is JSON, errors included: {"error": message} with 400 (bad body), 401/403
(updates), 404 (unknown route, user or item: "unknown_ids" names them), 405 (with an
Allow header listing the path's methods), 408 (slow client), 409 (a delete that would
empty the index), 413 (over a limit), 429 (too many requests in progress), 500 (a bug;
no traceback is sent). Updates need ``--token-file`` (a bearer token, compared in
constant time); without one the server is read-only and its schema lists no updates.

Limits, and what each protects (defaults in brackets):
  --timeout-header [10 s]    request line + headers, from connecting: slowloris clients
                             and connections that never send a request (408 / close)
  --timeout-body [30 s]      the whole body: slow-POST clients (408 and close)
  --timeout-keep-alive [5 s] quiet time between two requests on a connection (uvicorn's)
  --max-connections [4096]   open sockets (file descriptors): a JSON 503 and close above
  --max-concurrency [128]    /u2i, /i2i, /items requests in progress (429 above); /health
                             is never queued behind them
  --max-request-bytes [1 MiB], --max-cost [100000 = batch x (k + len(exclude))]
                             413 above: a few KB can no longer ask for 44 MB of answer
  --max-batch [1024]         queries (or items) in one request: 400 above (the schema's
                             maxItems)
ScaNN and TF run in a bounded thread pool (--workers), never on the event loop;
concurrent /u2i-by-user requests share one tower call and one search (--batch-parallel).
A k above the k the index was tuned for is answered with a "warnings" entry, on exact
(brute-force) indexes too, where it says that the answer is still exact.

Binds 127.0.0.1 unless told otherwise (--host 0.0.0.0 exposes it).
"""

import argparse
import asyncio
import hmac
import json
import math
import os
import resource
import logging
import socket
import sys
import threading
import time
import types
from typing import Annotated, Any, Dict, List, Optional, Union

import h11
import numpy as np
from pydantic import (BaseModel, BeforeValidator, ConfigDict, Discriminator, Field,
                      StrictBool, Strict, StringConstraints, Tag, WithJsonSchema,
                      create_model)
from uvicorn.protocols.http.h11_impl import H11Protocol

from twotower.index import towers_io
from twotower.index.builder import embed
from twotower.index.external_ids import INT64_MAX, INT64_MIN, UnknownIdError
from twotower.index.retriever import FLOAT_LIMIT, FeatureError

_log = logging.getLogger(__name__)

DEFAULTS = dict(max_request_bytes=1 << 20, max_batch=1024, max_cost=100_000,
                max_concurrency=128, max_connections=4096, workers=0, batch_parallel=2,
                timeout_keep_alive=5.0, timeout_header=10.0, timeout_body=30.0)

# Endpoints that do index work: counted against --max-concurrency (429 above it).
_WORK_PATHS = frozenset({"/u2i", "/i2i", "/items", "/items/delete"})
_KNOWN_PATHS = _WORK_PATHS | {"/health", "/metrics", "/docs", "/openapi.json",
                              "/docs/oauth2-redirect", "/redoc"}
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


# -- request and response schemas -------------------------------------------------------
# The schemas are made per served index (api_models): its ids are integers or strings,
# its embeddings have its dimension, its towers take their own features, and the limits
# bound the lists. Each one states what the server enforces, so that a request valid by
# the OpenAPI schema is answered (or hits a limit across fields: 413, see LIMIT_NOTE)
# and one that is not gets a 400 naming the field.

NO_NUL = r"^[^\x00]*$"  # numpy's fixed-width strings drop trailing NULs: ids hold none

LIMIT_NOTE = ("A request valid by this schema is still answered 413 when it is over a "
              "limit that spans fields: batch x (k + len(exclude)) over --max-cost, or a "
              "body over --max-request-bytes.")


def _integral(value):
    """A JSON number with no fraction is a JSON Schema integer: 3.0 reads as 3."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _int(minimum, maximum, description=None):
    """A JSON integer in [minimum, maximum] (3.0 included, as JSON Schema reads it; no
    strings, no booleans). The OpenAPI schema writes the bounds as integers
    (:func:`_exact_integer_bounds`)."""
    schema = {"type": "integer", "minimum": minimum, "maximum": maximum}
    if description:
        schema["description"] = description
    return Annotated[int, BeforeValidator(_integral), Strict(),
                     Field(ge=minimum, le=maximum), WithJsonSchema(schema)]


def _int_id(minimum=INT64_MIN, description=None):
    """A JSON integer id within int64."""
    return _int(minimum, INT64_MAX, description)


def _str_id(min_length=0, description=None):
    schema = {"type": "string", "minLength": min_length, "pattern": NO_NUL}
    if description:
        schema["description"] = description
    return Annotated[str, StringConstraints(strict=True, min_length=min_length,
                                            pattern=NO_NUL), WithJsonSchema(schema)]


def _id_type(kind, new=False):
    """The JSON type of ids of ``kind`` ("int" / "str"); ``new``: ids that may be added
    (integers >= 0, non-empty strings)."""
    if kind == "str":
        return _str_id(1 if new else 0)
    return _int_id(0 if new else INT64_MIN)


Number = Annotated[float, Strict(), Field(ge=-FLOAT_LIMIT, le=FLOAT_LIMIT,
                                          allow_inf_nan=False)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _one_of(variants, keys, what):
    """A body that is exactly one of ``variants`` [(key, model)], told apart by which of
    ``keys`` it holds (OpenAPI ``oneOf``); one holding none or several is a 400 saying
    so, and so is a key this index does not take (``what`` names the endpoint)."""
    taken = [k for k, _ in variants]
    message = f"give exactly one of {taken}" + (
        f" ({what} of this index takes {', '.join(taken)}; not "
        f"{', '.join(k for k in keys if k not in taken)})" if len(taken) < len(keys) else "")

    def kind(value):
        if isinstance(value, BaseModel):
            return next((f"by-{k}" for k, m in variants if isinstance(value, m)), None)
        if not isinstance(value, dict):
            return None
        present = [k for k in keys if k in value]
        return f"by-{present[0]}" if len(present) == 1 and present[0] in taken else None

    if len(variants) == 1:
        (key, model), = variants

        def check(value):
            if isinstance(value, dict) and kind(value) is None:
                raise ValueError(message)
            return value

        return Annotated[model, BeforeValidator(check)]
    members = tuple(Annotated[m, Tag(f"by-{k}")] for k, m in variants)
    return Annotated[Union[members], Discriminator(
        kind, custom_error_type="body_kind", custom_error_message=message)]


def api_models(retriever, *, max_batch, max_cost):
    """The request and response models of a server over ``retriever`` (a namespace).

    ``U2IRequest``, ``I2IRequest`` and ``UpsertRequest`` are unions (one model per way
    of asking, e.g. ``U2IByEmbeddings``); ``query_features`` / ``item_features`` are the
    towers' :class:`~twotower.index.retriever.FeatureSchema` (None: no features taken).
    """
    r = retriever
    item_kind = "int" if r.item_vocab is None else r.item_vocab.kind
    user_kind = "int" if r.user_vocab is None else r.user_vocab.kind
    ItemId, NewItemId, UserId = (_id_type(item_kind), _id_type(item_kind, new=True),
                                 _id_type(user_kind))
    OutId = str if item_kind == "str" else int
    dim = int(r.index.dim)
    query_schema = r.feature_schema("query")
    item_schema = r.feature_schema("item")
    by_users = r.query_tower is not None and (
        r.user_table is not None or bool(towers_io.takes_ids(r.query_tower)))

    def batch(item, description):
        return Annotated[List[item], Field(min_length=1, max_length=max_batch,
                                           description=description)]

    def features(schema, who):
        rows = {"type": "array", "minItems": 1, "maxItems": max_batch,
                "items": schema.row_json_schema(),
                "description": (f"the {who} tower's inputs, one "
                                f"{'object' if schema.rows_are_objects else 'value'} per "
                                f"{who} (GET /health lists each feature: "
                                f"features.{who})")}
        return Annotated[List[Any], Field(min_length=1, max_length=max_batch),
                         WithJsonSchema(rows)]

    K = _int(1, max_cost, "results per query; above the number of items that can be "
                          "returned, each row ends with nulls (and a warning says so)")
    exclude_doc = ("item ids left out of every query's answer (ids that do not exist are "
                   "ignored)")
    Exclude = Optional[Annotated[List[ItemId], Field(max_length=max(0, max_cost - 1),
                                                     description=exclude_doc)]]
    Vector = Annotated[List[Number], Field(min_length=dim, max_length=dim)]
    ns = types.SimpleNamespace(item_kind=item_kind, user_kind=user_kind, dim=dim,
                               query_features=query_schema, item_features=item_schema)

    def model(name, doc, **fields):
        return create_model(name, __base__=_Body, __doc__=doc, **fields)

    u2i = []
    if by_users:
        ns.U2IByUsers = model(
            "U2IByUsers", "Top-k items for known users (each one's seen items left out).",
            user_ids=(batch(UserId, f"known users ({user_kind} ids)"), ...),
            k=(K, 10), exclude=(Exclude, None),
            exclude_seen=(StrictBool, Field(True, description="leave out the items each "
                                                              "user has seen")))
        u2i.append(("user_ids", ns.U2IByUsers))
    if query_schema is not None:
        ns.U2IByFeatures = model(
            "U2IByFeatures", "Top-k items for queries given by the query tower's inputs.",
            features=(features(query_schema, "query"), ...), k=(K, 10),
            exclude=(Exclude, None))
        u2i.append(("features", ns.U2IByFeatures))
    ns.U2IByEmbeddings = model(
        "U2IByEmbeddings", "Top-k items for query embeddings.",
        embeddings=(batch(Vector, f"query embeddings, {dim} numbers each"), ...),
        k=(K, 10), exclude=(Exclude, None))
    u2i.append(("embeddings", ns.U2IByEmbeddings))
    ns.U2IRequest = _one_of(u2i, ("user_ids", "features", "embeddings"), "/u2i")

    ns.I2IByItems = model(
        "I2IByItems", "Top-k neighbours of indexed items (each item itself left out).",
        item_ids=(batch(ItemId, f"indexed items ({item_kind} ids)"), ...), k=(K, 10),
        exclude=(Exclude, None))
    i2i = [("item_ids", ns.I2IByItems)]
    if item_schema is not None:
        ns.I2IByFeatures = model(
            "I2IByFeatures", "Top-k neighbours of items given by the item tower's inputs "
            "(new items; put an indexed item's own id in exclude to leave it out).",
            features=(features(item_schema, "item"), ...), k=(K, 10),
            exclude=(Exclude, None))
        i2i.append(("features", ns.I2IByFeatures))
    ns.I2IRequest = _one_of(i2i, ("item_ids", "features"), "/i2i")

    ns.ItemByEmbedding = model(
        "ItemByEmbedding", "An item to add or replace, with its embedding.",
        item_id=(NewItemId, ...), embedding=(Vector, ...))
    rows = [("embedding", ns.ItemByEmbedding)]
    if item_schema is not None:
        row = item_schema.row_json_schema()
        ns.ItemByFeatures = model(
            "ItemByFeatures", "An item to add or replace, embedded from its features by "
            "the item tower (a left-out item_id feature is this item's id).",
            item_id=(NewItemId, ...),
            features=(Annotated[Any, WithJsonSchema(row)], ...))
        rows.append(("features", ns.ItemByFeatures))
    ns.UpsertRow = _one_of(rows, ("embedding", "features"), "an item of /items")
    ns.UpsertRequest = model(
        "UpsertRequest", "Items to add or replace (an id given twice: the last one wins).",
        items=(Annotated[List[ns.UpsertRow], Field(min_length=1, max_length=max_batch)],
               ...))
    ns.DeleteRequest = model(
        "DeleteRequest", "Items to remove (an id given twice is removed once).",
        item_ids=(Annotated[List[ItemId], Field(min_length=1, max_length=max_batch)], ...))
    ns.UpdateResponse = create_model(
        "UpdateResponse", __doc__="What an update changed, and the index size after it.",
        added=(Optional[int], None), replaced=(Optional[int], None),
        removed=(Optional[int], None), num_items=(int, ...),
        item_ids=(List[OutId], Field(description="the ids added or replaced, or removed")),
        unknown_ids=(Optional[List[OutId]], Field(
            None, description="ids asked to be removed that were not indexed (nothing to "
                              "remove)")))

    ns.SearchResponse = create_model(
        "SearchResponse", __doc__="Top-k answers, one row per query, best first.",
        item_ids=(List[List[Optional[OutId]]], Field(
            description="per query, k ids best first (null pads a row with fewer than "
                        "k items left)")),
        scores=(List[List[Optional[float]]], ...), k=(int, ...),
        warnings=(List[str], Field(default_factory=list)))
    ns.ErrorResponse = create_model(
        "ErrorResponse", __doc__="Every error: a message, and the unknown ids for a 404 "
                                 "about ids.",
        error=(str, ...), unknown_ids=(Optional[List[Union[int, str]]], None))
    return ns


class HealthResponse(BaseModel):
    """Index facts; ``features`` describes what /u2i and /i2i take as ``features``."""

    status: str
    num_items: int
    dim: int
    distance: str
    exact: bool
    tuned_k: Optional[int]
    users: Optional[int]
    users_with_seen: int
    read_only: bool
    id_kind: str
    user_id_kind: str
    towers: Dict[str, bool]
    asks: Dict[str, List[str]]
    features: Dict[str, Optional[Dict[str, Any]]]
    config: Dict[str, Any]
    limits: Dict[str, int]


class ApiError(Exception):
    """A client error answered with ``status`` and ``{"error": message, **extra}``."""

    def __init__(self, status, message, headers=None, **extra):
        super().__init__(message)
        self.status, self.message, self.headers, self.extra = status, message, headers, extra


# -- the index behind a readers/writer lock ---------------------------------------------
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


def _exact_integer_bounds(node):
    """Integer bounds as JSON integers: FastAPI's OpenAPI model writes every bound as a
    float, and the float of 2**63 - 1 is 2**63 (a client reading it lets 2**63 + 100
    through). The int64 bounds are the only ones that far out."""
    if isinstance(node, list):
        return [_exact_integer_bounds(v) for v in node]
    if not isinstance(node, dict):
        return node
    out = {k: _exact_integer_bounds(v) for k, v in node.items()}
    if out.get("type") == "integer":
        for key in ("minimum", "maximum"):
            value = out.get(key)
            if isinstance(value, float) and value.is_integer():
                out[key] = (INT64_MAX if value >= INT64_MAX else
                            INT64_MIN if value <= INT64_MIN else int(value))
    return out


def _json_response_class():
    from fastapi.responses import JSONResponse

    class AsciiJSONResponse(JSONResponse):
        """JSON with non-ASCII characters escaped: an id holding a lone surrogate (valid
        JSON, \\ud800) is echoed back as sent instead of failing to encode as UTF-8."""

        def render(self, content):
            return json.dumps(content, ensure_ascii=True, allow_nan=False,
                              separators=(",", ":")).encode("ascii")

    return AsciiJSONResponse


def _short(e):
    """A one-line description of a tower's exception (TF's messages carry graph dumps)."""
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}"[:500]



def _is_union_tag(part):
    return isinstance(part, str) and (part in ("str", "int", "float", "bool")
                                      or "-" in part or "[" in part)


_ID_FIELDS = {"user_ids": "user", "item_ids": "item", "exclude": "item", "item_id": "item"}


def _validation_message(errors, id_kinds=None):
    """pydantic's errors as one line: the field path, what was wrong, the value."""
    id_kinds = id_kinds or {}
    groups = {}
    for e in errors:
        loc = tuple(x for x in e.get("loc", ()) if x != "body" and not _is_union_tag(x))
        groups.setdefault(loc, []).append(e)
    parts = []
    for loc, errs in list(groups.items())[:5]:
        where = ".".join(str(x) for x in loc) or "body"
        e = errs[0]
        got = e.get("input")
        field = next((x for x in reversed(loc) if isinstance(x, str)), None)
        if e.get("type") == "json_invalid":
            parts.append(f"body is not valid JSON: {e.get('ctx', {}).get('error', '')}")
        elif not loc and (e.get("type") in ("model_attributes_type", "dict_type")
                          or (e.get("type") == "body_kind" and not isinstance(got, dict))):
            parts.append("body must be a JSON object")
        elif field in _ID_FIELDS and loc[-1] != field and e.get("type") not in (
                "missing", "extra_forbidden"):
            what = _ID_FIELDS[field]
            kind = id_kinds.get(what)
            words = ("a string (without NUL)" if kind == "str" else
                     "an int64 integer" if kind == "int" else "an int64 integer or a string")
            parts.append(f"{where}: an id of this index's {what}s must be {words}, got "
                         f"{got!r:.80}")
        else:
            msg = e.get("msg", "invalid").removeprefix("Value error, ")
            tail = "" if isinstance(got, (dict, list)) or got is None else f", got {got!r:.80}"
            parts.append(f"{where}: {msg}{tail}")
    return "; ".join(parts) or "invalid request"


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
        self.batch_fallbacks = 0  # batches re-run request by request after an error
        self.models = api_models(retriever, max_batch=self.max_batch,
                                 max_cost=self.max_cost)
        # what /health says of the towers: computed once (the towers never change)
        self._asks = self.asks()
        self._features_doc = {
            who: None if schema is None else schema.describe()
            for who, schema in (("query", self.models.query_features),
                                ("item", self.models.item_features))}

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
            _log.info("the %s tower rejected a request's inputs: %s", what, _short(e))
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
                k, available = self._limit(req.k)
                return self._answer(r.u2i_embeddings(
                    q, k, exclude=None if exclude is None else [exclude] * len(q)),
                    req.k, available)
        if kind == "user_ids":
            users = _id_array(req.user_ids, "user_ids")
            self._check_bounds(len(users), req.k, exclude)
            with self.lock.read():
                k, available = self._limit(req.k)
                return self._answer(self._tower(
                    r.u2i_users, users, k, exclude_seen=req.exclude_seen,
                    exclude=None if exclude is None else [exclude] * len(users),
                    what="query"), req.k, available)
        # the features are the schema's (400) before the limits (413)
        inputs = self._features(self.models.query_features, req.features, "query")
        n = len(req.features)
        self._check_bounds(n, req.k, exclude)
        with self.lock.read():
            k, available = self._limit(req.k)
            return self._answer(self._tower(
                r.u2i, inputs, k, exclude=None if exclude is None else [exclude] * n,
                what="query"), req.k, available)

    def u2i_users_batch(self, requests):
        """Several /u2i-by-user requests with one (k, exclude_seen, id kind) in one
        retriever call; returns a JSONResponse or an exception per request.

        A batch that fails (an unknown user in one request) is re-run request by request,
        so that each request gets its own answer or error.
        """
        JSONResponse = _json_response_class()
        k, exclude_seen = requests[0].k, requests[0].exclude_seen
        if len(requests) > 1:
            users = [_id_array(req.user_ids, "user_ids") for req in requests]
            exclude = None
            if any(req.exclude for req in requests):
                exclude = [list(req.exclude or []) for req, u in zip(requests, users)
                           for _ in range(len(u))]
            try:
                with self.lock.read():
                    k_search, available = self._limit(k)
                    ids, scores = self._tower(
                        self.retriever.u2i_users, np.concatenate(users), k_search,
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
                k, available = self._limit(req.k, self_excluded=True)
                if k < 1:  # a one-item index: the item has no neighbour
                    r._check_indexed(r._items_in(ids, "item_ids", allow_empty=False), ids)
                    empty = np.zeros((len(ids), 0))
                    return self._answer((empty.astype(np.int64), empty), req.k, available)
                return self._answer(r.i2i(
                    ids, k, exclude=None if exclude is None else [exclude] * len(ids)),
                    req.k, available)
        inputs = self._features(self.models.item_features, req.features, "item")
        n = len(req.features)
        self._check_bounds(n, req.k, exclude)
        with self.lock.read():
            k, available = self._limit(req.k)
            return self._answer(self._tower(
                r.i2i_features, inputs, k, exclude=None if exclude is None else [exclude] * n,
                what="item"), req.k, available)

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
            done = r.upsert_items(ids, vectors=vectors)
            return {**done, "num_items": int(r.index.size), "item_ids": ids.tolist()}

    def delete(self, req):
        """Removes the indexed items among ``item_ids``; the others (unknown, or removed
        already) are listed in ``unknown_ids``: a delete is idempotent."""
        r = self.retriever
        given = list(dict.fromkeys(req.item_ids))  # an id given twice is removed once
        ids = _id_array(given, "item_ids")
        with self.lock.write():
            internal = r.known_item_ids(ids)
            present = (internal >= 0) & r.index.indexed(internal)
            keep = ids[present]
            if len(keep) >= r.index.size:
                raise ApiError(409, f"removing these {len(keep)} items would leave the "
                                    f"index empty ({r.index.size} items): an index keeps at "
                                    "least one item")
            removed = int(r.remove_items(keep)) if len(keep) else 0
            return {"removed": removed, "num_items": int(r.index.size),
                    "item_ids": keep.tolist(), "unknown_ids": ids[~present].tolist()}


class _Batcher:
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


# -- metrics ------------------------------------------------------------------------------
class Metrics:
    """Prometheus counters and histograms in a registry of this server's own."""

    def __init__(self):
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        self.requests = Counter("twotower_http_requests_total", "HTTP requests answered",
                                ["endpoint", "method", "status"], registry=self.registry)
        self.errors = Counter("twotower_http_errors_total",
                              "HTTP requests answered with a status >= 400",
                              ["endpoint", "status"], registry=self.registry)
        self.latency = Histogram(
            "twotower_http_request_duration_seconds", "time from request headers to the "
            "last byte of the response", ["endpoint"], registry=self.registry,
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                     2.5, 5.0, 10.0))
        self.batch_requests = Histogram(
            "twotower_u2i_batch_requests", "/u2i-by-user requests answered per batch",
            registry=self.registry, buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256))
        self.in_progress = Gauge("twotower_http_requests_in_progress",
                                 "index-work requests being served", registry=self.registry)
        self.connections = Gauge("twotower_http_connections_open", "open TCP connections",
                                 registry=self.registry)
        self.dropped = Counter("twotower_http_connections_dropped_total",
                               "connections closed by a limit", ["reason"],
                               registry=self.registry)

    def render(self):
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST


# -- ASGI middleware: body limits, concurrency limit, metrics ----------------------------
def _json_bytes(status, message, **extra):
    return json.dumps({"error": message, **extra}).encode()


async def _send_json(send, status, message, *, close=False, headers=(), **extra):
    body = _json_bytes(status, message, **extra)
    hdrs = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if close:
        hdrs.append((b"connection", b"close"))
    hdrs.extend(headers)
    await send({"type": "http.response.start", "status": status, "headers": hdrs})
    await send({"type": "http.response.body", "body": body})


class LimitsMiddleware:
    """Reads each request body whole under a deadline and a size bound, caps the index
    work in progress, and records metrics.

    - ``timeout_body`` (408, connection closed): a client that sends its body slowly (a
      slow-POST / "R.U.D.Y." attack) cannot hold the request open; the header phase is
      guarded in the protocol (:class:`GuardedH11Protocol`), before any ASGI code runs.
    - ``max_request_bytes`` (413, connection closed): by Content-Length before reading,
      and by bytes received for chunked bodies.
    - ``max_concurrency`` (429 with Retry-After): /u2i, /i2i and the updates in progress
      at once, queued or running; /health and /metrics are not counted, so they stay
      answerable under load.
    """

    def __init__(self, app, *, metrics, max_request_bytes, timeout_body, max_concurrency):
        self.app = app
        self.metrics = metrics
        self.max_request_bytes = int(max_request_bytes)
        self.timeout_body = float(timeout_body)
        self.max_concurrency = int(max_concurrency)
        self.in_progress = 0  # touched only on the event loop thread

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = time.perf_counter()
        path = scope["path"].rstrip("/") or "/"
        endpoint = path if path in _KNOWN_PATHS else "other"
        status_box = [500]

        async def send_recording(message):
            if message["type"] == "http.response.start":
                status_box[0] = message["status"]
            elif message["type"] == "twotower.client_gone":
                status_box[0] = 499  # nginx's "client closed request": nothing to answer
                return
            await send(message)

        counted = False
        try:
            replay = None
            if scope["method"] in _BODY_METHODS:
                body = await self._read_body(scope, receive, send_recording)
                if body is None:
                    return
                replay = _replay(body, receive)
                if path in _WORK_PATHS:
                    scope = _as_json_request(scope)
            if path in _WORK_PATHS:
                if self.in_progress >= self.max_concurrency:
                    return await _send_json(
                        send_recording, 429, f"{self.in_progress} requests in progress "
                        f"(--max-concurrency {self.max_concurrency}): retry shortly",
                        headers=[(b"retry-after", b"1")])
                self.in_progress += 1
                self.metrics.in_progress.inc()
                counted = True
            await self.app(scope, replay or receive, send_recording)
        finally:
            if counted:
                self.in_progress -= 1
                self.metrics.in_progress.dec()
            status = str(status_box[0])
            self.metrics.requests.labels(endpoint, scope["method"], status).inc()
            if status_box[0] >= 400:
                self.metrics.errors.labels(endpoint, status).inc()
            self.metrics.latency.labels(endpoint).observe(time.perf_counter() - start)

    async def _read_body(self, scope, receive, send):
        limit = self.max_request_bytes
        length = None
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    length = int(value)
                except ValueError:
                    length = -1
        if length is not None and length > limit:
            await _send_json(send, 413, f"request body of {length} bytes exceeds "
                                        f"--max-request-bytes {limit}", close=True)
            return None
        chunks, size = [], 0
        deadline = time.monotonic() + self.timeout_body
        while True:
            try:
                message = await asyncio.wait_for(receive(), max(0.0, deadline - time.monotonic()))
            except asyncio.TimeoutError:
                self.metrics.dropped.labels("body_timeout").inc()
                await _send_json(send, 408, f"request body not received within "
                                            f"{self.timeout_body:g} s", close=True)
                return None
            if message["type"] == "http.disconnect":
                await send({"type": "twotower.client_gone"})
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await _send_json(send, 413, f"request body exceeds --max-request-bytes "
                                            f"{limit}", close=True)
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)


def _as_json_request(scope):
    """The bodies of /u2i, /i2i and /items are JSON whatever their Content-Type says:
    ``curl -d '{...}'`` sends form encoding unless told ``-H 'Content-Type: ...'``."""
    headers = [(k, v) for k, v in scope["headers"] if k != b"content-type"]
    return {**scope, "headers": headers + [(b"content-type", b"application/json")]}


def _replay(body, receive):
    sent = [False]

    async def replay():
        if not sent[0]:
            sent[0] = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()  # the disconnect, when it comes

    return replay


# -- the HTTP/1.1 protocol: header timeout, connection cap, one write per response ------


class _CoalescingTransport:
    """Holds a response's writes (status line + headers, body, end) and sends them in
    one ``write``, i.e. one ``send()`` for a small answer.

    uvicorn's h11 protocol writes the head and the body separately. asyncio sets
    TCP_NODELAY, so that costs no Nagle / delayed-ACK stall, but it does cost a second
    segment and syscall per answer; interim 1xx answers pass through at once.
    """

    _FLUSH_AT = 1 << 16

    def __init__(self, transport):
        self._transport = transport
        self._buffer = []
        self._size = 0
        self.holding = False

    def write(self, data):
        if not self.holding and data[:9] == b"HTTP/1.1 " and data[9:10] != b"1":
            self.holding = True
        if not self.holding:
            return self._transport.write(data)
        self._buffer.append(bytes(data))
        self._size += len(data)
        if self._size >= self._FLUSH_AT:
            self.flush(keep_holding=True)

    def flush(self, keep_holding=False):
        if self._buffer:
            data = b"".join(self._buffer)
            self._buffer, self._size = [], 0
            self._transport.write(data)
        self.holding = keep_holding

    def close(self):
        self.flush()
        self._transport.close()

    def __getattr__(self, name):
        return getattr(self._transport, name)


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with the limits uvicorn lacks (set by :func:`_protocol_for`).

    - ``timeout_header``: from a connection's opening (or the first byte of a later
      request on a kept-alive connection) to the end of the request headers. It drops a
      slowloris client that sends its headers a byte at a time, and a connection that
      never sends a request; uvicorn's ``timeout_keep_alive`` only covers the quiet gap
      between two requests, and its ``limit_concurrency`` answers a plain-text 503.
    - ``max_connections``: connections over it get a JSON 503 and are closed at once
      (bounds file descriptors and memory; uvicorn's own cap counts them the same way).
    - Protocol errors (a malformed request line) get a JSON 400 instead of plain text.
    """

    timeout_header = DEFAULTS["timeout_header"]
    max_connections = DEFAULTS["max_connections"]
    metrics = None

    def connection_made(self, transport):
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            # Nagle off, whatever socket we were handed (see IndexServer).
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().connection_made(_CoalescingTransport(transport))
        self._header_timer = None
        self._partial = False
        if self.metrics is not None:
            self.metrics.connections.inc()
        if len(self.connections) > self.max_connections:
            if self.metrics is not None:
                self.metrics.dropped.labels("connection_limit").inc()
            self._raw_error(503, f"more than {self.max_connections} connections open "
                                 "(--max-connections): retry shortly")
            return
        self._arm_header_timer()

    def connection_lost(self, exc):
        self._cancel_header_timer()
        if self.metrics is not None:
            self.metrics.connections.dec()
        super().connection_lost(exc)

    def data_received(self, data):
        if self.conn.their_state is h11.IDLE:
            self._partial = True
            if self._header_timer is None:
                self._arm_header_timer()
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:
            self._cancel_header_timer()
            self._partial = False

    def on_response_complete(self):
        self.transport.flush()
        super().on_response_complete()
        if self.conn.their_state is h11.IDLE and self.conn.trailing_data[0]:
            self._partial = True
            self._arm_header_timer()  # a pipelined request's head is already arriving

    def send_400_response(self, msg):
        self._raw_error(400, msg)

    def _arm_header_timer(self):
        self._cancel_header_timer()
        self._header_timer = self.loop.call_later(self.timeout_header, self._header_timeout)

    def _cancel_header_timer(self):
        timer = getattr(self, "_header_timer", None)
        if timer is not None:
            timer.cancel()
            self._header_timer = None

    def _header_timeout(self):
        self._header_timer = None
        if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
            return
        if self.metrics is not None:
            self.metrics.dropped.labels("header_timeout").inc()
        if self._partial:
            self._raw_error(408, f"request headers not received within "
                                 f"{self.timeout_header:g} s")
        else:  # nothing was asked: close quietly, as for an expired keep-alive
            self.transport.close()

    def _raw_error(self, status, message):
        # Written by hand: h11 cannot answer before it has parsed a request.
        import http

        body = _json_bytes(status, message)
        head = (f"HTTP/1.1 {status} {http.HTTPStatus(status).phrase}\r\n"
                "content-type: application/json\r\n"
                f"content-length: {len(body)}\r\nconnection: close\r\n\r\n").encode()
        self._cancel_header_timer()
        if not self.transport.is_closing():
            self.transport.write(head + body)
            self.transport.close()


def _protocol_for(settings, metrics):
    return type("GuardedH11Protocol", (GuardedH11Protocol,),
                {"timeout_header": float(settings["timeout_header"]),
                 "max_connections": int(settings["max_connections"]), "metrics": metrics})


# -- the FastAPI application --------------------------------------------------------------
def create_app(retriever, *, token=None, metrics=None, **limits):
    """The FastAPI app serving ``retriever`` (see the module docstring for the routes).

    Args:
      retriever: a Retriever (e.g. ``twotower.index.load(folder)``).
      token: the bearer token that allows updates; None makes the server read-only.
      metrics: a :class:`Metrics` (one is made when None).
      **limits: any of ``max_request_bytes``, ``max_batch``, ``max_cost``,
        ``max_concurrency``, ``workers``, ``timeout_body``, ``batch_parallel``
        (defaults in ``DEFAULTS``).
    """
    import anyio
    from fastapi import Body, Depends, FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.openapi.utils import get_openapi
    from fastapi.responses import PlainTextResponse
    from fastapi.security import HTTPBearer
    from starlette.exceptions import HTTPException as StarletteHTTPException

    unknown = set(limits) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"unknown limits {sorted(unknown)}; expected some of {sorted(DEFAULTS)}")
    JSONResponse = _json_response_class()
    s = {**DEFAULTS, **limits}
    metrics = metrics or Metrics()
    service = IndexService(retriever, max_batch=s["max_batch"], max_cost=s["max_cost"])
    m = service.models
    id_kinds = {"item": m.item_kind, "user": m.user_kind}
    workers = int(s["workers"]) or min(32, (os.cpu_count() or 1) + 4)
    limiter = anyio.CapacityLimiter(workers)
    read_only = token is None
    token_bytes = None if token is None else token.encode()

    app = FastAPI(title="twotower index", version="1", default_response_class=JSONResponse,
                  description="Two-tower retrieval over a ScaNN index: u2i, i2i, updates. "
                              "Every answer is JSON but GET /metrics (Prometheus text). "
                              + LIMIT_NOTE)
    app.state.service = service
    app.state.metrics = metrics

    def openapi():
        """FastAPI's schema without its 422 answers (validation errors are 400 here)."""
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version,
                                 description=app.description, routes=app.routes)
            for operations in schema.get("paths", {}).values():
                for operation in operations.values():
                    operation.get("responses", {}).pop("422", None)
            for name in ("HTTPValidationError", "ValidationError"):
                schema.get("components", {}).get("schemas", {}).pop(name, None)
            app.openapi_schema = _exact_integer_bounds(schema)
        return app.openapi_schema

    app.openapi = openapi

    async def work(fn, *args):
        # ScaNN and TF run in a bounded thread pool, never on the event loop.
        return await anyio.to_thread.run_sync(fn, *args, limiter=limiter)

    def error(status, message, headers=None, **extra):
        return JSONResponse({"error": message, **extra}, status_code=status, headers=headers)

    def allowed_methods(path):
        """Every method a route of ``path`` takes (Starlette's 405 names one route's)."""
        methods = set()
        for route in app.routes:
            regex = getattr(route, "path_regex", None)
            if regex is not None and regex.match(path) and getattr(route, "methods", None):
                methods |= set(route.methods)
        return ", ".join(sorted(methods))

    @app.exception_handler(ApiError)
    async def _api_error(request, exc):
        return error(exc.status, exc.message, exc.headers, **exc.extra)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request, exc):
        message = exc.detail
        headers = getattr(exc, "headers", None)
        if exc.status_code == 404 and message == "Not Found":
            message = (f"unknown path {request.url.path!r}; see GET /docs for the routes "
                       "(GET /health, POST /u2i, POST /i2i, ...)")
        elif exc.status_code == 405:
            allow = allowed_methods(request.url.path) or (headers or {}).get("Allow", "")
            headers = {**(headers or {}), "Allow": allow}
            message = (f"method {request.method} not allowed on {request.url.path!r}; "
                       f"allowed: {allow}")
        return error(exc.status_code, str(message), headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request, exc):
        return error(400, _validation_message(exc.errors(), id_kinds))

    @app.exception_handler(UnknownIdError)
    async def _unknown(request, exc):
        ids = [i.item() if hasattr(i, "item") else i for i in list(exc.ids)[:100]]
        return error(404, str(exc), unknown_ids=ids)

    @app.exception_handler(ValueError)
    async def _value_error(request, exc):
        return error(400, str(exc))

    @app.exception_handler(Exception)
    async def _internal(request, exc):
        _log.error("internal error answering %s %s", request.method, request.url.path,
                   exc_info=exc)
        return error(500, f"internal error ({type(exc).__name__}); see the server log")

    bearer = HTTPBearer(auto_error=False, description="the token of --token-file")

    def authorize(request: Request, _scheme=Depends(bearer)):
        if read_only:
            raise ApiError(403, "this server is read-only: start it with --token-file to "
                                "allow updates")
        got = request.headers.get("authorization", "")
        scheme, _, value = got.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(value.strip().encode(),
                                                                 token_bytes):
            raise ApiError(401, "missing or wrong bearer token (Authorization: Bearer ...)",
                           headers={"WWW-Authenticate": "Bearer"})

    def answer(fn):
        # JSONResponse renders (json.dumps) when made: in the worker too, off the loop.
        return lambda body: JSONResponse(fn(body))

    why = {400: "a request this schema refuses, or ids of the wrong kind",
           401: "missing or wrong bearer token", 403: "a read-only server",
           404: "unknown user or item ids (unknown_ids names them)",
           408: "the body was not received in time", 409: "it would empty the index",
           413: "over a limit: body bytes, or batch x (k + len(exclude)) over --max-cost",
           429: "too many requests in progress"}

    def errors(*codes):
        return {c: {"model": m.ErrorResponse, "description": why[c]} for c in codes}

    @app.get("/health", summary="Index facts, the features each tower takes, liveness",
             response_model=HealthResponse)
    async def health():
        return JSONResponse(service.health(read_only))

    batcher = _Batcher(service.u2i_users_batch, work, max_batch=service.max_batch,
                       parallel=max(1, int(s["batch_parallel"])),
                       histogram=metrics.batch_requests)
    app.state.batcher = batcher
    by_users = getattr(m, "U2IByUsers", None)

    @app.post("/u2i", response_model=m.SearchResponse, summary="Top-k items for users",
              responses=errors(400, 404, 408, 413, 429))
    async def u2i(body: Annotated[m.U2IRequest, Body()]):
        if by_users is not None and isinstance(body, by_users) and s["batch_parallel"]:
            service._check_bounds(len(body.user_ids), body.k, body.exclude)
            kinds = tuple(sorted({type(i).__name__ for i in body.user_ids}))
            return await batcher.submit((body.k, body.exclude_seen, kinds), body,
                                        len(body.user_ids))
        return await work(answer(service.u2i), body)

    @app.post("/i2i", response_model=m.SearchResponse, summary="Top-k neighbours of items",
              responses=errors(400, 404, 408, 413, 429))
    async def i2i(body: Annotated[m.I2IRequest, Body()]):
        return await work(answer(service.i2i), body)

    # The token is checked (a dependency) before the body is validated. A read-only
    # server answers 403 to these and leaves them out of its schema.
    updates = dict(response_model=m.UpdateResponse, dependencies=[Depends(authorize)],
                   include_in_schema=not read_only)

    @app.post("/items", summary="Add or replace items (needs the bearer token)",
              responses=errors(400, 401, 403, 408, 413, 429), **updates)
    async def upsert(body: Annotated[m.UpsertRequest, Body()]):
        return await work(answer(service.upsert), body)

    @app.delete("/items", summary="Remove items (needs the bearer token)",
                responses=errors(400, 401, 403, 408, 409, 413, 429), **updates)
    async def delete(body: Annotated[m.DeleteRequest, Body()]):
        return await work(answer(service.delete), body)

    @app.post("/items/delete",
              summary="Remove items, for clients that cannot send DELETE with a body",
              responses=errors(400, 401, 403, 408, 409, 413, 429), **updates)
    async def delete_post(body: Annotated[m.DeleteRequest, Body()]):
        return await work(answer(service.delete), body)

    @app.get("/metrics", summary="Prometheus metrics (text exposition format)",
             response_class=PlainTextResponse)
    async def prometheus():
        data, content_type = metrics.render()
        return PlainTextResponse(data, media_type=content_type)

    return LimitsMiddleware(app, metrics=metrics, max_request_bytes=s["max_request_bytes"],
                            timeout_body=s["timeout_body"],
                            max_concurrency=s["max_concurrency"])


# -- the server -----------------------------------------------------------------------------
def raise_open_files_limit(wanted=65536):
    """Raises RLIMIT_NOFILE's soft limit toward ``wanted`` within the hard limit; returns
    the new soft limit (idle connections each hold a file descriptor)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        return target
    return soft


class IndexServer:
    """A Retriever served by uvicorn on a socket bound at construction.

    Args:
      retriever: the Retriever to serve.
      host, port: where to listen (port 0 picks a free one; see :attr:`url`).
      token: bearer token for updates (None: read-only).
      timeout_keep_alive: seconds an idle kept-alive connection is held (uvicorn's).
      timeout_header: seconds to receive a request's headers (slowloris guard).
      timeout_body: seconds to receive a request's body.
      verbose: log every request.
      **limits: ``max_request_bytes``, ``max_batch``, ``max_cost``, ``max_concurrency``,
        ``max_connections``, ``workers`` (see ``twotower serve --help``).

    Raises:
      OSError: the address cannot be bound (e.g. the port is in use).
    """

    def __init__(self, retriever, host="127.0.0.1", port=8080, *, token=None,
                 verbose=False, **limits):
        import uvicorn

        unknown = set(limits) - set(DEFAULTS)
        if unknown:
            raise ValueError(f"unknown limits {sorted(unknown)}; expected some of "
                             f"{sorted(DEFAULTS)}")
        s = {**DEFAULTS, **limits}
        self.retriever = retriever
        self.metrics = Metrics()
        app_limits = {k: s[k] for k in ("max_request_bytes", "max_batch", "max_cost",
                                        "max_concurrency", "workers", "timeout_body",
                                        "batch_parallel")}
        self.app = create_app(retriever, token=token, metrics=self.metrics, **app_limits)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        # proto=IPPROTO_TCP matters: asyncio turns Nagle off (TCP_NODELAY) only on sockets
        # whose proto says TCP, and accepted sockets inherit it; with proto 0 a kept-alive
        # client waits ~40 ms per answer (Nagle + delayed ACK).
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
            sock.listen(2048)
        except OSError:
            sock.close()
            raise
        sock.set_inheritable(True)
        self.socket = sock
        self.server_address = sock.getsockname()[:2]
        config = uvicorn.Config(
            self.app, http=_protocol_for(s, self.metrics), ws="none", lifespan="off",
            interface="asgi3", timeout_keep_alive=float(s["timeout_keep_alive"]),
            timeout_graceful_shutdown=5, log_level="info" if verbose else "warning",
            access_log=verbose, server_header=False, backlog=2048)
        self.server = uvicorn.Server(config)
        self._thread = None

    @property
    def url(self):
        host, port = self.server_address
        return f"http://{'[' + host + ']' if ':' in host else host}:{port}"

    def serve(self):
        """Serves until :meth:`shutdown` (or Ctrl-C in the main thread)."""
        try:
            self.server.run(sockets=[self.socket])
        finally:
            self.socket.close()

    def start_background(self, timeout=30.0):
        """Serves in a daemon thread (tests, notebooks) once started; returns the thread."""
        self._thread = threading.Thread(target=self.serve, daemon=True,
                                        name="twotower-serve")
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the index server did not start")
            time.sleep(0.01)
        return self._thread

    def shutdown(self, timeout=10.0):
        """Stops serving (closing connections) and waits for the serving thread."""
        self.server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)

    def server_close(self):
        self.socket.close()


# -- the command line -----------------------------------------------------------------------
class _OneLineParser(argparse.ArgumentParser):
    """argparse that reports a bad flag in one line (exit 2), not usage + error."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _positive(kind):
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not value > 0 or (kind is float and not math.isfinite(value)):
            raise argparse.ArgumentTypeError(f"must be > 0, got {text!r}")
        return value
    return parse


def build_parser():
    """The `twotower serve` flags (every one with --help)."""
    p = _OneLineParser(prog="twotower serve", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dir", help="an index folder written by twotower.index.save (or a "
                               "recipe's --out/index)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default 127.0.0.1, loopback only; 0.0.0.0 "
                        "exposes the server to the network)")
    p.add_argument("--port", type=int, default=8080, help="port (default 8080; 0 picks a "
                                                          "free one and prints it)")
    p.add_argument("--token-file", metavar="FILE",
                   help="file holding the bearer token that allows POST/DELETE /items; "
                        "without it the server is read-only")
    p.add_argument("--max-request-bytes", type=_positive(int),
                   default=DEFAULTS["max_request_bytes"],
                   help="largest request body accepted, in bytes (413 above; default 1 MiB)")
    p.add_argument("--max-batch", type=_positive(int), default=DEFAULTS["max_batch"],
                   help="most queries (or items to update) in one request (400 above: "
                        "the schema's maxItems; default %(default)s)")
    p.add_argument("--max-cost", type=_positive(int), default=DEFAULTS["max_cost"],
                   help="most results one request may ask for: batch x (k + "
                        "len(exclude)) (413 above; also k's maximum; default %(default)s)")
    p.add_argument("--max-concurrency", type=_positive(int),
                   default=DEFAULTS["max_concurrency"],
                   help="search/update requests in progress at once, queued or running "
                        "(429 above; /health is not counted; default %(default)s)")
    p.add_argument("--max-connections", type=_positive(int),
                   default=DEFAULTS["max_connections"],
                   help="open connections (a JSON 503 and close above; default "
                        "%(default)s; the open-files limit is raised to fit)")
    p.add_argument("--workers", type=int, default=DEFAULTS["workers"],
                   help="threads for the ScaNN/TF work (0 = CPU cores + 4, at most 32)")
    p.add_argument("--batch-parallel", type=int, default=DEFAULTS["batch_parallel"],
                   help="concurrent /u2i-by-user requests are answered in batches (one "
                        "tower call and one ScaNN search for all); at most this many "
                        "batches run at once (0 turns batching off; default %(default)s)")
    p.add_argument("--timeout-keep-alive", type=_positive(float),
                   default=DEFAULTS["timeout_keep_alive"],
                   help="seconds an idle kept-alive connection stays open "
                        "(default %(default)s)")
    p.add_argument("--timeout-header", type=_positive(float),
                   default=DEFAULTS["timeout_header"],
                   help="seconds a client has to send a request's headers, from "
                        "connecting (slowloris guard; default %(default)s)")
    p.add_argument("--timeout-body", type=_positive(float), default=DEFAULTS["timeout_body"],
                   help="seconds a client has to send a request's body (408 after; "
                        "default %(default)s)")
    p.add_argument("--verbose", action="store_true", help="log every request")
    return p


def _fail(message):
    print(f"twotower serve: error: {message}", file=sys.stderr)
    return 2


def main(argv=None):
    """`twotower serve DIR ...`: 0 after a clean stop, 2 (one line on stderr) on a bad
    folder, flag or address."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not 0 <= args.port <= 65535:
        return _fail(f"--port must be in [0, 65535], got {args.port}")
    if args.workers < 0:
        return _fail(f"--workers must be >= 0, got {args.workers}")
    if args.batch_parallel < 0:
        return _fail(f"--batch-parallel must be >= 0, got {args.batch_parallel}")
    token = None
    if args.token_file is not None:
        try:
            with open(args.token_file, encoding="utf-8") as f:
                token = f.read().strip()
        except (OSError, UnicodeDecodeError) as e:
            return _fail(f"--token-file {args.token_file!r}: {e}")
        if not token or any(c.isspace() for c in token):
            return _fail(f"--token-file {args.token_file!r} must hold one token (no spaces)")
    if not os.path.isdir(args.dir):
        return _fail(f"index folder {args.dir!r} does not exist or is not a folder")
    from twotower.index import persistence

    try:
        retriever = persistence.load(args.dir)
    except Exception as e:  # noqa: BLE001  (TF's load errors are no OSError): one line
        return _fail(f"cannot load index folder {args.dir!r}: "
                     f"{str(e).splitlines()[0] if str(e) else type(e).__name__}")
    files = raise_open_files_limit(args.max_connections + 256)
    if files < args.max_connections + 64:
        # Past the open-files limit accept() fails and asyncio stops accepting for a
        # second; a lower cap answers the extra clients with a 503 instead.
        capped = max(1, files - 64)
        print(f"twotower serve: note: --max-connections {args.max_connections} lowered to "
              f"{capped} (open-files limit {files})", file=sys.stderr)
        args.max_connections = capped
    try:
        server = IndexServer(
            retriever, args.host, args.port, token=token, verbose=args.verbose,
            max_request_bytes=args.max_request_bytes, max_batch=args.max_batch,
            max_cost=args.max_cost, max_concurrency=args.max_concurrency,
            max_connections=args.max_connections, workers=args.workers,
            batch_parallel=args.batch_parallel,
            timeout_keep_alive=args.timeout_keep_alive, timeout_header=args.timeout_header,
            timeout_body=args.timeout_body)
    except OSError as e:
        return _fail(f"cannot listen on {args.host}:{args.port}: {e.strerror or e}")
    mode = "read-only" if token is None else "updates allowed with the bearer token"
    print(f"serving {args.dir} ({retriever.index.size} items, {mode}) on {server.url} "
          "(GET /health, POST /u2i, POST /i2i, GET /docs); Ctrl-C stops", flush=True)
    try:
        server.serve()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
