"""Whatever a client sends, the gateway answers in time with a 2xx or a 4xx, never a 5xx.

Hypothesis writes the requests: valid documents built from the schema itself (random fields,
arguments, aliases, fragments and variables), invalid ones (random text, broken braces, deep
nesting, wide selections, huge strings, variables of the wrong type, control characters), random
JSON bodies, batches and GET query strings. The gateway is uvicorn over the fake APIv4 with the
default limits. Every answer must be a GraphQL response: an object with `data` and/or `errors`,
each error with a `message` and an `extensions.code`, never INTERNAL_SERVER_ERROR (a list of them
for a batch). Refusals at the
HTTP level are either such JSON or, from Strawberry, one short line of plain text.

The examples are derandomized, so CI runs the same ones every time.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from graphql import (
    GraphQLField,
    GraphQLInputType,
    GraphQLInterfaceType,
    GraphQLList,
    GraphQLNamedType,
    GraphQLNonNull,
    GraphQLObjectType,
    get_named_type,
    get_nullable_type,
    is_composite_type,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.app import create_app
from gateway.compose import schema_for
from gateway.config import Settings
from gateway.internals import graphql_schema
from tests.fake_upstream import FakeUpstream, serve_in_thread

TIME_LIMIT = 15.0  # seconds any answer may take: the request timeout is 10
MAX_TEXT_REFUSAL = 200  # characters of a plain-text refusal
MAX_URL_QUERY = 1_000  # characters of a GET parameter: httpx refuses a URL over 64 KB, encoded

GRAPHQL = graphql_schema(schema_for(Settings()))
BASE = settings(
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def examples(count: int) -> settings:
    return settings(BASE, max_examples=count)


ACCEPTS = st.sampled_from(
    [
        None,
        "application/json",
        "application/graphql-response+json",
        "application/graphql-response+json, application/json;q=0.9",
        "*/*",
    ]
)


@pytest.fixture(scope="module")
def client(fake_upstream: FakeUpstream) -> Iterator[httpx.Client]:
    fake_upstream.reset()
    settings = Settings(upstream=fake_upstream.base_url)
    with (
        serve_in_thread(create_app(settings)) as origin,
        httpx.Client(base_url=origin, timeout=TIME_LIMIT) as client,
    ):
        yield client
    fake_upstream.reset()


def _check_result(result: object) -> None:
    """One GraphQL response: `data` and/or `errors`, every error with a message and a code."""
    assert isinstance(result, dict), result
    assert set(result) <= {"data", "errors", "extensions"}, result
    assert "data" in result or result.get("errors"), result
    for error in result.get("errors", ()):
        assert isinstance(error["message"], str) and error["message"], error
        assert isinstance(error["extensions"]["code"], str), error
        assert error["extensions"]["code"] != "INTERNAL_SERVER_ERROR", error  # a 500 in disguise


def _check(response: httpx.Response, elapsed: float) -> None:
    assert elapsed < TIME_LIMIT
    assert 200 <= response.status_code < 500, response.text[:1000]
    kind = response.headers.get("content-type", "")
    if kind.startswith("text/plain"):
        assert response.status_code >= 400
        # A value of the request quoted back (an unknown operation name) is quoted short.
        assert len(response.text) <= MAX_TEXT_REFUSAL, response.text[:1000]
        assert "\n" not in response.text
        return
    assert kind in ("application/json", "application/graphql-response+json"), kind
    body = response.json()
    if isinstance(body, list):  # a batch
        assert response.status_code == 200
        for result in body:
            _check_result(result)
        return
    _check_result(body)
    if response.status_code != 200:
        assert "data" not in body


def _send(client: httpx.Client, method: str, **kwargs: Any) -> httpx.Response:
    started = time.monotonic()
    response = client.request(method, "/graphql", **kwargs)
    _check(response, time.monotonic() - started)
    return response


def _post(client: httpx.Client, body: object, accept: str | None) -> httpx.Response:
    """`body` as JSON, lone surrogates escaped (httpx's `json=` could not encode them)."""
    headers = {"content-type": "application/json"}
    if accept is not None:
        headers["accept"] = accept
    content = json.dumps(body).encode()
    return _send(client, "POST", content=content, headers=headers)


# Valid documents, built from the schema.

INTS = st.one_of(st.integers(0, 5), st.integers(-3, 130))
TEXT = st.text(max_size=20)
# Mostly real: Category 1, Grid 1, Package 2, then an unknown package, and two that are not ids.
GLOBAL_IDS = st.sampled_from(
    ["Q2F0ZWdvcnk6MQ==", "R3JpZDox", "UGFja2FnZToy", "UGFja2FnZTo5OTk5OQ==", "bm9wZQ==", "!"]
)
# Cursors of offsets 0 and 5, and one that is not a cursor.
CURSORS = st.sampled_from(["YXJyYXljb25uZWN0aW9uOjA=", "YXJyYXljb25uZWN0aW9uOjU=", "x"])
VARIABLE_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**40), 2**40),
    st.floats(allow_nan=False),
    TEXT,
    st.lists(st.integers(), max_size=3),
    st.dictionaries(TEXT, st.integers(), max_size=2),
)


