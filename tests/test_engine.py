"""The execution engine answers exactly as graphql-core does, and batches one level at a time.

The differential test: Hypothesis writes documents from the schema itself (every field and
argument, aliases, named and inline fragments, `@skip`/`@include` with literals and variables,
variables with and without defaults, values of the wrong type, `__typename`, unknown ids and
slugs, bad cursors and node ids, `first` and `last` past their limits, `after` and `before`,
filters and orders), and each runs through the schema with the engine and through the schema
without it (graphql-core's executor), on the REST backend over the fake APIv4, on SQLite and on
PostgreSQL. The whole JSON responses must be equal to the byte, errors (messages, locations,
paths, codes) included. The examples are derandomized, so CI runs the same ones every time.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import orjson
import pytest
from graphql import (
    GraphQLBoolean,
    GraphQLField,
    GraphQLID,
    GraphQLInputType,
    GraphQLInt,
    GraphQLInterfaceType,
    GraphQLList,
    GraphQLNamedType,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLOutputType,
    GraphQLScalarType,
    GraphQLSchema,
    GraphQLString,
    get_named_type,
    graphql_sync,
    is_composite_type,
)
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from prometheus_client import REGISTRY
from strawberry.relay.utils import to_base64
from strawberry.types import ExecutionResult

from gateway.app import create_app
from gateway.backends import open_backend
from gateway.compose import query_limits
from gateway.config import Settings
from gateway.engine.engine import Engine
from gateway.engine.leaves import ItemError, completion
from gateway.errors import response_body
from gateway.internals import graphql_schema
from gateway.loaders.backend import Backend
from gateway.loaders.loaders import Loaders
from gateway.loaders.records import Order
from gateway.loaders.sql.backend import SqlBackend
from gateway.loaders.sql.engine import create_engine
from gateway.loaders.sql.features import inspect_database
from gateway.loaders.sql.kept import Kept
from gateway.schema import GatewaySchema, build_schema
from gateway.schema.context import Context
from gateway.schema.pagination import cursor_of, shape_of
from tests.databases import (
    SMALL,
    Database,
    database,
    load,
    pg_schema,
    postgres_database,
    sqlite_database,
    statements,
)
from tests.fake_upstream import FakeUpstream, FaultKind, serve_in_thread

__all__ = ["database", "pg_schema", "postgres_database", "sqlite_database"]

SETTINGS = Settings()
LIMITS = query_limits(SETTINGS)
GRAPHQL_CORE = build_schema(LIMITS)  # graphql-core's executor answers every operation
ENGINE = Engine(SETTINGS.max_cost)
PLANNED = build_schema(LIMITS, extensions=[ENGINE])  # the engine answers what its plans cover
GRAPHQL = graphql_schema(GRAPHQL_CORE)


# -- values --------------------------------------------------------------------------------

PACKAGES, GRIDS, CATEGORIES = SMALL.packages, SMALL.grids, SMALL.categories
GLOBAL_IDS = [
    to_base64("Package", PACKAGES[1].id),
    to_base64("Grid", GRIDS[1].id),
    to_base64("Category", CATEGORIES[0].id),
    to_base64("Package", 99999),  # unknown
    to_base64("Package", "abc"),  # not a number: null
    to_base64("Foo", 1),  # no such type: null
    "bm9wZQ==",  # "nope": not a global id
    "!",  # not base64
]
INT_IDS = [PACKAGES[0].id, PACKAGES[5].id, GRIDS[1].id, CATEGORIES[1].id, 99999, -1, 0]
SLUGS = [
    PACKAGES[0].slug,
    PACKAGES[7].slug,
    GRIDS[1].slug,  # the quirks grid
    GRIDS[3].slug,
    CATEGORIES[0].slug,
    "no-such-slug",
    "",
    "x" * 120,  # longer than any slug
]
FIRSTS = [0, 1, 2, 3, 5, 20, 100, None]
BAD_FIRSTS = [101, -1]
BY_TITLE = shape_of(None, Order("title"))
CURSORS = [  # keyset cursors: the key of the edge they name
    cursor_of((PACKAGES[3].id,)),
    cursor_of((GRIDS[1].id,)),
    cursor_of((1,)),
    cursor_of((99999,)),
    cursor_of((PACKAGES[1].title, PACKAGES[1].id)),  # a grid's packages, by title
    cursor_of((PACKAGES[1].title, PACKAGES[1].id), BY_TITLE),  # of packages ordered by title
    cursor_of((GRIDS[0].title, GRIDS[0].id), shape_of(Order("title"))),  # lists by title
    cursor_of(("x", 1, 2)),  # a key of no list's layout
    "x",  # not a cursor
    to_base64("other", 1),  # not one of ours
]
SEARCHES = ["forms", "django", "admin tools", "", "zzzzqq", "x" * 1001, "a\x00b"]
INSTANTS = ["2024-01-01T00:00:00Z", "2020-06-01T12:00:00-04:00", "2024-01-01T00:00:00", "x"]
ORDER_FIELDS = {
    "PackageOrder": ["TITLE", "REPO_WATCHERS", "REPO_FORKS", "LAST_UPDATED", "CREATED", "ID"],
    "GridOrder": ["TITLE", "PACKAGE_COUNT", "ID"],
    "CategoryOrder": ["TITLE", "PACKAGE_COUNT", "ID"],
}
WRONG = st.sampled_from([None, True, 3, 2**40, "x", [1], {"a": 1}, 1.5])

Value = tuple[str, object]  # as GraphQL source, and as JSON


def _text(value: str) -> Value:
    return json.dumps(value), value


def _order(type_name: str) -> st.SearchStrategy[Value]:
    fields = st.sampled_from(ORDER_FIELDS[type_name])
    directions = st.sampled_from([None, "ASC", "DESC"])

    def literal(field: str, direction: str | None) -> Value:
        if direction is None:
            return "{field: %s}" % field, {"field": field}
        return "{field: %s, direction: %s}" % (field, direction), {
            "field": field,
            "direction": direction,
        }

    return st.builds(literal, fields, directions)


@st.composite
def _filter(draw: Callable[..., Any]) -> Value:
    parts: list[tuple[str, Value]] = []
    if draw(st.booleans()):
        parts.append(("category", _text(draw(st.sampled_from(["apps", "others", "nope"])))))
    if draw(st.booleans()):
        slugs = draw(st.lists(st.sampled_from([g.slug for g in GRIDS[:4]] + ["nope"]), max_size=3))
        parts.append(("grids", (json.dumps(slugs), slugs)))
    if draw(st.booleans()):
        parts.append(("query", _text(draw(st.sampled_from(["django", "a", "x" * 1001, ""])))))
    if draw(st.booleans()):
        released = draw(st.booleans())
        parts.append(("hasPypiRelease", (json.dumps(released), released)))
    for name in ("updatedAfter", "updatedBefore"):
        if draw(st.integers(0, 3)) == 0:
            parts.append((name, _text(draw(st.sampled_from(INSTANTS)))))
    if draw(st.booleans()):
        least = draw(st.sampled_from([0, 10, 500, None]))
        parts.append(("minWatchers", (json.dumps(least), least)))
    source = "{%s}" % ", ".join(f"{name}: {value[0]}" for name, value in parts)
    return source, {name: value[1] for name, value in parts}


def _argument(field: str, name: str, type_: GraphQLInputType) -> st.SearchStrategy[Value]:
    named = get_named_type(type_).name
    if name == "ids":
        return st.lists(st.sampled_from(GLOBAL_IDS), max_size=4).map(
            lambda ids: (json.dumps(ids), ids)
        )
    if name == "id":
        if named == "ID":
            return st.sampled_from(GLOBAL_IDS).map(_text)
        return st.sampled_from(INT_IDS).map(lambda n: (str(n), n))
    if name == "slug":
        return st.sampled_from(SLUGS).map(_text)
    if name in ("first", "last"):
        firsts = st.sampled_from(FIRSTS) | st.sampled_from(BAD_FIRSTS)
        return firsts.map(lambda n: ("null" if n is None else str(n), n))
    if name in ("after", "before"):
        return (st.sampled_from(CURSORS[:4]) | st.sampled_from(CURSORS)).map(_text)
    if name == "query":
        return st.sampled_from(SEARCHES).map(_text)
    if name == "filter":
        return _filter()
    if name == "orderBy":
        return _order(named)
    raise AssertionError(f"no values for {field}({name})")


# -- documents -----------------------------------------------------------------------------


class _Writer:
    """One operation being drawn: its variables and named fragments grow with its fields."""

    def __init__(self, draw: Callable[..., Any]) -> None:
        self.draw = draw
        self.declared: list[str] = []
        self.values: dict[str, object] = {}
        self.fragments: list[str] = []
        self.count = 0

    def operation(self) -> tuple[str, dict[str, object]]:
        depth = self.draw(st.integers(0, 3))
        body = self.selections(GRAPHQL.query_type, depth)  # type: ignore[arg-type]
        header = "query Q" + (f"({', '.join(self.declared)})" if self.declared else "")
        return " ".join([header, body, *self.fragments]), self.values

    def variable(self, type_name: str, value: object, default: str | None = None) -> str:
        """A new variable of `type_name` for an argument: sometimes with a default, sometimes
        left unsent, sometimes sent with a value of another type."""
        name = f"v{len(self.declared)}"
        draw = self.draw
        if default is not None and draw(st.booleans()):
            type_name = f"{type_name.rstrip('!')} = {default}"
        self.declared.append(f"${name}: {type_name}")
        sent = draw(st.integers(0, 29))
        if sent == 0:
            self.values[name] = draw(WRONG)
        elif sent > 1:
            self.values[name] = value
        return f"${name}"

    def condition(self) -> str:
        """Sometimes `@skip` or `@include`, by a literal or a variable (which has a default,
        or is sent)."""
        draw = self.draw
        kind = draw(st.integers(0, 7))
        if kind > 1:
            return ""
        directive = "skip" if kind == 0 else "include"
        value = draw(st.booleans())
        if draw(st.booleans()):
            return f" @{directive}(if: {json.dumps(value)})"
        name = f"v{len(self.declared)}"
        if draw(st.booleans()):
            self.declared.append(f"${name}: Boolean = {json.dumps(value)}")
        else:
            self.declared.append(f"${name}: Boolean!")
            self.values[name] = value
        return f" @{directive}(if: ${name})"

    def selections(self, parent: GraphQLNamedType, depth: int) -> str:
        draw = self.draw
        if isinstance(parent, GraphQLInterfaceType):
            parts = ["id"] if draw(st.booleans()) else []
            possible = GRAPHQL.get_possible_types(parent)
            for type_ in draw(st.lists(st.sampled_from(possible), min_size=1, unique=True)):
                inner = self.selections(type_, depth)
                parts.append(f"... on {type_.name}{self.condition()} {inner}")
            if draw(st.integers(0, 4)) == 0:
                parts.append("__typename")
            return "{ %s }" % " ".join(parts)
        assert isinstance(parent, GraphQLObjectType)
        names = sorted(parent.fields)
        chosen = draw(st.lists(st.sampled_from(names), min_size=1, max_size=5, unique=True))
        parts = [self.field(name, parent.fields[name], depth) for name in chosen]
        if draw(st.integers(0, 5)) == 0:  # a field twice: merged into one
            parts.append(draw(st.sampled_from(parts)))
        if draw(st.integers(0, 4)) == 0:
            parts.append("__typename")
        cut = draw(st.integers(0, len(parts) * 4))
        if cut < len(parts):  # some of it in an inline fragment
            inline = "... on %s%s { %s }" % (parent.name, self.condition(), " ".join(parts[cut:]))
            parts = [*parts[:cut], inline]
        body = "{ %s }" % " ".join(parts)
        if draw(st.integers(0, 4)) == 0:  # as a named fragment, maybe spread twice
            name = f"F{len(self.fragments)}"
            self.fragments.append(f"fragment {name} on {parent.name} {body}")
            spreads = draw(st.integers(1, 2))
            return "{ %s }" % " ".join(f"...{name}{self.condition()}" for _ in range(spreads))
        return body

    def field(self, name: str, field: GraphQLField, depth: int) -> str:
        draw = self.draw
        self.count += 1
        alias: str = draw(st.sampled_from(["", "", "", f"a{self.count}: "]))
        arguments = []
        # Lookups mostly take exactly one of `id` and `slug`.
        one = draw(st.sampled_from(["id", "id", "slug", "slug", "slug", "both", "none"]))
        for arg_name, arg in field.args.items():
            required = isinstance(arg.type, GraphQLNonNull)
            if "slug" in field.args and arg_name in ("id", "slug"):
                if one not in (arg_name, "both"):
                    continue
            elif not required and draw(st.booleans()):
                continue
            source, value = draw(_argument(name, arg_name, arg.type))
            if draw(st.integers(0, 4)) == 0:
                source = self.variable(str(arg.type), value, default=source)
            arguments.append(f"{arg_name}: {source}")
        text = alias + name + (f"({', '.join(arguments)})" if arguments else "")
        text += self.condition()
        named = get_named_type(field.type)
        if not is_composite_type(named):
            return text
        if named.name.endswith(("Connection", "Edge")) or named.name == "PageInfo":
            return f"{text} {self.selections(named, depth)}"  # a connection's parts: no level
        if depth > 0:
            return f"{text} {self.selections(named, depth - 1)}"
        return text + " { __typename }"


@st.composite
def operations(draw: Callable[..., Any]) -> tuple[str, dict[str, object]]:
    return _Writer(draw).operation()


# -- the backends --------------------------------------------------------------------------


@pytest.fixture(scope="module")
async def rest(fake_upstream: FakeUpstream) -> AsyncIterator[Callable[[], Backend]]:
    fake_upstream.reset()
    async with open_backend(Settings(upstream=fake_upstream.base_url)) as backend:
        yield backend


async def _answer(schema: GatewaySchema, backend: Backend, query: str, variables: Any) -> bytes:
    context = Context(Loaders(backend))
    result = await schema.execute(query, variable_values=variables, context_value=context)
    return orjson.dumps(response_body(result))


async def _known(backend: Backend, query: str, variables: Any) -> bytes | None:
    """The answer to a document the engine has seen validated, without Strawberry's pipeline
    (as the HTTP view asks for it); None when the engine leaves it to Strawberry."""
    context = Context(Loaders(backend))
    result = await ENGINE.execute_known(query, None, variables, context)
    if result is None:
        return None
    return orjson.dumps(response_body(ExecutionResult(data=result.data, errors=result.errors)))


def _executed() -> tuple[float, float]:
    """How many operations each path answered so far: the plan's, graphql-core's."""
    return tuple(  # type: ignore[return-value]
        REGISTRY.get_sample_value("gateway_execution_total", {"path": path}) or 0.0
        for path in ("plan", "graphql")
    )


@settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(operation=operations())
async def test_the_engine_answers_as_graphql_core_does(
    rest: Callable[[], Backend],
    sqlite_database: Database,
    postgres_database: Database,
    operation: tuple[str, dict[str, object]],
) -> None:
    query, variables = operation
    executed = _executed()
    for name, backend in (
        ("rest", rest),
        ("sqlite", sqlite_database.backend),
        ("postgres", postgres_database.backend),
    ):
        expected = await _answer(GRAPHQL_CORE, backend(), query, variables)
        answered = await _answer(PLANNED, backend(), query, variables)
        assert answered == expected, f"{name}\n{query}\n{variables}\n{expected!r}\n{answered!r}"
        known = await _known(backend(), query, variables)
        assert known in (None, expected), f"{name}\n{query}\n{variables}\n{expected!r}\n{known!r}"
    body = orjson.loads(answered)
    plan, graphql = (after - before for after, before in zip(_executed(), executed, strict=True))
    event("by the plan" if plan else "by graphql-core" if graphql else "not executed")
    event("data" if body.get("data") else "null data" if "data" in body else "no data")
    for code in sorted({error["extensions"]["code"] for error in body.get("errors", ())}):
        event(code)


_KEPT: dict[object, Kept] = {}
_BUDGET = 2**24  # bytes


@settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(operation=operations())
async def test_kept_answers_change_no_answer(
    sqlite_database: Database,
    postgres_database: Database,
    operation: tuple[str, dict[str, object]],
) -> None:
    # The database backend's kept answers (kept.py), on both paths, give the whole response
    # graphql-core gives without them: the stores are the examples' (what one operation read
    # answers the next), and each operation runs twice.
    query, variables = operation
    for name, loaded in (("sqlite", sqlite_database), ("postgres", postgres_database)):
        expected = await _answer(GRAPHQL_CORE, loaded.backend(), query, variables)
        kept = _KEPT.setdefault(loaded.engine, Kept(_BUDGET))

        def backend(loaded: Database = loaded, kept: Kept = kept) -> Backend:
            return SqlBackend(loaded.engine, loaded.features, kept)

        for _ in range(2):
            answered = await _answer(PLANNED, backend(), query, variables)
            assert answered == expected, f"{name}\n{query}\n{variables}\n{expected!r}\n{answered!r}"
            assert await _answer(GRAPHQL_CORE, backend(), query, variables) == expected
            known = await _known(backend(), query, variables)
            assert known in (None, expected), f"{name}\n{query}\n{variables}\n{known!r}"


# Relations and lists asked for in several windows each, one after another on one store: a
# window, a page or a total kept must answer only the very same window, page or total again.
_KEPT_DOCUMENTS = [
    """{ packages(first: 7) { totalCount nodes { slug category { slug } grids(first: 2) {
        totalCount nodes { slug packages(first: 3) { nodes { slug } } } } } } }""",
    """{ packages(first: 3, orderBy: {field: TITLE, direction: DESC}) { nodes { slug
        grids(first: 1) { nodes { slug } } } } }""",
    """{ packages(last: 4, filter: {hasPypiRelease: true}) { totalCount pageInfo {
        hasNextPage hasPreviousPage endCursor } nodes { slug grids { totalCount } } } }""",
    """{ grids(first: 5) { nodes { slug packageCount packages(first: 4) { totalCount
        nodes { slug category { title } grids(first: 5) { nodes { slug } } } } } } }""",
    """{ grids(first: 5) { nodes { a: packages(first: 2, orderBy: {field: REPO_WATCHERS}) {
        nodes { slug } } packages(last: 1) { nodes { slug } } } } }""",
    """{ grids(first: 5) { nodes { packages(first: 4, filter: {minWatchers: 10}) {
        totalCount nodes { slug } } } } }""",
    """{ categories { nodes { slug packageCount packages(first: 3) { totalCount
        nodes { slug grids(first: 1) { totalCount nodes { slug } } } } } } }""",
    """{ categories(orderBy: {field: PACKAGE_COUNT, direction: DESC}) { nodes { slug
        packages(first: 1, orderBy: {field: CREATED, direction: DESC}) { nodes { slug } } } } }""",
    """{ packages(first: 2, after: "bm90IGEgY3Vyc29y") { nodes { slug } } }""",
]


async def test_kept_windows_answer_only_themselves(database: Database) -> None:
    kept = Kept(_BUDGET)
    for query in _KEPT_DOCUMENTS * 2:
        expected = await _answer(GRAPHQL_CORE, database.backend(), query, {})
        backend = SqlBackend(database.engine, database.features, kept)
        assert await _answer(PLANNED, backend, query, {}) == expected, query
        assert b'"errors"' not in expected or "after" in query, expected


# -- batching, fallbacks, failures ---------------------------------------------------------

FAN_OUT = """query($slug: String!) { grid(slug: $slug) { packages(first: 100) { nodes {
    category { slug } grids(first: 10) { nodes { slug packages(first: 3) { totalCount } } }
} } } }"""


async def test_a_plan_asks_one_statement_per_loader_and_level(database: Database) -> None:
    """The grid, its packages' window, their categories and their grids' windows, and those
    grids' windows of packages: five statements, however many packages the grid has."""
    loaded = database
    query, variables = FAN_OUT, {"slug": "quirks-edge-cases"}
    executed = _executed()
    async with statements(loaded.engine) as sent:
        answered = await _answer(PLANNED, loaded.backend(), query, variables)
    assert _executed()[0] == executed[0] + 1  # by the plan
    assert len(sent) == 5, sent
    assert answered == await _answer(GRAPHQL_CORE, loaded.backend(), query, variables)


