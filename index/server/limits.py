"""The limits enforced below FastAPI: request bodies, concurrency, connections, the
header and body timeouts, the size of request heads (uvicorn's httptools protocol with
guards).
"""

import asyncio
import json
import resource
import socket
import time

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from twotower.index.server.routes import BODY_METHODS, KNOWN_PATHS, WORK_PATHS
from twotower.index.server.settings import DEFAULTS


_timeout_at = getattr(asyncio, "timeout_at", None)  # Python 3.11+

#: the request line and headers of one request, at most (431 above)
MAX_HEADER_BYTES = 64 * 1024


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
      guarded in the protocol (:class:`GuardedHttpToolsProtocol`), before any ASGI code runs.
    - ``max_request_bytes`` (413, connection closed): by Content-Length before reading,
      and by bytes received for chunked bodies.
    - ``max_concurrency`` (429 with Retry-After): /u2i, /i2i and the updates in progress
      at once, queued or running; /health and /metrics are not counted, so they stay
      answerable under load.
    - ``version`` (when given): a function whose answer, read when a request arrives, is
      sent as every answer's ``X-Index-Version`` header.
    """

    def __init__(self, app, *, metrics, max_request_bytes, timeout_body, max_concurrency,
                 version=None):
        self.app = app
        self.version = version  # () -> the served index's version for X-Index-Version
        self.metrics = metrics
        self.max_request_bytes = int(max_request_bytes)
        self.timeout_body = float(timeout_body)
        self.max_concurrency = int(max_concurrency)
        self.in_progress = 0  # touched only on the event loop thread
        self._children = {}   # (endpoint, method, status) -> the metrics' labelled children

    def _record(self, endpoint, method, status, seconds):
        """Counts one answer (the labelled children are looked up once per label set)."""
        key = (endpoint, method, status)
        children = self._children.get(key)
        if children is None:
            m, code = self.metrics, str(status)
            children = (m.requests.labels(endpoint, method, code),
                        m.errors.labels(endpoint, code) if status >= 400 else None,
                        m.latency.labels(endpoint))
            if len(self._children) < 4096:  # methods are the client's: bounded anyway
                self._children[key] = children
        children[0].inc()
        if children[1] is not None:
            children[1].inc()
        children[2].observe(seconds)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = time.perf_counter()
        path = scope["path"].rstrip("/") or "/"
        endpoint = path if path in KNOWN_PATHS else "other"
        status_box = [500]
        # the version served when the request arrived: a swap lets requests in flight
        # finish on the index they started on (give or take the read lock's wait)
        version = None if self.version is None else self.version()

        async def send_recording(message):
            if message["type"] == "http.response.start":
                status_box[0] = message["status"]
                if version:
                    message = {**message, "headers": [*message.get("headers", ()),
                                                      (b"x-index-version", version.encode())]}
            elif message["type"] == "twotower.client_gone":
                status_box[0] = 499  # nginx's "client closed request": nothing to answer
                return
            await send(message)

        counted = False
        try:
            replay = None
            if scope["method"] in BODY_METHODS:
                body = await self._read_body(scope, receive, send_recording)
                if body is None:
                    return
                replay = _replay(body, receive)
                if path in WORK_PATHS:
                    scope = _as_json_request(scope)
            if path in WORK_PATHS:
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
            self._record(endpoint, scope["method"], status_box[0], time.perf_counter() - start)

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
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout_body
        while True:
            try:
                if _timeout_at is not None:  # no task per read, as wait_for makes on 3.11
                    async with _timeout_at(deadline):
                        message = await receive()
                else:
                    message = await asyncio.wait_for(receive(), max(0.0, deadline - loop.time()))
            except (asyncio.TimeoutError, TimeoutError):
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


class CoalescingTransport:
    """Holds a response's writes (status line + headers, body, end) and sends them in
    one ``write``, i.e. one ``send()`` for a small answer.

    uvicorn's protocols write the head and the body separately. Nagle is off
    (TCP_NODELAY), so that costs no Nagle / delayed-ACK stall, but it does cost a second
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


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol (llhttp, the parser of Node.js) with the limits
    uvicorn lacks (set by :func:`protocol_for`).

    - ``timeout_header``: from a connection's opening (or the first byte of a later
      request on a kept-alive connection) to the end of the request headers. It drops a
      slowloris client that sends its headers a byte at a time, and a connection that
      never sends a request; uvicorn's ``timeout_keep_alive`` only covers the quiet gap
      between two requests, and its ``limit_concurrency`` answers a plain-text 503.
    - ``max_header_bytes``: the request line and headers of one request; above it a
      JSON 431 and the connection closed (llhttp itself bounds no header's size; h11,
      uvicorn's other parser, refuses heads over 16 KiB). Checked twice: on the parsed
      target and header fields when the head is complete, and, while it is not, on the
      bytes read since its first byte (so that a head that never ends is not buffered
      without bound; a pipelined request's head then shares its bound with the end of
      the request before it in the same read).
    - ``max_connections``: connections over it get a JSON 503 and are closed at once
      (bounds file descriptors and memory; uvicorn's own cap counts them the same way).
    - Protocol errors (a malformed request line) get a JSON 400 instead of plain text.
    - Nagle off (TCP_NODELAY) on every TCP connection, and each answer written in one
      ``write`` (:class:`CoalescingTransport`).
    """

    timeout_header = DEFAULTS["timeout_header"]
    max_connections = DEFAULTS["max_connections"]
    max_header_bytes = MAX_HEADER_BYTES
    metrics = None

    def connection_made(self, transport):
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            # Nagle off, whatever socket and event loop we were handed (see IndexServer).
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().connection_made(CoalescingTransport(transport))
        self._header_timer = None
        self._in_head = False    # a request's first byte is in, its headers are not
        self._head_bytes = 0     # bytes read since that first byte (the head's bound)
        self._fields_bytes = 0   # the request target's and header fields' bytes parsed
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
        if self.transport.is_closing():
            return  # answered already (a limit): nothing more is read
        super().data_received(data)
        if self._in_head:
            # the head began in this read or before: the whole read counts against it
            self._head_bytes += len(data)
            if self._head_bytes > self.max_header_bytes:
                self._head_too_large()

    # httptools' callbacks, on top of uvicorn's
    def on_message_begin(self):
        super().on_message_begin()
        self._in_head = True
        self._head_bytes = 0
        self._fields_bytes = 0
        if self._header_timer is None:
            self._arm_header_timer()  # a kept-alive connection's next request began

    def on_url(self, url):
        self._fields_bytes += len(url)
        super().on_url(url)

    def on_header(self, name, value):
        self._fields_bytes += len(name) + len(value) + 4  # ": " and CRLF
        super().on_header(name, value)

    def on_headers_complete(self):
        self._in_head = False
        self._cancel_header_timer()
        if self._fields_bytes > self.max_header_bytes:  # a whole head read at once
            self._head_too_large()
            return
        super().on_headers_complete()

    def on_body(self, body):
        if self.cycle is not None and not self.transport.is_closing():
            super().on_body(body)

    def on_message_complete(self):
        if self.cycle is not None and not self.transport.is_closing():
            super().on_message_complete()

    def _head_too_large(self):
        if self.metrics is not None:
            self.metrics.dropped.labels("header_too_large").inc()
        self._raw_error(431, f"request line and headers exceed {self.max_header_bytes} "
                             "bytes")

    def on_response_complete(self):
        self.transport.flush()
        super().on_response_complete()

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
        if self.transport.is_closing():
            return
        if self.metrics is not None:
            self.metrics.dropped.labels("header_timeout").inc()
        if self._in_head:
            self._raw_error(408, f"request headers not received within "
                                 f"{self.timeout_header:g} s")
        else:  # nothing was asked: close quietly, as for an expired keep-alive
            self.transport.close()

    def _raw_error(self, status, message):
        # Written by hand: the answer comes before (or instead of) a parsed request.
        import http

        body = _json_bytes(status, message)
        head = (f"HTTP/1.1 {status} {http.HTTPStatus(status).phrase}\r\n"
                "content-type: application/json\r\n"
                f"content-length: {len(body)}\r\nconnection: close\r\n\r\n").encode()
        self._cancel_header_timer()
        self._in_head = False
        if not self.transport.is_closing():
            self.transport.write(head + body)
            self.transport.close()


def protocol_for(settings, metrics):
    return type("GuardedHttpToolsProtocol", (GuardedHttpToolsProtocol,),
                {"timeout_header": float(settings["timeout_header"]),
                 "max_connections": int(settings["max_connections"]), "metrics": metrics})


def raise_open_files_limit(wanted=65536):
    """Raises RLIMIT_NOFILE's soft limit toward ``wanted`` within the hard limit; returns
    the new soft limit (idle connections each hold a file descriptor)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        return target
    return soft
