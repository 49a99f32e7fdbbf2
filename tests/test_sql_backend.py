"""The database backend against real SQLite and PostgreSQL databases holding the demo dataset.

Records are compared with what the table rows imply, computed here independently of the
backend; each batch method is held to the number of statements it promises.
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
import threading
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager, closing
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import emoji
import msgspec
import pytest
from sqlalchemy import delete, func, inspect, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.errors import ConfigError, DatabaseError
from gateway.loaders.backend import Backend
from gateway.loaders.records import (
    SITE_TIMEZONE,
    Category,
    Grid,
    Order,
    Package,
    PackageFilter,
    Page,
    SearchHit,
    Slice,
    Window,
    text_key,
    title_key,
    words_of,
)
from gateway.loaders.sql.backend import SqlBackend
from gateway.loaders.sql.engine import create_engine
from gateway.loaders.sql.features import SqlFeatures, check_database, inspect_database
from gateway.loaders.sql.rows import Dataset, PackageRow
from gateway.loaders.sql.tables import category, package
from gateway.loaders.sql.writer import write_dataset
from tests.databases import (
    POSTGRES_PORT,
    POSTGRES_URL,
    SMALL,
    Database,
    TcpProxy,
    database,
    new_schema,
    pg_schema,
    postgres_database,
    postgres_engine,
    sqlite_database,
    statements,
    traced,
)
from tests.expected import grid_ids_of_package, package_ids_of_category, package_ids_of_grid

# The shared fixtures pytest finds by name in this module.
__all__ = ["database", "pg_schema", "postgres_database", "sqlite_database"]

# It holds every quirky title.
QUIRKS_GRID = next(grid for grid in SMALL.grids if grid.slug == "quirks-edge-cases")


def local(stamp: Any) -> Any:
    """The UTC row in the site's zone, as the REST upstream renders it.

    Expected records are built in the site's zone because under PEP 495 a datetime in a DST
    fold (01:30 on the night clocks go back) is unequal to every datetime in another zone,
    even at the same instant.
    """
    return None if stamp is None else stamp.astimezone(SITE_TIMEZONE)


def category_of(row: Category) -> Category:
    return Category(
        id=row.id,
        title=row.title,
        slug=row.slug,
        description=row.description,
        title_plural=row.title_plural,
        show_pypi=row.show_pypi,
        created=local(row.created),
        modified=local(row.modified),
    )


def grid_of(row: Grid) -> Grid:
    return Grid(
        id=row.id,
        title=row.title,
        slug=row.slug,
        description=row.description,
        is_locked=row.is_locked,
        header=row.header,
        created=local(row.created),
        modified=local(row.modified),
    )


def package_of(row: PackageRow, dataset: Dataset = SMALL) -> Package:
    numbers = {version.id: version.number for version in dataset.versions}
    return Package(
        id=row.id,
        title=row.title,
        slug=row.slug,
        category_id=row.category_id,
        last_updated=local(row.last_commit_date),
        last_fetched=local(row.last_fetched),
        repo_url=row.repo_url,
        pypi_version=None if row.latest_version_id is None else numbers[row.latest_version_id],
        created=local(row.created),
        modified=local(row.modified),
        repo_forks=row.repo_forks,
        repo_description=row.repo_description,
        pypi_url=row.pypi_url,
        documentation_url=row.documentation_url,
        repo_watchers=row.repo_watchers,
        commits_over_52=tuple(row.commits_over_52w),
        participants=tuple(p.strip() for p in row.participants.split(",") if p.strip()),
    )


PACKAGES = {row.id: package_of(row) for row in SMALL.packages}
GRIDS = {row.id: grid_of(row) for row in SMALL.grids}
CATEGORIES = {row.id: category_of(row) for row in SMALL.categories}
MISSING = max(PACKAGES) + 1000


def datetimes(record: Any) -> list[datetime]:
    values = (getattr(record, name) for name in record.__struct_fields__)
    return [value for value in values if isinstance(value, datetime)]


# -- records -------------------------------------------------------------------------------


async def test_records_by_id_are_the_rows(database: Database) -> None:
    backend = database.backend()
    package_ids = [*reversed(PACKAGES), MISSING, next(iter(PACKAGES)), 2**70]

    assert await backend.packages(package_ids) == [PACKAGES.get(id) for id in package_ids]
    grid_ids = [MISSING, *GRIDS]
    assert await backend.grids(grid_ids) == [GRIDS.get(id) for id in grid_ids]
    assert await backend.categories([4, 1, 99, 1]) == [
        CATEGORIES[4],
        CATEGORIES[1],
        None,
        CATEGORIES[1],
    ]
    assert await backend.packages([]) == []


async def test_datetimes_read_as_the_rest_upstream_renders_them(database: Database) -> None:
    backend = database.backend()
    records = [
        *await backend.packages(list(PACKAGES)),
        *await backend.grids(list(GRIDS)),
        *await backend.categories(list(CATEGORIES)),
    ]
    rows = [*SMALL.packages, *SMALL.grids, *SMALL.categories]

    stamps = [stamp for record in records for stamp in datetimes(record)]
    assert len(stamps) > 3 * len(records)
    assert {stamp.tzinfo for stamp in stamps} == {SITE_TIMEZONE}
    # As the fake upstream renders them: the UTC row in New York time, DST folds included.
    assert [stamp.isoformat() for stamp in stamps] == [
        stamp.astimezone(SITE_TIMEZONE).isoformat()
        for row in rows
        for name in ("last_commit_date", "last_fetched", "created", "modified")
        if (stamp := getattr(row, name, None)) is not None
    ]


async def test_packages_carry_version_participants_and_commits(database: Database) -> None:
    with_version = next(p for p in SMALL.packages if p.latest_version_id is not None)
    padded = next(p for p in SMALL.packages if ", " in p.participants or ",," in p.participants)
    busy = next(p for p in SMALL.packages if any(p.commits_over_52w))

    versioned, spaced, committed = await database.backend().packages(
        [with_version.id, padded.id, busy.id]
    )

    assert versioned is not None and versioned.pypi_version is not None
    assert spaced is not None and all(name == name.strip() != "" for name in spaced.participants)
    assert committed is not None and committed.commits_over_52 == tuple(busy.commits_over_52w)


async def test_commits_stored_as_json_text_are_read_too(database: Database) -> None:
    row = dataclasses.replace(SMALL.packages[0], id=MISSING, slug="text-commits", repo_url="x:")
    commits = tuple(range(52))
    stored = dataclasses.asdict(row) | {"commits_over_52w": json.dumps(commits)}
    async with database.engine.begin() as connection:
        await connection.execute(package.insert(), [stored])
    try:
        (found,) = await database.backend().packages([MISSING])
    finally:
        async with database.engine.begin() as connection:
            await connection.execute(delete(package).where(package.c.id == MISSING))

    assert found is not None and found.commits_over_52 == commits


async def test_a_row_read_again_is_its_record_as_it_stands(database: Database) -> None:
    """An unchanged row read again is the record built before, not converted again; a row
    changed since (its id the same) is read as it stands."""
    row = dataclasses.replace(SMALL.packages[0], id=MISSING, slug="read-again", repo_url="y:")
    async with database.engine.begin() as connection:
        await connection.execute(package.insert(), [dataclasses.asdict(row)])
    try:
        (first,) = await database.backend().packages([MISSING])
        (again,) = await database.backend().packages([MISSING])
        async with database.engine.begin() as connection:
            renamed = package.update().where(package.c.id == MISSING).values(title="Renamed")
            await connection.execute(renamed)
        (changed,) = await database.backend().packages([MISSING])
    finally:
        async with database.engine.begin() as connection:
            await connection.execute(delete(package).where(package.c.id == MISSING))

    assert first is not None and again is first
    assert changed is not None and changed.title == "Renamed"
    assert changed == msgspec.structs.replace(first, title="Renamed")


async def test_slug_lookups(database: Database) -> None:
    backend = database.backend()
    slugs = ["django-foo-3", "nope", "django-foo", "DJANGO-FOO", "robert-drop-table"]
    by_slug = {p.slug: PACKAGES[p.id] for p in SMALL.packages}

    assert await backend.packages_by_slug(slugs) == [by_slug.get(slug) for slug in slugs]
    grid_ids = {grid.slug: grid.id for grid in SMALL.grids}
    assert await backend.grids_by_slug(["i18n", "healt-checkers", "health-checkers"]) == [
        GRIDS[grid_ids["i18n"]],
        GRIDS[grid_ids["healt-checkers"]],
        None,
    ]
    assert await backend.categories_by_slug(["frameworks", "apps", "App"]) == [
        CATEGORIES[2],
        CATEGORIES[1],
        None,
    ]
    assert await backend.packages_by_slug([]) == []


async def test_a_category_slug_in_use_twice_answers_with_the_oldest(database: Database) -> None:
    stamp = SMALL.categories[0].created
    twins = [
        {"id": id, "title": title, "slug": "twins", "description": "", "title_plural": title}
        | {"show_pypi": False, "created": stamp, "modified": stamp}
        for id, title in ((60, "Younger"), (55, "Older"))
    ]
    async with database.engine.begin() as connection:
        await connection.execute(category.insert(), twins)
    try:
        found = await database.backend().categories_by_slug(["twins", "apps", "twins"])
    finally:
        async with database.engine.begin() as connection:
            await connection.execute(delete(category).where(category.c.slug == "twins"))

    assert [record and record.id for record in found] == [55, 1, 55]


# -- relations ------------------------------------------------------------------------------


def page(ids: list[int], limit: int, records: dict[int, Any]) -> tuple[list[Any], int]:
    """The first `limit` records of `ids`, and their total."""
    return [records[id] for id in ids[:limit]], len(ids)


def pages_of(pages: list[Page[Any]]) -> list[tuple[Sequence[Any], int]]:
    return [(page.items, page.total) for page in pages]


async def test_packages_of_grids_are_paged_in_title_byte_order(database: Database) -> None:
    members = package_ids_of_grid(SMALL, QUIRKS_GRID.id)
    n = len(members)
    windows = [
        Window(QUIRKS_GRID.id, Slice(5)),
        Window(QUIRKS_GRID.id, Slice(7)),
        Window(QUIRKS_GRID.id, Slice(10)),
        Window(QUIRKS_GRID.id, Slice(3)),
        Window(QUIRKS_GRID.id, Slice(0)),
        Window(MISSING, Slice(5)),
        *(Window(grid.id, Slice(4)) for grid in SMALL.grids),
    ]

    pages = await database.backend().packages_of_grids(windows)

    assert pages_of(pages) == [
        page(package_ids_of_grid(SMALL, w.parent), w.slice.limit, PACKAGES) for w in windows
    ]
    assert [len(p.items) for p in pages[:6]] == [5, 7, 10, 3, 0, 0]
    assert [p.total for p in pages[:6]] == [n, n, n, n, n, 0]


async def test_titles_sort_by_bytes_capitals_first_twins_by_id(database: Database) -> None:
    (whole,) = await database.backend().packages_of_grids([Window(QUIRKS_GRID.id, Slice(1000))])

    titles = [record.title for record in whole.items]
    assert titles == sorted(titles, key=str.encode)
    assert titles.index("Aardvark") < titles.index("DJANGO-FOO") < titles.index("Django-Foo")
    assert titles.index("Django-Foo") < titles.index("django-foo") < titles.index("zzz-last")
    assert titles[-3:] == ["Джанго утилиты", "日本語テンプレート", "🚀 Rocket Admin"]
    twins = [record.id for record in whole.items if record.title == "django-twin"]
    assert len(twins) == 2 and twins == sorted(twins)


async def test_grids_of_packages_follow_the_membership_rows(database: Database) -> None:
    windows = [Window(id, Slice(20)) for id in PACKAGES] + [
        Window(id, Slice(2)) for id in list(PACKAGES)[:30]
    ]

    pages = await database.backend().grids_of_packages(windows)

    assert pages_of(pages) == [
        page(grid_ids_of_package(SMALL, w.parent), w.slice.limit, GRIDS) for w in windows
    ]
    ordered = [p for p in pages if len(p.items) > 2]
    assert any([g.id for g in p.items] != sorted(g.id for g in p.items) for p in ordered)


async def test_packages_of_categories_newest_first(database: Database) -> None:
    windows = [
        Window(1, Slice(10)),
        Window(1, Slice(10)),
        Window(2, Slice(100)),
        Window(4, Slice(2)),
        Window(3, Slice(5)),
        Window(99, Slice(5)),
    ]

    pages = await database.backend().packages_of_categories(windows)

    assert pages_of(pages) == [
        page(package_ids_of_category(SMALL, w.parent), w.slice.limit, PACKAGES) for w in windows
    ]
    assert pages[4].total > 0


async def test_windows_of_unstorable_parents_are_empty(database: Database) -> None:
    backend = database.backend()

    assert await backend.packages_of_grids([Window(2**70, Slice(5))]) == [Page([], 0)]
    (huge,) = await backend.packages_of_categories([Window(1, Slice(2**70))])
    assert len(huge.items) == huge.total == len(package_ids_of_category(SMALL, 1))


# -- lists ----------------------------------------------------------------------------------


async def test_lists_are_newest_first_with_their_total(database: Database) -> None:
    backend = database.backend()
    for method, records in (
        (backend.list_packages, PACKAGES),
        (backend.list_grids, GRIDS),
        (backend.list_categories, CATEGORIES),
    ):
        ids = sorted(records, reverse=True)
        n = len(ids)
        for limit in [3, 5, n, 0, 100_000]:
            got = await method(Slice(limit))
            assert (got.items, got.total) == page(ids, limit, records)


# -- filters and orders ----------------------------------------------------------------------

PACKAGE_FIELDS = (
    "title",
    "repo_watchers",
    "repo_forks",
    "last_updated",
    "created",
    "modified",
    "id",
)
RECORD_FIELDS = ("title", "package_count", "id")


def every_order(fields: tuple[str, ...]) -> list[Order]:
    return [Order(field, descending) for field in fields for descending in (False, True)]


def texts() -> dict[int, str]:
    return {row.id: text_key(row.title, row.slug, row.repo_description) for row in SMALL.packages}


async def test_a_filtered_ordered_first_page_is_one_statement(database: Database) -> None:
    since = datetime(2023, 1, 1, tzinfo=UTC)
    kept = PackageFilter(words=("django",), has_pypi_release=True, updated_after=since)
    passing = [
        record
        for record in PACKAGES.values()
        if "django" in texts()[record.id]
        and record.pypi_version is not None
        and record.last_updated is not None
        and record.last_updated > since
    ]
    by_stars = sorted(passing, key=lambda record: (record.repo_watchers, record.id), reverse=True)

    async with statements(database.engine) as sent:
        first = await database.backend().list_packages(
            Slice(10), kept, Order("repo_watchers", True)
        )

    assert len(sent) == 1, sent
    assert (first.items, first.total) == page([record.id for record in by_stars], 10, PACKAGES)
    assert 10 < first.total < len(PACKAGES)


async def test_titles_order_by_python_lower_case_in_code_point_order(database: Database) -> None:
    backend = database.backend()
    for descending in (False, True):
        rows = sorted(
            SMALL.packages, key=lambda row: (title_key(row.title), row.id), reverse=descending
        )
        ordered = await backend.list_packages(Slice(1000), order=Order("title", descending))
        assert [record.id for record in ordered.items] == [row.id for row in rows]


@pytest.mark.parametrize(
    "words", [("джанго",), ("crème", "brûlée"), ("%",), ("_",), ('"',), ("'",), ("django", "foo")]
)
async def test_words_are_substrings_of_the_python_lower_cased_text(
    database: Database, words: tuple[str, ...]
) -> None:
    expected = sorted(
        (id for id, text in texts().items() if all(word in text for word in words)), reverse=True
    )

    found = await database.backend().list_packages(Slice(1000), PackageFilter(words=words))

    assert [record.id for record in found.items] == expected and expected


async def test_without_key_tables_sqlite_lower_cases_ascii_only(sqlite_database: Database) -> None:
    kept = PackageFilter(words=words_of("ДЖАНГО"))

    assert (await sqlite_database.backend().list_packages(Slice(5), kept)).total == 1
    assert (await sqlite_database.backend(sort_keys=False).list_packages(Slice(5), kept)).total == 0


async def package_answers(backend: SqlBackend, kept: Any, order: Order) -> list[Any]:
    return pages_of(
        [
            await backend.list_packages(Slice(40), kept, order),
            *await backend.packages_of_grids([Window(id, Slice(30), kept, order) for id in GRIDS]),
            *await backend.packages_of_categories(
                [Window(id, Slice(30), kept, order) for id in CATEGORIES]
            ),
        ]
    )


async def record_answers(backend: SqlBackend, order: Order) -> list[Any]:
    return pages_of(
        [
            await backend.list_grids(Slice(100), order),
            await backend.list_categories(Slice(100), order),
            *await backend.grids_of_packages(
                [Window(id, Slice(10), order=order) for id in PACKAGES]
            ),
        ]
    )


async def test_without_key_tables_lower_stands_in(database: Database) -> None:
    """On the demo rows, whose only non-ASCII capitals decide no order, both ways agree."""
    stored, standing_in = database.backend(), database.backend(sort_keys=False)
    filters = [None, PackageFilter(words=("django", "foo")), PackageFilter(category="apps")]
    for order in every_order(PACKAGE_FIELDS):
        for kept in filters:
            expected = await package_answers(stored, kept, order)
            assert await package_answers(standing_in, kept, order) == expected, (order, kept)
    for order in every_order(RECORD_FIELDS):
        assert await record_answers(standing_in, order) == await record_answers(stored, order)


async def test_windows_of_several_shapes_are_one_statement(database: Database) -> None:
    backend = database.backend()
    kept, by_stars = PackageFilter(words=("django",)), Order("repo_watchers", descending=True)
    windows = [
        *(Window(id, Slice(0)) for id in GRIDS),
        *(Window(id, Slice(3), kept, by_stars) for id in GRIDS),
        Window(QUIRKS_GRID.id, Slice(5), order=Order("title")),
        Window(QUIRKS_GRID.id, Slice(0), kept),
        Window(MISSING, Slice(5), kept),
    ]

    async with statements(database.engine) as sent:
        pages = await backend.packages_of_grids(windows)

    assert len(sent) == 1, sent
    assert pages == [(await backend.packages_of_grids([window]))[0] for window in windows]
    assert [p.total for p in pages[: len(GRIDS)]] == [
        len(package_ids_of_grid(SMALL, id)) for id in GRIDS
    ]
    assert 0 < pages[-2].total < pages[list(GRIDS).index(QUIRKS_GRID.id)].total


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
async def test_a_write_brings_an_older_database_up_to_date(kind: str, tmp_path: Path) -> None:
    """Key tables and indexes missing (a database an older gateway wrote) are made again."""
    async with owned_database(kind, tmp_path) as engine:
        await write_dataset(engine, SMALL)
        async with engine.begin() as connection:
            await connection.execute(text("DROP TABLE gateway_package_key"))
            await connection.execute(text("DROP INDEX package_package_repo_watchers"))
        assert not (await inspect_database(engine)).sort_keys
        first = dataclasses.replace(SMALL.packages[0], title="ÆØÅ first")
        renamed = dataclasses.replace(SMALL, packages=(first, *SMALL.packages[1:]))

        await write_dataset(engine, renamed)

        features = await inspect_database(engine)
        async with engine.connect() as connection:
            indexes = await connection.run_sync(
                lambda sync: {index["name"] for index in inspect(sync).get_indexes(package.name)}
            )
        titled = await SqlBackend(engine, features).list_packages(Slice(1000), order=Order("title"))
    assert features.sort_keys and "package_package_repo_watchers" in indexes
    rows = sorted(renamed.packages, key=lambda row: (title_key(row.title), row.id))
    assert [record.id for record in titled.items] == [row.id for row in rows]


@asynccontextmanager
async def owned_database(kind: str, directory: Path) -> AsyncIterator[AsyncEngine]:
    """An engine on an empty database of the kind: a SQLite file, or a new PostgreSQL schema."""
    if kind == "sqlite":
        engine = create_engine(f"sqlite:///{directory / 'owned.sqlite3'}")
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


# -- statements -----------------------------------------------------------------------------


async def test_every_batch_is_one_statement(database: Database) -> None:
    backend: Backend = database.backend()
    package_ids, grid_ids = list(PACKAGES), list(GRIDS)
    calls: list[Any] = [
        backend.packages(package_ids),
        backend.packages_by_slug([p.slug for p in SMALL.packages]),
        backend.grids(grid_ids),
        backend.grids_by_slug([g.slug for g in SMALL.grids]),
        backend.categories([1, 2, 3, 4, 5]),
        backend.categories_by_slug(["apps", "frameworks", "nope"]),
        backend.packages_of_grids([Window(QUIRKS_GRID.id, Slice(5))]),
        backend.packages_of_grids([Window(id, Slice(1 + i % 5)) for i, id in enumerate(grid_ids)]),
        backend.grids_of_packages([Window(id, Slice(3)) for i, id in enumerate(package_ids)]),
        backend.packages_of_categories([Window(id, Slice(5 + id)) for id in range(1, 6)]),
        backend.list_packages(Slice(5)),
        backend.list_grids(Slice(5)),
        backend.list_categories(Slice(0)),
        backend.search("django admin"),
    ]
    for call in calls:
        async with statements(database.engine) as sent:
            await call
        assert len(sent) == 1, sent


async def test_on_sqlite_only_reads_that_scan_text_leave_the_event_loop(
    sqlite_database: Database,
) -> None:
    # Lookups and windows take microseconds: they run on the loop's thread. A search or a
    # filter by words scans every package's text: it keeps its connection's thread, so that a
    # request of thirty aliased searches cannot hold the loop (and /healthz) for seconds.
    backend = sqlite_database.backend()
    on_loop: list[bool] = []
    loop = threading.get_ident()

    def record(statement: str) -> None:
        on_loop.append(threading.get_ident() == loop)

    async with traced(sqlite_database.engine, record):
        await backend.packages(list(PACKAGES))
        await backend.packages_of_grids([Window(QUIRKS_GRID.id, Slice(5))])
        await backend.list_packages(Slice(5))
        assert on_loop == [True, True, True]
        await backend.search("django admin")
        await backend.list_packages(Slice(5), PackageFilter(words=("django",)))
        await backend.packages_of_grids(
            [Window(QUIRKS_GRID.id, Slice(5), PackageFilter(words=("django",)))]
        )
        assert on_loop == [True, True, True, False, False, False]


# -- search ---------------------------------------------------------------------------------

SEARCH_MODES = {
    "sqlite-fts5": ("sqlite", {}),
    "sqlite-scan": ("sqlite", {"fts": False}),
    "sqlite-no-index": ("sqlite", {"fts": False, "search_table": False}),
    "postgres-stored-vector": ("postgres", {}),
    "postgres-computed-vector": ("postgres", {"search_vector": False}),
    "postgres-no-index": ("postgres", {"search_vector": False, "search_table": False}),
}


@pytest.fixture(params=list(SEARCH_MODES))
def searcher(request: pytest.FixtureRequest) -> tuple[Database, SqlBackend]:
    """A backend for each way of searching: what the database has, and what it might lack."""
    name, features = SEARCH_MODES[request.param]
    loaded: Database = request.getfixturevalue(f"{name}_database")
    return loaded, loaded.backend(**features)


def slugs(hits: list[SearchHit]) -> list[str]:
    return [hit.slug for hit in hits]


async def test_search_finds_words_in_title_slug_and_description(
    searcher: tuple[Database, SqlBackend],
) -> None:
    _, backend = searcher

    assert slugs(await backend.search("Aardvark"))[0] == "aardvark"
    assert slugs(await backend.search("dzhango")) == ["dzhango-utility"]
    assert "robert-drop-table" in slugs(await backend.search("Bobby"))
    assert "quirks-edge-cases" in slugs(await backend.search("odd title"))


async def test_title_hits_rank_above_description_only_hits_of_equal_weight(
    searcher: tuple[Database, SqlBackend],
) -> None:
    """Relevance is the text's rank plus 0.02 a point of the row's `weight` (the site's): a
    heavier row may come first, but between rows of one weight the title's word ranks higher."""
    _, backend = searcher

    hits = await backend.search("rocket")

    in_title_by_weight: dict[int, list[bool]] = {}
    for hit in hits:
        in_title_by_weight.setdefault(hit.weight, []).append("rocket" in hit.title.lower())
    for in_title in in_title_by_weight.values():
        assert in_title == sorted(in_title, reverse=True)
    assert {"rocket" in hit.title.lower() for hit in hits} == {True, False}


async def test_search_hits_are_emojized_and_linked(searcher: tuple[Database, SqlBackend]) -> None:
    _, backend = searcher

    hits = await backend.search("rocket admin")

    hit = next(hit for hit in hits if hit.slug == "rocket-admin")
    assert hit.title == "🚀 Rocket Admin"
    assert hit.description == emoji.emojize(":rocket: A faster admin 🚀 with :snake: and :zap:.")
    assert hit.description.startswith("🚀 A faster admin 🚀 with 🐍")
    assert hit.absolute_url == "/packages/p/rocket-admin/"
    assert hit.item_type == "package" and hit.category
    grid_hit = (await backend.search("Quirks Edge"))[0]
    assert grid_hit.absolute_url == "/grids/g/quirks-edge-cases/"
    assert grid_hit.description == "Every odd title in one grid ⚙️"
    assert grid_hit.category == "" and grid_hit.participants == ()


async def test_a_hit_is_its_search_row(database: Database) -> None:
    row = next(row for row in SMALL.search_rows if row.slug == "rocket-admin")

    (hit,) = [hit for hit in await database.backend().search("rocket") if hit.slug == row.slug]

    assert hit == SearchHit(
        item_type="package",
        title=emoji.emojize(row.title),
        slug=row.slug,
        description=emoji.emojize(row.description),
        category=row.category,
        weight=row.weight,
        repo_watchers=row.repo_watchers,
        repo_forks=row.repo_forks,
        pypi_downloads=row.pypi_downloads,
        usage=row.usage,
        participants=tuple(p.strip() for p in row.participants.split(",") if p.strip()),
        last_committed=local(row.last_committed),
        last_released=local(row.last_released),
        absolute_url="/packages/p/rocket-admin/",
        created=local(row.created),
        modified=local(row.modified),
    )
    assert hit.created.tzinfo == SITE_TIMEZONE


async def test_search_answers_at_most_twenty(searcher: tuple[Database, SqlBackend]) -> None:
    _, backend = searcher

    assert len(await backend.search("django")) == 20


@pytest.mark.parametrize("query", ["", "   ", "\n\t"])
async def test_a_blank_search_is_empty_without_sql(database: Database, query: str) -> None:
    async with statements(database.engine) as sent:
        assert await database.backend().search(query) == []
    assert sent == []


HOSTILE = [
    ('"', None),
    ("'", None),
    ("%", None),
    ("_", None),
    ("\\", None),
    ("*", None),
    ("%_\\*\"'", None),
    ("AND", None),
    ("NEAR", None),
    ("-", None),
    ("foo AND", None),
    ("NOT foo", None),
    ("a OR b", None),
    ("NEAR(foo bar)", None),
    ("foo -bar", None),
    ('"unterminated', None),
    ("title: foo", None),
    ("{title}: foo", None),
    ("!:*&|<->()", None),
    ("foo:*A", None),
    ("\\'; select 1; --", None),
    ("select", "select-from-grids"),
    ("drop table", "robert-drop-table"),
    ("Robert'); DROP TABLE package_package;--", "robert-drop-table"),
    ("select * from grids", "select-from-grids"),
    ("100%", "100-coverage"),
    ("LIKE '%' and '_'", "100-coverage"),
    ("O'Reilly's", "oreillys_utils"),
    ('"quoted"', "oreillys_utils"),
    ("django_under_score", "django_under_score"),
    ("Джанго", "dzhango-utility"),
    ("日本語テンプレート", "nihongo-template"),
    ("Café Crème", "cafe-creme"),
    ("🚀", None),
    ("x" * 5000, None),
    (" ".join(["django"] * 200), None),
]


async def test_hostile_queries_are_plain_text(searcher: tuple[Database, SqlBackend]) -> None:
    loaded, backend = searcher
    for query, expected in HOSTILE:
        hits = await backend.search(query)

        assert len(hits) <= 20, query
        if expected is not None:
            assert expected in slugs(hits), query
    async with loaded.engine.connect() as connection:
        count = await connection.scalar(select(func.count()).select_from(package))
    assert count == len(SMALL.packages)


# -- start-up -------------------------------------------------------------------------------


async def test_features_are_detected(
    sqlite_database: Database, postgres_database: Database
) -> None:
    assert sqlite_database.features == SqlFeatures(
        dialect="sqlite",
        search_table=True,
        search_vector=False,
        fts=True,
        trigram=True,
        sort_keys=True,
    )
    assert postgres_database.features == SqlFeatures(
        dialect="postgresql",
        search_table=True,
        search_vector=True,
        fts=False,
        trigram=True,
        sort_keys=True,
    )
    await check_database(sqlite_database.engine)
    await check_database(postgres_database.engine)


async def test_a_database_without_the_tables_is_refused(tmp_path: Path) -> None:
    (tmp_path / "empty.sqlite3").touch()
    engine = create_engine(f"sqlite:///{tmp_path / 'empty.sqlite3'}")
    try:
        with pytest.raises(ConfigError) as refused:
            await check_database(engine)
        features = await inspect_database(engine)
    finally:
        await engine.dispose()

    assert str(refused.value) == (
        "database has no table package_package: is this a Django Packages database?"
    )
    assert features == SqlFeatures(
        "sqlite",
        search_table=False,
        search_vector=False,
        fts=False,
        trigram=False,
        sort_keys=False,
    )


async def test_an_unreachable_database_is_refused(tmp_path: Path, pg_schema: str) -> None:
    for engine in (postgres_engine(pg_schema, port=1),):
        try:
            with pytest.raises(ConfigError) as refused:
                await check_database(engine)
        finally:
            await engine.dispose()

        message = str(refused.value)
        assert message.startswith("database unreachable: ") and "\n" not in message


@pytest.mark.parametrize("mode", ["disable", "prefer"])
async def test_libpqs_sslmode_reaches_asyncpg_as_its_ssl(mode: str) -> None:
    """`?sslmode=` as libpq's users write it (asyncpg's keyword is `ssl`): the engine connects."""
    engine = create_engine(f"{POSTGRES_URL}?sslmode={mode}")
    try:
        async with engine.connect() as connection:
            assert (await connection.exec_driver_sql("SELECT 1")).scalar() == 1
    finally:
        await engine.dispose()
    assert engine.url.query == {"ssl": mode}


async def test_a_missing_sqlite_file_is_refused_not_created(tmp_path: Path) -> None:
    path = tmp_path / "typo.sqlite3"
    engine = create_engine(f"sqlite:///{path}")
    try:
        with pytest.raises(ConfigError, match="database file not found"):
            await check_database(engine)
    finally:
        await engine.dispose()
    assert not path.exists()


# -- a database that goes away --------------------------------------------------------------


@pytest.fixture
async def sqlite_copy(sqlite_database: Database, tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    """An engine on a private copy of the SQLite database, in a directory of its own."""
    assert sqlite_database.path is not None
    (tmp_path / "data").mkdir()
    copy = tmp_path / "data" / "copy.sqlite3"
    with (
        closing(sqlite3.connect(sqlite_database.path)) as source,
        closing(sqlite3.connect(copy)) as target,
    ):
        source.backup(target)
    engine = create_engine(f"sqlite:///{copy}")
    yield engine
    await engine.dispose()


async def test_a_lost_sqlite_file_fails_the_batch_then_recovers(
    sqlite_database: Database, sqlite_copy: AsyncEngine, tmp_path: Path
) -> None:
    backend = SqlBackend(sqlite_copy, sqlite_database.features)
    assert await backend.categories([1]) == [CATEGORIES[1]]

    (tmp_path / "data").rename(tmp_path / "away")
    await sqlite_copy.dispose()  # the pool's open files would still read the moved database
    with pytest.raises(DatabaseError) as failed:
        await backend.packages_of_grids([Window(QUIRKS_GRID.id, Slice(5))])
    (tmp_path / "away").rename(tmp_path / "data")

    assert failed.value.message == "The database is unavailable"
    assert failed.value.extensions == {"code": "DATABASE_ERROR"}
    assert "unable to open database file" in failed.value.detail
    assert await backend.categories([1]) == [CATEGORIES[1]]


async def test_a_lost_postgres_connection_fails_the_batch_then_recovers(
    postgres_database: Database, pg_schema: str
) -> None:
    proxy = TcpProxy(POSTGRES_PORT)
    await proxy.start()
    engine = postgres_engine(pg_schema, port=proxy.port)
    backend = SqlBackend(engine, postgres_database.features)
    try:
        assert await backend.categories([1]) == [CATEGORIES[1]]

        await proxy.cut()
        with pytest.raises(DatabaseError) as failed:
            await backend.search("django")
        await proxy.start()

        assert failed.value.message == "The database is unavailable"
        assert "127.0.0.1" not in failed.value.message
        assert await backend.categories([1]) == [CATEGORIES[1]]

        # A server-side kill of the pooled connection is noticed before use, not by a client.
        async with engine.connect() as connection:
            pid = await connection.scalar(text("SELECT pg_backend_pid()"))
        async with postgres_database.engine.connect() as connection:
            await connection.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        assert await backend.grids([QUIRKS_GRID.id]) == [GRIDS[QUIRKS_GRID.id]]
    finally:
        await engine.dispose()
        await proxy.cut()
