"""``Reloader``: the served folder followed while serving (hot swap).

A new export of the folder (``twotower.index.save(path, ..., overwrite=True)`` swaps the
whole folder in atomically) is noticed by polling ``manifest.json`` every
``interval`` seconds (its inode, mtime, size and ``manifest_sha256``), or asked for with
``POST /admin/reload`` or SIGHUP (``twotower serve``). It is loaded and validated
(:func:`twotower.index.persistence.load`: checksums, schema, files) in a thread of its
own, beside the index being served, then swapped in by one reference assignment under the
service's write lock: searches in flight finish on the old index, later ones use the new.

A folder that fails to load, or whose API differs (dimension, id kinds, towers or
features: the OpenAPI schema is made for one index), is refused: the old index keeps
serving and the reason is logged and shown in ``GET /health`` (``reload.last_error``).
A refused folder is not retried until its manifest changes (or a reload is asked for).

Items added or removed over HTTP since the last export are dropped by a swap: the new
export is the source of truth (``/health`` counts them in ``reload.updates_since_export``).
"""

import datetime
import json
import logging
import os
import threading
import time

_log = logging.getLogger(__name__)


def _iso(seconds):
    return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc).isoformat(
        timespec="seconds")


def manifest_fingerprint(folder):
    """(inode, mtime_ns, size, manifest_sha256 or None) of ``folder/manifest.json``;
    None when it cannot be read."""
    path = os.path.join(folder, "manifest.json")
    try:
        st = os.stat(path)
        with open(path, "rb") as f:
            raw = f.read(1 << 20)
        sha = json.loads(raw.decode("utf-8")).get("manifest_sha256")
    except (OSError, ValueError, AttributeError):
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size, sha if isinstance(sha, str) else None)


def version_of(fingerprint):
    """What /health and X-Index-Version say of a folder's version."""
    if fingerprint is None:
        return {"manifest_sha256": None, "manifest_mtime": None}
    return {"manifest_sha256": fingerprint[3],
            "manifest_mtime": _iso(fingerprint[1] / 1e9)}


def api_signature(service_models, retriever):
    """What the OpenAPI schema depends on: a reload that changes it is refused."""
    m = service_models
    feats = {}
    for who, schema in (("query", m.query_features), ("item", m.item_features)):
        feats[who] = None if schema is None else json.dumps(schema.describe(), sort_keys=True,
                                                            default=str)
    return {"dim": int(retriever.index.dim), "id_kind": m.item_kind,
            "user_id_kind": m.user_kind,
            "towers": (retriever.query_tower is not None, retriever.item_tower is not None),
            "asks": sorted(n for n in dir(m) if n[:1].isupper()), "features": feats}


class ReloadError(Exception):
    """A new folder refused (the old index keeps serving)."""


