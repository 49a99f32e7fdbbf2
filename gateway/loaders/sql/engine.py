"""Database URLs as people write them, turned into async engines.

`sqlite:///path.db` and `postgresql://user:password@host:5432/name` (or `postgres://`) are
accepted; the gateway picks the async driver (aiosqlite, asyncpg) itself. A URL is read as the
driver will read it when it first connects, so that one it could not connect with is refused at
start-up, in one line: a port that is not one, a parameter the driver does not take or a value it
cannot use (PostgreSQL takes `host`, `port`, `user`, `password`, `passfile`, `database` and
`sslmode`, libpq's name for asyncpg's `ssl`).

`read` runs one of the backend's statements, compiled once by SQLAlchemy (statements.py),
straight on the driver connection of a pooled connection: SQLAlchemy's execution around a
statement (its Connection, execution context and result, whose metadata it builds again for
every text statement) cost ten times what SQLite takes to answer a lookup. On SQLite a read runs
on the event loop's own thread rather than on the connection's, on a connection all such reads
share: it takes microseconds to a few milliseconds of this process's CPU either way, and the
thread hops around it would cost more than most reads; it waits on no lock (the database is in
WAL mode) and stops at the statement timeout. A read that scans text keeps a connection's
thread. Writes, searches and everything else the engine does go through SQLAlchemy as usual, on
the connection's thread.
"""

from __future__ import annotations

import asyncio
import math
import sqlite3
import time
import warnings
from collections.abc import Callable, Hashable, Mapping, Sequence
from contextlib import nullcontext
from functools import partial
from typing import Any, TypeVar
from weakref import WeakKeyDictionary

import aiosqlite
from sqlalchemy import Executable, event
from sqlalchemy.engine import URL, Connection, Engine, Row, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, SAWarning, StatementError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry, PoolProxiedConnection
from sqlalchemy.util import await_, greenlet_spawn

from gateway.errors import ConfigError
from gateway.loaders.sql.failures import FAILURES
from gateway.loaders.sql.trigrams import similarity

T = TypeVar("T")

CONNECT_TIMEOUT = 10.0  # seconds; asyncpg would wait 60 for a host that does not answer

# Connections per process, at most POOL_SIZE + MAX_OVERFLOW (each SQLite one is a thread).
# Opened as they are needed and kept: an overflow connection is closed as soon as it is
# returned, and a PostgreSQL one costs a handshake, the driver's type introspection and
# every statement prepared again; concurrent requests, two batches each, would churn them.
POOL_SIZE = 20
MAX_OVERFLOW = 0

# SQLite virtual machine steps between two looks at the deadline: well under a millisecond.
_PROGRESS_STEPS = 10_000

# The change stamps' statements (`change_stamp`).
_SQLITE_STAMP = "PRAGMA data_version"
_POSTGRES_STAMP = "SELECT pg_current_snapshot()::text"

_DRIVERS = {"sqlite": "sqlite+aiosqlite", "postgresql": "postgresql+asyncpg"}

# What a PostgreSQL URL may set of asyncpg's connection (others it would take as it is, text
# where it wants a number or an object), and the values of its `ssl` (libpq's `sslmode`).
_POSTGRES_PARAMETERS = ("host", "port", "user", "password", "passfile", "database", "sslmode")
_SSL_MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")


def async_url(url: str) -> URL:
    """The URL with its async driver, checked as the driver will read it: anything but a
    SQLite or PostgreSQL URL the gateway can connect with is a `ConfigError`."""
    try:
        parsed = make_url(url.replace("postgres://", "postgresql://", 1))
    except (ArgumentError, ValueError):  # ValueError: a port that is not a number
        raise ConfigError(f"not a database URL: {url!r}") from None
    backend = parsed.get_backend_name()
    if backend not in _DRIVERS:
        raise ConfigError(f"database URL must be sqlite:// or postgresql://, got {url!r}")
    parsed = parsed.set(drivername=_DRIVERS[backend])
    if backend == "postgresql" and "sslmode" in parsed.query:
        # asyncpg reads libpq's `sslmode` in a DSN only: as a keyword, it is `ssl`.
        if "ssl" in parsed.query:
            raise ConfigError(f"database URL {url!r} cannot be used: both sslmode and ssl")
        ssl = parsed.query["sslmode"]
        parsed = parsed.difference_update_query(["sslmode"]).update_query_dict({"ssl": ssl})
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", SAWarning)  # SQLite: a parameter it would ignore
            _, options = parsed.get_dialect()().create_connect_args(parsed)
    except (ArgumentError, ValueError, SAWarning) as exc:
        reason = str(exc).splitlines()[0]
        raise ConfigError(f"database URL {url!r} cannot be used: {reason}") from None
    if backend == "postgresql":
        # SQLAlchemy leaves a port 0 out: asyncpg would connect to 5432.
        _check_connection(url, {**options, "port": options.get("port", parsed.port)})
    return parsed


