"""Documents a hostile client would send: none stalls the process, escapes the cost limit, or
stays in memory past the bounds of the caches.

Each attack runs against a real gateway on loopback: a `gateway serve` process where its event
loop and its memory are what the test watches, a gateway of the test's own where the test reads
its caches.
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import os
import threading
import time
import tracemalloc
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from graphql import (
    DocumentNode,
    GraphQLInterfaceType,
    GraphQLObjectType,
    Location,
    NameNode,
    Node,
    OperationDefinitionNode,
    Token,
    get_introspection_query,
    parse,
)
from graphql.language.parser import Parser
from starlette.routing import Route

from bench.load import FAN_OUT, GRIDS, NODE, PACKAGE, PACKAGES, SEARCH
from gateway.app import GraphQLEndpoint, create_app
from gateway.compose import query_limits, schema_for
from gateway.config import Settings
from gateway.documents import document_cache
from gateway.documents.cost import estimate_cost
from gateway.documents.document_cache import OBJECT_BYTES, DocumentCache, lighten
from gateway.documents.limits import document_errors
from gateway.documents.measure import parsed
from gateway.documents.offload import off_the_loop, out_of_process
from gateway.engine import engine
from gateway.engine.fields import fields_of
from gateway.engine.plan import compile_plan
from gateway.internals import graphql_schema
from gateway.schema import GatewaySchema
from tests.fake_upstream import FakeUpstream, serve_in_thread
from tests.observing import post, served
from tests.serving import gateway_serve, served_gateway
from tests.test_amplification import codes

GRAPHQL = graphql_schema(schema_for(Settings()))
LIMITS = query_limits(Settings())


# -- one field repeated: validation compares such fields pairwise ------------------------------

# 29 KB: 1,249 fields in one selection set, which took graphql-core seconds to compare.
REPEATED = "{ " + "categories { totalCount } " * 1249 + "}"
# 50 fields in each of 50 copies of one field: millions of comparisons, in 2,700 tokens.
NESTED = "{ " + ("categories { " + "totalCount " * 50 + "} ") * 50 + "}"
# What /healthz may take while the attack is processed: before, it waited for it, seconds.
HEALTHZ_BOUND = 0.5


@pytest.mark.parametrize(
    ("document", "code"),
    [(REPEATED, "TOO_MANY_SELECTIONS"), (NESTED, "QUERY_TOO_COMPLEX")],
    ids=["repeated", "nested"],
)
def test_a_document_that_took_seconds_to_validate_does_not_stall_the_server(
    embedded_data_home: Path, document: str, code: str
) -> None:
    def attack(spaces: int) -> httpx.Response:
        # Leading spaces make each a document of its own, which no cache knows.
        operation = {"query": " " * spaces + document}
        return httpx.post(f"{origin}/graphql", json=operation, timeout=30)

    with (
        gateway_serve(embedded_data_home) as origin,
        httpx.Client(base_url=origin, timeout=30) as client,
        ThreadPoolExecutor(4) as pool,
    ):
        answers = [pool.submit(attack, spaces) for spaces in range(1, 5)]
        waits = []
        while not all(answer.done() for answer in answers):
            started = time.perf_counter()
            assert client.get("/healthz").status_code == 200
            waits.append(time.perf_counter() - started)
    assert waits
    assert max(waits) < HEALTHZ_BOUND, waits
    for answer in answers:
        body = answer.result().json()
        assert "data" not in body
        assert codes(body) == [code]


# Documents at the token limit that the limits refuse. Each took the server's interpreter some
# 150 ms to parse (twice), and meanwhile its event loop waited for the interpreter's lock at each
# of its system calls; they are read in the documents' process now.
AT_THE_TOKEN_LIMIT = (REPEATED, "{ " + "__typename " * 4990 + "}")


def test_documents_the_limits_refuse_cost_the_server_no_parse(
    upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Counted, not timed: every parse of this process (a gateway of the test's own, on any of
    its threads); the documents' process, a child Python, parses with its own graphql-core.
    (The server's CPU time, measured before, also held its /healthz answers meanwhile: as many
    as the machine's load let the test ask, and on a quiet machine close to the bound.)"""
    parses: list[str] = []
    parse_document = Parser.parse_document

    def counted(parser: Parser) -> DocumentNode:
        parses.append(threading.current_thread().name)
        return parse_document(parser)

    monkeypatch.setattr(Parser, "parse_document", counted)

    def attack(spaces: int) -> list[str]:
        document = AT_THE_TOKEN_LIMIT[spaces % 2]
        return codes(post(client, " " * spaces + document))

    with served(upstream=upstream.base_url) as client, ThreadPoolExecutor(4) as pool:
        # Read on the documents' thread while their process starts, then there.
        deadline = time.monotonic() + 60
        for spaces in itertools.count(100):
            parses.clear()
            assert attack(spaces) == ["TOO_MANY_SELECTIONS"]
            if not parses:
                break
            assert time.monotonic() < deadline, "the documents' process never read one"
        answers = list(pool.map(attack, range(1, 21)))
    assert answers == [["TOO_MANY_SELECTIONS"]] * 20
    assert parses == []