class _Asked(SqlBackend):
    """A `SqlBackend` that records the batches asked of it, not answered at hand."""

    def __init__(self, loaded: Database, kept: Kept) -> None:
        super().__init__(loaded.engine, loaded.features, kept)
        self.asked: list[str] = []

    async def _kept(self, method: str, keys: Any, read: Any) -> Any:
        self.asked.append(method)
        return await super()._kept(method, keys, read)


async def test_a_warm_postgres_request_answers_every_level_at_hand(
    postgres_database: Database,
) -> None:
    """Its change stamp read before the first level (`Backend.ready`), a request whose answers
    are all kept asks no batch of the backend: one statement, the stamp. A document that
    reads nothing from the backend reads no stamp either."""
    loaded = postgres_database
    query = """query($slug: String!) { package(slug: $slug) { slug category { slug }
        grids(first: 10) { nodes { slug } } } }"""
    variables = {"slug": PACKAGES[1].slug}
    expected = await _answer(GRAPHQL_CORE, loaded.backend(), query, variables)
    kept = Kept(_BUDGET)
    assert await _answer(PLANNED, _Asked(loaded, kept), query, variables) == expected
    backend = _Asked(loaded, kept)
    async with statements(loaded.engine) as sent:
        await asyncio.sleep(0)  # asyncpg tells its statements at the loop's next turn
        sent.clear()
        assert await _answer(PLANNED, backend, query, variables) == expected
        assert backend.asked == []
        assert await _answer(PLANNED, _Asked(loaded, kept), "{ __typename }", {}) == (
            b'{"data":{"__typename":"Query"}}'
        )
        await asyncio.sleep(0)
    assert len(sent) == 1 and "pg_current_snapshot" in sent[0], sent


