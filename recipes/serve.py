"""`twotower serve DIR`: a saved index folder behind an HTTP JSON API (FastAPI on
uvicorn; index/server/ says what it answers and which limits protect it)."""

import argparse
import math
import os
import signal
import sys

from twotower.index import server
from twotower.index.server import DEFAULTS, IndexServer, raise_open_files_limit


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
    p = _OneLineParser(prog="twotower serve", description=server.__doc__,
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
    p.add_argument("--reload-interval", type=float, default=2.0, metavar="SECONDS",
                   help="follow DIR: every SECONDS, check its manifest and, when a new "
                        "export replaced the folder, load it beside the served one and "
                        "swap it in (a bad one is refused and the old keeps serving; "
                        "/health says why). 0 turns polling off; POST /admin/reload (with "
                        "the token) and SIGHUP still reload. HTTP updates made since the "
                        "last export are dropped by a swap (default %(default)s)")
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
    if not (args.reload_interval >= 0 and math.isfinite(args.reload_interval)):
        return _fail(f"--reload-interval must be >= 0, got {args.reload_interval}")
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
    from twotower.index.server.reload import manifest_fingerprint

    fingerprint = manifest_fingerprint(args.dir)  # before loading: a swap meanwhile is seen
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
            timeout_body=args.timeout_body, folder=args.dir,
            reload_interval=args.reload_interval, fingerprint=fingerprint)
    except OSError as e:
        return _fail(f"cannot listen on {args.host}:{args.port}: {e.strerror or e}")
    mode = "read-only" if token is None else "updates allowed with the bearer token"
    print(f"serving {args.dir} ({retriever.index.size} items, {mode}) on {server.url} "
          "(GET /health, POST /u2i, POST /i2i, GET /docs); Ctrl-C stops", flush=True)
    if hasattr(signal, "SIGHUP"):
        signal.signal(signal.SIGHUP, lambda *_: server.reload_soon())
    try:
        server.serve()
    except KeyboardInterrupt:
        pass
    return 0
