"""The ASGI app served by uvicorn, as a GraphQL-over-HTTP client meets it.

The gateway listens on a real socket and talks over real HTTP to the fake APIv4, so what is
checked here is what goes over the wire: status codes, content types, bodies and error codes.
"""

from __future__ import annotations

import gc
import hashlib
import json
import socket
import time
import types
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from gateway.app import create_app
from gateway.config import Settings
from gateway.engine import engine
from gateway.http.connection_limits import HeadBoundedProtocol
from gateway.observability import stalls
from tests.fake_upstream import FakeUpstream, FaultKind, serve_in_thread

# Short, so that the "hang" fault costs half a second rather than the default ten.
UPSTREAM_TIMEOUT = 0.5

BROWSER_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
GRAPHQL_RESPONSE = "application/graphql-response+json"

TWO_OPERATIONS = """
query PackageById($id: Int!) { package(id: $id) { databaseId title } }
query CategoryCount { categories { totalCount } }
"""


@pytest.fixture(scope="module")
def origin(fake_upstream: FakeUpstream) -> Iterator[str]:
    """One gateway per module: starting uvicorn (and its lifespan) per test would be slow."""
    settings = Settings(
        upstream=fake_upstream.base_url, upstream_timeout=UPSTREAM_TIMEOUT, warm_catalogue=False
    )
    with serve_in_thread(create_app(settings)) as origin:
        yield origin


@pytest.fixture
def client(origin: str, upstream: FakeUpstream) -> Iterator[httpx.Client]:
    """A client of the gateway; depends on `upstream` so that each test starts without faults."""
    with httpx.Client(base_url=origin, timeout=10) as client:
        yield client


@pytest.fixture
def own_client(upstream: FakeUpstream) -> Iterator[httpx.Client]:
    """A client of a gateway of the test's own, for tests that make the upstream fail: the
    process-wide cache and circuit breaker would remember it in the module's gateway."""
    settings = Settings(
        upstream=upstream.base_url, upstream_timeout=UPSTREAM_TIMEOUT, warm_catalogue=False
    )
    with (
        serve_in_thread(create_app(settings)) as origin,
        httpx.Client(base_url=origin, timeout=10) as client,
    ):
        yield client