async def test_leaves_failing_on_many_objects_fail_as_on_graphql_core(tmp_path: Path) -> None:
    """Values no backend should hold (an Int past 32 bits, in a field and in a list) on many
    objects of one level: the plan, which fills a leaf for all of them at once, says which
    failed, and where, as graphql-core does."""
    odd = dataclasses.replace(
        SMALL,
        packages=tuple(
            dataclasses.replace(row, repo_watchers=2**40, commits_over_52w=(1, 2**40))
            if index % 3 == 1
            else row
            for index, row in enumerate(SMALL.packages)
        ),
    )
    engine = create_engine(f"sqlite:///{tmp_path / 'odd.sqlite3'}")
    await load(engine, odd)
    try:
        loaded = Database(engine, await inspect_database(engine))
        for query in (
            "{ packages(first: 30) { nodes { title repoWatchers } } }",
            "{ packages(first: 30) { nodes { slug commitsOver52 } } }",
            '{ grid(slug: "quirks-edge-cases") { title packages(first: 30) { nodes {'
            " title repoWatchers } } } }",
        ):
            expected = await _answer(GRAPHQL_CORE, loaded.backend(), query, {})
            assert b"Int cannot represent non 32-bit signed integer value" in expected
            assert await _answer(PLANNED, loaded.backend(), query, {}) == expected, query
    finally:
        await engine.dispose()