class Reloader:
    """Follows ``folder`` for ``service`` (see the module docstring).

    Args:
      folder: the index folder being served.
      service: the :class:`~twotower.index.server.service.IndexService`.
      metrics: a :class:`~twotower.index.server.metrics.Metrics` (or None).
      interval: seconds between polls of the manifest (0: no polling).
      fingerprint: the manifest's fingerprint when the served index was loaded (read
        before loading it); read now when None.
      load: the loader (``twotower.index.persistence.load``).
    """

    def __init__(self, folder, service, *, metrics=None, interval=2.0, fingerprint=None,
                 load=None):
        if load is None:
            from twotower.index.persistence import load
        self.folder = folder
        self.service = service
        self.metrics = metrics
        self.interval = float(interval or 0)
        self._load = load
        self._lock = threading.Lock()      # one reload at a time
        self._kick = threading.Event()     # SIGHUP / tests: reload now
        self._stop = threading.Event()
        self._thread = None
        self.fingerprint = fingerprint or manifest_fingerprint(folder)
        self._tried = self.fingerprint     # last fingerprint tried (refused ones too)
        self.version = version_of(self.fingerprint)
        self.loaded_at = time.time()
        self.reloads = 0
        self.failures = 0
        self.last_error = None
        self.last_error_at = None
        self._signature = api_signature(service.models, service.retriever)

    # -- state --
    def health(self):
        return {"folder": self.folder, "interval_s": self.interval,
                "loaded_at": _iso(self.loaded_at), "reloads": self.reloads,
                "failures": self.failures, "last_error": self.last_error,
                "last_error_at": None if self.last_error_at is None
                else _iso(self.last_error_at),
                "updates_since_export": self.service.updates_since_load,
                "on_reload": "the new export replaces the index: items added or removed "
                             "over HTTP since the last export are dropped"}

    # -- reloading --
    def reload(self, *, force=True):
        """Loads the folder and swaps it in; returns {"reloaded": bool, "version",
        "previous"}. ``force=False`` (polling) skips a folder whose manifest is the one
        served or last refused. Raises ReloadError for a folder it refuses."""
        with self._lock:
            fp = manifest_fingerprint(self.folder)
            if not force and (fp is None or fp == self._tried or fp == self.fingerprint):
                return {"reloaded": False, "version": self.version, "previous": None}
            self._tried = fp
            start = time.perf_counter()
            try:
                if fp is None:
                    raise ValueError(f"{os.path.join(self.folder, 'manifest.json')!r} "
                                     "cannot be read")
                retriever = self._load(self.folder)
                # the folder may have been swapped again while loading: name what was read
                # before the load only if it is still the same
                after = manifest_fingerprint(self.folder)
                if after != fp:
                    self._tried = None  # try again at the next poll
                from twotower.index.server.schemas import api_models
                models = api_models(retriever, max_batch=self.service.max_batch,
                                    max_cost=self.service.max_cost)
                signature = api_signature(models, retriever)
                if signature != self._signature:
                    changed = sorted(k for k in signature
                                     if signature[k] != self._signature[k])
                    raise ValueError(f"the new index changes the API ({', '.join(changed)}):"
                                     " restart the server to serve it")
            except Exception as e:  # noqa: BLE001  any load error refuses the folder
                text = str(e).splitlines()[0] if str(e) else type(e).__name__
                self.failures += 1
                self.last_error = f"{type(e).__name__}: {text}"
                self.last_error_at = time.time()
                if manifest_fingerprint(self.folder) != fp:
                    self._tried = None  # swapped again while loading: the next poll retries
                self._observe("failure", start)
                _log.warning("reload of %s refused, still serving %s: %s", self.folder,
                             self.version["manifest_sha256"], self.last_error)
                raise ReloadError(self.last_error) from None
            previous = self.version
            self.service.swap(retriever)
            self.fingerprint, self.version = fp, version_of(fp)
            self.loaded_at = time.time()
            self.reloads += 1
            self.last_error = self.last_error_at = None
            self._observe("success", start)
            _log.warning("reloaded %s: %s (was %s)", self.folder,
                         self.version["manifest_sha256"], previous["manifest_sha256"])
            return {"reloaded": True, "version": self.version, "previous": previous}

    def _observe(self, result, start):
        if self.metrics is not None:
            self.metrics.reloads.labels(result).inc()
            self.metrics.reload_seconds.observe(time.perf_counter() - start)

    # -- the polling thread --
    def kick(self):
        """Asks the polling thread for a reload now (safe in a signal handler)."""
        self._kick.set()

    def start(self):
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, daemon=True,
                                            name="twotower-reload")
            self._thread.start()
        return self._thread

    def stop(self, timeout=10.0):
        self._stop.set()
        self._kick.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self):
        while not self._stop.is_set():
            kicked = self._kick.wait(self.interval if self.interval > 0 else None)
            if self._stop.is_set():
                return
            self._kick.clear()
            try:
                self.reload(force=kicked)
            except ReloadError:
                pass  # logged, and in /health
            except Exception:  # noqa: BLE001  the thread must survive
                _log.exception("reload of %s failed", self.folder)
