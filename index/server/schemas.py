"""The request and response schemas, made per served index (``api_models``): its ids are
integers or strings, its embeddings have its dimension, its towers take their own
features, and the limits bound the lists. Each one states what the server enforces, so
that a request valid by the OpenAPI schema is answered (or hits a limit across fields:
413, see LIMIT_NOTE) and one that is not gets a 400 naming the field.
"""

import json
import types
from typing import Annotated, Any, Dict, List, Optional, Union

from pydantic import (BaseModel, BeforeValidator, ConfigDict, Discriminator, Field, Strict,
                      StrictBool, StringConstraints, Tag, WithJsonSchema, create_model)

from twotower.index import towers_io
from twotower.data.external_ids import INT64_MAX, INT64_MIN
from twotower.index.feature_schema import FLOAT_LIMIT


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
    (:func:`exact_integer_bounds`)."""
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
    towers' :class:`~twotower.index.feature_schema.FeatureSchema` (None: no features taken).
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


def plain_u2i_parser(models, *, max_batch, max_cost):
    """A parser of /u2i bodies by user ids in their plainest form, ``{"user_ids": [..]}``
    with an optional ``"k"`` and ``"exclude_seen"``, that skips pydantic: ``parse(body
    bytes)`` returns ``models.U2IByUsers`` (made without validation) when the body is
    such a request and valid by the schema, and None for any other body, valid or not
    (another way of asking, an ``exclude`` list, a float or out-of-range id or k, a
    string id that is not plain ASCII, bad JSON): those go to the route and its pydantic
    models, which answer them as before. None when the index takes no user ids.

    What it takes is a subset of what ``models.U2IRequest`` takes, value for value: ids
    of the index's user id kind (``int`` and not ``bool``, within int64; or a ``str``
    without NUL), 1 to ``max_batch`` of them, ``k`` an ``int`` in [1, ``max_cost``]
    (default 10), ``exclude_seen`` a JSON boolean (default true).
    """
    model = getattr(models, "U2IByUsers", None)
    if model is None:
        return None
    build = model.model_construct
    str_ids = models.user_kind == "str"
    max_batch, max_cost = int(max_batch), int(max_cost)
    keys = frozenset(("user_ids", "k", "exclude_seen"))

    def parse(body):
        try:
            value = json.loads(body)
        except ValueError:
            return None
        if type(value) is not dict or "user_ids" not in value or not keys.issuperset(value):
            return None
        ids = value["user_ids"]
        k = value.get("k", 10)
        exclude_seen = value.get("exclude_seen", True)
        if (type(ids) is not list or not 1 <= len(ids) <= max_batch or type(k) is not int
                or not 1 <= k <= max_cost or type(exclude_seen) is not bool):
            return None
        if str_ids:
            for i in ids:
                if type(i) is not str or not i.isascii() or "\x00" in i:
                    return None
        else:
            for i in ids:
                if type(i) is not int or not INT64_MIN <= i <= INT64_MAX:
                    return None
        return build(user_ids=ids, k=k, exclude=None, exclude_seen=exclude_seen)

    return parse


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
    version: Dict[str, Optional[str]]
    reload: Optional[Dict[str, Any]]


class ReloadResponse(BaseModel):
    """POST /admin/reload: whether a new index was swapped in, its version and the
    previous one."""

    reloaded: bool
    version: Dict[str, Optional[str]]
    previous: Optional[Dict[str, Optional[str]]]


def exact_integer_bounds(node):
    """Integer bounds as JSON integers: FastAPI's OpenAPI model writes every bound as a
    float, and the float of 2**63 - 1 is 2**63 (a client reading it lets 2**63 + 100
    through). The int64 bounds are the only ones that far out."""
    if isinstance(node, list):
        return [exact_integer_bounds(v) for v in node]
    if not isinstance(node, dict):
        return node
    out = {k: exact_integer_bounds(v) for k, v in node.items()}
    if out.get("type") == "integer":
        for key in ("minimum", "maximum"):
            value = out.get(key)
            if isinstance(value, float) and value.is_integer():
                out[key] = (INT64_MAX if value >= INT64_MAX else
                            INT64_MIN if value <= INT64_MIN else int(value))
    return out


def json_response_class():
    from fastapi.responses import JSONResponse

    class AsciiJSONResponse(JSONResponse):
        """JSON with non-ASCII characters escaped: an id holding a lone surrogate (valid
        JSON, \\ud800) is echoed back as sent instead of failing to encode as UTF-8."""

        def render(self, content):
            return json.dumps(content, ensure_ascii=True, allow_nan=False,
                              separators=(",", ":")).encode("ascii")

    return AsciiJSONResponse


def short(e):
    """A one-line description of a tower's exception (TF's messages carry graph dumps)."""
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}"[:500]


def _is_union_tag(part):
    return isinstance(part, str) and (part in ("str", "int", "float", "bool")
                                      or "-" in part or "[" in part)


_ID_FIELDS = {"user_ids": "user", "item_ids": "item", "exclude": "item", "item_id": "item"}


def validation_message(errors, id_kinds=None):
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