async def test_what_plans_do_not_cover_runs_on_graphql_core(fake_upstream: FakeUpstream) -> None:
    """Introspection, and federation's fields, are graphql-core's to answer; the metric counts
    which path answered each operation, over HTTP as anywhere."""
    fake_upstream.reset()
    settings = Settings(upstream=fake_upstream.base_url, federation=True, response_cache_ttl=0)
    introspection = "{ __schema { queryType { name } } package(id: 1) { title } }"
    service = "{ _service { sdl } }"
    plain = "{ package(id: 1) { title } __typename }"
    with (
        serve_in_thread(create_app(settings)) as origin,
        httpx.Client(base_url=origin, timeout=30) as client,
    ):
        for query, path in ((plain, 0), (introspection, 1), (service, 1), (plain, 0)):
            before = _executed()
            body = client.post("/graphql", json={"query": query}).json()
            assert "errors" not in body, body
            after = _executed()
            assert after[path] == before[path] + 1 and after[1 - path] == before[1 - path]


FILTERED = "packages(first: 2, filter: { updatedAfter: %s }) { totalCount nodes { slug } }"


@pytest.mark.parametrize("literal", ['"not a date"', "5", "true", '"9999-99-99"'])
async def test_a_datetime_that_is_not_one_is_bad_user_input_on_every_path(
    rest: Callable[[], Backend], literal: str
) -> None:
    """In the document, as a variable's default or as a variable: graphql-core's executor, the
    plan, and the plan of a document seen before answer the same, to the byte."""
    good = "2020-01-01T00:00:00Z"
    cases: list[tuple[str, dict[str, object]]] = [
        ("{ %s }" % (FILTERED % literal), {}),
        ("query($d: DateTime = %s) { %s }" % (literal, FILTERED % "$d"), {}),
        ("query Q($d: DateTime) { %s }" % (FILTERED % "$d"), {"d": json.loads(literal)}),
    ]
    for query, variables in cases:
        expected = await _answer(GRAPHQL_CORE, rest(), query, variables)
        assert await _answer(PLANNED, rest(), query, variables) == expected
        codes = [error["extensions"]["code"] for error in orjson.loads(expected)["errors"]]
        assert codes == ["BAD_USER_INPUT"], expected
    # Once the engine knows the document (a good value), it answers a bad one as graphql-core.
    query, variables = cases[2]
    assert b"errors" not in await _answer(PLANNED, rest(), query, {"d": good})
    assert await _known(rest(), query, variables) == expected