def _literal(type_: GraphQLInputType, name: str) -> st.SearchStrategy[tuple[str, object]]:
    """A value of `type_` for argument `name`, as GraphQL source and as a JSON value."""
    nullable = get_nullable_type(type_)
    if isinstance(nullable, GraphQLList):
        items = st.lists(_literal(nullable.of_type, name), max_size=4)
        return items.map(
            lambda pairs: ("[%s]" % ", ".join(p[0] for p in pairs), [p[1] for p in pairs])
        )
    if nullable.name == "Int":
        return INTS.map(lambda n: (str(n), n))
    values = GLOBAL_IDS if name in ("id", "ids") else CURSORS if name == "after" else TEXT
    return values.map(lambda text: (json.dumps(text), text))


class _Document:
    """One operation being drawn: its variables and named fragments grow as its fields do."""

    def __init__(self, draw: st.DrawFn) -> None:
        self.draw = draw
        self.variables: dict[str, tuple[str, object]] = {}
        self.fragments: list[str] = []
        self.aliases = 0

    def source(self, depth: int) -> str:
        assert GRAPHQL.query_type is not None
        selection = self.selections(GRAPHQL.query_type, depth)
        header = "query Q"
        if self.variables:
            declared = ", ".join(f"${name}: {kind}" for name, (kind, _) in self.variables.items())
            header += f"({declared})"
        return " ".join([header, selection, *self.fragments])

    def selections(self, parent: GraphQLNamedType, depth: int) -> str:
        draw = self.draw
        if isinstance(parent, GraphQLInterfaceType):
            possible = draw(st.sampled_from(GRAPHQL.get_possible_types(parent)))
            inner = self.selections(possible, depth)
            return "{ id ... on %s %s }" % (possible.name, inner)
        assert isinstance(parent, GraphQLObjectType)
        names = sorted(parent.fields)
        chosen = draw(st.lists(st.sampled_from(names), min_size=1, max_size=4, unique=True))
        parts = [self.field(name, parent.fields[name], depth) for name in chosen]
        if draw(st.integers(0, 9)) == 0:
            parts.append("__typename")
        body = "{ %s }" % " ".join(parts)
        if draw(st.integers(0, 5)) == 0:  # as a named fragment
            name = f"F{len(self.fragments)}"
            self.fragments.append(f"fragment {name} on {parent.name} {body}")
            return "{ ...%s }" % name
        return body

    def field(self, name: str, field: GraphQLField, depth: int) -> str:
        draw = self.draw
        self.aliases += 1
        alias = draw(st.sampled_from(["", "", f"{name}{self.aliases}: ", "a: "]))  # `a` may clash
        # Lookups take exactly one of `id` and `slug`, mostly.
        one = draw(st.sampled_from(["id", "id", "slug", "both"]))
        arguments = []
        for arg_name, arg in field.args.items():
            required = isinstance(arg.type, GraphQLNonNull)
            if "slug" in field.args and arg_name in ("id", "slug"):
                if one not in (arg_name, "both"):
                    continue
            elif not required and draw(st.booleans()):
                continue
            source, value = draw(_literal(arg.type, arg_name))
            if draw(st.integers(0, 3)) == 0:  # through a variable, sometimes of the wrong type
                variable = f"v{len(self.variables)}"
                if draw(st.integers(0, 4)) == 0:
                    value = draw(VARIABLE_VALUES)
                self.variables[variable] = (str(arg.type), value)
                source = f"${variable}"
            arguments.append(f"{arg_name}: {source}")
        text = alias + name + (f"({', '.join(arguments)})" if arguments else "")
        named = get_named_type(field.type)
        if is_composite_type(named):
            text += " " + ("{ __typename }" if depth <= 0 else self.selections(named, depth - 1))
        return text


