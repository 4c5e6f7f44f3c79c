"""``create_app``: the FastAPI app over a Retriever, its routes (the table of routes.py),
error answers and OpenAPI schema.
"""

import hmac
import logging
import os
from typing import Annotated

from twotower.data.external_ids import UnknownIdError
from twotower.index.server.limits import LimitsMiddleware
from twotower.index.server.metrics import Metrics
from twotower.index.server.reload import Reloader, ReloadError, version_of
from twotower.index.server.routes import check_routes
from twotower.index.server.schemas import (LIMIT_NOTE, HealthResponse, ReloadResponse,
                                           exact_integer_bounds, json_response_class,
                                           plain_u2i_parser, validation_message)
from twotower.index.server.service import ApiError, Batcher, IndexService
from twotower.index.server.settings import DEFAULTS


_log = logging.getLogger(__name__)


class _PlainU2I:
    """Answers ``POST /u2i`` by user ids in its plainest form (``{"user_ids": [..]}``,
    optional ``"k"`` and ``"exclude_seen"``: :func:`schemas.plain_u2i_parser`) through
    the batcher, without FastAPI's routing, dependencies and pydantic validation: on a
    small request those cost the event loop more than the batch's own work. The route
    stays in the app and its schema, and every other body goes to it. What is answered
    does not change: the same batches (shared with the route's requests), the same
    JSON, errors answered by the app's own exception handlers.
    """

    def __init__(self, app, parse, answer):
        # answer: async (a U2IByUsers request) -> the Response, as the route makes it
        self.app, self.parse, self.answer = app, parse, answer
        self.state = app.state

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] != "/u2i":
            return await self.app(scope, receive, send)
        message = await receive()  # the whole body (LimitsMiddleware read it)
        held = [message]

        async def again():
            return held.pop() if held else await receive()

        body = (message.get("body", b"") if message["type"] == "http.request"
                and not message.get("more_body", False) else None)
        request = None if body is None else self.parse(body)
        if request is None:
            return await self.app(scope, again, send)
        try:
            response = await self.answer(request)
        except Exception as exc:  # noqa: BLE001  answered as the route would answer it
            response = await self._error(scope, again, exc)
        await response(scope, again, send)

    async def _error(self, scope, receive, exc):
        from starlette.requests import Request

        handlers = self.app.exception_handlers
        handler = next((handlers[c] for c in type(exc).__mro__ if c in handlers), None)
        if handler is None:
            raise exc
        return await handler(Request(scope, receive), exc)


def create_app(retriever, *, token=None, metrics=None, folder=None, reload_interval=0.0,
               fingerprint=None, **limits):
    """The FastAPI app serving ``retriever`` (see the module docstring for the routes).

    Args:
      retriever: a Retriever (e.g. ``twotower.index.load(folder)``).
      token: the bearer token that allows updates; None makes the server read-only.
      metrics: a :class:`Metrics` (one is made when None).
      folder: the folder ``retriever`` was loaded from: ``POST /admin/reload`` (and,
        once ``app.state.reloader.start()`` is called, polling every ``reload_interval``
        seconds) swaps in a new export of it (index/server/reload.py). None: nothing to
        reload (/admin/reload answers 409).
      fingerprint: the manifest's fingerprint read before loading ``retriever``
        (``reload.manifest_fingerprint``); read at once when None.
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
    JSONResponse = json_response_class()
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
    reloader = None
    if folder is not None:
        reloader = Reloader(folder, service, metrics=metrics, interval=reload_interval,
                            fingerprint=fingerprint)
    app.state.reloader = reloader

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
            app.openapi_schema = exact_integer_bounds(schema)
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
        return error(400, validation_message(exc.errors(), id_kinds))

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
        return JSONResponse({**service.health(read_only),
                             "version": version_of(None) if reloader is None
                             else reloader.version,
                             "reload": None if reloader is None else reloader.health()})

    batcher = Batcher(service.u2i_users_batch, work, max_batch=service.max_batch,
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

    @app.post("/admin/reload", response_model=ReloadResponse,
              summary="Load the served folder again and swap it in (needs the bearer "
                      "token)",
              responses={**errors(401, 403),
                         409: {"model": m.ErrorResponse,
                               "description": "the new folder was refused (the old index "
                                              "keeps serving), or there is no folder"}},
              dependencies=[Depends(authorize)],
              include_in_schema=not read_only and reloader is not None)
    async def admin_reload():
        if reloader is None:
            raise ApiError(409, "this server was not started from a folder: nothing to "
                                "reload")
        try:
            # loading is slow (TF towers, file checksums): a thread, never the event loop
            result = await anyio.to_thread.run_sync(reloader.reload)
        except ReloadError as e:
            raise ApiError(409, f"reload refused, the old index keeps serving: {e}") from None
        return JSONResponse(result)

    @app.get("/metrics", summary="Prometheus metrics (text exposition format)",
             response_class=PlainTextResponse)
    async def prometheus():
        data, content_type = metrics.render()
        return PlainTextResponse(data, media_type=content_type)

    check_routes(app)  # a route the table lacks would escape the limits and metrics
    inner = app
    parse = plain_u2i_parser(m, max_batch=service.max_batch, max_cost=service.max_cost)
    if parse is not None:
        async def plain_u2i(body):  # what the route's handler does with such a body
            if not s["batch_parallel"]:
                return await work(answer(service.u2i), body)
            service._check_bounds(len(body.user_ids), body.k, None)
            kinds = ("str",) if type(body.user_ids[0]) is str else ("int",)
            return await batcher.submit((body.k, body.exclude_seen, kinds), body,
                                        len(body.user_ids))

        inner = _PlainU2I(app, parse, plain_u2i)
    outer = LimitsMiddleware(inner, metrics=metrics, max_request_bytes=s["max_request_bytes"],
                             timeout_body=s["timeout_body"],
                             max_concurrency=s["max_concurrency"],
                             version=None if reloader is None
                             else lambda: reloader.version["manifest_sha256"])
    outer.reloader = reloader  # IndexServer starts and stops its polling
    return outer
