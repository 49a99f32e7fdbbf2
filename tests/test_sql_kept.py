"""Answers the database backend keeps across requests (kept.py), against real databases: kept
only while nothing was committed, by anyone, since their change stamp was read."""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
from collections.abc import AsyncIterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.backends import open_backend
from gateway.config import Settings
from gateway.errors import DatabaseError
from gateway.loaders.records import Order, PackageFilter, Slice, Window
from gateway.loaders.sql import engine as engine_module
from gateway.loaders.sql.backend import SqlBackend
from gateway.loaders.sql.engine import create_engine
from gateway.loaders.sql.features import inspect_database
from gateway.loaders.sql.kept import Kept
from gateway.loaders.sql.rows import Dataset
from gateway.loaders.sql.tables import package
from gateway.loaders.sql.writer import write_dataset
from tests.databases import (
    POSTGRES_PORT,
    SMALL,
    Database,
    TcpProxy,
    database,
    pg_schema,
    postgres_database,
    postgres_engine,
    sqlite_database,
    statements,
)

__all__ = ["database", "pg_schema", "postgres_database", "sqlite_database"]

BUDGET = 2**24  # bytes
GRID = next(grid for grid in SMALL.grids if grid.slug == "quirks-edge-cases")
PACKAGE = SMALL.packages[0]


async def every_batch(backend: SqlBackend) -> list[Any]:
    """One answer of each batch method, some keys missing, some windows filtered or ordered."""
    packages = [p.id for p in SMALL.packages[:5]] + [10**9]
    return [
        await backend.categories([1, 2, 10**9]),
        await backend.categories_by_slug([SMALL.categories[0].slug, "nothing"]),
        await backend.grids([GRID.id]),
        await backend.grids_by_slug([GRID.slug, "nothing"]),
        await backend.packages(packages),
        await backend.packages_by_slug([PACKAGE.slug, "nothing"]),
        await backend.packages_of_grids(
            [Window(GRID.id, Slice(5)), Window(GRID.id, Slice(3), order=Order("title", True))]
        ),
        await backend.grids_of_packages([Window(id, Slice(2)) for id in packages]),
        await backend.grids_of_packages([Window(id, Slice(0)) for id in packages]),
        await backend.packages_of_categories([Window(1, Slice(4), PackageFilter(min_watchers=3))]),
        await backend.list_categories(Slice(3)),
        await backend.list_grids(Slice(2), Order("package_count", True)),
        await backend.list_packages(Slice(7), PackageFilter(has_pypi_release=True)),
    ]


async def test_kept_answers_are_the_database_s(database: Database) -> None:
    kept = Kept(BUDGET)
    expected = await every_batch(database.backend())
    assert await every_batch(SqlBackend(database.engine, database.features, kept)) == expected
    assert len(kept) > 0
    async with statements(database.engine) as sent:  # a new connection: a new stamp on SQLite
        assert await every_batch(SqlBackend(database.engine, database.features, kept)) == expected
        await asyncio.sleep(0)  # asyncpg tells its statements at the loop's next turn
        sent.clear()
        assert await every_batch(SqlBackend(database.engine, database.features, kept)) == expected
    # One statement for the whole request: its change stamp.
    assert len(sent) == 1
    assert "data_version" in sent[0] or "pg_current_snapshot" in sent[0]


async def test_at_hand_answers_what_is_kept_and_nothing_else(database: Database) -> None:
    kept = Kept(BUDGET)
    first = SqlBackend(database.engine, database.features, kept)
    ids = [PACKAGE.id, 2]
    found = await first.packages(ids)
    page = await first.list_packages(Slice(3))
    at_hand = SqlBackend(database.engine, database.features, kept).at_hand()
    if database.features.dialect == "postgresql":
        assert at_hand is None  # its stamp is a round trip: read by the first batch
        backend = SqlBackend(database.engine, database.features, kept)
        await backend.grids([GRID.id])
        at_hand = backend.at_hand()
    assert at_hand is not None
    assert at_hand.packages(ids) == found
    assert at_hand.list_packages(Slice(3)) == page
    assert at_hand.packages([*ids, 3]) is None
    assert at_hand.list_packages(Slice(4)) is None
    # Without a store, or on a database without stamps, nothing is at hand.
    assert database.backend().at_hand() is None
    unstamped = dataclasses.replace(database.features, change_stamp=False)
    assert SqlBackend(database.engine, unstamped, kept).at_hand() is None


@pytest.fixture
async def writable(database: Database, tmp_path: Path) -> AsyncIterator[Database]:
    """The database, on SQLite a private copy of it; on PostgreSQL PACKAGE's title restored
    afterwards."""
    if database.path is None:
        yield database
        async with database.engine.begin() as connection:
            await connection.execute(
                update(package).where(package.c.id == PACKAGE.id).values(title=PACKAGE.title)
            )
        return
    copy = tmp_path / "copy.sqlite3"
    with closing(sqlite3.connect(database.path)) as source, closing(sqlite3.connect(copy)) as to:
        source.backup(to)
    engine = create_engine(f"sqlite:///{copy}")
    yield Database(engine, database.features, copy)
    await engine.dispose()


