"""Search on the database backend against the site's own search (UPSTREAM.md).

On PostgreSQL the gateway must answer the same hits in the same order as the site's query,
written out here independently as raw SQL, over the same rows: the small demo dataset plus a
few rows that make the site's rules show (a grid "Forums" that only trigrams find, titles one
letter apart, heavier and lighter rows). On SQLite, what it guarantees: pg_trgm's similarity
exactly, the trigram matches and the prefix rule, weight before text.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import re
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import text

from gateway.loaders.records import SearchHit
from gateway.loaders.sql.backend import SqlBackend
from gateway.loaders.sql.engine import create_engine
from gateway.loaders.sql.features import inspect_database
from gateway.loaders.sql.rows import Dataset, SearchRow
from gateway.loaders.sql.search import build_search_index
from gateway.loaders.sql.trigrams import similarity
from gateway.loaders.sql.writer import write_dataset
from tests.databases import SMALL, Database, new_schema, postgres_engine

_TEMPLATE = SMALL.search_rows[0]
_FIRST_ID = max(row.id for row in SMALL.search_rows) + 1


def _row(
    offset: int, item_type: str, title: str, slug: str, weight: int, description: str
) -> SearchRow:
    return dataclasses.replace(
        _TEMPLATE,
        id=_FIRST_ID + offset,
        item_type=item_type,
        title=title,
        slug=slug,
        weight=weight,
        description=description,
        category="" if item_type == "grid" else _TEMPLATE.category,
        participants="" if item_type == "grid" else _TEMPLATE.participants,
    )


EXTRA = (
    _row(0, "grid", "Forums", "forums", 12, "Discussion boards for Django sites."),
    _row(1, "grid", "Forms", "forms", 40, "Form rendering, validation and builders."),
    _row(2, "package", "django-crispy-forms", "django-crispy-forms", 98, "DRY Django forms."),
    _row(3, "package", "django-formtools", "django-formtools", 70, "Form wizards and previews."),
    _row(4, "package", "django-forms-builder", "django-forms-builder", 20, "Build forms 📝."),
    _row(5, "package", "Formidable", "formidable", 5, "A form rendering library :sparkles:"),
    _row(6, "package", "djangorestframework", "djangorestframework", 100, "REST APIs."),
    _row(7, "package", "drf-api-tracking", "drf-api-tracking", 15, "Log API requests 🚀."),
    _row(8, "package", "django-filter", "django-filter", 90, "Filter querysets from the URL."),
    _row(9, "package", "django-filters", "django-filters", 90, "Another filter package."),
)
DATASET: Dataset = dataclasses.replace(SMALL, search_rows=SMALL.search_rows + EXTRA)

QUERIES = [
    "forms",
    "Forms",
    "django",
    "djan",
    "form",
    "dj",
    "db",
    "a",
    "api",
    "rest",
    "django rest framework",
    "crispy forms",
    "django-filter",
    "filter",
    "formz",
    "frms",
    '"form rendering"',
    "forms or forums",
    "-django forms",
    "admin -rocket",
    "O'Reilly's",
    "100%",
    "Robert'); DROP TABLE package_package;--",
    "!:*&|<->()",
    "🚀",
    "rocket 🚀",
    "📝 forms",
    "Джанго",
    "日本語テンプレート",
    "Café Crème",
    "the",
    "the django",
    "zzqxj",
    "xyzzy plugh",
]


def site_query(q: str) -> tuple[str, dict[str, str]]:
    """The site's search as UPSTREAM.md gives it, every hit with its sort key, unlimited."""
    fts = "websearch_to_tsquery('english', :q)"
    if re.fullmatch(r"[A-Za-z0-9_-]{3,5}", q):
        fts = f"({fts} || to_tsquery('english', :q || ':*'))"
    similarity_sql, trigram_hit = "0", ""
    if len(q) >= 3:
        similarity_sql = "greatest(similarity(title, lower(:q)), similarity(slug, lower(:q)))"
        trigram_hit = f" OR ((title % lower(:q) OR slug % lower(:q)) AND {similarity_sql} >= 0.2)"
    sql = (
        f"SELECT item_type, slug, ts_rank(search_vector, {fts}) + weight * 0.02 AS relevance,"
        f" {similarity_sql} AS similarity, title"
        f" FROM searchv3_searchv3 WHERE search_vector @@ {fts}{trigram_hit}"
        " ORDER BY relevance DESC, similarity DESC, title ASC"
    )
    return sql, {"q": q}


@pytest.fixture(scope="module")
async def site_database() -> AsyncIterator[Database]:
    """PostgreSQL with `DATASET`, written as the gateway writes a database it owns."""
    async with new_schema() as schema:
        engine = postgres_engine(schema)
        await write_dataset(engine, DATASET)
        yield Database(engine, await inspect_database(engine))
        await engine.dispose()


def identities(hits: list[SearchHit]) -> list[tuple[str, str]]:
    return [(hit.item_type, hit.slug) for hit in hits]