def _cpu_seconds_beside_the_loop(pid: int) -> float:
    """The CPU time a process's threads but its first (the event loop's) have used so far."""
    spent = 0.0
    for task in Path(f"/proc/{pid}/task").iterdir():
        if task.name != str(pid):
            fields = (task / "stat").read_text().rpartition(")")[2].split()
            spent += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return spent


def _thread_seconds(function: Callable[[], object]) -> float:
    """The least CPU time of five runs of `function` on this thread."""
    times = []
    for _ in range(5):
        started = time.thread_time()
        function()
        times.append(time.thread_time() - started)
    return min(times)


def test_a_valid_document_costs_the_server_one_parse_and_no_validation(
    embedded_data_home: Path,
) -> None:
    """Validated in the documents' process as it is read, a valid document that the server has
    not seen costs the server's threads one parse: its validation, some three times as long,
    took the interpreter's lock from the event loop as the aliased searches came (bench/load.py).
    Measured in CPU time of the server's threads besides the loop's, against the time this
    process takes to parse the same document."""
    parse_seconds = _thread_seconds(lambda: parse(SKIPPED))
    validation_seconds = _thread_seconds(lambda: document_errors(GRAPHQL, LIMITS, SKIPPED))
    assert validation_seconds > 2 * parse_seconds  # what the server no longer does
    # A parse, and the round trip to the documents' process; not a validation besides.
    bound = parse_seconds + validation_seconds / 2

    def attack(n: int) -> None:
        # Named apart, so that no cache knows it: the response cache's key ignores whitespace.
        body = post(client, f"query Q{n} " + SKIPPED)
        assert body == {"data": {}}, body

    with (
        served_gateway(embedded_data_home) as server,
        httpx.Client(base_url=server.origin, timeout=30) as client,
    ):
        # Read and validated on the documents' thread while their process starts, then there.
        deadline = time.monotonic() + 60
        for n in itertools.count(100):
            spent = _cpu_seconds_beside_the_loop(server.pid)
            attack(n)
            if _cpu_seconds_beside_the_loop(server.pid) - spent < bound:
                break
            assert time.monotonic() < deadline, "a valid document still costs a validation"
        spent = _cpu_seconds_beside_the_loop(server.pid)
        for n in range(20):
            attack(n)
            assert client.get("/healthz").status_code == 200
        spent = _cpu_seconds_beside_the_loop(server.pid) - spent
    assert spent / 20 < bound, (spent / 20, parse_seconds, validation_seconds)