def _check_connection(url: str, options: Mapping[str, Any]) -> None:
    """What asyncpg would be asked to connect with, from a PostgreSQL URL, is something it can
    use: its own checks come at the first connection, some as a TypeError."""

    def refuse(reason: str) -> ConfigError:
        return ConfigError(f"database URL {url!r} cannot be used: {reason}")

    for name, value in options.items():
        if name not in {*_POSTGRES_PARAMETERS, "ssl"}:
            expected = ", ".join(_POSTGRES_PARAMETERS)
            raise refuse(f"unknown parameter {name!r} (expected one of {expected})")
        if name not in ("host", "port") and not isinstance(value, str):  # given twice
            raise refuse(f"the parameter {name!r} is given more than once")
    ports = options.get("port")
    for port in ports if isinstance(ports, list) else [ports]:
        if port is not None and not 0 < port < 65536:
            raise refuse(f"port {port} is not between 1 and 65535")
    ssl = options.get("ssl")
    if ssl is not None and ssl not in _SSL_MODES:
        raise refuse(f"sslmode {ssl!r} is not one of {', '.join(_SSL_MODES)}")


def create_engine(url: str | URL, *, statement_timeout: float | None = None) -> AsyncEngine:
    """An engine with a bounded pool.

    With a `statement_timeout` (seconds), the database stops any statement that runs longer,
    and a request waits no longer than that for a free connection: a slow database fails the
    fields that need it instead of holding requests, and the pool, without bound. A pooled
    connection is not pinged before use (a round trip per statement): the backend retries a
    statement once on a connection found dropped (`SqlBackend`).
    """
    parsed = async_url(url) if isinstance(url, str) else url
    pool: dict[str, Any] = {}
    if not _in_memory(parsed):
        pool = {"pool_size": POOL_SIZE, "max_overflow": MAX_OVERFLOW}
        if statement_timeout is not None:
            pool["pool_timeout"] = statement_timeout
    if parsed.get_backend_name() == "sqlite":
        engine = create_async_engine(parsed, async_creator=_sqlite_connector(parsed), **pool)
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        shared = _LOOP_READERS[engine.sync_engine] = _LoopReader()
        event.listen(engine.sync_engine, "engine_disposed", shared.release)
        if statement_timeout is not None:
            _interrupt_after(engine, statement_timeout)
        return engine
    connect_args: dict[str, Any] = {"timeout": CONNECT_TIMEOUT}
    if statement_timeout is not None:
        milliseconds = max(1, math.ceil(statement_timeout * 1000))  # 0 would mean no limit
        connect_args["server_settings"] = {"statement_timeout": str(milliseconds)}
    return create_async_engine(parsed, connect_args=connect_args, **pool)


async def read(
    engine: AsyncEngine, sql: str, parameters: Sequence[Any], *, inline: bool = True
) -> list[Any]:
    """The rows of `sql` with its positional `parameters`, read straight on a driver.

    On SQLite, `inline`, on the loop's own thread, on the connection the loop's reads share
    (`_LoopReader`): concurrent requests take turns on it, as each read ends before any other
    work. A read that may take longer than a few milliseconds (a scan of the packages' text)
    is not `inline`: it runs on its connection's thread, and the loop serves others meanwhile.
    Elsewhere (PostgreSQL, or not `inline`) a read checks a connection out of the pool, and
    gives it back, within one greenlet (`greenlet_spawn`).
    """
    shared = _LOOP_READERS.get(engine.sync_engine)
    if inline and shared is not None:
        return await shared.read(engine.sync_engine, sql, parameters)
    return await greenlet_spawn(_once_more_if_dropped, partial(_read, engine, sql, parameters))


