"""Search over the `searchv3_searchv3` rows, the best way each database can.

The order is the same everywhere: hits with a word in the title come first, then in the slug,
then in the description, then only in category or participants (the site's search weights
A, B, C and D). Within each of those tiers the text relevance, boosted by up to 2x by the row's
`weight` (`1 + weight / (weight + 50)`), decides; ties go by title in byte order, then id.

- SQLite: FTS5 `MATCH` over `searchv3_fts`, an external-content FTS5 table over
  `searchv3_searchv3` (columns title, slug, description, category, participants) that
  `build_search_index` (re)builds; relevance is `bm25()` with column weights 10, 5, 2, 1, 1.
  Without that table, a scan with `instr` (ASCII case-insensitive) stands in.
- PostgreSQL: the stored `search_vector` when the table has it (as the site's does), else the
  same vector computed on the fly; relevance is `ts_rank`.
- Without `searchv3_searchv3` at all, packages and grids are searched directly.

The user's words never reach a query language as syntax: each becomes one quoted FTS5 phrase or
one quoted tsquery lexeme, all of them required, the last one also matching as a prefix.
"""

from __future__ import annotations

from typing import Any

import emoji
import msgspec
from sqlalchemy import (
    ColumnElement,
    Float,
    FromClause,
    Row,
    Select,
    and_,
    case,
    column,
    func,
    literal,
    literal_column,
    null,
    or_,
    select,
    table,
    union_all,
)
from sqlalchemy.dialects.postgresql import TSVECTOR
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.loaders.entities import fields_of, from_columns
from gateway.loaders.records import SearchHit
from gateway.loaders.sql.features import SqlFeatures
from gateway.loaders.sql.tables import FTS_TABLE, category, grid, package, search, version

__all__ = ["FTS_COLUMNS", "LIMIT", "build_search_index", "search_hit", "search_statement"]

FTS_COLUMNS = ("title", "slug", "description", "category", "participants")
LIMIT = 20

# A pasted paragraph should not become an expensive query: later words are ignored.
_MAX_WORDS = 32
_FTS_WEIGHTS = (10.0, 5.0, 2.0, 1.0, 1.0)
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")

# What `search_hit` reads: every field of a hit but its `absolute_url`.
_HIT_COLUMNS = tuple(spec.column for spec in fields_of(SearchHit) if spec.column)
_HIT_FIELDS = tuple(spec.name for spec in fields_of(SearchHit))
_hit = from_columns(SearchHit)

_fts = table(FTS_TABLE, column("rowid"), column(FTS_TABLE))


async def build_search_index(connection: AsyncConnection) -> None:
    """(Re)build the SQLite FTS5 index from `searchv3_searchv3`; PostgreSQL needs none.

    The index is external content: it stores no text of its own and must be rebuilt
    whenever `searchv3_searchv3` changes. Call it inside the transaction that filled the table.
    """
    if connection.dialect.name != "sqlite":
        return
    await connection.exec_driver_sql(f"DROP TABLE IF EXISTS {FTS_TABLE}")
    await connection.exec_driver_sql(
        f"CREATE VIRTUAL TABLE {FTS_TABLE} USING fts5({', '.join(FTS_COLUMNS)}, "
        f"content='{search.name}', content_rowid='id', "
        "tokenize='unicode61 remove_diacritics 2')"
    )
    await connection.exec_driver_sql(f"INSERT INTO {FTS_TABLE}({FTS_TABLE}) VALUES ('rebuild')")


def search_statement(query: str, features: SqlFeatures) -> Select[Any] | None:
    """The one statement that finds the best hits for `query`; None when it has no words."""
    words = query.split()[:_MAX_WORDS]
    if not words:
        return None
    source = search if features.search_table else _packages_and_grids()
    if features.dialect == "postgresql":
        return _postgresql(
            source, words, stored_vector=features.search_vector and features.search_table
        )
    if features.fts and features.search_table:
        return _fts5(words)
    return _scan(source, words)


def search_hit(row: Row[Any]) -> SearchHit:
    """A hit as the upstream serves it: emoji shortcodes in title and description converted."""
    hit = _hit([getattr(row, name, "") for name in _HIT_FIELDS])
    return msgspec.structs.replace(
        hit,
        title=emoji.emojize(hit.title),
        description=emoji.emojize(hit.description),
        absolute_url=f"/{hit.item_type}s/{hit.item_type[:1]}/{hit.slug}/",
    )


def _packages_and_grids() -> FromClause:
    """Rows shaped like `searchv3_searchv3`, for a database whose search index was never built."""
    packages = select(
        package.c.id,
        literal("package").label("item_type"),
        package.c.title,
        package.c.slug,
        package.c.repo_description.label("description"),
        category.c.title.label("category"),
        literal(0).label("weight"),
        package.c.repo_watchers,
        package.c.repo_forks,
        package.c.pypi_downloads,
        literal(0).label("usage"),
        package.c.participants,
        package.c.last_commit_date.label("last_committed"),
        version.c.upload_time.label("last_released"),
        package.c.created,
        package.c.modified,
    ).select_from(
        package.join(category, category.c.id == package.c.category_id).outerjoin(
            version, version.c.id == package.c.latest_version_id
        )
    )
    grids = select(
        grid.c.id,
        literal("grid"),
        grid.c.title,
        grid.c.slug,
        grid.c.description,
        literal(""),
        literal(0),
        literal(0),
        literal(0),
        literal(0),
        literal(0),
        literal(""),
        null(),
        null(),
        grid.c.created,
        grid.c.modified,
    )
    return union_all(packages, grids).subquery("s")


