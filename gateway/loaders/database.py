"""Database URLs as people write them, turned into async engines.

`sqlite:///path.db` and `postgresql://user:password@host:5432/name` (or `postgres://`) are
accepted; the gateway picks the async driver (aiosqlite, asyncpg) itself.
"""

from __future__ import annotations

from sqlalchemy import event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from gateway.errors import ConfigError

CONNECT_TIMEOUT = 10.0  # seconds; asyncpg would wait 60 for a host that does not answer

_DRIVERS = {"sqlite": "sqlite+aiosqlite", "postgresql": "postgresql+asyncpg"}


def async_url(url: str) -> URL:
    """The URL with its async driver; anything but SQLite or PostgreSQL is a `ConfigError`."""
    try:
        parsed = make_url(url.replace("postgres://", "postgresql://", 1))
    except ArgumentError:
        raise ConfigError(f"not a database URL: {url!r}") from None
    backend = parsed.get_backend_name()
    if backend not in _DRIVERS:
        raise ConfigError(f"database URL must be sqlite:// or postgresql://, got {url!r}")
    return parsed.set(drivername=_DRIVERS[backend])


def create_engine(url: str | URL) -> AsyncEngine:
    """An engine with a bounded pool that checks a connection before lending it out."""
    parsed = async_url(url) if isinstance(url, str) else url
    if parsed.get_backend_name() == "sqlite":
        engine = create_async_engine(parsed)
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    return create_async_engine(
        parsed,
        pool_size=10,
        max_overflow=10,
        pool_pre_ping=True,
        connect_args={"timeout": CONNECT_TIMEOUT},
    )


def _sqlite_pragmas(connection: object, record: object) -> None:
    cursor = connection.cursor()  # type: ignore[attr-defined]
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.close()