@pytest.mark.parametrize("query", QUERIES)
async def test_postgresql_answers_as_the_site(site_database: Database, query: str) -> None:
    """Same hits, same order. Where rows tie on the site's whole key (relevance, similarity,
    title) the site leaves the order to chance: they are compared by key there."""
    assert site_database.features.trigram and site_database.features.search_vector
    sql, parameters = site_query(query)
    async with site_database.engine.connect() as connection:
        site_rows = (await connection.execute(text(sql), parameters)).all()
    keys: dict[tuple[str, str], tuple[Any, ...]] = {
        (row.item_type, row.slug): (row.relevance, row.similarity, row.title) for row in site_rows
    }
    site = [(row.item_type, row.slug) for row in site_rows[:20]]

    gateway = identities(await site_database.backend().search(query))

    assert all(hit in keys for hit in gateway), "a hit the site does not find"
    assert [keys[hit] for hit in gateway] == [keys[hit] for hit in site]
    last = keys[site[-1]] if site else None
    assert {hit for hit in gateway if keys[hit] != last} == {
        hit for hit in site if keys[hit] != last
    }


async def test_the_site_cases_are_what_they_should_be(site_database: Database) -> None:
    """The comparison above is not empty: the site's rules show in these rows."""
    search = site_database.backend().search
    forms = identities(await search("forms"))
    assert ("grid", "forums") in forms  # by trigram similarity only
    assert forms.index(("package", "django-crispy-forms")) < forms.index(("grid", "forms"))
    assert len(await search("django")) == 20
    assert ("package", "djangorestframework") in identities(await search("djan"))  # prefix
    assert ("grid", "forums") not in identities(await search("fo"))  # too short for trigrams
    assert await search("zzqxj") == [] and await search("xyzzy plugh") == []


async def test_without_pg_trgm_postgresql_says_so_and_searches_full_text(
    site_database: Database, caplog: pytest.LogCaptureFixture
) -> None:
    """pg_trgm out of the search path is a database without it: a warning, then full text only."""
    schema = await _schema_of(site_database)
    engine = postgres_engine(schema, public=False)
    try:
        with caplog.at_level(logging.WARNING, logger="gateway"):
            features = await inspect_database(engine)
        forms = identities(await SqlBackend(engine, features).search("forms"))
    finally:
        await engine.dispose()

    assert not features.trigram
    assert "no pg_trgm" in caplog.text and "full-text matches only" in caplog.text
    assert ("grid", "forms") in forms and ("grid", "forums") not in forms


async def _schema_of(database: Database) -> str:
    async with database.engine.connect() as connection:
        schema: str = await connection.scalar(text("SELECT current_schema()"))
    return schema


# -- SQLite ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
async def sqlite_site(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Database]:
    path = tmp_path_factory.mktemp("search") / "search.sqlite3"
    engine = create_engine(f"sqlite:///{path}")
    await write_dataset(engine, DATASET)
    yield Database(engine, await inspect_database(engine), path)
    await engine.dispose()


async def test_sqlite_similarity_is_pg_trgm(site_database: Database) -> None:
    """The similarity SQLite computes is PostgreSQL's, for every title and slug and query."""
    texts = sorted({row.title for row in DATASET.search_rows} | {row.slug for row in EXTRA})
    queries = [*QUERIES, "ÜBER straße", "a_b-c", "x"]
    async with site_database.engine.connect() as connection:
        rows = (
            await connection.execute(
                text(
                    "SELECT t, q, similarity(t, q)"
                    " FROM unnest(CAST(:t AS text[])) t, unnest(CAST(:q AS text[])) q"
                ),
                {"t": texts, "q": queries},
            )
        ).all()
    assert len(rows) == len(texts) * len(queries)
    for title, query, expected in rows:
        assert similarity(title, query) == pytest.approx(expected, abs=1e-6), (title, query)


async def test_sqlite_finds_what_trigrams_find(sqlite_site: Database) -> None:
    assert sqlite_site.features.trigram
    search = sqlite_site.backend().search
    forms = identities(await search("forms"))
    assert ("grid", "forums") in forms and ("grid", "forms") in forms
    assert ("grid", "forums") not in identities(await search("fo"))
    assert ("package", "djangorestframework") in identities(await search("djan"))
    assert ("package", "django-filter") in identities(await search("django-filtr"))
    assert await search("zzqxj") == [] and await search("xyzzy plugh") == []


async def test_sqlite_ranks_weight_first(sqlite_site: Database) -> None:
    """`weight * 0.02` leads, as on the site; bm25 only separates rows of close weight."""
    hits = await sqlite_site.backend().search("forms")
    weights = [hit.weight for hit in hits]
    assert identities(hits)[0] == ("package", "django-crispy-forms")
    for heavier, lighter in itertools.pairwise(weights):
        assert heavier >= lighter - 5


async def test_sqlite_without_the_trigram_index_searches_full_text(sqlite_site: Database) -> None:
    async with sqlite_site.engine.begin() as connection:
        await connection.exec_driver_sql("DROP TABLE searchv3_trigram")
    try:
        features = await inspect_database(sqlite_site.engine)
        forms = identities(await SqlBackend(sqlite_site.engine, features).search("forms"))
    finally:
        async with sqlite_site.engine.begin() as connection:
            await build_search_index(connection)

    assert not features.trigram
    assert ("grid", "forms") in forms and ("grid", "forums") not in forms
