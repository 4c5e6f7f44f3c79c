"""The route table: every path the server answers and what kind of work it does.

The limits middleware (the 429 cap, body reads), the metrics' endpoint label and
``create_app`` all read this one table; ``create_app`` refuses to start when the app has
a route the table does not name (:func:`check_routes`), so a new endpoint cannot
silently escape the concurrency cap. A new endpoint: one line here, its handler in
app.py, its schemas in schemas.py.
"""

#: path -> kind: "work" (index work: counted against --max-concurrency, 429 above it),
#: "read" (cheap: never queued behind work), "docs" (FastAPI's OpenAPI pages)
ROUTES = {
    "/u2i": "work",
    "/i2i": "work",
    "/items": "work",
    "/items/delete": "work",
    "/health": "read",
    "/metrics": "read",
    "/admin/reload": "read",  # loads in a thread of its own; reloads run one at a time
    "/docs": "docs",
    "/docs/oauth2-redirect": "docs",
    "/openapi.json": "docs",
    "/redoc": "docs",
}

WORK_PATHS = frozenset(p for p, kind in ROUTES.items() if kind == "work")
KNOWN_PATHS = frozenset(ROUTES)
BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def check_routes(app):
    """Raises RuntimeError naming any route of ``app`` that :data:`ROUTES` lacks."""
    missing = sorted({getattr(r, "path", None) for r in app.routes} - set(ROUTES) - {None})
    if missing:
        raise RuntimeError(f"routes {missing} are not in index/server/routes.py's ROUTES: "
                           "add them there, so that the limits and metrics cover them")