async def test_a_document_still_waiting_for_validation_ends_at_the_request_timeout(
    upstream: FakeUpstream,
) -> None:
    """The documents' thread and process taken meanwhile, a new document cannot be read: its
    request is answered at its deadline, the loop serving others all along, and its work never
    runs."""
    release = threading.Event()
    busy = asyncio.ensure_future(off_the_loop(release.wait))
    # The process for a second (or the thread after the wait, while the process is starting).
    asleep = asyncio.ensure_future(out_of_process(time.sleep, 1.0))
    app = create_app(Settings(upstream=upstream.base_url, request_timeout=0.5))
    query = {"query": "{ categories { totalCount } }"}
    try:
        with serve_in_thread(app) as origin:
            async with httpx.AsyncClient(base_url=origin, timeout=10) as client:
                waiting = asyncio.ensure_future(client.post("/graphql", json=query))
                assert (await client.get("/healthz")).status_code == 200
                body = (await waiting).json()
                assert body["data"] is None
                assert codes(body) == ["REQUEST_TIMEOUT"]
                release.set()
                await busy
                await asleep
                assert len(_documents(app)) == 0  # its reading was dropped
                body = (await client.post("/graphql", json=query)).json()
                assert body["data"]["categories"]["totalCount"] > 0
    finally:
        release.set()


def test_the_document_limits_hold_for_documents_check() -> None:
    limits = query_limits(Settings())
    [error] = document_errors(GRAPHQL, limits, REPEATED)
    assert error.extensions == {"code": "TOO_MANY_SELECTIONS"}
    assert "1249 fields" in error.message
    [error] = document_errors(GRAPHQL, limits, NESTED)
    assert error.extensions == {"code": "QUERY_TOO_COMPLEX"}
    assert document_errors(GRAPHQL, limits, "{ " + "categories { totalCount } " * 100 + "}") == []


@pytest.mark.parametrize(
    "query",
    [
        "{ %s }" % " ".join(["__typename"] * 201),
        # Inline fragments and fragments add their fields to the selection set they are in.
        "{ ... on Query { %s } %s }" % (" ".join(["__typename"] * 100), "__typename " * 101),
        "{ ...A ...A ...B } fragment A on Query { %s } fragment B on Query { __typename }"
        % " ".join(["__typename"] * 100),
    ],
    ids=["fields", "inline-fragment", "fragments"],
)
def test_a_selection_set_may_hold_max_selections_fields(query: str) -> None:
    limits = query_limits(Settings())
    [error] = document_errors(GRAPHQL, limits, query)
    assert error.extensions == {"code": "TOO_MANY_SELECTIONS"}
    assert "201 fields" in error.message
    assert document_errors(GRAPHQL, limits, query.replace("__typename", "", 1)) == []


# -- introspection counts, and a batch shares one budget ---------------------------------------

ALL_TYPES = (
    "__schema { types { name fields { name args { name type { name ofType { name ofType"
    " { name } } } } } } }"
)


def test_thirty_aliased_introspections_in_ten_operations_are_refused(
    upstream: FakeUpstream,
) -> None:
    operation = "{ " + " ".join(f"a{i}: {ALL_TYPES}" for i in range(30)) + " }"
    with served(upstream=upstream.base_url) as client:
        response = client.post("/graphql", json=[{"query": operation}] * 10)
        assert response.status_code == 200
        assert len(response.content) < 10_000
        for body in response.json():
            assert "data" not in body
            assert codes(body) == ["INTROSPECTION_REPEATED"]
        twice = "{ ...A ...A } fragment A on Query { %s }" % ALL_TYPES
        assert codes(post(client, twice)) == ["INTROSPECTION_REPEATED"]
        types = '{ a: __type(name: "Package") { name } b: __type(name: "Grid") { name } }'
        assert codes(post(client, types)) == ["INTROSPECTION_REPEATED"]
        once = '{ __schema { queryType { name } } __type(name: "Grid") { name } }'
        assert post(client, once)["data"]["__type"] == {"name": "Grid"}


def _largest(sizes: list[int]) -> int:
    return max(sizes, default=0)


def test_introspection_is_estimated_by_the_schema_s_sizes() -> None:
    types = GRAPHQL.type_map.values()
    with_fields = [t for t in types if isinstance(t, GraphQLObjectType | GraphQLInterfaceType)]
    count = len(GRAPHQL.type_map)
    fields = _largest([len(t.fields) for t in with_fields])
    args = _largest([len(field.args) for t in with_fields for field in t.fields.values()])
    directives = len(GRAPHQL.directives)
    directive_args = _largest([len(directive.args) for directive in GRAPHQL.directives])
    expected = {
        "{ __schema { types { name } } }": count,
        "{ __schema { types { fields { name } } } }": count * (1 + fields),
        "{ __schema { types { fields { args { type { ofType { name } } } } } } }": count
        * (1 + fields * (1 + args)),
        '{ __type(name: "Package") { fields { name } } }': fields,
        "{ __schema { directives { args { name } } } }": directives * (1 + directive_args),
        "{ __schema { queryType { name } } }": 0,
    }
    for query, cost in expected.items():
        assert estimate_cost(GRAPHQL, parse(query)) == cost, query