@pytest.mark.parametrize("junk", ["!!", "\n", "=="])
async def test_an_id_or_cursor_with_junk_after_its_base64_is_malformed_on_every_path(
    rest: Callable[[], Backend], junk: str
) -> None:
    global_id, cursor = to_base64("Package", PACKAGES[1].id), cursor_of((PACKAGES[3].id,))
    query = (
        "query Q($id: ID!, $after: String) { node(id: $id) { id } nodes(ids: [$id]) { id }"
        " packages(first: 2, after: $after) { nodes { slug } } }"
    )
    clean = {"id": global_id, "after": cursor}
    assert b"errors" not in await _answer(PLANNED, rest(), query, clean)
    for name in clean:
        variables = {**clean, name: clean[name] + junk}
        expected = await _answer(GRAPHQL_CORE, rest(), query, variables)
        assert await _answer(PLANNED, rest(), query, variables) == expected
        assert await _known(rest(), query, variables) == expected
        codes = {error["extensions"]["code"] for error in orjson.loads(expected)["errors"]}
        assert codes == {"BAD_USER_INPUT"}, expected


FAILING = """{
  package(slug: "%s") { title category { title } grids(first: 3) { totalCount nodes { title } } }
  grids(first: 2) { totalCount nodes { slug packageCount } }
  search(query: "django") { title grid { title } package { slug } }
  nodes(ids: ["%s", "%s"]) { id ... on Grid { title } }
}""" % (PACKAGES[0].slug, to_base64("Grid", GRIDS[0].id), to_base64("Package", PACKAGES[2].id))