def _ranked(
    source: FromClause, tier: ColumnElement[int], relevance: ColumnElement[float], title: Any
) -> Select[Any]:
    weight = case((source.c.weight > 0, source.c.weight), else_=0)
    boost = (2.0 * weight + 50) / (weight + 50)
    return (
        select(*(source.c[name] for name in _HIT_COLUMNS))
        .order_by(tier.desc(), (relevance * boost).desc(), title, source.c.item_type, source.c.id)
        .limit(LIMIT)
    )


def _fts5(words: list[str]) -> Select[Any]:
    phrases = ['"' + word.replace('"', '""') + '"' for word in words]
    phrases[-1] += "*"
    table_column = _fts.c[FTS_TABLE]

    def bm25(*weights: float) -> ColumnElement[float]:
        return func.bm25(table_column, *weights)

    # bm25() with one column weighted is below zero exactly when a word is in that column.
    tier = case(
        (bm25(1.0, 0.0, 0.0, 0.0, 0.0) < 0, 3),
        (bm25(0.0, 1.0, 0.0, 0.0, 0.0) < 0, 2),
        (bm25(0.0, 0.0, 1.0, 0.0, 0.0) < 0, 1),
        else_=0,
    )
    return (
        _ranked(search, tier, -bm25(*_FTS_WEIGHTS), search.c.title)
        .join_from(_fts, search, search.c.id == _fts.c.rowid)
        .where(table_column.match(" ".join(phrases)))
    )


def _scan(source: FromClause, words: list[str]) -> Select[Any]:
    """Every word somewhere in the row, as SQLite's ASCII-only `lower()` sees it."""
    words = [word.translate(_ASCII_LOWER) for word in words]
    fields = [
        func.lower(source.c.title),
        func.lower(source.c.slug),
        func.lower(source.c.description),
        func.lower(source.c.category + " " + source.c.participants),
    ]

    def any_word_in(field: ColumnElement[str]) -> ColumnElement[bool]:
        return or_(*(func.instr(field, word) > 0 for word in words))

    tier = case(
        (any_word_in(fields[0]), 3),
        (any_word_in(fields[1]), 2),
        (any_word_in(fields[2]), 1),
        else_=0,
    )
    every_word = and_(*(or_(*(func.instr(field, word) > 0 for field in fields)) for word in words))
    return _ranked(source, tier, literal(1.0), source.c.title).where(every_word)


def _tsquery(words: list[str], operator: str, weight: str = "") -> ColumnElement[Any]:
    """`to_tsquery` over quoted lexemes: the words are data to it, never operators."""
    lexemes = []
    for index, word in enumerate(words):
        quoted = "'" + word.replace("\\", "\\\\").replace("'", "''") + "'"
        label = ("*" if index == len(words) - 1 else "") + weight
        lexemes.append(f"{quoted}:{label}" if label else quoted)
    return func.to_tsquery("english", f" {operator} ".join(lexemes))


def _postgresql(source: FromClause, words: list[str], *, stored_vector: bool) -> Select[Any]:
    every_word = _tsquery(words, "&")
    if stored_vector:
        vector: ColumnElement[Any] = column("search_vector", TSVECTOR)
    else:
        # The site's vector, computed once per row into a CTE: without MATERIALIZED,
        # PostgreSQL would compute it again for the match, the tier and the rank.
        source = (
            select(source, _vector(source).label("search_vector"))
            .cte("documents")
            .prefix_with("MATERIALIZED")
        )
        vector = source.c.search_vector
    tier = case(
        (vector.bool_op("@@")(_tsquery(words, "|", "A")), 3),
        (vector.bool_op("@@")(_tsquery(words, "|", "B")), 2),
        (vector.bool_op("@@")(_tsquery(words, "|", "C")), 1),
        else_=0,
    )
    relevance = func.ts_rank(vector, every_word, type_=Float)
    return _ranked(source, tier, relevance, source.c.title.collate("C")).where(
        vector.bool_op("@@")(every_word)
    )


def _vector(source: FromClause) -> ColumnElement[Any]:
    """What the site's `search_vector` column holds: title A, slug B, description C, rest D."""

    def weighted(text: ColumnElement[str], weight: str) -> ColumnElement[Any]:
        return func.setweight(func.to_tsvector("english", text), literal_column(weight))

    return (
        weighted(source.c.title, "'A'")
        .op("||")(weighted(source.c.slug, "'B'"))
        .op("||")(weighted(source.c.description, "'C'"))
        .op("||")(weighted(source.c.category + " " + source.c.participants, "'D'"))
    )
