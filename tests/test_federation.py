"""`--federation`: the schema as an Apollo Federation 2 subgraph, over the SQLite backend.

Package, Grid and Category carry `@key(fields: "id")` and `@key(fields: "slug")`; `_entities`
resolves representations by either key through the loaders; without the flag the schema is
exactly `schema.graphql`.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from strawberry.relay.utils import to_base64

from gateway.cli import run_query
from gateway.compose import schema_for
from gateway.config import Settings
from gateway.errors import response_body
from gateway.internals import graphql_schema
from gateway.loaders.loaders import Loaders
from gateway.schema.context import Context
from tests.databases import SMALL, Database, sqlite_database, statements

__all__ = ["sqlite_database"]

ROOT = Path(__file__).resolve().parent.parent
FEDERATED = Settings(federation=True)

ENTITIES = """query($representations: [_Any!]!) {
  _entities(representations: $representations) {
    __typename
    ... on Category { id slug title }
    ... on Grid { id slug title }
    ... on Package { id slug title category { slug } }
  }
}"""

# Each entity type with one of its rows: (type name, id, slug, title).
ROWS = [
    ("Category", SMALL.categories[0].id, SMALL.categories[0].slug, SMALL.categories[0].title),
    ("Grid", SMALL.grids[0].id, SMALL.grids[0].slug, SMALL.grids[0].title),
    ("Package", SMALL.packages[0].id, SMALL.packages[0].slug, SMALL.packages[0].title),
]


def _settings(db: Database) -> Settings:
    return Settings(database=f"sqlite:///{db.path}", federation=True)


async def _entities(db: Database, *representations: object) -> dict[str, Any]:
    body = await run_query(_settings(db), ENTITIES, {"representations": list(representations)})
    return dict(body)


def _expected(type_name: str, id: int, slug: str, title: str) -> dict[str, Any]:
    entity: dict[str, Any] = {
        "__typename": type_name,
        "id": to_base64(type_name, id),
        "slug": slug,
        "title": title,
    }
    if type_name == "Package":
        [package] = [row for row in SMALL.packages if row.id == id]
        [category] = [row for row in SMALL.categories if row.id == package.category_id]
        entity["category"] = {"slug": category.slug}
    return entity


async def test_service_sdl_carries_both_keys_of_each_entity(sqlite_database: Database) -> None:
    body: dict[str, Any] = dict(await run_query(_settings(sqlite_database), "{ _service { sdl } }"))
    assert "errors" not in body
    sdl: str = body["data"]["_service"]["sdl"]
    for type_name in ("Category", "Grid", "Package"):
        assert re.search(
            rf'^type {type_name} implements Node @key\(fields: "id"\) @key\(fields: "slug"\) \{{$',
            sdl,
            re.MULTILINE,
        ), type_name
    assert re.search(r'@link\(url: "https://specs\.apollo\.dev/federation/v2\.\d+"', sdl)
    assert "union _Entity = Category | Grid | Package" in sdl
    assert "_entities(representations: [_Any!]!): [_Entity]!" in sdl
    assert sdl == schema_for(FEDERATED).as_str()


@pytest.mark.parametrize("key", ["id", "slug"])
async def test_entities_resolve_each_type_by_each_key(sqlite_database: Database, key: str) -> None:
    representations = [
        {"__typename": type_name, key: to_base64(type_name, id) if key == "id" else slug}
        for type_name, id, slug, _ in ROWS
    ]
    body = await _entities(sqlite_database, *representations)
    assert body == {"data": {"_entities": [_expected(*row) for row in ROWS]}}


async def test_unknown_entities_are_null(sqlite_database: Database) -> None:
    package = SMALL.packages[0]
    body = await _entities(
        sqlite_database,
        {"__typename": "Package", "slug": "no-such-package"},
        {"__typename": "Grid", "id": to_base64("Grid", 999_999)},
        {"__typename": "Category", "slug": "x" * 1_000},  # longer than any slug: not even asked
        # A package's id, given as a grid's: no grid has it.
        {"__typename": "Grid", "id": to_base64("Package", package.id)},
        {"__typename": "Package", "slug": package.slug},
    )
    assert body == {
        "data": {"_entities": [None, None, None, None, _expected(*ROWS[2])]},
    }


async def test_malformed_representations_are_bad_user_input(sqlite_database: Database) -> None:
    body = await _entities(
        sqlite_database,
        {"__typename": "Package"},
        {"__typename": "Grid", "id": "not a global id"},
        {"__typename": "Category", "slug": ROWS[0][2]},
    )
    assert body["data"] == {"_entities": [None, None, _expected(*ROWS[0])]}
    errors = body["errors"]
    assert [(e["path"], e["extensions"]["code"]) for e in errors] == [
        (["_entities", 0], "BAD_USER_INPUT"),
        (["_entities", 1], "BAD_USER_INPUT"),
    ]
    for representation in ({"__typename": "Nope", "id": "x"}, {"id": "x"}, "Package"):
        body = await _entities(sqlite_database, representation)
        assert body["data"] == {"_entities": [None]}
        [error] = body["errors"]
        assert error["extensions"]["code"] == "BAD_USER_INPUT", error
        assert error["path"] == ["_entities", 0]


async def test_a_representation_of_no_entity_fails_alone(sqlite_database: Database) -> None:
    body = await _entities(
        sqlite_database,
        {"__typename": "Category", "slug": ROWS[0][2]},
        {"__typename": "Nope", "id": "x"},
        {"slug": ROWS[0][2]},
        "Package",
        {"__typename": "Category", "slug": ROWS[0][2]},
    )
    assert body["data"] == {
        "_entities": [_expected(*ROWS[0]), None, None, None, _expected(*ROWS[0])]
    }
    errors = body["errors"]
    assert [(e["path"], e["extensions"]["code"]) for e in errors] == [
        (["_entities", i], "BAD_USER_INPUT") for i in (1, 2, 3)
    ]


async def test_entities_are_batched_through_the_loaders(sqlite_database: Database) -> None:
    """Every package representation, by id or by slug, is one statement per key kind."""
    packages = SMALL.packages[:6]
    representations = [
        {"__typename": "Package", "id": to_base64("Package", row.id)} for row in packages[:3]
    ] + [{"__typename": "Package", "slug": row.slug} for row in packages[3:]]
    schema = schema_for(FEDERATED)
    document = "query($r: [_Any!]!) { _entities(representations: $r) { ... on Package { slug } } }"
    async with statements(sqlite_database.engine) as sent:
        result = await schema.execute(
            document,
            variable_values={"r": representations},
            context_value=Context(Loaders(sqlite_database.backend())),
        )
    body = response_body(result)
    assert body == {"data": {"_entities": [{"slug": row.slug} for row in packages]}}
    assert len(sent) == 2, sent  # packages by id, packages by slug


def test_the_schema_without_the_flag_is_untouched() -> None:
    """Building the subgraph leaves the plain schema, and its SDL, exactly as they are."""
    federated = schema_for(FEDERATED)
    plain = schema_for(Settings())
    assert plain.as_str() == (ROOT / "schema.graphql").read_text(encoding="utf-8").rstrip("\n")
    for name in ("_Service", "_Entity", "_Any"):
        assert name in graphql_schema(federated).type_map
        assert name not in graphql_schema(plain).type_map
    assert "@key" not in plain.as_str()
    query = graphql_schema(plain).query_type
    assert query is not None
    assert "_service" not in query.fields
    assert "_entities" not in query.fields


@pytest.mark.parametrize(
    ("args", "env", "toml"),
    [
        (["--federation"], {}, None),
        ([], {"GATEWAY_FEDERATION": "true"}, None),
        ([], {}, "federation = true\n"),
        (["--federation"], {"GATEWAY_FEDERATION": "false"}, "federation = false\n"),
    ],
    ids=["flag", "environment", "file", "flag-first"],
)
def test_export_schema_with_federation_prints_the_subgraph_sdl(
    tmp_path: Path, args: list[str], env: dict[str, str], toml: str | None
) -> None:
    if toml is not None:
        (tmp_path / "gateway.toml").write_text(toml)
    environ = {name: value for name, value in os.environ.items() if not name.startswith("GATEWAY_")}
    run = subprocess.run(
        [sys.executable, "-m", "gateway", "export-schema", *args],
        capture_output=True,
        encoding="utf-8",
        env={**environ, **env},
        cwd=tmp_path,
        timeout=30,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout == schema_for(FEDERATED).as_str() + "\n"
    assert '@key(fields: "slug")' in run.stdout
