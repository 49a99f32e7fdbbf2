"""Search over the `searchv3_searchv3` rows, ranked as the site ranks them.

The site (its searchv3 code, spelled out in UPSTREAM.md) takes the stripped query `q`:
- a row matches in full text when `search_vector @@ fts`, `fts` being
  `websearch_to_tsquery('english', q)`, OR-ed with the prefix query `to_tsquery('english',
  q || ':*')` when `q` is 3 to 5 characters of `[A-Za-z0-9_-]`;
- for 3 characters or more, a row also matches when its title or slug is trigram-similar to
  `lower(q)` (pg_trgm's `%`, threshold 0.3) and `similarity`, the greater of the two
  similarities, is at least 0.2;
- hits go by `relevance = ts_rank(search_vector, fts) + weight * 0.02` DESC, `similarity`
  DESC, title ASC (the database's collation), at most 20. The gateway adds item type and id
  to settle what the site leaves to chance.

PostgreSQL runs exactly that: with the stored `search_vector` when the table has it (the site's
does, and so does a database the gateway owns), else the same vector computed per row. Without
pg_trgm the trigram matches are left out (start-up says so).

SQLite comes as close as it can. Full text: `searchv3_fts`, FTS5 with the Porter stemmer, every
word of `q` required (websearch's quotes, `or` and `-` are plain words, and stop words count),
the prefix query under the site's rule; `ts_rank` becomes bm25 with ts_rank's column weights,
scaled into [0, 0.1), about ts_rank's range for a few matches. Trigram: `searchv3_trigram`, an
FTS5 trigram index over title and slug, finds the rows that share a three-character run with a
word of `q`, and pg_trgm's own `similarity()` (trigrams.py, which the engine gives SQLite)
decides; a row sharing only word-edge trigrams (those with a space) is not found. Without the
FTS5 tables, a scan with `instr` (ASCII case-insensitive) stands in for both.

Without `searchv3_searchv3` at all, packages and grids are searched directly, with weight 0.
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

import emoji
import msgspec
from sqlalchemy import (
    ColumnElement,
    Float,
    FromClause,
    Numeric,
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
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.loaders.entities import fields_of, from_columns
from gateway.loaders.records import SearchHit
from gateway.loaders.sql.features import SqlFeatures
from gateway.loaders.sql.tables import (
    FTS_TABLE,
    TRIGRAM_TABLE,
    category,
    grid,
    package,
    search,
    version,
)
from gateway.loaders.sql.trigrams import trigrams

__all__ = ["FTS_COLUMNS", "LIMIT", "build_search_index", "search_hit", "search_statement"]

FTS_COLUMNS = ("title", "slug", "description", "category", "participants")
LIMIT = 20

# The site's constants: the weight's share of relevance, the trigram bounds, the prefix rule.
_WEIGHT_FACTOR = Decimal("0.02")
_SIMILAR = 0.3  # pg_trgm's default `similarity_threshold`, which `%` applies
_SIMILARITY_FLOOR = 0.2
_FUZZY_LENGTH = 3
_PREFIXED = re.compile(r"[A-Za-z0-9_-]{3,5}")

# SQLite: ts_rank's default weights for A, B, C, D (title, slug, description, category and
# participants), and the bound of the text score that stands for ts_rank.
_COLUMN_WEIGHTS = (1.0, 0.4, 0.2, 0.1, 0.1)
_TEXT_SCALE = 0.1
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")

# What `search_hit` reads: every field of a hit but its `absolute_url`.
_HIT_COLUMNS = tuple(spec.column for spec in fields_of(SearchHit) if spec.column)
_HIT_FIELDS = tuple(spec.name for spec in fields_of(SearchHit))
_hit = from_columns(SearchHit)

# The site's `search_vector`, over the columns of one row of `searchv3_searchv3` (or its shape).
_VECTOR = (
    "setweight(to_tsvector('english', title), 'A')"
    " || setweight(to_tsvector('english', slug), 'B')"
    " || setweight(to_tsvector('english', description), 'C')"
    " || setweight(to_tsvector('english', category || ' ' || participants), 'D')"
)

_fts = table(FTS_TABLE, column("rowid"), column(FTS_TABLE))
_trigram = table(TRIGRAM_TABLE, column("rowid"), column(TRIGRAM_TABLE))


async def build_search_index(connection: AsyncConnection) -> None:
    """(Re)build what search needs beside `searchv3_searchv3`, in a database the gateway owns.

    SQLite: the two FTS5 indexes, external content (they store no text of their own), rebuilt
    from the table. PostgreSQL: what the site's database has, pg_trgm (if the server lets us
    create it), the stored `search_vector` and the GIN indexes. Call it inside the
    transaction that filled the table.
    """
    if connection.dialect.name == "postgresql":
        await _postgresql_index(connection)
        return
    content = f"content='{search.name}', content_rowid='id'"
    for name, columns, tokenizer in (
        (FTS_TABLE, FTS_COLUMNS, "porter unicode61 remove_diacritics 2"),
        (TRIGRAM_TABLE, ("title", "slug"), "trigram"),
    ):
        await connection.exec_driver_sql(f"DROP TABLE IF EXISTS {name}")
        await connection.exec_driver_sql(
            f"CREATE VIRTUAL TABLE {name} USING fts5({', '.join(columns)}, {content}, "
            f"tokenize='{tokenizer}')"
        )
        await connection.exec_driver_sql(f"INSERT INTO {name}({name}) VALUES ('rebuild')")


async def _postgresql_index(connection: AsyncConnection) -> None:
    try:
        async with connection.begin_nested():
            await connection.exec_driver_sql("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    except DBAPIError:
        pass  # not allowed or not installed: start-up says so, and search does without
    await connection.exec_driver_sql(
        f"ALTER TABLE {search.name} ADD COLUMN IF NOT EXISTS search_vector tsvector "
        f"GENERATED ALWAYS AS ({_VECTOR}) STORED"
    )
    await connection.exec_driver_sql(
        f"CREATE INDEX IF NOT EXISTS {search.name}_search_vector "
        f"ON {search.name} USING gin (search_vector)"
    )
    has_trigram = await connection.exec_driver_sql(
        "SELECT EXISTS (SELECT FROM pg_opclass "
        "WHERE opcname = 'gin_trgm_ops' AND pg_opclass_is_visible(oid))"
    )
    if has_trigram.scalar():
        for name in ("title", "slug"):
            await connection.exec_driver_sql(
                f"CREATE INDEX IF NOT EXISTS {search.name}_{name}_trigram "
                f"ON {search.name} USING gin ({name} gin_trgm_ops)"
            )


def search_statement(query: str, features: SqlFeatures) -> Select[Any] | None:
    """The one statement that finds the best hits for `query`; None when it is blank."""
    query = query.strip()
    if not query:
        return None
    source = search if features.search_table else _packages_and_grids()
    fuzzy = features.trigram and len(query) >= _FUZZY_LENGTH
    if features.dialect == "postgresql":
        stored_vector = features.search_vector and features.search_table
        return _postgresql(source, query, fuzzy=fuzzy, stored_vector=stored_vector)
    if features.fts and features.search_table:
        return _fts5(query, fuzzy=fuzzy)
    return _scan(source, query)


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
    source: FromClause,
    hit: ColumnElement[bool],
    relevance: ColumnElement[Any],
    similarity: ColumnElement[Any],
) -> Select[Any]:
    """The site's order, item type and id after it: the site leaves full ties to chance."""
    return (
        select(*(source.c[name] for name in _HIT_COLUMNS))
        .where(hit)
        .order_by(
            relevance.desc(),
            similarity.desc(),
            source.c.title,
            source.c.item_type,
            source.c.id,
        )
        .limit(LIMIT)
    )