async def change_stamp(engine: AsyncEngine) -> Hashable:
    """A value that stays the same exactly as long as nothing is committed to the database
    (`kept.py` keeps answers under it): it must be read before the statements whose answers
    are kept under it.

    On SQLite, read on the connection the loop's reads share (`_LoopReader.stamp`). On
    PostgreSQL the current snapshot (`pg_current_snapshot()`): it lists the transactions in
    progress below the newest one finished, so a transaction that ends, committed or not,
    changes it. (The WAL's insert position would not do: a commit's record is written before
    the transaction becomes visible, and a stamp read between the two would not move again
    when it does.)
    """
    shared = _LOOP_READERS.get(engine.sync_engine)
    if shared is not None:
        return await shared.stamp(engine.sync_engine)
    reader = _STAMP_READERS.get(engine.sync_engine)
    if reader is None:
        reader = _STAMP_READERS[engine.sync_engine] = _StampReader()
        event.listen(engine.sync_engine, "engine_disposed", reader.release)
    return await reader.stamp(engine.sync_engine)


def change_stamp_now(engine: AsyncEngine) -> Hashable | None:
    """`change_stamp` at once, where that needs no waiting (SQLite, once the loop's reads have
    their connection), else None; a failure is None too (`change_stamp` will tell it)."""
    shared = _LOOP_READERS.get(engine.sync_engine)
    return None if shared is None else shared.stamp_now()


async def execute(engine: AsyncEngine, statement: Executable) -> Sequence[Row[Any]]:
    """The rows of a statement SQLAlchemy compiles and executes, typed by it (a search, built
    for its words), on a pooled connection (on SQLite, on its thread)."""
    return await greenlet_spawn(_once_more_if_dropped, partial(_execute, engine, statement))


def _once_more_if_dropped(statement: Callable[[], T]) -> T:
    """Run a statement. A failure drops its connection, so that the next statement starts
    afresh; a connection found dropped (the server restarted, or ended it while it sat in
    the pool) gets the statement once more, on a new connection."""
    try:
        return statement()
    except DBAPIError as exc:
        if not exc.connection_invalidated:
            raise
    return statement()


def _execute(engine: AsyncEngine, statement: Executable) -> Sequence[Row[Any]]:
    with engine.sync_engine.connect() as connection:
        try:
            return connection.execute(statement).all()
        except FAILURES:
            connection.invalidate()
            raise


def _read(engine: AsyncEngine, sql: str, parameters: Sequence[Any]) -> list[Any]:
    """One read on a pooled connection, back to the pool once it succeeded, dropped if it
    failed."""
    pooled = _checkout(engine.sync_engine)
    driver: Any = pooled.driver_connection  # aiosqlite's (ours) or asyncpg's
    try:
        if isinstance(driver, _SqliteConnection):
            with pooled.info.get("deadline") or nullcontext():
                rows = list(await_(driver.execute_fetchall(sql, parameters)))
        else:
            rows = await_(driver.fetch(sql, *parameters))
    except Exception as exc:
        raise _dropped(engine.sync_engine, pooled, exc, sql, parameters) from exc
    except BaseException:  # cancelled midway: the connection is in a state nobody knows
        pooled.invalidate()
        raise
    pooled.close()
    return rows


def _checkout(engine: Engine) -> PoolProxiedConnection:
    """A connection of the pool; a driver that could not connect raises SQLAlchemy's
    `DBAPIError`, as SQLAlchemy's own execution would."""
    try:
        return engine.raw_connection()
    except engine.dialect.loaded_dbapi.Error as exc:
        raise DBAPIError.instance(
            None, None, exc, engine.dialect.loaded_dbapi.Error, dialect=engine.dialect
        ) from exc


def _dropped(
    engine: Engine,
    pooled: PoolProxiedConnection,
    exc: Exception,
    sql: str,
    parameters: Sequence[Any],
) -> StatementError:
    """Drop a connection a read failed on, so that the next read starts afresh, and what to
    raise: the driver's error as SQLAlchemy's own execution raises it, a `DBAPIError` whose
    `orig` it is and which says whether the connection was found closed (by the server, or the
    network)."""
    driver: Any = pooled.driver_connection
    closed = not isinstance(driver, _SqliteConnection) and driver.is_closed()
    pooled.invalidate()
    return DBAPIError.instance(
        sql, parameters, exc, Exception, connection_invalidated=closed, dialect=engine.dialect
    )


