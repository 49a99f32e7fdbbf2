"""Writing a `Dataset` into SQLite and PostgreSQL, and the embedded catalogue built with it.

`fresh_database` is a real, empty database per test: a SQLite file, or a new schema in the
PostgreSQL of `tests.databases` (127.0.0.1:5432, database `test`) that is dropped afterwards.
Without that server the PostgreSQL cases skip, except under CI, where they fail.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, closing
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Table, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.demo import embedded
from gateway.demo.dataset import generate
from gateway.demo.embedded import default_database_path, open_embedded
from gateway.errors import ConfigError
from gateway.loaders.records import Category, Grid
from gateway.loaders.sql.engine import create_engine
from gateway.loaders.sql.rows import Dataset, GridPackageRow, PackageRow, SearchRow, VersionRow
from gateway.loaders.sql.tables import category, grid, grid_package, package, search, version
from gateway.loaders.sql.writer import TableChanges, write_dataset
from tests.databases import SMALL, new_schema, postgres_engine


@asynccontextmanager
async def fresh_database(kind: str, directory: Path) -> AsyncIterator[AsyncEngine]:
    """An engine on an empty database: a SQLite file in `directory`, or a new PostgreSQL schema."""
    if kind == "sqlite":
        engine = create_engine(f"sqlite:///{directory / 'gateway.sqlite3'}")
        try:
            yield engine
        finally:
            await engine.dispose()
        return
    async with new_schema() as schema:
        engine = postgres_engine(schema)
        try:
            yield engine
        finally:
            await engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
async def database(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    async with fresh_database(request.param, tmp_path) as engine:
        yield engine


async def read_dataset(engine: AsyncEngine) -> Dataset:
    """Every row back as the dataset's row types, JSON lists as tuples."""

    async def rows(table: Table, kind: Any) -> tuple[Any, ...]:
        result = await connection.execute(select(table).order_by(table.c.id))
        return tuple(
            kind(**{k: tuple(v) if isinstance(v, list) else v for k, v in row._mapping.items()})
            for row in result
        )

    async with engine.connect() as connection:
        return Dataset(
            categories=await rows(category, Category),
            packages=await rows(package, PackageRow),
            versions=await rows(version, VersionRow),
            grids=await rows(grid, Grid),
            grid_packages=await rows(grid_package, GridPackageRow),
            search_rows=await rows(search, SearchRow),
        )


def counts(dataset: Dataset) -> dict[str, int]:
    return {
        "package_category": len(dataset.categories),
        "package_package": len(dataset.packages),
        "package_version": len(dataset.versions),
        "grid_grid": len(dataset.grids),
        "grid_gridpackage": len(dataset.grid_packages),
        "searchv3_searchv3": len(dataset.search_rows),
    }


NOTHING = TableChanges(0, 0, 0)


async def test_a_write_reads_back_as_the_dataset(database: AsyncEngine) -> None:
    summary = await write_dataset(database, SMALL)

    assert summary.tables == {
        name: TableChanges(inserted=n, updated=0, deleted=0) for name, n in counts(SMALL).items()
    }
    # Datetimes compare as instants: the rows are UTC, SQLite's come back with their zone.
    assert await read_dataset(database) == SMALL


async def test_writing_the_same_rows_again_changes_nothing(database: AsyncEngine) -> None:
    await write_dataset(database, SMALL)

    summary = await write_dataset(database, SMALL)

    assert set(summary.tables.values()) == {NOTHING}
    assert await read_dataset(database) == SMALL


def edit(dataset: Dataset) -> tuple[Dataset, PackageRow, PackageRow]:
    """One package retitled, one removed with its rows, one added in a grid; and which."""
    in_grids = {row.package_id for row in dataset.grid_packages}
    with_versions = {row.package_id for row in dataset.versions}
    removed = next(p for p in dataset.packages if p.id in in_grids & with_versions)
    edited = next(p for p in dataset.packages if p.id != removed.id)
    added = replace(
        edited,
        id=dataset.packages[-1].id + 1,
        slug="brand-new",
        repo_url="https://example.com/brand-new",
        latest_version_id=None,
    )
    joined = added.created + timedelta(days=1)
    membership = GridPackageRow(
        dataset.grid_packages[-1].id + 1, dataset.grids[0].id, added.id, joined, joined
    )
    changed = replace(
        dataset,
        packages=(
            *(
                replace(p, title="Edited title") if p.id == edited.id else p
                for p in dataset.packages
                if p.id != removed.id
            ),
            added,
        ),
        versions=tuple(v for v in dataset.versions if v.package_id != removed.id),
        grid_packages=(
            *(m for m in dataset.grid_packages if m.package_id != removed.id),
            membership,
        ),
    )
    return changed, removed, added


async def planner_rows(engine: AsyncEngine, table: str) -> int | None:
    """The rows the database's planner believes `table` holds; None if it was never analysed."""
    async with engine.connect() as connection:
        if engine.dialect.name == "sqlite":
            analysed = await connection.execute(
                text("SELECT 1 FROM sqlite_master WHERE name = 'sqlite_stat1'")
            )
            if analysed.scalar() is None:
                return None
            # A line per index of the table, each starting with the rows it holds.
            stat = await connection.execute(
                text("SELECT stat FROM sqlite_stat1 WHERE tbl = :t"), {"t": table}
            )
            found = stat.scalar()
            return None if found is None else int(str(found).split()[0])
        estimate = await connection.execute(
            text(
                "SELECT c.reltuples FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
                " WHERE n.nspname = current_schema() AND c.relname = :t"
            ),
            {"t": table},
        )
        rows = estimate.scalar_one()
        return None if rows < 0 else int(rows)


