"""The server's route table (index/server/routes.py): an app route the table lacks is
refused, so a new endpoint cannot escape the concurrency cap and the metrics."""

import pytest

from twotower.index.server.routes import KNOWN_PATHS, ROUTES, WORK_PATHS, check_routes


def test_work_paths_come_from_the_table():
    assert WORK_PATHS == {"/u2i", "/i2i", "/items", "/items/delete"}
    assert KNOWN_PATHS == set(ROUTES) and WORK_PATHS < KNOWN_PATHS


def test_a_route_missing_from_the_table_is_refused():
    from fastapi import FastAPI

    app = FastAPI()

    @app.get("/health")
    def health():
        return {}

    check_routes(app)  # every route known: nothing raised

    @app.post("/recommend")
    def recommend():
        return {}

    with pytest.raises(RuntimeError, match="/recommend"):
        check_routes(app)