def test_a_batch_shares_one_cost_limit(upstream: FakeUpstream) -> None:
    """Ten full introspections, each well within the limit, are not within it all together."""
    queries = [
        get_introspection_query(descriptions=True).replace(
            "query IntrospectionQuery", f"query Introspection{i}"
        )
        for i in range(10)
    ]
    cost = estimate_cost(GRAPHQL, parse(queries[0]))
    fitting = Settings().max_cost // cost
    assert 1 < fitting < len(queries)
    with served(upstream=upstream.base_url) as client:
        answers = client.post("/graphql", json=[{"query": query} for query in queries]).json()
    answered = [body for body in answers if "errors" not in body]
    refused = [body for body in answers if "errors" in body]
    assert len(answered) == fitting
    for body in refused:
        assert codes(body) == ["QUERY_TOO_COSTLY"]
        assert "for the batch's operations before it" in body["errors"][0]["message"]


@pytest.mark.parametrize(
    "options",
    [
        {},  # graphql-js's defaults: Apollo's tools
        {"input_value_deprecation": True, "schema_description": True},  # GraphiQL
        {  # graphql-codegen, every option on
            "descriptions": True,
            "specified_by_url": True,
            "directive_is_repeatable": True,
            "schema_description": True,
            "input_value_deprecation": True,
            "one_of": True,
        },
    ],
    ids=["apollo", "graphiql", "codegen"],
)
def test_the_introspection_of_real_clients_passes_the_default_limits(
    upstream: FakeUpstream, options: dict[str, bool]
) -> None:
    with served(upstream=upstream.base_url) as client:
        body = post(client, get_introspection_query(**options))
    assert "errors" not in body
    assert len(body["data"]["__schema"]["types"]) == len(GRAPHQL.type_map)


# -- parsed documents, kept by weight ----------------------------------------------------------

_PACKAGE = (
    "id databaseId title slug gridCount lastUpdated lastFetched repoUrl pypiVersion created"
    " modified repoForks repoDescription pypiUrl documentationUrl repoWatchers participants"
)
_CATEGORY = "id databaseId title slug description titlePlural showPypi"
_GRID = "id databaseId title slug description isLocked header"
# 30 aliases of a package with its category, a grid, and a package of each: some 3,000 tokens, a
# valid document of 2 MB once parsed, that costs 90.
BIG = "{ %s }" % " ".join(
    f"p{i}: package(id: 1) {{ {_PACKAGE} category {{ {_CATEGORY} packages(first: 1)"
    f" {{ nodes {{ {_PACKAGE} }} }} }} grids(first: 1) {{ nodes {{ {_GRID} packages(first: 1)"
    f" {{ nodes {{ {_PACKAGE} }} }} }} }} }}"
    for i in range(30)
)

# BIG with each alias skipped: valid, with nothing to execute.
SKIPPED = BIG.replace("package(id: 1) {", "package(id: 1) @skip(if: true) {")


def _endpoint(app: Any) -> GraphQLEndpoint:
    route = app.routes[0]
    assert isinstance(route, Route) and isinstance(route.app, GraphQLEndpoint)
    return route.app


def _documents(app: Any) -> DocumentCache:
    schema = _endpoint(app).schema
    assert isinstance(schema, GatewaySchema)
    return schema.documents


