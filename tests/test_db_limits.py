"""A slow or saturated database fails the fields that need it, within the statement timeout.

Slowness is real: each connection of the engine under test sees `grid_grid` through a temporary
view that would take half a minute (`pg_sleep` on PostgreSQL, a long recursive count on SQLite),
so only the statements that read grids are slow, and only until the database stops them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import event, text
from sqlalchemy.exc import OperationalError

from gateway.backends import open_backend
from gateway.compose import schema_for
from gateway.config import Settings
from gateway.errors import response_body
from gateway.loaders.loaders import Loaders
from gateway.loaders.sql.backend import SqlBackend
from gateway.loaders.sql.engine import MAX_OVERFLOW, POOL_SIZE, create_engine
from gateway.schema.context import Context
from tests.databases import (
    POSTGRES_URL,
    SMALL,
    Database,
    pg_schema,
    postgres_database,
    sqlite_database,
)

__all__ = ["pg_schema", "postgres_database", "sqlite_database"]

schema = schema_for(Settings())

TIMEOUT = 0.3  # seconds: the engine's statement timeout
SLACK = 1.5  # seconds beyond it that a failure may take to reach the client

# About 20 s of work for SQLite (evaluated once per statement); 30 s of sleep for PostgreSQL.
SQLITE_SLOW = """WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 100000000)
    SELECT count(*) FROM n"""
SLOW_GRIDS = {
    "sqlite": "CREATE TEMP VIEW grid_grid AS SELECT g.* FROM main.grid_grid AS g "
    f"WHERE ({SQLITE_SLOW}) > 0",
    "postgresql": "CREATE TEMP VIEW grid_grid AS SELECT g.* FROM {schema}.grid_grid AS g, "
    "pg_sleep(30)",
}

GRID_AND_COUNT = "{ grid(id: %d) { title } categories { totalCount } }" % SMALL.grids[0].id
COUNT = "{ categories { totalCount } }"


@dataclass(frozen=True)
class Target:
    """A loaded database as the gateway would open it: its URL and, on PostgreSQL, the test
    session's schema; `slow_grids` is what a connection runs to see its grids slow."""

    database: Database
    url: str
    setup: list[str]
    slow_grids: str


@pytest.fixture(params=["sqlite", "postgres"])
def target(request: pytest.FixtureRequest) -> Target:
    database: Database = request.getfixturevalue(f"{request.param}_database")
    if request.param == "sqlite":
        return Target(database, f"sqlite:///{database.path}", [], SLOW_GRIDS["sqlite"])
    schema_name: str = request.getfixturevalue("pg_schema")
    slow = SLOW_GRIDS["postgresql"].format(schema=schema_name)
    return Target(database, POSTGRES_URL, [f"SET search_path TO {schema_name}"], slow)


@pytest.fixture
async def limited(target: Target) -> AsyncIterator[Database]:
    """The gateway's engine, with the statement timeout, on the loaded database."""
    async with _engine(target, target.setup) as database:
        yield database


@pytest.fixture
async def slow(target: Target) -> AsyncIterator[Database]:
    """The same, where every statement that reads grids would take half a minute."""
    async with _engine(target, [*target.setup, target.slow_grids]) as database:
        yield database


@asynccontextmanager
async def _engine(target: Target, statements: list[str]) -> AsyncIterator[Database]:
    engine = create_engine(target.url, statement_timeout=TIMEOUT)

    async def setup(driver_connection: Any) -> None:  # outside any transaction: it stays
        for statement in statements:
            await driver_connection.execute(statement)

    def connect(dbapi_connection: Any, record: object) -> None:
        dbapi_connection.run_async(setup)

    event.listen(engine.sync_engine, "connect", connect)
    try:
        yield Database(engine, target.database.features)
    finally:
        await engine.dispose()


async def execute(db: Database, document: str) -> dict[str, Any]:
    backend = SqlBackend(db.engine, db.features)
    result = await schema.execute(document, context_value=Context(Loaders(backend)))
    return dict(response_body(result))


def _codes(body: dict[str, Any]) -> list[tuple[str, list[Any]]]:
    return [(error["extensions"]["code"], error["path"]) for error in body.get("errors", [])]


async def test_a_statement_past_the_timeout_fails_its_fields_only(slow: Database) -> None:
    started = time.monotonic()
    body = await execute(slow, GRID_AND_COUNT)
    elapsed = time.monotonic() - started

    assert _codes(body) == [("DATABASE_ERROR", ["grid"])]
    assert body["errors"][0]["message"] == "The database took too long to answer"
    assert body["data"] == {"grid": None, "categories": {"totalCount": len(SMALL.categories)}}
    # Stopped by the database, not abandoned: the failure comes back within the timeout, and on
    # SQLite only once the statement has stopped (its connection is then closed, on its thread).
    assert TIMEOUT <= elapsed < TIMEOUT + SLACK

    # The engine keeps serving, its slow grids as before.
    again = await execute(slow, GRID_AND_COUNT)
    assert _codes(again) == [("DATABASE_ERROR", ["grid"])]
    assert again["data"]["categories"] == {"totalCount": len(SMALL.categories)}


async def test_each_statement_has_the_whole_timeout(limited: Database) -> None:
    """Connections idle for longer than the timeout still serve."""
    assert "errors" not in await execute(limited, GRID_AND_COUNT)
    await asyncio.sleep(TIMEOUT * 1.5)
    assert "errors" not in await execute(limited, GRID_AND_COUNT)


async def test_a_request_waits_for_a_connection_no_longer_than_the_timeout(
    limited: Database,
) -> None:
    async with AsyncExitStack() as stack:
        for _ in range(POOL_SIZE + MAX_OVERFLOW):  # every connection the pool may open, in use
            await stack.enter_async_context(limited.engine.connect())
        started = time.monotonic()
        body = await execute(limited, COUNT)
        elapsed = time.monotonic() - started

    assert _codes(body) == [("DATABASE_ERROR", ["categories"])]
    assert body["errors"][0]["message"] == "The database is busy: no connection became free in time"
    assert TIMEOUT <= elapsed < TIMEOUT + SLACK
    assert await execute(limited, COUNT) == {
        "data": {"categories": {"totalCount": len(SMALL.categories)}}
    }


async def test_the_setting_reaches_the_served_engine(sqlite_database: Database) -> None:
    settings = Settings(database=f"sqlite:///{sqlite_database.path}", statement_timeout=TIMEOUT)
    async with open_backend(settings) as backend:
        served = backend()
        assert isinstance(served, SqlBackend)
        started = time.monotonic()
        with pytest.raises(OperationalError, match="interrupted"):
            async with served.engine.connect() as connection:
                await connection.execute(text(SQLITE_SLOW))
        assert time.monotonic() - started < TIMEOUT + SLACK


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///:memory:"])
async def test_in_memory_sqlite_has_no_pool_to_bound(url: str) -> None:
    """Pool sizes would crash an in-memory database's engine: it gets none, and works."""
    engine = create_engine(url, statement_timeout=TIMEOUT)
    try:
        async with engine.connect() as connection:
            assert (await connection.exec_driver_sql("SELECT 1")).scalar() == 1
    finally:
        await engine.dispose()