def bad_request(response: httpx.Response, status: int = 400) -> str:
    """The reason of a request refused before any operation ran, checked to be a GraphQL error
    coded BAD_REQUEST with no `data`, at `status`, in one line."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] in ("application/json", GRAPHQL_RESPONSE)
    body = response.json()
    [error] = body.pop("errors")
    assert body == {} and error["extensions"] == {"code": "BAD_REQUEST"}, error
    assert isinstance(error["message"], str) and "\n" not in error["message"]
    return error["message"]


def _data(response: httpx.Response) -> Any:
    """The `data` of a successful GraphQL response, after checking that it is one."""
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert "errors" not in body, body
    return body["data"]


def test_post_runs_the_operation_named_in_the_request(
    own_client: httpx.Client, upstream: FakeUpstream
) -> None:
    """A gateway of its own: a cached categories page would hide a second operation."""
    client = own_client
    row = upstream.dataset.packages[len(upstream.dataset.packages) // 2]
    response = client.post(
        "/graphql",
        json={
            "query": TWO_OPERATIONS,
            "variables": {"id": row.id},
            "operationName": "PackageById",
        },
    )
    assert _data(response) == {"package": {"databaseId": row.id, "title": row.title}}
    # Only the chosen operation ran: the other one would have listed categories.
    assert not any(path.startswith("/api/v4/categories/") for path in upstream.requests)

    response = client.post(
        "/graphql", json={"query": TWO_OPERATIONS, "operationName": "CategoryCount"}
    )
    assert _data(response) == {"categories": {"totalCount": len(upstream.dataset.categories)}}


def test_post_with_an_unknown_operation_name_is_a_bad_request(client: httpx.Client) -> None:
    response = client.post("/graphql", json={"query": TWO_OPERATIONS, "operationName": "Nope"})
    assert bad_request(response) == "Unknown operation named 'Nope'."


# Answered as an unknown operation name is; Strawberry alone would run the first operation.
NAME_REQUIRED = "Must provide operation name if query contains multiple operations."
INTROSPECTIONS = "query T { __typename } query S { __schema { queryType { name } } }"


@pytest.mark.parametrize("accept", ["application/json", "application/graphql-response+json"])
@pytest.mark.parametrize(
    ("document", "name"), [(TWO_OPERATIONS, "CategoryCount"), (INTROSPECTIONS, "S")]
)
def test_several_operations_and_no_operation_name_is_a_bad_request_however_they_come(
    client: httpx.Client, accept: str, document: str, name: str
) -> None:
    """By POST, GET, in a batch, with an APQ hash; by the engine's plans (`TWO_OPERATIONS`) or
    graphql-core's executor (introspection); a document new or known (run by name first)."""
    headers = {"accept": accept}
    alone = {"query": "{ categories { totalCount } }"}
    persisted = {"version": 1, "sha256Hash": hashlib.sha256(document.encode()).hexdigest()}
    for _ in range(2):
        refusals = [
            client.post("/graphql", json={"query": document}, headers=headers),
            client.get("/graphql", params={"query": document}, headers=headers),
            client.post("/graphql", json=[alone, {"query": document}], headers=headers),
            client.post(
                "/graphql",
                json={"query": document, "extensions": {"persistedQuery": persisted}},
                headers=headers,
            ),
        ]
        unknown = client.post(
            "/graphql", json={"query": document, "operationName": "Nope"}, headers=headers
        )
        for response in refusals:
            assert response.headers["content-type"] == unknown.headers["content-type"]
            assert bad_request(response) == NAME_REQUIRED
        assert bad_request(unknown) == "Unknown operation named 'Nope'."
        named = client.post("/graphql", json={"query": document, "operationName": name})
        assert _data(named)
    # Refused, the document was not kept under its hash.
    found = client.post("/graphql", json={"extensions": {"persistedQuery": persisted}})
    assert found.json()["errors"][0]["extensions"]["code"] == "PERSISTED_QUERY_NOT_FOUND"
    # A document of one operation needs no name.
    single = client.post("/graphql", json=alone, headers=headers)
    assert single.status_code == 200 and "data" in single.json()


def test_get_runs_a_query_with_variables(client: httpx.Client, upstream: FakeUpstream) -> None:
    row = upstream.dataset.grids[-1]
    response = client.get(
        "/graphql",
        params={
            "query": "query($id: Int!) { grid(id: $id) { slug title } }",
            "variables": json.dumps({"id": row.id}),
        },
    )
    assert _data(response) == {"grid": {"slug": row.slug, "title": row.title}}


def test_get_cannot_run_a_mutation(client: httpx.Client) -> None:
    """GET must be safe: Strawberry refuses mutations before it looks at the schema."""
    response = client.get("/graphql", params={"query": "mutation { anything }"})
    assert bad_request(response) == "mutations are not allowed when using GET"


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ("{ package(id: 1) { title }", "GRAPHQL_PARSE_FAILED"),
        ("{ categories { totalCount } nope }", "GRAPHQL_VALIDATION_FAILED"),
        ("{ package(id: 1) { title(first: 1) } }", "GRAPHQL_VALIDATION_FAILED"),
        ("subscription { categories { totalCount } }", "GRAPHQL_VALIDATION_FAILED"),
    ],
)
def test_get_with_an_invalid_document_is_a_json_error(
    client: httpx.Client, upstream: FakeUpstream, query: str, code: str
) -> None:
    response = client.get("/graphql", params={"query": query})
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert "data" not in body  # a request error: the operation never ran
    assert [error["extensions"]["code"] for error in body["errors"]] == [code]
    assert upstream.count == 0  # an invalid document never reaches the upstream

    strict = client.get(
        "/graphql",
        params={"query": query},
        headers={"accept": "application/graphql-response+json, application/json;q=0.9"},
    )
    assert strict.status_code == 400
    assert strict.headers["content-type"] == "application/graphql-response+json"
    assert strict.json() == body


BAD_INSTANTS = ['"not a date"', "5", "true", '"9999-99-99"', '"2024-01-01T25:00:00Z"', "[1]"]


