"""`twotower serve DIR`: a saved index folder behind an HTTP JSON API (stdlib only).

    GET  /health  -> {"status": "ok", "num_items", "dim", "distance", "config", "towers"}
    POST /u2i     {"user_ids": [..]} | {"features": <batched query-tower inputs>}
                  | {"embeddings": [[..], ..]},  optional "k" (10), "exclude": [[ids], ..]
                  -> {"item_ids": [[..]], "scores": [[..]]}
    POST /i2i     {"item_ids": [..]}, optional "k", "exclude"  (each item itself excluded)
                  -> {"item_ids": [[..]], "scores": [[..]]}

"user_ids" look up each user's query-tower inputs in the folder's user table and
exclude the items that user has seen (unless "exclude_seen": false); without a user
table they are fed to the query tower as int64 ids (an ID-lookup query tower);
"features" are a list or a dict of lists, batched, as the query tower takes them.
Bad requests get 400 with {"error": message} and the server keeps serving; bodies over
--max-request-bytes get 413; batches over --max-batch get 400. Binds 127.0.0.1 unless
told otherwise; ThreadingHTTPServer serves concurrent clients (the index holds a lock
around ScaNN calls).
"""

import argparse
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np


class BadRequest(ValueError):
    """A client error: answered with 400 and the message."""


def _as_array(value, name, dtype=None):
    try:
        arr = np.asarray(value, dtype=dtype)
    except (TypeError, ValueError) as e:
        raise BadRequest(f"{name} must be a (nested) list of numbers: {e}") from None
    if arr.dtype == object:
        raise BadRequest(f"{name} must be a rectangular (nested) list of numbers")
    return arr


class Handler(BaseHTTPRequestHandler):
    """Routes /health, /u2i, /i2i to the server's Retriever."""

    server_version = "twotower-index/1"
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):  # quiet unless asked
        if self.server.verbose:
            super().log_message(fmt, *args)

    def _send(self, code, obj):
        body = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path.rstrip("/") == "/health":
            r = self.server.retriever
            users = 0 if r.user_table is None else len(r.user_table["user_id"])
            self._send(200, {"status": "ok", "num_items": r.index.size, "dim": r.index.dim,
                             "distance": r.index.config.distance,
                             "config": r.index.config.to_dict(), "users": users,
                             "towers": {"query": r.query_tower is not None,
                                        "item": r.item_tower is not None}})
        else:
            self._send(404, {"error": f"unknown path {self.path!r}; GET /health, "
                                      "POST /u2i, POST /i2i"})

    def do_POST(self):
        route = {"/u2i": self._u2i, "/i2i": self._i2i}.get(self.path.rstrip("/"))
        length = self.headers.get("Content-Length")
        try:
            length = int(length)
        except (TypeError, ValueError):
            self.close_connection = True
            return self._send(411 if length is None else 400,
                              {"error": f"Content-Length required, got {length!r}"})
        if length < 0 or length > self.server.max_request_bytes:
            self.close_connection = True  # the body is not read: drop the connection
            return self._send(413, {"error": f"request body of {length} bytes exceeds "
                                             f"{self.server.max_request_bytes}"})
        raw = self.rfile.read(length)
        if route is None:
            return self._send(404, {"error": f"unknown path {self.path!r}; POST /u2i or /i2i"})
        try:
            try:
                body = json.loads(raw or b"null")
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise BadRequest(f"body is not valid JSON: {e}") from None
            if not isinstance(body, dict):
                raise BadRequest(f"body must be a JSON object, got {type(body).__name__}")
            ids, scores = route(body)
        except (BadRequest, ValueError, KeyError) as e:
            return self._send(400, {"error": str(e)})
        except Exception as e:  # noqa: BLE001  the server must keep serving
            return self._send(500, {"error": f"{type(e).__name__}: {e}"})
        self._send(200, {"item_ids": ids.tolist(),
                         "scores": [[None if not np.isfinite(s) else float(s) for s in row]
                                    for row in scores]})

    def _common(self, body, allowed):
        unknown = sorted(set(body) - allowed)
        if unknown:
            raise BadRequest(f"unknown fields {unknown}; expected some of {sorted(allowed)}")
        k = body.get("k", 10)
        if isinstance(k, bool) or not isinstance(k, int):
            raise BadRequest(f"k must be an integer, got {k!r}")
        exclude = body.get("exclude")
        if exclude is not None and (not isinstance(exclude, list)
                                    or not all(isinstance(e, list) for e in exclude)):
            raise BadRequest("exclude must be a list of lists of item ids")
        if exclude is not None:
            exclude = [_as_array(e, "exclude", np.int64) for e in exclude]
        return k, exclude

    def _batch(self, n):
        if n < 1 or n > self.server.max_batch:
            raise BadRequest(f"batch size must be in [1, {self.server.max_batch}], got {n}")

    def _u2i(self, body):
        keys = {"user_ids", "features", "embeddings"}
        given = sorted(keys & set(body))
        if len(given) != 1:
            raise BadRequest(f"give exactly one of {sorted(keys)}, got {given}")
        k, exclude = self._common(body, keys | {"k", "exclude", "exclude_seen"})
        r = self.server.retriever
        if "embeddings" in body:
            q = _as_array(body["embeddings"], "embeddings")
            if q.ndim != 2:
                raise BadRequest(f"embeddings must be a list of vectors, got shape {q.shape}")
            self._batch(len(q))
            if q.dtype.kind not in "iuf":
                raise BadRequest(f"embeddings must be numbers, got dtype {q.dtype}")
            return r.u2i_embeddings(q.astype(np.float32), k, exclude=exclude)
        if r.query_tower is None:
            raise BadRequest("this index was saved without a query tower: send embeddings")
        if "user_ids" in body:
            inputs = _as_array(body["user_ids"], "user_ids")
            if inputs.ndim != 1 or inputs.dtype.kind not in "iu":
                raise BadRequest(f"user_ids must be a list of integers, got {body['user_ids']!r}"[:200])
            inputs = inputs.astype(np.int64)
            n = len(inputs)
            if r.user_table is not None:
                self._batch(n)
                exclude_seen = body.get("exclude_seen", True)
                if not isinstance(exclude_seen, bool):
                    raise BadRequest(f"exclude_seen must be true or false, got {exclude_seen!r}")
                return r.u2i_users(inputs, k, exclude_seen=exclude_seen, exclude=exclude)
        else:
            feats = body["features"]
            if isinstance(feats, dict):
                inputs = {name: _as_array(v, f"features[{name!r}]") for name, v in feats.items()}
                lengths = {len(v) for v in inputs.values()} if inputs else {0}
                if len(lengths) != 1:
                    raise BadRequest(f"feature columns differ in length: {sorted(lengths)}")
                n = lengths.pop()
            else:
                inputs = _as_array(feats, "features")
                n = len(inputs) if inputs.ndim else 0
        self._batch(n)
        try:
            q = r.embed_queries(inputs)
        except (ValueError, TypeError) as e:
            raise BadRequest(f"the query tower rejected the inputs: {e}"[:1000]) from None
        except Exception as e:  # noqa: BLE001  (TF raises InvalidArgumentError for bad ids)
            raise BadRequest(f"the query tower rejected the inputs: "
                             f"{type(e).__name__}: {e}"[:1000]) from None
        return r.u2i_embeddings(q, k, exclude=exclude)

    def _i2i(self, body):
        if "item_ids" not in body:
            raise BadRequest("i2i needs item_ids")
        k, exclude = self._common(body, {"item_ids", "k", "exclude"})
        ids = _as_array(body["item_ids"], "item_ids")
        if ids.ndim != 1 or ids.dtype.kind not in "iu":
            raise BadRequest(f"item_ids must be a list of integers, got {body['item_ids']!r}"[:200])
        self._batch(len(ids))
        return self.server.retriever.i2i(ids.astype(np.int64), k, exclude=exclude)