def _weighted(source: FromClause) -> ColumnElement[Any]:
    return source.c.weight * literal(_WEIGHT_FACTOR, Numeric)


def _postgresql(source: FromClause, query: str, *, fuzzy: bool, stored_vector: bool) -> Select[Any]:
    fts: ColumnElement[Any] = func.websearch_to_tsquery("english", query)
    if _PREFIXED.fullmatch(query):
        fts = fts.op("||")(func.to_tsquery("english", query + ":*"))
    if stored_vector:
        vector: ColumnElement[Any] = column("search_vector", TSVECTOR)
    else:
        # The site's vector, computed once per row into a CTE: without MATERIALIZED,
        # PostgreSQL would compute it again for the match and the rank.
        source = (
            select(source, literal_column(_VECTOR).label("search_vector"))
            .cte("documents")
            .prefix_with("MATERIALIZED")
        )
        vector = source.c.search_vector
    relevance = func.ts_rank(vector, fts, type_=Float) + _weighted(source)
    hit: ColumnElement[bool] = vector.bool_op("@@")(fts)
    similarity: ColumnElement[Any] = literal(0)
    if fuzzy:
        lowered = func.lower(query)
        similarity = func.greatest(
            func.similarity(source.c.title, lowered), func.similarity(source.c.slug, lowered)
        )
        similar = or_(source.c.title.bool_op("%")(lowered), source.c.slug.bool_op("%")(lowered))
        hit = or_(hit, and_(similar, similarity >= _SIMILARITY_FLOOR))
    return _ranked(source, hit, relevance, similarity)