async def other_connection_sets_title(database: Database, title: str) -> None:
    """A commit by another connection: on SQLite, of another program; on PostgreSQL, any."""
    if database.path is not None:
        with closing(sqlite3.connect(database.path)) as other, other:
            other.execute("UPDATE package_package SET title = ? WHERE id = ?", (title, PACKAGE.id))
        return
    async with database.engine.begin() as connection:
        await connection.execute(
            update(package).where(package.c.id == PACKAGE.id).values(title=title)
        )


async def title_of(database: Database, kept: Kept) -> str:
    backend = SqlBackend(database.engine, database.features, kept)
    found = await backend.packages_by_slug([PACKAGE.slug])
    assert found[0] is not None
    return found[0].title


async def test_a_commit_by_another_connection_is_seen_by_the_next_request(
    writable: Database,
) -> None:
    kept = Kept(BUDGET)
    assert await title_of(writable, kept) == PACKAGE.title
    assert await title_of(writable, kept) == PACKAGE.title  # kept
    await other_connection_sets_title(writable, "Changed elsewhere")
    assert await title_of(writable, kept) == "Changed elsewhere"
    assert await title_of(writable, kept) == "Changed elsewhere"


async def test_the_gateway_s_own_writes_are_seen_by_the_next_request(writable: Database) -> None:
    kept = Kept(BUDGET)
    assert await title_of(writable, kept) == PACKAGE.title
    renamed = dataclasses.replace(PACKAGE, title="Rewritten by the mirror")
    await write_dataset(writable.engine, _with_package(SMALL, renamed))
    try:
        assert await title_of(writable, kept) == "Rewritten by the mirror"
    finally:
        await write_dataset(writable.engine, SMALL)
    assert await title_of(writable, kept) == PACKAGE.title


async def test_a_database_in_memory_sees_its_own_writes() -> None:
    # One connection both reads and writes: its data_version never moves, its changes do.
    engine = create_engine("sqlite://")
    try:
        await write_dataset(engine, SMALL)
        loaded = Database(engine, await inspect_database(engine))
        kept = Kept(BUDGET)
        assert await title_of(loaded, kept) == PACKAGE.title
        assert await title_of(loaded, kept) == PACKAGE.title
        async with engine.begin() as connection:
            await connection.execute(
                update(package).where(package.c.id == PACKAGE.id).values(title="In memory")
            )
        assert await title_of(loaded, kept) == "In memory"
    finally:
        await engine.dispose()


def _with_package(dataset: Dataset, replaced: Any) -> Dataset:
    packages = tuple(replaced if row.id == replaced.id else row for row in dataset.packages)
    return dataclasses.replace(dataset, packages=packages)


async def test_an_answer_read_under_an_older_stamp_is_not_kept(database: Database) -> None:
    # A request read its stamp, then another request found the database changed: what the
    # first reads now may be older than the store's stamp, and is not kept.
    kept = Kept(BUDGET)
    slow = SqlBackend(database.engine, database.features, kept)
    await slow.grids([GRID.id])
    kept.stamped(("another stamp",))
    await slow.packages([PACKAGE.id])
    assert len(kept) == 0
    assert slow.at_hand() is not None and slow.at_hand().packages([PACKAGE.id]) is None  # type: ignore[union-attr]


def test_the_store_is_bounded_in_bytes() -> None:
    kept = Kept(budget=10_000)
    kept.stamped(1)
    for start in range(0, 300, 10):
        kept.keep(1, "packages", range(start, start + 10), [PACKAGE] * 10)
        assert kept.size <= 10_000
    assert 0 < len(kept) < 300
    assert kept.answers(1, "packages", [299]) == [PACKAGE]  # the newest stay
    assert kept.answers(1, "packages", [0]) is None
    kept.keep(1, "list_packages", [(Slice(1), None, None)], ["x" * 20_000])  # too big to keep
    assert kept.answers(1, "list_packages", [(Slice(1), None, None)]) is None
    kept.stamped(2)
    assert len(kept) == 0 and kept.size == 0


async def test_a_failing_stamp_read_is_a_database_error_and_keeps_nothing(
    postgres_database: Database, pg_schema: str
) -> None:
    proxy = TcpProxy(POSTGRES_PORT)
    await proxy.start()
    engine = postgres_engine(pg_schema, port=proxy.port)
    kept = Kept(BUDGET)
    try:
        await proxy.cut()
        backend = SqlBackend(engine, postgres_database.features, kept)
        with pytest.raises(DatabaseError) as failed:
            await backend.packages([PACKAGE.id])
        assert failed.value.message == "The database is unavailable"
        assert len(kept) == 0 and kept.stamp is None and backend.at_hand() is None
        await proxy.start()
        assert (await backend.packages([PACKAGE.id]))[0] is not None
        assert len(kept) == 1
    finally:
        await engine.dispose()
        await proxy.cut()