def test_parsed_documents_are_kept_within_their_bounds(upstream: FakeUpstream) -> None:
    """Their bounds (2 MiB each) reached in a few documents."""
    app = create_app(Settings(upstream=upstream.base_url, response_cache_ttl=0))
    endpoint = _endpoint(app)
    documents = _documents(app)
    assert documents.max_bytes == document_cache.MAX_BYTES
    weight = lighten(BIG, parse(BIG))
    count = 2 * documents.max_bytes // weight  # distinct documents worth twice the bound
    with serve_in_thread(app) as origin, httpx.Client(base_url=origin, timeout=30) as client:
        for spaces in range(count):
            body = post(client, " " * spaces + BIG)
            assert "errors" not in body
            assert documents.size <= documents.max_bytes
            assert endpoint.engine.size <= engine.MAX_BYTES
        kept = len(documents), documents.size
        assert 0 < kept[0] < count
        # Refused documents are never kept, whatever refused them.
        for refused in ("{ nope }", REPEATED, "{ " + "__typename " * 4990 + "}", NESTED):
            assert codes(post(client, refused))
        assert (len(documents), documents.size) == kept


def test_the_issue_s_documents_leave_the_memory_as_it_was(embedded_data_home: Path) -> None:
    """Distinct 55 KB documents of `__typename` repeated: each kept 3.6 MB."""
    with (
        gateway_serve(embedded_data_home) as origin,
        httpx.Client(base_url=origin, timeout=30) as client,
    ):
        rss = _resident(client)
        for spaces in range(20):
            body = post(client, " " * spaces + "{ " + "__typename " * 4990 + "}")
            assert codes(body) == ["TOO_MANY_SELECTIONS"]
        assert _resident(client) - rss < 36 * 2**20  # 20 such documents kept: 72 MB


def _resident(client: httpx.Client) -> float:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith("process_resident_memory_bytes "):
            return float(line.split()[1])
    raise AssertionError("no process_resident_memory_bytes")


@pytest.mark.parametrize(
    "text",
    [
        "{ " + "__typename " * 1000 + "}",  # a node per token: the heaviest there is
        "{ " + "a " * 1000 + "}",
        BIG,
        get_introspection_query(descriptions=True),
        "query(%s) { __typename }" % " ".join(f"$v{i}: [Int!] = [1, 2, 3]" for i in range(50)),
        '{ search(query: "%s") { title } }' % ("x" * 50_000),
    ],
    ids=["typename", "short-names", "big", "introspection", "variables", "long-string"],
)
def test_a_document_weighs_no_more_than_its_estimate(text: str) -> None:
    """As the cache keeps it: made light."""
    gc.collect()
    tracemalloc.start()
    try:
        document, weight = _kept(text)
        gc.collect()
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert held <= weight < 1.5 * held + len(text)
    assert lighten(text, document) == weight  # as light as it gets


def _kept(text: str) -> tuple[DocumentNode, int]:
    """`text` parsed as the gateway parses it, made light as its caches keep it, and its
    weight."""
    document = parsed(text, max_tokens=10_000)
    return document, lighten(text, document)


def test_a_parsed_document_is_freed_without_the_garbage_collector() -> None:
    """Under attack documents leave the caches by the thousand: each one a cycle (its tokens,
    linked both ways) would wait for a full collection, which scans everything the process
    keeps (gateway/observability/stalls.py)."""
    gc.collect()
    gc.disable()
    try:
        document = parsed(BIG, max_tokens=10_000)
        del document
        assert gc.collect() == 0
        document, _ = _kept(BIG)
        del document
        assert gc.collect() == 0
    finally:
        gc.enable()


def _reachable(document: DocumentNode) -> list[object]:
    """The objects `document` holds: its nodes, their locations and tuples, and what those
    hold of the language's kinds (tokens, sources)."""
    found: dict[int, object] = {}
    stack: list[object] = [document]
    while stack:
        item = stack.pop()
        if id(item) in found:
            continue
        found[id(item)] = item
        for referent in gc.get_referents(item):
            if isinstance(referent, Node | Location | Token | tuple | list):
                stack.append(referent)
    return list(found.values())


def test_a_kept_document_holds_no_token_and_few_objects() -> None:
    """Tokens were 3.7 objects a token kept, for the garbage collector to go through, that
    nothing read after parsing; now a field is its node and its location, and a name written
    a thousand times is one node."""
    text = "{ " + "categories { totalCount } " * 1000 + "}"
    document, weight = _kept(text)
    held = _reachable(document)
    assert not any(isinstance(item, Token) for item in held)
    assert len([item for item in held if gc.is_tracked(item)]) < 4 * 2_000 + 10
    assert sum(isinstance(item, NameNode) for item in held) == 2
    # Its weight counts what it holds.
    names = len("categories") + len("totalCount")
    assert weight == len(text) + len(held) * OBJECT_BYTES + names