class _LoopReader:
    """The connection a SQLite engine's reads on the event loop's thread share.

    Such a read never waits and never overlaps another: it runs from start to end before the
    loop does anything else. So one connection serves them all, checked out of the pool once
    (in a greenlet, as connecting may wait) and kept: a read costs neither a checkout and a
    return nor a greenlet. The connection is dropped when a read fails on it (the next read
    checks out another) and when the engine is disposed of (`release`).
    """

    def __init__(self) -> None:
        self._pooled: PoolProxiedConnection | None = None
        self._connections = 0  # how many it had: a stamp is its connection's

    async def read(self, engine: Engine, sql: str, parameters: Sequence[Any]) -> list[Any]:
        pooled = self._pooled
        if pooled is None:
            pooled = await self._connection(engine)
        driver: _SqliteConnection = pooled.driver_connection  # type: ignore[assignment]
        try:
            with pooled.info.get("deadline") or nullcontext():
                return driver.read_here(sql, parameters)
        except Exception as exc:
            self._pooled = None
            failure = await greenlet_spawn(_dropped, engine, pooled, exc, sql, parameters)
            raise failure from exc

    async def stamp(self, engine: Engine) -> Hashable:
        """The connection's change stamp: `PRAGMA data_version`, which moves whenever another
        connection commits, with the connection's own `total_changes` (a database in memory
        has one connection, which writes too), and which connection that is."""
        rows = await self.read(engine, _SQLITE_STAMP, ())
        pooled = self._pooled  # the one read on: it failed otherwise
        assert pooled is not None
        driver: _SqliteConnection = pooled.driver_connection  # type: ignore[assignment]
        return (self._connections, rows[0][0], driver.total_changes_here())

    def stamp_now(self) -> Hashable | None:
        """`stamp` if the connection is there and answers, else None."""
        pooled = self._pooled
        if pooled is None:
            return None
        driver: _SqliteConnection = pooled.driver_connection  # type: ignore[assignment]
        try:
            with pooled.info.get("deadline") or nullcontext():
                version = driver.read_here(_SQLITE_STAMP, ())[0][0]
        except sqlite3.Error:
            return None
        return (self._connections, version, driver.total_changes_here())

    async def _connection(self, engine: Engine) -> PoolProxiedConnection:
        pooled = await greenlet_spawn(_checkout, engine)
        if self._pooled is not None:  # another read checked one out meanwhile
            await greenlet_spawn(pooled.close)
            return self._pooled
        self._pooled = pooled
        self._connections += 1
        return pooled

    def release(self, engine: Engine) -> None:
        """The engine is disposed of: close the connection with the pool's others (called
        within the greenlet of `AsyncEngine.dispose`)."""
        pooled, self._pooled = self._pooled, None
        if pooled is not None:
            pooled.invalidate()


# The shared connection of each SQLite engine's reads on the loop (`create_engine` makes it).
_LOOP_READERS: WeakKeyDictionary[Engine, _LoopReader] = WeakKeyDictionary()


class _StampReader:
    """The change stamps of a PostgreSQL engine (`change_stamp`), read one at a time on a
    connection of their own, kept out of the pool and used with asyncpg's own calls (no
    checkout, no greenlet).

    A request that asks while a read runs waits for the next read, which starts as soon as
    that one ends and answers every request that asked meanwhile: a read is shared only by
    requests that asked before it started, so each gets a stamp read after it asked. The
    connection is dropped when a read fails on it (a connection found closed, by the server or
    the network, gets the read once more on a new one) and when the engine is disposed of.
    """

    def __init__(self) -> None:
        self._pooled: PoolProxiedConnection | None = None
        self._waiting: list[asyncio.Future[Hashable]] = []  # the askers the next read answers
        self._reading: asyncio.Task[None] | None = None

    async def stamp(self, engine: Engine) -> Hashable:
        # Each asker has a future of its own: one cancelled cancels no other asker's.
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Hashable] = loop.create_future()
        self._waiting.append(future)
        if self._reading is None:
            self._reading = loop.create_task(self._read_all(engine))
        return await future

    async def _read_all(self, engine: Engine) -> None:
        """Read a stamp for each batch of askers in turn, until none asks."""
        try:
            while self._waiting:
                waiting, self._waiting = self._waiting, []
                try:
                    stamp = await self._read(engine)
                except Exception as exc:
                    for future in waiting:
                        if not future.done():
                            future.set_exception(exc)
                except BaseException:
                    for future in waiting:
                        future.cancel()
                    raise
                else:
                    for future in waiting:
                        if not future.done():
                            future.set_result(stamp)
        finally:
            self._reading = None
            waiting, self._waiting = self._waiting, []
            for future in waiting:  # cancelled itself (the loop closes): nobody waits long
                future.cancel()

    async def _read(self, engine: Engine) -> Hashable:
        kept = self._pooled is not None
        try:
            return await self._read_once(engine)
        except DBAPIError as exc:
            if not (kept and exc.connection_invalidated):
                raise
        return await self._read_once(engine)

    async def _read_once(self, engine: Engine) -> Hashable:
        pooled = self._pooled
        if pooled is None:
            pooled = self._pooled = await greenlet_spawn(_checkout, engine)
        driver: Any = pooled.driver_connection  # asyncpg's
        try:
            stamp: str = await driver.fetchval(_POSTGRES_STAMP)
        except Exception as exc:
            self._pooled = None
            failure = await greenlet_spawn(_dropped, engine, pooled, exc, _POSTGRES_STAMP, ())
            raise failure from exc
        except BaseException:  # cancelled midway: the connection is in a state nobody knows
            self._pooled = None
            await greenlet_spawn(pooled.invalidate)
            raise
        return stamp

    def release(self, engine: Engine) -> None:
        """The engine is disposed of: close the connection (within `dispose`'s greenlet)."""
        pooled, self._pooled = self._pooled, None
        if pooled is not None:
            pooled.invalidate()