@pytest.mark.parametrize("literal", BAD_INSTANTS)
def test_a_datetime_that_is_not_one_is_bad_user_input_however_it_comes(
    client: httpx.Client, upstream: FakeUpstream, caplog: pytest.LogCaptureFixture, literal: str
) -> None:
    """In the document, as a variable's default or as a variable: the client's mistake, never an
    internal error (a literal once was one, logged with its traceback)."""
    field = "packages(filter: { updatedAfter: %s }) { totalCount }"
    requests: list[dict[str, Any]] = [
        {"query": "{ %s }" % (field % literal)},
        {"query": "query($d: DateTime = %s) { %s }" % (literal, field % "$d")},
        {
            "query": "query($d: DateTime) { %s }" % (field % "$d"),
            "variables": {"d": json.loads(literal)},
        },
    ]
    for request in requests:
        response = client.post(
            "/graphql", json=request, headers={"accept": "application/graphql-response+json"}
        )
        assert response.status_code == 400, response.text
        body = response.json()
        assert "data" not in body
        assert [error["extensions"]["code"] for error in body["errors"]] == ["BAD_USER_INPUT"]
        assert "DateTime" in body["errors"][0]["message"]
    assert upstream.count == 0
    assert "Traceback" not in caplog.text and "unexpected error" not in caplog.text


