"""The schema over the database backend: at most one SQL statement per loader level."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from gateway.compose import schema_for
from gateway.config import Settings
from gateway.errors import response_body
from gateway.loaders.loaders import Loaders
from gateway.schema.context import Context
from tests.databases import (
    SMALL,
    Database,
    database,
    pg_schema,
    postgres_database,
    sqlite_database,
    statements,
)

__all__ = ["database", "pg_schema", "postgres_database", "sqlite_database"]

schema = schema_for(Settings())

FAN_OUT = """query($slug: String!) { grid(slug: $slug) { packages(first: 100) { nodes {
    category { slug } grids(first: 10) { nodes { slug packages(first: 3) { totalCount } } }
} } } }"""


async def execute(db: Database, document: str, **variables: Any) -> dict[str, Any]:
    result = await schema.execute(
        document, variable_values=variables, context_value=Context(Loaders(db.backend()))
    )
    return dict(response_body(result))


@pytest.mark.parametrize("slug", ["quirks-edge-cases", SMALL.grids[-1].slug])
async def test_fan_out_is_one_statement_per_loader_level(database: Database, slug: str) -> None:
    async with statements(database.engine) as sent:
        body = await execute(database, FAN_OUT, slug=slug)
    assert "errors" not in body
    nodes = body["data"]["grid"]["packages"]["nodes"]
    members = Counter(row.grid_id for row in SMALL.grid_packages)
    grid = next(row for row in SMALL.grids if row.slug == slug)
    assert len(nodes) == min(members[grid.id], 100)
    # grid by slug, its packages' window, their categories, their grids' windows, and those
    # grids' package windows: five levels, five statements, whatever the number of packages.
    assert len(sent) == 5, sent


async def test_a_database_failure_is_a_database_error_for_those_fields_only(
    sqlite_database: Database,
) -> None:
    path = sqlite_database.path
    assert path is not None
    moved = path.with_name("away.sqlite3")
    await sqlite_database.engine.dispose()
    path.rename(moved)  # SQLite then opens an empty database in its place: no tables
    try:
        body = await execute(sqlite_database, "{ grid(id: 1) { title } }")
    finally:
        moved.rename(path)
    assert [e["extensions"]["code"] for e in body["errors"]] == ["DATABASE_ERROR"]
    assert body["data"] == {"grid": None}
    assert "sqlite" not in body["errors"][0]["message"].lower()
    recovered = await execute(sqlite_database, "{ categories { totalCount } }")
    assert recovered == {"data": {"categories": {"totalCount": len(SMALL.categories)}}}