class IndexServer(ThreadingHTTPServer):
    """ThreadingHTTPServer holding a Retriever and the request limits."""

    daemon_threads = True
    # socketserver's default listen backlog is 5: a burst of concurrent clients would get
    # connection resets before the accept loop reaches them.
    request_queue_size = 128

    def __init__(self, retriever, host="127.0.0.1", port=8080, *, max_request_bytes=1 << 20,
                 max_batch=1024, verbose=False):
        self.retriever = retriever
        self.max_request_bytes = int(max_request_bytes)
        self.max_batch = int(max_batch)
        self.verbose = verbose
        super().__init__((host, port), Handler)

    @property
    def url(self):
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"

    def start_background(self):
        """Serves in a daemon thread (tests, notebooks); returns the thread."""
        t = threading.Thread(target=self.serve_forever, daemon=True)
        t.start()
        return t


def build_parser():
    p = argparse.ArgumentParser(
        prog="twotower serve", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dir", help="an index folder written by twotower.index.persistence.save")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default loopback only; 0.0.0.0 exposes it)")
    p.add_argument("--port", type=int, default=8080, help="port (0 picks a free one)")
    p.add_argument("--max-request-bytes", type=int, default=1 << 20,
                   help="largest request body accepted (413 above)")
    p.add_argument("--max-batch", type=int, default=1024, help="most queries in one request")
    p.add_argument("--verbose", action="store_true", help="log every request")
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    if not 0 <= args.port <= 65535:
        raise SystemExit(f"--port must be in [0, 65535], got {args.port}")
    from twotower.index import persistence

    retriever = persistence.load(args.dir)
    server = IndexServer(retriever, args.host, args.port,
                         max_request_bytes=args.max_request_bytes, max_batch=args.max_batch,
                         verbose=args.verbose)
    print(f"serving {args.dir} ({retriever.index.size} items) on {server.url} "
          "(GET /health, POST /u2i, POST /i2i); Ctrl-C stops", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
