"""One suite of contract queries, three backends, equal answers.

The REST backend reads the fake APIv4 serving dataset X; SQLite and PostgreSQL are loaded
with the same X by `gateway mirror` from that fake upstream. Datetimes are compared as
instants (the REST layer renders New York offsets, a database keeps UTC).
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import pytest
import sqlalchemy
from sqlalchemy.ext.asyncio import create_async_engine as create_engine
from sqlalchemy.pool import NullPool

from gateway.cli import run_query
from gateway.config import Settings
from gateway.schema.pagination import cursor_of
from tests.databases import SMALL
from tests.expected import package_ids_of_category
from tests.fake_upstream import FakeUpstream

ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/test"

PACKAGE = """
    id databaseId title slug lastUpdated lastFetched repoUrl pypiVersion created modified
    repoForks repoDescription pypiUrl documentationUrl repoWatchers commitsOver52 participants
    category { id databaseId title slug }
"""
GRID = "id databaseId title slug description isLocked header created modified"
CATEGORY = "id databaseId title slug description titlePlural showPypi created modified"
PAGE_INFO = "pageInfo { hasNextPage hasPreviousPage startCursor endCursor } totalCount"
# A package's grids are in membership order, whose key a cursor holds: the membership row's id
# on a database, its place in the package's list on REST (which has no such id).
MEMBERSHIP_PAGE_INFO = "pageInfo { hasNextPage hasPreviousPage } totalCount"

# The cursor of the 25th of the apps' packages (newest id first) in the session's dataset.
AFTER_25 = cursor_of((package_ids_of_category(SMALL, 1)[24],))

QUERIES: dict[str, tuple[str, dict[str, Any]]] = {
    "package by slug, its grids and their packages": (
        "query($slug: String!) { package(slug: $slug) { %s grids(first: 10) { %s"
        " nodes { %s packages(first: 100) { %s nodes { databaseId slug } } } } } }"
        % (PACKAGE, MEMBERSHIP_PAGE_INFO, GRID, PAGE_INFO),
        {"slug": "django-foo"},
    ),
    "fan-out of a grid": (
        "query($slug: String!) { grid(slug: $slug) { %s packages(first: 100) { %s"
        " edges { cursor node { %s grids(first: 10) { %s nodes { slug } } } } } } }"
        % (GRID, PAGE_INFO, PACKAGE, MEMBERSHIP_PAGE_INFO),
        {"slug": "quirks-edge-cases"},
    ),
    "categories with their packages": (
        "{ categories { %s nodes { %s packages(first: 30) { %s nodes { databaseId title } } } } }"
        % (PAGE_INFO, CATEGORY, PAGE_INFO),
        {},
    ),
    "second page of a category": (
        '{ category(slug: "apps") { packages(first: 25, after: "%s")'
        " { %s nodes { databaseId } } } }" % (AFTER_25, PAGE_INFO),
        {},
    ),
    "package list pages": (
        "{ a: packages(first: 100) { %s nodes { %s } }"
        ' b: packages(first: 30, after: "YXJyYXljb25uZWN0aW9uOjk5") { %s nodes { slug } }'
        " c: packages(first: 0) { %s } }" % (PAGE_INFO, PACKAGE, PAGE_INFO, PAGE_INFO),
        {},
    ),
    "grid list": ("{ grids(first: 100) { %s nodes { %s } } }" % (PAGE_INFO, GRID), {}),
    "lookups and unknowns": (
        '{ a: package(id: 999999) { id } b: grid(slug: "nope") { id } c: category(id: 77) { id }'
        ' d: category(id: 2) { slug } e: grid(slug: "i18n") { title }'
        ' f: node(id: "UGFja2FnZTo5OTk5OTk=") { id } }',
        {},
    ),
    "errors": (
        '{ a: package(id: 1, slug: "x") { id } b: grid(slug: "i18n") { packages(first: 101)'
        ' { totalCount } } c: category(id: 1) { packages(after: "bad") { totalCount } } }',
        {},
    ),
}


@contextmanager
def postgres_url() -> Iterator[str]:
    """A URL whose role sees only a fresh schema of its own; both are dropped afterwards.

    A URL cannot carry a search path for asyncpg, but a role's default search path can.
    """
    name = f"gw_{uuid.uuid4().hex[:12]}"
    admin = create_engine(
        sqlalchemy.make_url(ADMIN_URL).set(drivername="postgresql+asyncpg"), poolclass=NullPool
    )

    async def run(*statements: str) -> None:
        async with admin.begin() as connection:
            for statement in statements:
                await connection.exec_driver_sql(statement)

    try:
        asyncio.run(
            run(
                f"CREATE ROLE {name} LOGIN",
                f"CREATE SCHEMA {name} AUTHORIZATION {name}",
                f"ALTER ROLE {name} SET search_path = {name}",
            )
        )
    except (OSError, sqlalchemy.exc.SQLAlchemyError) as exc:
        reason = f"PostgreSQL at {ADMIN_URL} is not available: {exc}"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    try:
        yield f"postgresql://{name}@127.0.0.1:5432/test"
    finally:
        asyncio.run(run(f"DROP SCHEMA {name} CASCADE", f"DROP ROLE {name}"))


def instants(value: Any) -> Any:
    """The value with every ISO datetime string turned into a comparable instant."""
    if isinstance(value, dict):
        return {key: instants(item) for key, item in value.items()}
    if isinstance(value, list):
        return [instants(item) for item in value]
    if isinstance(value, str) and len(value) >= 19 and value[4] == "-" and value[10] == "T":
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            return value
    return value


@pytest.fixture(scope="module")
def mirrored_sqlite(fake_upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> str:
    from gateway.loaders.sql.mirror import mirror_to

    url = f"sqlite:///{tmp_path_factory.mktemp('parity') / 'mirror.sqlite3'}"
    asyncio.run(mirror_to(fake_upstream.base_url, url))
    return url


@pytest.fixture(scope="module")
def mirrored_postgres(fake_upstream: FakeUpstream) -> Iterator[str]:
    from gateway.loaders.sql.mirror import mirror_to

    with postgres_url() as url:
        asyncio.run(mirror_to(fake_upstream.base_url, url))
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest) -> str:
    url: str = request.getfixturevalue(
        f"mirrored_{request.param.replace('postgresql', 'postgres')}"
    )
    return url


@pytest.mark.parametrize("name", QUERIES)
async def test_database_answers_like_rest(upstream: FakeUpstream, database: str, name: str) -> None:
    document, variables = QUERIES[name]
    rest = await run_query(Settings(upstream=upstream.base_url), document, variables)
    db = await run_query(Settings(database=database), document, variables)
    assert comparable(db) == comparable(rest)


def comparable(body: Any) -> Any:
    """Errors come in the order their fields failed, which is the backend's: sort them."""
    errors = sorted(body.get("errors", []), key=lambda error: str(error.get("path")))
    return instants({**body, "errors": errors})


