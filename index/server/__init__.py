"""The HTTP server: a saved index folder behind an HTTP JSON API (FastAPI on uvicorn, with
httptools' parser and uvloop's event loop).

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
    POST   /admin/reload  load the folder again and swap it in (bearer token; 409 and
                          the old index kept when the new folder is refused)
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
name, type, shape and padding; twotower.index.feature_schema.FeatureSchema). Lists shorter
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
  (request heads)            request line + headers over 64 KiB: a JSON 431 and close
  --max-connections [4096]   open sockets (file descriptors): a JSON 503 and close above
  --max-concurrency [128]    /u2i, /i2i, /items requests in progress (429 above); /health
                             is never queued behind them
  --max-request-bytes [1 MiB], --max-cost [100000 = batch x (k + len(exclude))]
                             413 above: a few KB can no longer ask for 44 MB of answer
  --max-batch [1024]         queries (or items) in one request: 400 above (the schema's
                             maxItems)
ScaNN and TF run in a bounded thread pool (--workers), never on the event loop;
concurrent /u2i-by-user requests share one tower call and one search (--batch-parallel).
A /u2i body of user ids alone (optional "k", "exclude_seen") is checked without pydantic
and joins those batches directly; any other body goes through the FastAPI route.
A k above the k the index was tuned for is answered with a "warnings" entry, on exact
(brute-force) indexes too, where it says that the answer is still exact.

The server follows DIR: when a new export replaces it (twotower.index.save swaps the
folder in atomically), seen by polling its manifest every --reload-interval seconds [2;
0 = off], or on POST /admin/reload or SIGHUP, the new index is loaded and checked in a
thread beside the served one and swapped in; requests in flight finish on the old one.
A bad folder (checksums, schema, missing files, another dimension / id kind / towers) is
refused: the old keeps serving, /health "reload.last_error" says why. /health "version"
and the X-Index-Version header name the served manifest_sha256. Items added or removed
over HTTP since the last export are dropped by a swap: the export is the source of truth.

Binds 127.0.0.1 unless told otherwise (--host 0.0.0.0 exposes it).

The package: routes.py (the route table), settings.py (limits and defaults), schemas.py
(request and response models, per index), service.py (the Retriever behind the routes),
limits.py (what is enforced below FastAPI), reload.py (the folder followed, hot
swaps), metrics.py (Prometheus), app.py
(``create_app``), runner.py (``IndexServer``). The command line is recipes/serve.py.
"""

from twotower.index.server.app import create_app
from twotower.index.server.limits import raise_open_files_limit
from twotower.index.server.metrics import Metrics
from twotower.index.server.routes import ROUTES
from twotower.index.server.runner import IndexServer
from twotower.index.server.service import ApiError, IndexService
from twotower.index.server.settings import DEFAULTS


__all__ = ["DEFAULTS", "ROUTES", "ApiError", "IndexServer", "IndexService", "Metrics",
           "create_app", "raise_open_files_limit"]