@st.composite
def operations(draw: st.DrawFn) -> tuple[str, dict[str, object]]:
    document = _Document(draw)
    source = document.source(draw(st.integers(0, 4)))
    return source, {name: value for name, (_, value) in document.variables.items()}


@examples(300)
@given(operation=operations(), accept=ACCEPTS, get=st.integers(0, 4))
def test_valid_documents_from_the_schema(
    client: httpx.Client, operation: tuple[str, dict[str, object]], accept: str | None, get: int
) -> None:
    source, variables = operation
    if get == 0:
        params = {"query": source, "variables": json.dumps(variables)}
        _send(client, "GET", params=params, headers={"accept": accept or "*/*"})
    else:
        _post(client, {"query": source, "variables": variables}, accept)


# Invalid documents.

NAMES = st.sampled_from(["categories", "nodes", "packages", "x", "__typename", "package(id: 1)"])
HUGE_STRINGS = st.builds(lambda char, size: char * size, st.characters(), st.integers(0, 10**6))
BROKEN = st.one_of(
    st.text(),
    st.text(alphabet="{}()[]:$@!.,\"'#\\ \n\t\x00", max_size=200),
    st.builds(
        lambda o, c: "{" * o + " __typename " + "}" * c, st.integers(0, 50), st.integers(0, 50)
    ),
    # Deep nesting, of fields and of values.
    st.builds(
        lambda n, name: "{ " + f"{name} {{ " * n + "id" + " }" * n + " }",
        st.integers(1, 500),
        NAMES,
    ),
    st.builds(
        lambda n: "{ search(query: %s) { title } }" % ("[" * n + "1" + "]" * n), st.integers(1, 500)
    ),
    st.builds(
        lambda n: "{ " + "... on Query { " * n + "__typename" + " }" * n + " }", st.integers(1, 500)
    ),
    # Wide selections, aliased or not.
    st.builds(lambda n: "{ %s }" % " ".join(["__typename"] * n), st.integers(1, 6000)),
    st.builds(
        lambda n: "{ %s }" % " ".join(f"a{i}: __typename" for i in range(n)), st.integers(1, 100)
    ),
    st.builds(
        lambda n: (
            "{ %s }" % " ".join(f"p{i}: packages(first: 100) {{ totalCount }}" for i in range(n))
        ),
        st.integers(1, 40),
    ),
    # Huge strings, through the lexer and the body limit (into an upstream URL: see
    # test_text_too_long_for_an_upstream_url), and text of every kind inside a string.
    HUGE_STRINGS.map(lambda text: "{ node(id: %s) { id } }" % json.dumps(text)),
    HUGE_STRINGS.map(lambda text: "{ __typename(x: %s) }" % json.dumps(text)),
    st.text().map(lambda text: "{ search(query: %s) { title } }" % json.dumps(text)),
    st.text().map(lambda text: '{ package(slug: "%s") { title } }' % text),
    # Fragments spread many times over.
    st.builds(
        lambda n, k: (
            "{ ...F0 } "
            + " ".join(
                f"fragment F{i} on Query {{ {' '.join([f'...F{i + 1}'] * k)} }}" for i in range(n)
            )
            + f" fragment F{n} on Query {{ __typename }}"
        ),
        st.integers(1, 40),
        st.integers(1, 3),
    ),
)