def test_a_plan_that_raises_is_an_internal_error_as_on_graphql_core(
    client: httpx.Client, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A bug in the engine (its run forced to raise) is answered the same whether the plan runs
    inside Strawberry's pipeline (a new document) or on its own (the same document again): a
    coded INTERNAL_SERVER_ERROR, logged with its traceback, never a bare 500."""

    async def raises(*args: object) -> None:
        raise RuntimeError("a bug in the plan's run")

    monkeypatch.setattr(engine, "run", raises)
    query = "query PlanRaises { categories { totalCount } }"
    answers = [client.post("/graphql", json={"query": query}) for _ in range(2)]
    for response in answers:
        assert response.status_code == 200, response.text
        assert response.json() == {
            "errors": [
                {
                    "message": "Internal server error",
                    "extensions": {"code": "INTERNAL_SERVER_ERROR"},
                }
            ]
        }
    logged = [
        record for record in caplog.records if record.getMessage() == "unexpected error at None"
    ]
    assert len(logged) == 2 and all(record.exc_info for record in logged)


@pytest.mark.parametrize("junk", ["!!", "\n", "==", " "])
def test_an_id_or_cursor_with_junk_after_its_base64_is_malformed(
    client: httpx.Client, junk: str
) -> None:
    """Base64 decoders skip what is not base64 unless told not to: `UGFja2FnZToy!!` was read as
    `UGFja2FnZToy`. Only what the gateway wrote is an id or a cursor."""
    page = _data(
        client.post(
            "/graphql",
            json={"query": "{ packages(first: 2) { nodes { id } pageInfo { endCursor } } }"},
        )
    )["packages"]
    global_id, cursor = page["nodes"][0]["id"], page["pageInfo"]["endCursor"]
    requests = {
        "query($v: ID!) { node(id: $v) { id } }": (global_id, "node id"),
        "query($v: ID!) { nodes(ids: [$v]) { id } }": (global_id, "node id"),
        "query($v: String) { packages(first: 1, after: $v) { totalCount } }": (
            cursor,
            "not a valid cursor",
        ),
    }
    for query, (value, message) in requests.items():
        _data(client.post("/graphql", json={"query": query, "variables": {"v": value}}))
        spoiled = {"query": query, "variables": {"v": value + junk}}
        body = client.post("/graphql", json=spoiled).json()
        [error] = body["errors"]
        assert error["extensions"]["code"] == "BAD_USER_INPUT", body
        assert message in error["message"]


def test_graphql_response_media_type_keeps_field_errors_at_200(
    own_client: httpx.Client, upstream: FakeUpstream
) -> None:
    client = own_client
    upstream.faults["/api/v4/grids/"] = "503"
    response = client.post(
        "/graphql",
        json={"query": "{ grid(id: 1) { title } categories { totalCount } }"},
        headers={"accept": "application/graphql-response+json"},
    )
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/graphql-response+json"
    body = response.json()
    assert body["data"]["grid"] is None and body["data"]["categories"]["totalCount"] == 4
    assert [error["extensions"]["code"] for error in body["errors"]] == ["UPSTREAM_ERROR"]


@pytest.mark.parametrize(
    ("content", "content_type", "status", "text"),
    [
        (b'{"query": "{ __typename }"', "application/json", 400, "Unable to parse"),
        (b"", "application/json", 400, "Unable to parse"),
        (b"\xff\xfe{}", "application/json", 400, "Unable to parse"),
        # Nested past any parser's recursion limit: a 400, not a RecursionError and a 500.
        (b"[" * 5000, "application/json", 400, "Unable to parse"),
        # Strawberry calls `.get` on whatever JSON it finds: a scalar must not become a 500.
        (b"null", "application/json", 400, "must be a JSON object"),
        (b"3", "application/json", 400, "must be a JSON object"),
        (b'"{ __typename }"', "application/json", 400, "must be a JSON object"),
        # A batch holds at least one operation, each an object (tests/test_limits.py: batches).
        (b"[]", "application/json", 400, "at least one operation"),
        (b'[{"query": "{ __typename }"}, 1]', "application/json", 400, "must be a JSON object"),
        (b'[{"query": ["{ __typename }"]}]', "application/json", 400, "`query` must be a string"),
        (b"{}", "application/json", 400, "No GraphQL query found"),
        (b'{"query": 1}', "application/json", 400, "`query` must be a string"),
        (b'{"query": "{ __typename }", "variables": [1]}', "application/json", 400, "`variables`"),
        (b'{"query": "{ __typename }", "variables": "{}"}', "application/json", 400, "`variables`"),
        # Any parameter of the wrong JSON type, whatever layer would meet it first (the response
        # cache's key, for `operationName`).
        (
            b'{"query": "{ __typename }", "operationName": {}}',
            "application/json",
            400,
            "`operationName` must be a string",
        ),
        (
            b'{"query": "{ __typename }", "operationName": []}',
            "application/json",
            400,
            "`operationName` must be a string",
        ),
        (
            b'{"query": "{ __typename }", "operationName": 1}',
            "application/json",
            400,
            "`operationName` must be a string",
        ),
        (
            b'{"query": "{ __typename }", "extensions": []}',
            "application/json",
            400,
            "`extensions` must be an object",
        ),
        (
            b'[{"query": "{ __typename }", "operationName": {}}]',
            "application/json",
            400,
            "`operationName` must be a string",
        ),
        (
            b'[{"query": "{ __typename }", "variables": 1}]',
            "application/json",
            400,
            "`variables` must be an object",
        ),
        (
            b'[{"query": "{ __typename }", "extensions": "x"}]',
            "application/json",
            400,
            "`extensions` must be an object",
        ),
    ],
)
def test_post_with_a_bad_body_is_a_bad_request(
    client: httpx.Client, content: bytes, content_type: str, status: int, text: str
) -> None:
    response = client.post("/graphql", content=content, headers={"content-type": content_type})
    assert text in bad_request(response, status)
    # The same refusal, as the GraphQL-over-HTTP media type when the client prefers it.
    headers = {"content-type": content_type, "accept": GRAPHQL_RESPONSE}
    preferred = client.post("/graphql", content=content, headers=headers)
    assert preferred.headers["content-type"] == GRAPHQL_RESPONSE
    assert bad_request(preferred, status) == bad_request(response, status)


@pytest.mark.parametrize("content_type", ["text/plain", "application/xml", "image/png"])
def test_post_with_an_unsupported_content_type_is_a_client_error(
    client: httpx.Client, content_type: str
) -> None:
    response = client.post(
        "/graphql", content=b'{"query": "{ __typename }"}', headers={"content-type": content_type}
    )
    assert bad_request(response) == "Unsupported content type"


@pytest.mark.parametrize(
    ("params", "text"),
    [
        ({"variables": "[]"}, "`variables` must be an object"),
        ({"variables": "{bad"}, "Unable to parse the `variables` parameter as JSON"),
        ({"extensions": "3"}, "`extensions` must be an object"),
        ({"extensions": "{bad"}, "Unable to parse the `extensions` parameter as JSON"),
    ],
)
def test_a_get_parameter_of_the_wrong_type_says_which(
    client: httpx.Client, params: dict[str, str], text: str
) -> None:
    response = client.get("/graphql", params={"query": "{ __typename }", **params})
    assert text in bad_request(response)
    assert response.headers["cache-control"] == "no-store"


def test_head_runs_no_mutation_and_answers_as_the_get(client: httpx.Client) -> None:
    for query in ("mutation { anything }", "{ __typename }"):
        got = client.get("/graphql", params={"query": query})
        head = client.head("/graphql", params={"query": query})
        assert head.status_code == got.status_code
        assert head.headers["content-type"] == got.headers["content-type"]
        assert head.headers["content-length"] == got.headers["content-length"]
        assert head.content == b""


@pytest.mark.parametrize("variables", ["[1]", '"x"', "3", "{bad", "[" * 5000])
def test_get_with_variables_that_are_not_an_object_is_a_bad_request(
    client: httpx.Client, variables: str
) -> None:
    response = client.get("/graphql", params={"query": "{ __typename }", "variables": variables})
    assert bad_request(response)


@pytest.mark.parametrize("method", ["PUT", "DELETE", "PATCH"])
def test_other_methods_are_not_allowed(client: httpx.Client, method: str) -> None:
    """... and the answer says which are (RFC 9110, 15.5.6: a 405 carries `Allow`)."""
    response = client.request(method, "/graphql", json={"query": "{ __typename }"})
    assert bad_request(response, 405) == "GraphQL only supports GET and POST requests."
    assert response.headers["allow"] == "GET, HEAD, POST"


@pytest.mark.parametrize("accept", ["*/*", "application/json", None])
def test_an_api_client_without_a_query_gets_an_error_not_graphiql(
    client: httpx.Client, accept: str | None
) -> None:
    headers = {"accept": accept} if accept else {}
    request = client.build_request("GET", "/graphql", headers=headers)
    if accept is None:
        del request.headers["accept"]
    response = client.send(request)
    assert bad_request(response) == "No GraphQL query found in the request"


def test_a_browser_gets_graphiql(client: httpx.Client) -> None:
    response = client.get("/graphql", headers={"accept": BROWSER_ACCEPT})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "<title>Django Packages GraphQL</title>" in response.text


def test_a_browser_with_a_query_gets_the_result(client: httpx.Client) -> None:
    response = client.get(
        "/graphql", params={"query": "{ __typename }"}, headers={"accept": BROWSER_ACCEPT}
    )
    assert _data(response) == {"__typename": "Query"}


def test_healthz(client: httpx.Client, upstream: FakeUpstream) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"status": "ok"}
    assert upstream.count == 0  # liveness does not depend on the upstream


@pytest.mark.parametrize("fault", ["500", "503", "malformed", "wrong-shape", "hang"])
def test_an_upstream_fault_is_masked_and_siblings_keep_their_data(
    own_client: httpx.Client, upstream: FakeUpstream, fault: FaultKind
) -> None:
    grid, category = upstream.dataset.grids[0], upstream.dataset.categories[0]
    upstream.faults["/api/v4/grids/"] = fault
    response = own_client.post(
        "/graphql",
        json={
            "query": """query($grid: Int!, $category: Int!) {
                grid(id: $grid) { title }
                category(id: $category) { title }
                categories { totalCount }
            }""",
            "variables": {"grid": grid.id, "category": category.id},
        },
    )
    assert response.status_code == 200
    body = response.json()
    assert body["data"] == {
        "grid": None,
        "category": {"title": category.title},
        "categories": {"totalCount": len(upstream.dataset.categories)},
    }
    [error] = body["errors"]
    assert error["path"] == ["grid"]
    assert error["extensions"] == {"code": "UPSTREAM_ERROR"}
    assert any(path.startswith(f"/api/v4/grids/{grid.id}/") for path in upstream.requests)

    upstream_url = urlsplit(upstream.base_url)
    text = json.dumps(error)
    leaks = [
        "127.0.0.1",
        "localhost",
        str(upstream_url.port),
        "http://",
        "https://",
        "/api/",
        "grids/",
        "Traceback",
        'File "',
    ]
    assert [leak for leak in leaks if leak in text] == []


def test_non_ascii_text_comes_through_intact(client: httpx.Client, upstream: FakeUpstream) -> None:
    response = client.post(
        "/graphql", json={"query": "{ grids(first: 100) { nodes { databaseId description } } }"}
    )
    assert response.headers["content-type"] == "application/json"
    nodes = _data(response)["grids"]["nodes"]
    expected = {row.id: row.description for row in upstream.dataset.grids}
    assert {node["databaseId"]: node["description"] for node in nodes} == expected
    served = "".join(expected.values())
    for sample in ("国際化", "интернационализация", "🚀"):  # so the check above is not vacuous
        assert sample in served
    # orjson writes UTF-8 as is; \u escapes would be valid too but four times larger for CJK.
    assert "国際化".encode() in response.content


def test_non_ascii_variables_reach_the_upstream_search(
    client: httpx.Client, upstream: FakeUpstream
) -> None:
    response = client.get(
        "/graphql",
        params={
            "query": "query($q: String!) { search(query: $q) { description } }",
            "variables": json.dumps({"q": "déjà testé"}, ensure_ascii=False),
        },
    )
    hits = _data(response)["search"]
    assert hits
    assert all("déjà testé" in hit["description"] for hit in hits)


def test_the_server_keeps_serving_after_bad_requests(
    client: httpx.Client, origin: str, upstream: FakeUpstream
) -> None:
    address = urlsplit(origin)
    assert address.hostname is not None and address.port is not None
    for _ in range(5):
        for content in (b"{", b"[" * 5000, b"\xff", b"null", b'{"query": "{"}'):
            response = client.post(
                "/graphql", content=content, headers={"content-type": "application/json"}
            )
            assert response.status_code in (200, 400)
        assert client.put("/graphql").status_code == 405
        with socket.create_connection((address.hostname, address.port), timeout=5) as sock:
            sock.sendall(b"NOT HTTP\r\n\r\n")
            assert sock.recv(100).startswith(b"HTTP/1.1 400 ")
        with socket.create_connection((address.hostname, address.port), timeout=5) as sock:
            sock.sendall(  # a body cut short by a client that goes away
                b"POST /graphql HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b'Content-Length: 100\r\n\r\n{"que'
            )

    row = upstream.dataset.categories[-1]
    response = client.post(
        "/graphql",
        json={
            "query": "query($id: Int!) { category(id: $id) { slug } }",
            "variables": {"id": row.id},
        },
    )
    assert _data(response) == {"category": {"slug": row.slug}}


PACKAGE_AND_GRIDS = """query($slug: String!) { package(slug: $slug) {
    title category { title } grids(first: 10) { totalCount nodes { title } } } }"""


def _left_for_the_collector(
    settings: Settings, send: Callable[[httpx.Client, str, str], None], slugs: list[str]
) -> list[str]:
    """What `send(client, origin, slug)` leaves to the garbage collector, for each of the
    slugs after the first two (which warm the gateway up): the objects of the gateway and its
    server, and the frames, tracebacks and exceptions of an error path, that only a collection
    would free (collected with `DEBUG_SAVEALL`, which keeps them in `gc.garbage`)."""
    with (
        serve_in_thread(create_app(settings), http=HeadBoundedProtocol) as origin,
        httpx.Client(base_url=origin, timeout=10) as client,
    ):
        for slug in slugs[:2]:
            send(client, origin, slug)
        time.sleep(0.2)
        gc.collect()
        gc.set_debug(gc.DEBUG_SAVEALL)
        try:
            for slug in slugs[2:]:
                send(client, origin, slug)
            time.sleep(0.5)  # the server's task ends just after its answer
            gc.collect()
            return [
                f"{kind.__module__}.{kind.__qualname__}"
                for kind in map(type, gc.garbage)
                if kind.__module__.startswith(("gateway", "uvicorn"))
                or kind in (types.FrameType, types.TracebackType)
                or issubclass(kind, BaseException)
            ]
        finally:
            gc.set_debug(0)
            gc.garbage.clear()


def test_a_request_leaves_nothing_for_the_garbage_collector(upstream: FakeUpstream) -> None:
    """A request's loaders, backend and records are freed as it ends, and so is what `gateway
    serve`'s protocol made for it: no reference cycle keeps them until the garbage collector
    runs, a cost every request would share."""
    settings = Settings(upstream=upstream.base_url, response_cache_ttl=0, warm_catalogue=False)

    def send(client: httpx.Client, origin: str, slug: str) -> None:
        _data(client.post("/graphql", json=_package(slug)))

    slugs = [row.slug for row in upstream.dataset.packages[:4]]
    assert _left_for_the_collector(settings, send, slugs) == []


def _failing(response: httpx.Response) -> None:
    assert response.json()["errors"], response.text


def _send_query(query: str) -> Callable[[httpx.Client, str, str], None]:
    def send(client: httpx.Client, origin: str, slug: str) -> None:
        _failing(client.post("/graphql", json={"query": query, "variables": {"slug": slug}}))

    return send


def _hang_up(client: httpx.Client, origin: str, slug: str) -> None:
    """Send the query and go away before its answer."""
    with pytest.raises(httpx.TimeoutException):
        httpx.post(f"{origin}/graphql", json=_package(slug), timeout=0.1)


def _outage_after_visits(
    upstream: FakeUpstream, ttl: float, slugs: list[str]
) -> Callable[[httpx.Client, str, str], None]:
    """Ask for each package once, then, in an outage, for its stale copy."""

    def send(client: httpx.Client, origin: str, slug: str) -> None:
        if upstream.outage is None:
            for each in slugs:
                _data(client.post("/graphql", json=_package(each)))
            time.sleep(ttl + 0.05)
            upstream.outage = "503"
        response = client.post("/graphql", json=_package(slug))
        assert response.json()["extensions"]["stale"] is True, response.text

    return send


def _package(slug: str) -> dict[str, Any]:
    return {"query": PACKAGE_AND_GRIDS, "variables": {"slug": slug}}


COSTLY = """query($slug: String!) { package(slug: $slug) { category { packages(first: 100) {
    nodes { grids(first: 100) { nodes { packages(first: 100) { nodes { title } } } } } } } } }"""
INTROSPECTION_AND_PACKAGE = """query($slug: String!) {
    __schema { queryType { name } } package(slug: $slug) { title } }"""


@pytest.mark.parametrize(
    "case",
    ["upstream-503", "stale-in-outage", "hang-up", "refused", "graphql-core"],
)
def test_a_failed_request_leaves_nothing_for_the_garbage_collector(
    upstream: FakeUpstream, case: str
) -> None:
    """A failed request is freed as it ends too: an error's traceback holds the frames it went
    through, and a frame that holds the error (a future, a task, a list of answers) would make
    a cycle of each failure. In an upstream outage most requests fail: their cycles, each
    holding its request's objects, would pile up between the collector's runs.

    graphql-core's own executor and validation leave cycles of their own (its execution
    context holds its bound methods): of what it runs, only frames and tracebacks count."""
    settings = Settings(
        upstream=upstream.base_url,
        response_cache_ttl=0,
        warm_catalogue=False,
        upstream_retries=0,
        upstream_timeout=UPSTREAM_TIMEOUT,
    )
    slugs = [row.slug for row in upstream.dataset.packages[:5]]
    send = _send_query(PACKAGE_AND_GRIDS)
    if case == "upstream-503":
        upstream.faults["/api/v4/packages/"] = "503"
    elif case == "stale-in-outage":
        settings = replace(settings, cache_ttl=0.2)
        send = _outage_after_visits(upstream, settings.cache_ttl, slugs)
    elif case == "hang-up":
        upstream.latency = 0.3
        send = _hang_up
    elif case == "refused":
        settings = replace(settings, max_cost=100)
        send = _send_query(COSTLY)
    else:
        upstream.faults["/api/v4/packages/"] = "503"
        send = _send_query(INTROSPECTION_AND_PACKAGE)
    left = _left_for_the_collector(settings, send, slugs)
    if case == "graphql-core":
        left = [kind for kind in left if kind in ("builtins.frame", "builtins.traceback")]
    assert left == []


def test_while_it_serves_the_young_generation_is_collected_less_often(client: httpx.Client) -> None:
    assert client.get("/healthz").status_code == 200
    assert gc.get_threshold()[0] == stalls.YOUNG_THRESHOLD