async def test_a_write_leaves_the_planner_statistics_of_its_rows(database: AsyncEngine) -> None:
    await write_dataset(database, SMALL)
    assert await planner_rows(database, package.name) == len(SMALL.packages)
    assert await planner_rows(database, grid_package.name) == len(SMALL.grid_packages)


async def test_a_second_write_updates_deletes_and_inserts(database: AsyncEngine) -> None:
    await write_dataset(database, SMALL)
    changed, removed, _ = edit(SMALL)

    summary = await write_dataset(database, changed)

    memberships = sum(row.package_id == removed.id for row in SMALL.grid_packages)
    versions = sum(row.package_id == removed.id for row in SMALL.versions)
    assert summary.tables == {
        "package_category": NOTHING,
        "package_package": TableChanges(inserted=1, updated=1, deleted=1),
        "package_version": TableChanges(inserted=0, updated=0, deleted=versions),
        "grid_grid": NOTHING,
        "grid_gridpackage": TableChanges(inserted=1, updated=0, deleted=memberships),
        "searchv3_searchv3": NOTHING,
    }
    assert await read_dataset(database) == changed


async def test_a_failed_write_leaves_the_previous_rows(database: AsyncEngine) -> None:
    await write_dataset(database, SMALL)
    first = SMALL.grid_packages[0]
    dangling = replace(
        SMALL, grid_packages=(replace(first, package_id=10**9), *SMALL.grid_packages[1:])
    )

    with pytest.raises(IntegrityError):
        await write_dataset(database, dangling)

    assert await read_dataset(database) == SMALL


async def test_the_search_index_follows_the_rows(tmp_path: Path) -> None:
    async def matches(word: str) -> list[int]:
        async with engine.connect() as connection:
            result = await connection.execute(
                text("SELECT rowid FROM searchv3_fts WHERE searchv3_fts MATCH :word"),
                {"word": word},
            )
            return [rowid for (rowid,) in result]

    aardvark = next(row for row in SMALL.search_rows if row.slug == "aardvark")
    async with fresh_database("sqlite", tmp_path) as engine:
        await write_dataset(engine, SMALL)
        assert await matches("aardvark") == [aardvark.id]

        rows = tuple(row for row in SMALL.search_rows if row.id != aardvark.id)
        await write_dataset(engine, replace(SMALL, search_rows=rows))
        assert await matches("aardvark") == []


# -- the embedded catalogue ------------------------------------------------------------


def table_counts(path: Path) -> dict[str, int]:
    with closing(sqlite3.connect(path)) as connection:
        return {
            name: connection.execute(f"SELECT count(*) FROM {name}").fetchone()[0]
            for name in counts(SMALL)
        }


async def test_the_embedded_catalogue_is_created_once(tmp_path: Path) -> None:
    path = tmp_path / "data" / "catalogue.sqlite3"

    url = await open_embedded(path)

    assert url == f"sqlite:///{path}"
    assert table_counts(path) == counts(generate())
    assert os.listdir(path.parent) == ["catalogue.sqlite3"]
    before = path.stat()

    assert await open_embedded(path) == url

    after = path.stat()
    assert (after.st_ino, after.st_mtime_ns, after.st_size) == (
        before.st_ino,
        before.st_mtime_ns,
        before.st_size,
    )


async def test_an_interrupted_creation_leaves_no_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def interrupted(engine: AsyncEngine, dataset: Dataset) -> None:
        await write_dataset(engine, SMALL)
        raise KeyboardInterrupt

    monkeypatch.setattr(embedded, "write_dataset", interrupted)
    path = tmp_path / "catalogue.sqlite3"

    with pytest.raises(KeyboardInterrupt):
        await open_embedded(path)

    assert os.listdir(tmp_path) == []


async def test_an_empty_file_is_filled(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(embedded, "generate", lambda: SMALL)
    path = tmp_path / "catalogue.sqlite3"
    path.touch()

    await open_embedded(path)

    assert table_counts(path) == counts(SMALL)


async def test_a_catalogue_of_an_older_layout_is_built_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(embedded, "generate", lambda: SMALL)
    path = tmp_path / "catalogue.sqlite3"
    await open_embedded(path)
    with closing(sqlite3.connect(path)) as connection:  # as an older gateway left it
        connection.execute("DROP TABLE gateway_package_key")
        connection.execute("PRAGMA user_version = 1")

    await open_embedded(path)

    with closing(sqlite3.connect(path)) as connection:
        assert connection.execute("PRAGMA user_version").fetchone() == (embedded.LAYOUT_VERSION,)
        (keys,) = connection.execute("SELECT count(*) FROM gateway_package_key").fetchone()
    assert keys == len(SMALL.packages)
    assert table_counts(path) == counts(SMALL)


async def test_a_file_that_is_not_a_database_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "catalogue.sqlite3"
    path.write_text("not a database, but someone's notes\n" * 100)

    with pytest.raises(ConfigError, match="cannot be read"):
        await open_embedded(path)

    assert path.read_text().startswith("not a database")


def test_the_default_path_is_in_the_user_data_directory() -> None:
    path = default_database_path()

    assert path.name == "catalogue.sqlite3"
    assert "djangopackages-gateway" in path.parent.name