@pytest.mark.parametrize("fault", ["malformed", "503"])
@pytest.mark.parametrize("prefix", ["grids/", "packages/", "search/", "categories/"])
async def test_failures_of_the_upstream_fail_the_same_fields(
    fake_upstream: FakeUpstream, fault: FaultKind, prefix: str
) -> None:
    """Each path over a cold cache of its own, the upstream failing one kind of resource."""
    answers = []
    for schema in (GRAPHQL_CORE, PLANNED):
        fake_upstream.reset()
        fake_upstream.fail(f"/api/v4/{prefix}", fault, times=1000)
        settings = Settings(upstream=fake_upstream.base_url, upstream_retries=0)
        async with open_backend(settings) as backend:
            answers.append(await _answer(schema, backend(), FAILING, {}))
    fake_upstream.reset()
    assert b"UPSTREAM_ERROR" in answers[0]
    core, planned = (orjson.loads(answer) for answer in answers)
    assert planned["data"] == core["data"]
    # Where a failed non-null field nulls the whole data, graphql-core also reports the errors of
    # fields under it that happened to complete first (completion order); the plan reports the
    # errors of the levels it ran. Every error the plan reports is graphql-core's, to the letter.
    assert planned["errors"] and all(error in core["errors"] for error in planned["errors"])
    if core["data"] is not None:
        assert answers[1] == answers[0]


