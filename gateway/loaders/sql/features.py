"""What a database offers, read once at start-up, and whether it answers now.

`SqlFeatures` tells the modules that build statements (search.py, sort_keys.py, backend.py)
which ways of searching and sorting the database supports; it depends on nothing of theirs.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import inspect
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.errors import ConfigError
from gateway.loaders.sql.failures import FAILURES, failure_message
from gateway.loaders.sql.tables import (
    FTS_TABLE,
    KEY_TABLES,
    TRIGRAM_TABLE,
    category,
    grid,
    grid_package,
    package,
    search,
    version,
)

__all__ = ["SqlFeatures", "check_database", "database_ready", "inspect_database"]

logger = logging.getLogger("gateway")

_REQUIRED_TABLES = (package, category, version, grid, grid_package)
_SNAPSHOTS_SINCE = 130000  # PostgreSQL 13: pg_current_snapshot()


@dataclass(frozen=True, slots=True)
class SqlFeatures:
    """What a database offers beyond the tables every Django Packages database has."""

    dialect: str  # "sqlite" or "postgresql"
    search_table: bool  # searchv3_searchv3 exists
    search_vector: bool  # ... with the site's stored tsvector (PostgreSQL)
    fts: bool  # the FTS5 index `search.build_search_index` builds exists (SQLite)
    trigram: bool  # pg_trgm's similarity and % (PostgreSQL), or the FTS5 trigram index (SQLite)
    sort_keys: bool  # the key tables `sort_keys.build_sort_keys` fills exist (a database we own)
    # Whether a change stamp can be read (`engine.change_stamp`): always on SQLite, from
    # PostgreSQL 13 (`pg_current_snapshot()`). Without one, no answer is kept (kept.py).
    change_stamp: bool = True


async def check_database(engine: AsyncEngine) -> None:
    """Refuse to start against a database we cannot reach or that is not Django Packages'.

    A SQLite file that does not exist is refused before SQLite would create an empty one.
    """
    if _missing_file(engine):
        raise ConfigError(f"database file not found: {engine.url.database}")
    names = await _table_names(engine)
    for needed in _REQUIRED_TABLES:
        if needed.name not in names:
            raise ConfigError(
                f"database has no table {needed.name}: is this a Django Packages database?"
            )


async def database_ready(engine: AsyncEngine, timeout: float) -> str | None:
    """None when the database answers `SELECT 1` within `timeout`, else why not (`/readyz`).

    A SQLite file must still be there: SQLite would answer from a deleted file's open handle.
    """
    if _missing_file(engine):
        return "The database file is gone"
    try:
        async with asyncio.timeout(timeout), engine.connect() as connection:
            await connection.exec_driver_sql("SELECT 1")
    except FAILURES as exc:
        return failure_message(exc)
    return None


async def inspect_database(engine: AsyncEngine) -> SqlFeatures:
    """Read once at start-up which ways of searching and sorting the database supports.

    PostgreSQL without pg_trgm is said in the log: search then finds full-text matches only.
    """

    def columns_of_search(connection: Connection) -> set[str]:
        return {info["name"] for info in inspect(connection).get_columns(search.name)}

    names = await _table_names(engine)
    search_columns: set[str] = set()
    if search.name in names:
        async with engine.connect() as connection:
            search_columns = await connection.run_sync(columns_of_search)
    if engine.dialect.name == "postgresql":
        trigram = await _has_pg_trgm(engine)
        if not trigram:
            logger.warning(
                "search: the database has no pg_trgm (CREATE EXTENSION pg_trgm adds it): "
                "full-text matches only, without the site's trigram matches"
            )
        change_stamp = await _server_version(engine) >= _SNAPSHOTS_SINCE
    else:
        trigram = TRIGRAM_TABLE in names
        change_stamp = True
    return SqlFeatures(
        dialect=engine.dialect.name,
        search_table=search.name in names,
        search_vector="search_vector" in search_columns,
        fts=FTS_TABLE in names,
        trigram=trigram,
        sort_keys=all(table.name in names for table in KEY_TABLES),
        change_stamp=change_stamp,
    )


async def _server_version(engine: AsyncEngine) -> int:
    """PostgreSQL's `server_version_num` (130000 for 13.0)."""
    async with engine.connect() as connection:
        found = await connection.exec_driver_sql("SHOW server_version_num")
        return int(found.scalar_one())


async def _has_pg_trgm(engine: AsyncEngine) -> bool:
    """pg_trgm's `similarity()` and `%` on text, where the search path finds them."""
    async with engine.connect() as connection:
        found = await connection.exec_driver_sql(
            "SELECT to_regprocedure('similarity(text,text)') IS NOT NULL "
            "AND to_regoperator('%(text,text)') IS NOT NULL"
        )
        return bool(found.scalar())


def _missing_file(engine: AsyncEngine) -> bool:
    """A SQLite database file that is not there (SQLite would quietly make an empty one)."""
    file = engine.url.database
    return (
        engine.dialect.name == "sqlite"
        and bool(file)
        and file != ":memory:"
        and not Path(str(file)).exists()
    )


async def _table_names(engine: AsyncEngine) -> set[str]:
    try:
        async with engine.connect() as connection:
            return set(await connection.run_sync(lambda c: inspect(c).get_table_names()))
    except FAILURES as exc:
        raise ConfigError(f"database unreachable: {_one_line(exc)}") from exc


def _one_line(exc: BaseException) -> str:
    original = getattr(exc, "orig", None) or exc
    return " ".join(str(original).split()) or type(original).__name__
