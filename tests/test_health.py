"""`/healthz` (the process lives) and `/readyz` (the backend answers): it flips to 503 with a
reason when the fake APIv4 fails or the database goes away, and back when they return."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx

from gateway.loaders.backend import Backend
from gateway.loaders.factory import Check, OpenBackend
from gateway.loaders.rest import client as rest_client
from gateway.loaders.rest.breaker import BREAKER_COOL_DOWN, BREAKER_THRESHOLD
from gateway.loaders.sql.engine import create_engine
from gateway.loaders.sql.features import database_ready
from tests.databases import (
    POSTGRES_PORT,
    SMALL,
    Database,
    TcpProxy,
    load,
    pg_schema,
    postgres_database,
    postgres_engine,
)
from tests.fake_upstream import FakeUpstream
from tests.observing import post, served
from tests.waiting import Clock

# The shared fixtures pytest finds by name in this module.
__all__ = ["pg_schema", "postgres_database"]

ORDERED = "{ packages(first: 1, orderBy: {field: TITLE}) { nodes { slug } } }"


def ready(client: httpx.Client) -> tuple[int, Any]:
    response = client.get("/readyz")
    assert response.headers["content-type"] == "application/json"
    return response.status_code, response.json()


def test_ready_while_the_upstream_answers_and_not_while_it_fails(upstream: FakeUpstream) -> None:
    with served(upstream=upstream.base_url, warm_catalogue=False, upstream_retries=0) as client:
        assert client.get("/healthz").json() == {"status": "ok"}
        assert ready(client) == (
            200,
            {"status": "ready", "checks": {"upstream": "ok", "catalogue": "cold"}},
        )
        assert post(client, ORDERED)["data"]["packages"]["nodes"]
        assert ready(client)[1]["checks"]["catalogue"] == "warm"

        # A request that fails: the upstream is asked again (a search: the warm catalogue
        # answers lists and lookups), and fails again.
        upstream.outage = "503"
        failed = post(client, '{ search(query: "forms") { slug } }')
        assert failed["errors"][0]["extensions"]["code"] == "UPSTREAM_ERROR"
        status, body = ready(client)
        assert status == 503
        assert body["status"] == "unavailable"
        assert body["reason"] == "upstream unavailable: The upstream API answered HTTP 503"
        assert body["checks"]["catalogue"] == "warm"  # reported, not a reason
        assert client.get("/healthz").status_code == 200  # the process still lives

        upstream.outage = None
        status, body = ready(client)  # the API root is asked again, and answers
        assert (status, body["checks"]["upstream"]) == (200, "ok")


def test_without_traffic_the_upstream_is_asked(upstream: FakeUpstream) -> None:
    clock = Clock()
    with served(clock, upstream=upstream.base_url, warm_catalogue=False) as client:
        assert ready(client)[0] == 200
        upstream.reset()
        clock.advance(rest_client.READY_RECENT + 0.1)
        assert ready(client)[0] == 200
        assert upstream.requests == ["/api/v4/"]  # the API root, once

        upstream.outage = "hang"
        clock.advance(rest_client.READY_RECENT + 0.1)
        started = time.monotonic()
        status, body = ready(client)
        assert (status, body["reason"]) == (
            503,
            "upstream unavailable: The upstream API did not answer in time",
        )
        assert time.monotonic() - started < rest_client.READY_TIMEOUT + 1
        upstream.outage = None
        assert ready(client)[0] == 200


def test_an_open_circuit_breaker_is_unready_at_once(upstream: FakeUpstream) -> None:
    clock = Clock()
    settings = {"warm_catalogue": False, "upstream_retries": 0}
    with served(clock, upstream=upstream.base_url, **settings) as client:
        upstream.outage = "500"
        for _ in range(BREAKER_THRESHOLD):
            post(client, "{ categories(first: 1) { nodes { slug } } }")
        upstream.reset()
        status, body = ready(client)
        assert (status, body["reason"]) == (
            503,
            "upstream unavailable: The upstream API is unavailable",
        )
        assert upstream.count == 0  # the breaker answered: the upstream was spared
        clock.advance(BREAKER_COOL_DOWN)
        assert ready(client)[0] == 200  # once it cools down, the probe closes it


def test_the_catalogue_warmed_at_start_up_is_reported(upstream: FakeUpstream) -> None:
    with served(upstream=upstream.base_url) as client:
        # The gateway serves once the first snapshot is in.
        assert ready(client) == (
            200,
            {"status": "ready", "checks": {"upstream": "ok", "catalogue": "warm"}},
        )


async def test_a_sqlite_file_that_goes_away(tmp_path: Path) -> None:
    path = tmp_path / "catalogue.sqlite3"
    engine = create_engine(f"sqlite:///{path}")
    await load(engine, SMALL)
    await engine.dispose()
    with served(database=f"sqlite:///{path}") as client:
        assert ready(client) == (200, {"status": "ready", "checks": {"database": "ok"}})
        path.rename(tmp_path / "away.sqlite3")
        status, body = ready(client)
        assert (status, body["reason"]) == (503, "database unavailable: The database file is gone")
        (tmp_path / "away.sqlite3").rename(path)
        assert ready(client)[0] == 200


async def test_a_postgres_database_that_goes_away_and_returns(
    postgres_database: Database, pg_schema: str
) -> None:
    proxy = TcpProxy(POSTGRES_PORT)
    await proxy.start()
    engine = postgres_engine(pg_schema, port=proxy.port)
    try:
        assert await database_ready(engine, 2.0) is None
        await proxy.cut()
        assert await database_ready(engine, 2.0) == "The database is unavailable"
        await proxy.start()
        assert await database_ready(engine, 2.0) is None
    finally:
        await engine.dispose()
        await proxy.cut()


async def test_an_optional_check_that_fails_is_reported_but_ready() -> None:
    async def ok() -> Check:
        return Check(True, "ok")

    async def redis() -> Check:
        return Check(False, "unavailable: serving from memory", required=False)

    async def database() -> Check:
        return Check(False, "unavailable: The database is unavailable")

    def no_backend() -> Backend:
        raise AssertionError("checking readiness makes no backend")

    backend = OpenBackend(no_backend, {"upstream": ok, "redis": redis})
    assert await backend.ready() == (
        True,
        {"upstream": "ok", "redis": "unavailable: serving from memory"},
        "",
    )
    backend = OpenBackend(no_backend, {"database": database, "redis": redis})
    assert await backend.ready() == (
        False,
        {
            "database": "unavailable: The database is unavailable",
            "redis": "unavailable: serving from memory",
        },
        "database unavailable: The database is unavailable",
    )