# -- leaves ----------------------------------------------------------------------------------

INT, TEXT, FLAG = GraphQLNonNull(GraphQLInt), GraphQLNonNull(GraphQLString), GraphQLBoolean


@pytest.mark.parametrize(
    ("type_", "value"),
    [
        (INT, 7),
        (INT, True),
        (INT, 3.0),
        (INT, 2**31),
        (INT, -(2**31) - 1),
        (INT, "12"),
        (INT, None),
        (GraphQLInt, None),
        (TEXT, "text"),
        (TEXT, 12),
        (TEXT, False),
        (TEXT, None),
        (FLAG, True),
        (FLAG, 0),
        (FLAG, "yes"),
        (GraphQLNonNull(GraphQLID), 5),
        (GraphQLNonNull(GraphQLList(INT)), (1, 2, 3)),
        (GraphQLNonNull(GraphQLList(INT)), [1, True, 2.0]),
        (GraphQLNonNull(GraphQLList(INT)), (1, 2**31)),
        (GraphQLNonNull(GraphQLList(INT)), (1, None)),
        (GraphQLNonNull(GraphQLList(INT)), 5),
        (GraphQLNonNull(GraphQLList(TEXT)), ("a", 1)),
        (GraphQLList(TEXT), None),
    ],
)
def test_a_leaf_completes_as_graphql_core_completes_it(
    type_: GraphQLOutputType, value: Any
) -> None:
    """Odd values (no backend holds them) convert, or fail, exactly as on graphql-core's path."""
    query_type = GraphQLObjectType("Query", {"f": GraphQLField(type_, resolve=lambda *_: value)})
    expected = graphql_sync(GraphQLSchema(query_type), "{ f }")
    completes = completion(type_, "Query.f")
    assert completes is not None
    try:
        answer = value if type(value) is completes.native else completes.complete(value)
    except ItemError as error:
        assert expected.errors is not None
        assert [(e.message, e.path) for e in expected.errors] == [
            (str(error.error), ["f", error.index])
        ]
    except Exception as error:
        assert expected.errors is not None
        assert [(e.message, e.path) for e in expected.errors] == [(str(error), ["f"])]
    else:
        assert expected.errors is None
        assert expected.data == {"f": answer}