def test_a_kept_document_s_errors_point_where_they_did(upstream: FakeUpstream) -> None:
    """Errors of execution point at fields and variables, whose locations a kept document
    keeps: the second time a document comes it is the kept one, its errors the same."""
    lines = [
        "query($n: Int!, $first: Int) {",
        "  categories(first: $n) { totalCount }",
        "  b: packages(",
        "    first: $first) { totalCount } c: packages(first: -1) { totalCount }",
        "}",
    ]
    text = "\n".join(lines)
    expected = [
        ({"n": 1, "first": -2}, {"line": 3, "column": 3}),  # b
        ({"n": 1, "first": 2}, {"line": 4, "column": lines[3].index("c:") + 1}),
        ({"first": 2}, {"line": 1, "column": lines[0].index("$n") + 1}),
    ]
    app = create_app(Settings(upstream=upstream.base_url, response_cache_ttl=0))
    with serve_in_thread(app) as origin, httpx.Client(base_url=origin, timeout=30) as client:
        for variables, location in expected:
            answers = []
            for _ in range(2):
                answers.append(post(client, text, variables=variables))
                assert _documents(app).get(text) is not None
            assert [error["locations"] for error in answers[0]["errors"]] == [[location]]
            assert answers[1] == answers[0]


def test_the_cache_lets_the_least_recently_used_go_first() -> None:
    texts = [f"{{ a{i}: __typename }}" for i in range(4)]
    weight = _kept(texts[0])[1]
    cache = DocumentCache(max_bytes=3 * weight)
    for text in texts[:3]:
        cache.keep(text, *_kept(text))
    assert cache.get(texts[0]) is not None  # used: the second is now the oldest
    cache.keep(texts[3], *_kept(texts[3]))
    assert [cache.get(text) is not None for text in texts] == [True, False, True, True]
    assert cache.size == 3 * weight
    heavy = "{ %s }" % " ".join(f"a{i}: __typename" for i in range(10))
    cache.keep(heavy, *_kept(heavy))  # heavier than the whole cache: not kept
    assert cache.get(heavy) is None
    assert len(cache) == 3


def test_the_documents_kept_are_few_objects_for_the_garbage_collector() -> None:
    """A full collection goes through every object the process keeps, all else stopped: the
    documents cache at its bound, filled with the heaviest documents there are (a node per
    token), keeps few enough for such a pause to stay short (about a microsecond each)."""
    cache = DocumentCache()
    gc.collect()
    before = len(gc.get_objects())
    for i in itertools.count():
        text = "{ " + f"a{i}: __typename " + "__typename " * 2_000 + "}"
        document, weight = _kept(text)
        cache.keep(text, document, weight)
        if cache.size + weight > cache.max_bytes:
            break
    gc.collect()
    # 200,000 at the 32 MiB it was, 50,000 at 8 MiB, each token kept
    assert len(gc.get_objects()) - before < 15_000


@pytest.mark.parametrize("query", [PACKAGE, FAN_OUT, PACKAGES, GRIDS, SEARCH, NODE])
def test_a_plan_is_few_objects_for_the_garbage_collector(query: str) -> None:
    """Each field compiled is a handful of objects: its leaves' completions, closures of
    several objects each, are made once for all plans."""
    schema = schema_for(Settings())
    fields = fields_of(schema)
    document, _ = _kept(query)
    [operation] = document.definitions
    assert isinstance(operation, OperationDefinitionNode)
    compile_plan(GRAPHQL, fields, document, operation, frozenset())  # its completions made
    gc.collect()
    before = len(gc.get_objects())
    plan = compile_plan(GRAPHQL, fields, document, operation, frozenset())
    gc.collect()
    assert plan is not None
    assert len(gc.get_objects()) - before <= 7 * plan.fields  # 9 to 12 a field, each its own
