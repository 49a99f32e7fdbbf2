"""Replace the contents of a database the gateway owns with a `Dataset`, in one transaction.

Readers see the old rows or the new ones, never a mix: an interrupted write rolls back. Each
table that changed is emptied and refilled in bulk (together with the tables whose rows point
into it, as the foreign keys require); the counts reported come from comparing the rows.
What is derived from the rows, the search index and the sort keys, is rebuilt in the same
transaction, and the tables rewritten are analysed in it too: the query planner then knows their
sizes and spreads from the first read on, instead of guessing until autovacuum comes round.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Table, select, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gateway.loaders.sql.rows import Dataset
from gateway.loaders.sql.search import build_search_index
from gateway.loaders.sql.sort_keys import build_sort_keys
from gateway.loaders.sql.tables import (
    category,
    grid,
    grid_package,
    metadata,
    package,
    search,
    version,
)

__all__ = ["TableChanges", "WriteSummary", "write_dataset"]


@dataclass(frozen=True, slots=True)
class TableChanges:
    """How many rows of one table were inserted, updated and deleted."""

    inserted: int
    updated: int
    deleted: int


@dataclass(frozen=True, slots=True)
class WriteSummary:
    """The changes per table name, parents before the tables that refer to them."""

    tables: dict[str, TableChanges]


def _tables(dataset: Dataset) -> tuple[tuple[Table, Sequence[Any]], ...]:
    """Each table with its new rows, parents first: the order inserts must follow."""
    return (
        (category, dataset.categories),
        (package, dataset.packages),
        (version, dataset.versions),
        (grid, dataset.grids),
        (grid_package, dataset.grid_packages),
        (search, dataset.search_rows),
    )


async def write_dataset(engine: AsyncEngine, dataset: Dataset) -> WriteSummary:
    """Create the tables if missing, make their rows exactly the dataset's, rebuild the
    search index and the sort keys."""
    tables = _tables(dataset)
    changes: dict[str, TableChanges] = {}
    rewrite: set[Table] = set()
    async with engine.begin() as connection:
        await _lock(connection)
        await connection.run_sync(_create_schema)
        for table, rows in tables:
            changes[table.name] = await _compare(connection, table, rows)
            parents = {key.column.table for key in table.foreign_keys}
            if changes[table.name] != TableChanges(0, 0, 0) or parents & rewrite:
                rewrite.add(table)
        for table, _ in reversed(tables):
            if table in rewrite:
                await connection.execute(table.delete())
        for table, rows in tables:
            if table in rewrite and rows:
                names = table.columns.keys()
                values = [{name: getattr(row, name) for name in names} for row in rows]
                await connection.execute(table.insert(), values)
        await build_search_index(connection)
        await build_sort_keys(connection, dataset)
        if rewrite:
            await _analyse(connection)
    return WriteSummary(changes)


async def _analyse(connection: AsyncConnection) -> None:
    """Fresh planner statistics for every table of the gateway's (SQLite's ANALYZE takes one
    name at a time; PostgreSQL's takes a list, in a transaction too)."""
    names = [table.name for table in metadata.sorted_tables]
    if connection.dialect.name == "sqlite":
        for name in names:
            await connection.exec_driver_sql(f'ANALYZE "{name}"')
        return
    await connection.exec_driver_sql("ANALYZE " + ", ".join(f'"{name}"' for name in names))


def _create_schema(connection: Connection) -> None:
    """The tables that are missing, and the indexes that tables made by an older gateway lack."""
    metadata.create_all(connection)
    for table in metadata.sorted_tables:
        for index in table.indexes:
            index.create(connection, checkfirst=True)


async def _lock(connection: AsyncConnection) -> None:
    """Take the write lock first, so two writers queue up instead of failing half-way.

    SQLite's driver would begin its transaction only at the first INSERT or DELETE, leaving
    the reads and `CREATE TABLE`s before it outside; an explicit BEGIN takes them in.
    """
    if connection.dialect.name == "sqlite":
        await connection.exec_driver_sql("BEGIN IMMEDIATE")
        return
    await connection.execute(
        text("SELECT pg_advisory_xact_lock(hashtext('gateway.write_dataset'))")
    )


async def _compare(connection: AsyncConnection, table: Table, rows: Sequence[Any]) -> TableChanges:
    names = table.columns.keys()
    wanted = {row.id: tuple(getattr(row, name) for name in names) for row in rows}
    existing = {
        row[0]: tuple(tuple(value) if isinstance(value, list) else value for value in row)
        for row in await connection.execute(select(table))
    }
    common = wanted.keys() & existing.keys()
    return TableChanges(
        inserted=len(wanted.keys() - common),
        updated=sum(wanted[id_] != existing[id_] for id_ in common),
        deleted=len(existing.keys() - common),
    )