NEW_YORK = ZoneInfo("America/New_York")
REPEATED = datetime(2024, 11, 3, 1, 30, tzinfo=NEW_YORK)  # an hour New York lives twice


@pytest.mark.parametrize(
    "value",
    [
        REPEATED,
        REPEATED.replace(fold=1),  # equal to the one before, another offset
        REPEATED.astimezone(UTC),
        datetime(2018, 8, 3, 4, 16, 50, tzinfo=timezone(timedelta(hours=-4))),
        datetime(2026, 2, 15, 9, 5, 26, 776238, tzinfo=timezone(timedelta(hours=-5))),
        datetime(1850, 1, 1, tzinfo=NEW_YORK),  # local mean time: an offset with seconds
        datetime(2018, 8, 3, 4, 16, 50),  # naive
        None,
        "2018-08-03",
    ],
)
def test_a_datetime_completes_as_its_scalar_formats_it_each_time(value: Any) -> None:
    """DateTime texts are kept by value: equal instants of another zone or fold keep theirs."""
    scalar = GRAPHQL.get_type("DateTime")
    assert isinstance(scalar, GraphQLScalarType)
    types: list[GraphQLOutputType] = [scalar, GraphQLNonNull(scalar)]
    for type_ in types:
        field = GraphQLField(type_, resolve=lambda *_: value)
        query_type = GraphQLObjectType("Query", {"f": field})
        expected = graphql_sync(GraphQLSchema(query_type), "{ f }")
        completes = completion(type_, "Query.f")
        assert completes is not None
        for _ in range(2):
            try:
                answer = completes.complete(value)
            except Exception as error:
                assert expected.errors is not None
                assert [e.message for e in expected.errors] == [str(error)]
            else:
                assert expected.errors is None
                assert expected.data == {"f": answer}


def test_a_list_is_checked_again_unless_it_cannot_change() -> None:
    completes = completion(GraphQLNonNull(GraphQLList(INT)), "Query.f")
    assert completes is not None
    kept = (1, 2, 3)
    assert completes.complete(kept) == completes.complete(kept) == [1, 2, 3]
    changing = [1, 2]
    assert completes.complete(changing) == [1, 2]
    changing.append(2**31)
    with pytest.raises(ItemError) as raised:
        completes.complete(changing)
    assert raised.value.index == 2