def _fts5(query: str, *, fuzzy: bool) -> Select[Any]:
    """Both FTS5 indexes: bm25 for the words, pg_trgm's similarity for titles and slugs."""
    phrases = ['"' + word.replace('"', '""') + '"' for word in query.split()]
    if _PREFIXED.fullmatch(query):
        phrases[-1] += "*"
    score = -func.bm25(_fts.c[FTS_TABLE], *_COLUMN_WEIGHTS)
    words = (
        select(_fts.c.rowid, score.label("score"))
        .where(_fts.c[FTS_TABLE].match(" ".join(phrases)))
        .subquery("words")
    )
    text_score = func.coalesce(_TEXT_SCALE * words.c.score / (words.c.score + 1), 0.0)
    hit: ColumnElement[bool] = words.c.rowid.is_not(None)
    similarity: ColumnElement[Any] = literal(0)
    runs = sorted({run for run in trigrams(query) if " " not in run})
    if fuzzy and runs:
        similarity = func.max(
            func.similarity(search.c.title, query), func.similarity(search.c.slug, query)
        )
        sharing = select(_trigram.c.rowid).where(
            _trigram.c[TRIGRAM_TABLE].match(" OR ".join(f'"{run}"' for run in runs))
        )
        # `title % q OR slug % q` is the greater similarity reaching the threshold.
        hit = or_(hit, and_(search.c.id.in_(sharing), similarity >= _SIMILAR))
    hits = (
        select(search.c.id, (text_score + _weighted(search)).label("relevance"))
        .select_from(search.outerjoin(words, words.c.rowid == search.c.id))
        .where(hit)
        .cte("hits")
    )
    # The similarity is a Python call per row: only the rows at least as relevant as the
    # twentieth can be among the first twenty, so only they are ordered by it.
    twentieth = (
        select(hits.c.relevance)
        .order_by(hits.c.relevance.desc())
        .limit(1)
        .offset(LIMIT - 1)
        .scalar_subquery()
    )
    contender = or_(twentieth.is_(None), hits.c.relevance >= twentieth)
    return _ranked(search, contender, hits.c.relevance, similarity).join_from(
        search, hits, hits.c.id == search.c.id
    )


def _scan(source: FromClause, query: str) -> Select[Any]:
    """Every word somewhere in the row, as SQLite's ASCII-only `lower()` sees it; the text
    score is the weight of the best column a word is in."""
    words = [word.translate(_ASCII_LOWER) for word in query.split()]
    fields = [
        func.lower(source.c.title),
        func.lower(source.c.slug),
        func.lower(source.c.description),
        func.lower(source.c.category + " " + source.c.participants),
    ]

    def any_word_in(field: ColumnElement[str]) -> ColumnElement[bool]:
        return or_(*(func.instr(field, word) > 0 for word in words))

    best_column = zip(fields, _COLUMN_WEIGHTS[:4], strict=True)
    text_score = _TEXT_SCALE * case(
        *((any_word_in(field), weight) for field, weight in best_column), else_=0.0
    )
    every_word = and_(*(or_(*(func.instr(field, word) > 0 for field in fields)) for word in words))
    return _ranked(source, every_word, text_score + _weighted(source), literal(0))