async def test_a_postgres_stamp_ready_could_not_read_fails_the_request_once(
    postgres_database: Database, pg_schema: str
) -> None:
    """`ready` (before a plan's first level) cannot read the stamp: each batch of the request
    fails with that error, and none reads it again."""
    proxy = TcpProxy(POSTGRES_PORT)
    await proxy.start()
    engine = postgres_engine(pg_schema, port=proxy.port)
    try:
        await proxy.cut()
        backend = SqlBackend(engine, postgres_database.features, Kept(BUDGET))
        before = _stamp_reads()
        await backend.ready()
        first_level = backend.packages([PACKAGE.id]), backend.categories([1]), backend.grids([1])
        failed = await asyncio.gather(*first_level, return_exceptions=True)
        assert [(type(error), str(error)) for error in failed] == 3 * [
            (DatabaseError, "The database is unavailable")
        ]
        assert _stamp_reads() == before + 1
    finally:
        await engine.dispose()
        await proxy.cut()


def _stamp_reads() -> float:
    return sum(
        REGISTRY.get_sample_value(
            "gateway_sql_statements_total", {"statement": "stamp", "outcome": outcome}
        )
        or 0.0
        for outcome in ("ok", "error")
    )


async def test_a_failing_sqlite_stamp_read_is_a_database_error(
    sqlite_database: Database, tmp_path: Path
) -> None:
    engine: AsyncEngine = create_engine(f"sqlite:///{tmp_path / 'gone' / 'none.sqlite3'}")
    kept = Kept(BUDGET)
    try:
        with pytest.raises(DatabaseError):
            await SqlBackend(engine, sqlite_database.features, kept).packages([1])
        assert len(kept) == 0 and kept.stamp is None
    finally:
        await engine.dispose()


async def test_a_postgres_stamp_read_is_shared_only_by_requests_that_asked_before_it_began(
    postgres_database: Database,
) -> None:
    reader = engine_module._StampReader()
    began: list[asyncio.Event] = []  # each read's release

    async def held_read(engine: Any) -> str:
        release = asyncio.Event()
        began.append(release)
        await release.wait()
        return f"read {len(began)}"

    async def running(reads: int) -> None:
        async with asyncio.timeout(10):  # a read that never starts fails rather than hangs
            while len(began) < reads:
                await asyncio.sleep(0)

    reader._read_once = held_read  # type: ignore[method-assign]
    sync_engine = postgres_database.engine.sync_engine
    first = asyncio.create_task(reader.stamp(sync_engine))
    await running(1)
    # Asked while the first read runs: they wait for the next, and share it.
    second = [asyncio.create_task(reader.stamp(sync_engine)) for _ in range(3)]
    await asyncio.sleep(0)
    began[0].set()
    assert await first == "read 1"
    await running(2)
    cancelled = asyncio.create_task(reader.stamp(sync_engine))  # asked during the second
    await asyncio.sleep(0)
    cancelled.cancel()
    began[1].set()
    assert await asyncio.gather(*second) == ["read 2"] * 3
    await running(3)  # the third read runs though its only asker went
    began[2].set()
    for _ in range(3):
        await asyncio.sleep(0)
    assert len(began) == 3 and reader._reading is None
    # And a real read: the database's current snapshot.
    assert isinstance(await engine_module.change_stamp(postgres_database.engine), str)


async def test_a_postgres_stamp_read_cut_short_drops_its_connection(
    postgres_database: Database, pg_schema: str
) -> None:
    engine = postgres_engine(pg_schema)
    try:
        assert isinstance(await engine_module.change_stamp(engine), str)
        reader = engine_module._STAMP_READERS[engine.sync_engine]
        asked = asyncio.create_task(reader.stamp(engine.sync_engine))
        while reader._reading is None:
            await asyncio.sleep(0)
        await asyncio.sleep(0)  # the read is sent, its answer not yet read
        reader._reading.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asked
        assert reader._pooled is None and reader._reading is None
        assert isinstance(await reader.stamp(engine.sync_engine), str)
    finally:
        await engine.dispose()


async def test_a_served_database_keeps_answers_within_its_setting(
    sqlite_database: Database,
) -> None:
    url = f"sqlite:///{sqlite_database.path}"
    async with open_backend(Settings(database=url, kept_answers_bytes=1000)) as backend:
        made = backend()
        assert isinstance(made, SqlBackend) and made.kept is not None
        assert made.kept.budget == 1000
    async with open_backend(Settings(database=url, kept_answers_bytes=0)) as backend:
        made = backend()
        assert isinstance(made, SqlBackend) and made.kept is None
        assert made.at_hand() is None
