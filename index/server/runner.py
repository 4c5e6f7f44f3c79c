"""``IndexServer``: uvicorn running ``create_app`` in this process, in the foreground or in
a background thread (tests, notebooks).
"""

import socket
import threading
import time

from twotower.index.server.app import create_app
from twotower.index.server.limits import protocol_for
from twotower.index.server.metrics import Metrics
from twotower.index.server.settings import DEFAULTS


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
      folder: the folder ``retriever`` was loaded from: followed while serving (a new
        export is swapped in: polled every ``reload_interval`` seconds, 0 = only on
        ``POST /admin/reload`` or :meth:`reload_soon`; index/server/reload.py).
      fingerprint: the manifest's fingerprint read before loading ``retriever``.
      **limits: ``max_request_bytes``, ``max_batch``, ``max_cost``, ``max_concurrency``,
        ``max_connections``, ``workers`` (see ``twotower serve --help``).

    Raises:
      OSError: the address cannot be bound (e.g. the port is in use).
    """

    def __init__(self, retriever, host="127.0.0.1", port=8080, *, token=None,
                 verbose=False, folder=None, reload_interval=0.0, fingerprint=None,
                 **limits):
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
        self.app = create_app(retriever, token=token, metrics=self.metrics, folder=folder,
                              reload_interval=reload_interval, fingerprint=fingerprint,
                              **app_limits)
        self.reloader = self.app.reloader  # None without a folder
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
            # httptools' protocol with the guards of limits.py; uvloop's event loop where
            # it is installed (a dependency but on Windows), asyncio's otherwise
            self.app, http=protocol_for(s, self.metrics), loop="auto", ws="none",
            lifespan="off",
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
        if self.reloader is not None:
            self.reloader.start()
        try:
            self.server.run(sockets=[self.socket])
        finally:
            if self.reloader is not None:
                self.reloader.stop()
            self.socket.close()

    def reload_soon(self):
        """Asks for a reload of the folder in the background (what SIGHUP does)."""
        if self.reloader is not None:
            self.reloader.kick()

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