SEARCH = """query($q: String!) { search(query: $q) { itemType title slug description category
    repoWatchers repoForks participants lastCommitted absoluteUrl
    package { databaseId } grid { databaseId } } }"""


@pytest.mark.parametrize("term", ["django", "forms", "Джанго", "100%", "o'reilly", "quirks"])
async def test_search_hits_are_equal_field_by_field(
    upstream: FakeUpstream, database: str, term: str
) -> None:
    """Each backend ranks in its own way; a hit both return must be the same hit.

    `weight`, `usage`, `pypiDownloads` and `lastReleased` only the site's search index holds,
    and `created`/`modified` are the search row's own: a mirror cannot copy them.
    """
    rest: dict[str, Any] = dict(
        await run_query(Settings(upstream=upstream.base_url), SEARCH, {"q": term})
    )
    db: dict[str, Any] = dict(await run_query(Settings(database=database), SEARCH, {"q": term}))
    assert "errors" not in rest and "errors" not in db
    rest_hits = {(hit["itemType"], hit["slug"]): hit for hit in rest["data"]["search"]}
    db_hits = {(hit["itemType"], hit["slug"]): hit for hit in db["data"]["search"]}
    assert len(db_hits) <= 20
    shared = rest_hits.keys() & db_hits.keys()
    assert shared, f"no hit in common for {term!r}"
    for key in shared:
        assert instants(db_hits[key]) == instants(rest_hits[key])