# The change stamps' reader of each PostgreSQL engine (`change_stamp` makes it).
_STAMP_READERS: WeakKeyDictionary[Engine, _StampReader] = WeakKeyDictionary()


class _SqliteConnection(aiosqlite.Connection):
    """aiosqlite's connection, which can also read on the event loop's thread."""

    def __init__(self, connector: Callable[[], sqlite3.Connection]) -> None:
        super().__init__(connector, iter_chunk_size=64)
        self._thread.daemon = True  # as SQLAlchemy makes aiosqlite's own: exit never waits

    def read_here(self, sql: str, parameters: Sequence[Any]) -> list[Any]:
        """The rows of `sql`, read on the calling thread rather than the connection's."""
        return self._conn.execute(sql, parameters).fetchall()

    def total_changes_here(self) -> int:
        """The rows this connection inserted, updated or deleted since it opened."""
        return self._conn.total_changes

    async def rollback(self) -> None:
        """A connection back from a read has no transaction (sqlite3 opens none for a SELECT):
        it is not sent to its thread for nothing, as the pool rolls back every connection
        returned to it."""
        if self._connection is not None and not self._connection.in_transaction:
            return
        await super().rollback()


def _sqlite_connector(url: URL) -> Callable[[], Any]:
    """How SQLAlchemy's aiosqlite dialect would connect to `url`, with `_SqliteConnection`."""
    args, kwargs = url.get_dialect()().create_connect_args(url)
    kwargs["check_same_thread"] = False  # its thread connects; the loop's may read

    async def connect() -> aiosqlite.Connection:
        return await _SqliteConnection(partial(sqlite3.connect, *args, **kwargs))

    return connect


def _in_memory(url: URL) -> bool:
    """SQLite in memory is one connection, shared (SQLAlchemy's StaticPool): no pool to bound."""
    return url.get_backend_name() == "sqlite" and (
        url.database in (None, "", ":memory:") or url.query.get("mode") == "memory"
    )


class _Deadline:
    """When SQLite interrupts the statement running on one connection (never, between them)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.at = math.inf

    def start(self) -> None:
        self.at = time.monotonic() + self.seconds

    def stop(self) -> None:
        self.at = math.inf

    def __enter__(self) -> None:
        self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def passed(self) -> bool:
        return time.monotonic() > self.at


def _interrupt_after(engine: AsyncEngine, seconds: float) -> None:
    """SQLite has no statement timeout: its progress handler, which runs inside the statement
    every few thousand steps, interrupts it once its deadline has passed; the statement then
    fails with SQLITE_INTERRUPT, and its thread is free again. `read` starts the deadline of
    its statements, SQLAlchemy's events that of the others.
    """

    def connect(dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
        deadline = record.info["deadline"] = _Deadline(seconds)
        dbapi_connection.run_async(
            lambda sqlite: sqlite.set_progress_handler(deadline.passed, _PROGRESS_STEPS)
        )

    def start(connection: Connection, *args: Any) -> None:
        connection.info["deadline"].start()

    def stop(connection: Connection, *args: Any) -> None:
        connection.info["deadline"].stop()

    event.listen(engine.sync_engine, "connect", connect)
    event.listen(engine.sync_engine, "before_cursor_execute", start)
    event.listen(engine.sync_engine, "after_cursor_execute", stop)


def _sqlite_pragmas(connection: Any, record: object) -> None:
    """Foreign keys, WAL, and pg_trgm's `similarity()` for search (see `trigrams.py`)."""
    connection.create_function("similarity", 2, similarity, deterministic=True)
    cursor = connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.close()
