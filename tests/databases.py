"""Real databases loaded with the small demo dataset, shared by the database-backed tests.

SQLite is a file in a temporary directory. PostgreSQL is the server on 127.0.0.1:5432
(database `test`, user `postgres`, no password), in a fresh schema per test session that is
dropped afterwards, with `public` behind it on the search path: pg_trgm lives there, once per
database, so that no test schema takes it along when dropped.
Without that server the PostgreSQL cases skip, except under CI, where they fail.

Import the fixtures into a test module (`from tests.databases import ...`) to use them.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.demo.dataset import generate
from gateway.loaders.sql.backend import SqlBackend
from gateway.loaders.sql.engine import async_url, create_engine
from gateway.loaders.sql.features import SqlFeatures, inspect_database
from gateway.loaders.sql.rows import Dataset
from gateway.loaders.sql.writer import write_dataset

POSTGRES_PORT = 5432
POSTGRES_URL = f"postgresql://postgres@127.0.0.1:{POSTGRES_PORT}/test"

SMALL = generate(scale=0.02)


@dataclass(frozen=True)
class Database:
    """A database loaded with `SMALL`: its engine and what `inspect_database` found."""

    engine: AsyncEngine
    features: SqlFeatures
    path: Path | None = None  # the SQLite file

    def backend(self, **features: Any) -> SqlBackend:
        """A backend for one request; keyword arguments override detected features."""
        return SqlBackend(self.engine, dataclasses.replace(self.features, **features))


async def load(engine: AsyncEngine, dataset: Dataset) -> None:
    """The tables as the gateway's writer leaves them, with the site's search support
    (on PostgreSQL the stored `search_vector` and pg_trgm; on SQLite the FTS5 indexes)."""
    await write_dataset(engine, dataset)


@pytest.fixture(scope="session")
async def sqlite_database(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Database]:
    path = tmp_path_factory.mktemp("sqlite") / "data" / "gateway.sqlite3"
    path.parent.mkdir()
    engine = create_engine(f"sqlite:///{path}")
    await load(engine, SMALL)
    yield Database(engine, await inspect_database(engine), path)
    await engine.dispose()


def postgres_engine(schema: str, port: int = POSTGRES_PORT, *, public: bool = True) -> AsyncEngine:
    """The gateway's own engine (`create_engine`), with the schema first on its search path
    (and `public`, where pg_trgm is, behind it unless `public` is false)."""
    engine = create_engine(async_url(POSTGRES_URL).set(port=port))
    search_path = f"{schema}, public" if public else schema

    async def use_schema(driver_connection: Any) -> None:  # outside any transaction: it stays
        await driver_connection.execute(f"SET search_path TO {search_path}")

    def connect(dbapi_connection: Any, record: object) -> None:
        dbapi_connection.run_async(use_schema)

    event.listen(engine.sync_engine, "connect", connect)
    return engine


@asynccontextmanager
async def new_schema() -> AsyncIterator[str]:
    """A fresh schema in the test server, dropped afterwards; skip (or fail under CI) without it."""
    admin = create_engine(POSTGRES_URL)
    schema = f"gw_{uuid.uuid4().hex[:12]}"
    try:
        async with admin.begin() as connection:
            await connection.execute(text(f"CREATE SCHEMA {schema}"))
            # Concurrent test runs would race to create it: the lock makes them queue.
            await connection.execute(text("SELECT pg_advisory_xact_lock(hashtext('pg_trgm'))"))
            await connection.execute(text("CREATE EXTENSION IF NOT EXISTS pg_trgm SCHEMA public"))
    except (OSError, SQLAlchemyError) as exc:
        await admin.dispose()
        reason = f"PostgreSQL at {POSTGRES_URL} is unreachable: {str(exc).splitlines()[0]}"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    try:
        yield schema
    finally:
        async with admin.begin() as connection:
            await connection.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        await admin.dispose()


@pytest.fixture(scope="session")
async def pg_schema() -> AsyncIterator[str]:
    async with new_schema() as schema:
        yield schema


@pytest.fixture(scope="session")
async def postgres_database(pg_schema: str) -> AsyncIterator[Database]:
    engine = postgres_engine(pg_schema)
    await load(engine, SMALL)
    yield Database(engine, await inspect_database(engine))
    await engine.dispose()


@pytest.fixture(params=["sqlite", "postgres"])
def database(request: pytest.FixtureRequest) -> Database:
    """Each kind of loaded database in turn."""
    loaded: Database = request.getfixturevalue(f"{request.param}_database")
    return loaded


@asynccontextmanager
async def traced(engine: AsyncEngine, report: Callable[[str], None]) -> AsyncIterator[None]:
    """Call `report` with each SQL statement the engine's connections run while the block runs,
    as the drivers tell: the backend reads on them, past SQLAlchemy's events. On SQLite, its
    trace callback (on the thread that runs the statement), from each connection's checkout to
    its return. On PostgreSQL, asyncpg's query logger (at the loop's turn after the statement),
    which sees what `fetch` runs, and SQLAlchemy's events for the statements SQLAlchemy runs
    itself, as prepared statements, which asyncpg does not log. The engine is disposed of
    first, so that every connection the block uses is checked out within it (the connection
    SQLite's reads on the loop share is kept from one read to the next)."""
    await engine.dispose()
    sqlite = engine.dialect.name == "sqlite"

    def sqlite_traced(statement: str) -> None:
        # SQLite also tells what its FTS5 tables run for themselves: nested in the statement
        # ("-- ..."), or before it on their shadow tables ('main'.'searchv3_fts_config').
        if not statement.startswith("-- ") and "'main'." not in statement:
            report(statement)

    def logged(query: Any) -> None:
        # asyncpg also runs statements of its own, the first time a connection meets a type:
        # its `typeinfo_tree` lookup, with JIT switched off around it.
        if "typeinfo_tree" not in query.query and "'jit'" not in query.query:
            report(query.query)

    def executed(connection: Any, cursor: Any, statement: str, *args: Any) -> None:
        report(statement)

    def checkout(dbapi_connection: Any, *args: Any) -> None:
        if sqlite:
            dbapi_connection.run_async(lambda driver: driver.set_trace_callback(sqlite_traced))
        else:
            dbapi_connection.driver_connection.add_query_logger(logged)

    def checkin(dbapi_connection: Any, *args: Any) -> None:
        if dbapi_connection is None:  # dropped
            return
        if sqlite:
            dbapi_connection.run_async(lambda driver: driver.set_trace_callback(None))
        else:
            dbapi_connection.driver_connection.remove_query_logger(logged)

    listeners: list[tuple[str, Callable[..., None]]] = [
        ("checkout", checkout),
        ("checkin", checkin),
    ]
    if not sqlite:
        listeners.append(("before_cursor_execute", executed))
    for name, listener in listeners:
        event.listen(engine.sync_engine, name, listener)
    try:
        yield
        await asyncio.sleep(0)  # asyncpg calls its query loggers at the loop's next turn
    finally:
        for name, listener in listeners:
            event.remove(engine.sync_engine, name, listener)


@asynccontextmanager
async def statements(engine: AsyncEngine) -> AsyncIterator[list[str]]:
    """The SQL statements the engine's connections run while the block runs (`traced`)."""
    sent: list[str] = []
    async with traced(engine, sent.append):
        yield sent


class TcpProxy:
    """A loopback TCP relay to a server, which can be cut (all connections dropped) and restored.

    It stands for the network between the gateway and a database that goes away and comes back.
    """

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def cut(self) -> None:
        """Refuse new connections and drop every open one."""
        if self._server is not None:
            self._server.close()
            for writer in self._writers:
                writer.transport.abort()
            await self._server.wait_closed()
            self._server = None

    async def _relay(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            server_r, server_w = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            client_w.transport.abort()
            return
        self._writers |= {client_w, server_w}
        await asyncio.gather(
            self._pipe(client_r, server_w), self._pipe(server_r, client_w), return_exceptions=True
        )
        self._writers -= {client_w, server_w}

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        finally:
            writer.transport.abort()