@examples(500)
@given(
    query=BROKEN,
    variables=st.one_of(
        st.none(), st.dictionaries(st.text(max_size=5), VARIABLE_VALUES, max_size=3)
    ),
    operation_name=st.one_of(st.none(), st.text(max_size=10), st.integers()),
    accept=ACCEPTS,
)
def test_invalid_documents(
    client: httpx.Client,
    query: str,
    variables: dict[str, object] | None,
    operation_name: object,
    accept: str | None,
) -> None:
    _post(client, {"query": query, "variables": variables, "operationName": operation_name}, accept)


@examples(100)
@given(
    variables=st.dictionaries(st.sampled_from(["id", "n", "q", "ids"]), VARIABLE_VALUES),
    accept=ACCEPTS,
)
def test_variables_of_every_type(
    client: httpx.Client, variables: dict[str, object], accept: str | None
) -> None:
    query = """query($id: Int, $n: Int, $q: String!, $ids: [ID!]!) {
        category(id: $id) { packages(first: $n) { totalCount } }
        search(query: $q) { title }
        nodes(ids: $ids) { id }
    }"""
    _post(client, {"query": query, "variables": variables}, accept)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(["query", "variables", "operationName", "extensions", "x"])
            | st.text(max_size=5),
            children,
            max_size=4,
        )
    ),
    max_leaves=20,
)


@examples(200)
@given(body=JSON, accept=ACCEPTS)
def test_random_json_bodies(client: httpx.Client, body: object, accept: str | None) -> None:
    _post(client, body, accept)


@examples(100)
@given(
    content=st.binary(max_size=300),
    content_type=st.sampled_from(
        [
            "application/json",
            "application/json; charset=latin-1",
            "text/plain",
            "multipart/form-data",
            "",
        ]
    ),
)
def test_random_bytes(client: httpx.Client, content: bytes, content_type: str) -> None:
    _send(client, "POST", content=content, headers={"content-type": content_type})


@examples(100)
@given(
    batch=st.lists(
        st.one_of(
            operations().map(lambda op: {"query": op[0], "variables": op[1]}),
            BROKEN.map(lambda query: {"query": query}),
            JSON,
        ),
        max_size=12,
    ),
    accept=ACCEPTS,
)
def test_batches(client: httpx.Client, batch: list[object], accept: str | None) -> None:
    _post(client, batch, accept)


@examples(200)
@given(
    query=st.one_of(
        operations().map(lambda op: op[0]),
        BROKEN.map(lambda query: query[:MAX_URL_QUERY]),
        st.none(),
    ),
    extra=st.dictionaries(
        st.sampled_from(["variables", "operationName", "extensions"]) | st.text(max_size=5),
        st.one_of(
            st.text(max_size=100), JSON.map(json.dumps).map(lambda text: text[:MAX_URL_QUERY])
        ),
        max_size=3,
    ),
    accept=ACCEPTS,
)
def test_random_get_query_strings(
    client: httpx.Client, query: str | None, extra: dict[str, str], accept: str | None
) -> None:
    params = extra if query is None else {**extra, "query": query}
    _send(client, "GET", params=params, headers={"accept": accept or "*/*"})


@pytest.mark.parametrize(
    ("field", "codes"),
    [("search(query: $text) { title }", ["BAD_USER_INPUT"]), ("package(slug: $text) { id }", [])],
)
def test_text_too_long_for_an_upstream_url(
    client: httpx.Client, field: str, codes: list[str]
) -> None:
    """Found by the fuzzer: text within the body limit but too long for a URL (64 KB).

    A search that long is refused; a slug that long names nothing, so it is null.
    """
    query = "query($text: String!) { %s }" % field
    response = _post(client, {"query": query, "variables": {"text": "x" * 70_000}}, None)
    body = response.json()
    assert [error["extensions"]["code"] for error in body.get("errors", [])] == codes
    if not codes:
        assert body["data"] == {"package": None}
