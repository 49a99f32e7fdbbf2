"""Automatic persisted queries (Apollo's APQ protocol) over HTTP, as Apollo clients speak it."""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from gateway.app import create_app
from gateway.config import Settings
from gateway.documents.offload import off_the_loop
from tests.fake_upstream import FakeUpstream, serve_in_thread
from tests.test_app import bad_request

QUERY = "query Grid($id: Int!) { grid(id: $id) { title } }"
NOT_FOUND = {
    "errors": [
        {"message": "PersistedQueryNotFound", "extensions": {"code": "PERSISTED_QUERY_NOT_FOUND"}}
    ]
}
STRICT = {"accept": "application/graphql-response+json"}
BROWSER_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"


def _sha(query: str) -> str:
    return hashlib.sha256(query.encode()).hexdigest()


def _apq(query: str, version: object = 1) -> dict[str, Any]:
    return {"persistedQuery": {"version": version, "sha256Hash": _sha(query)}}


@pytest.fixture(params=[300.0, 0.0], ids=["response-cache", "no-response-cache"])
def client(request: pytest.FixtureRequest, upstream: FakeUpstream) -> Iterator[httpx.Client]:
    """A gateway of the test's own (its APQ store starts empty), with and without the response
    cache: APQ must not depend on it."""
    settings = Settings(
        upstream=upstream.base_url, response_cache_ttl=request.param, warm_catalogue=False
    )
    with (
        serve_in_thread(create_app(settings)) as origin,
        httpx.Client(base_url=origin, timeout=10) as client,
    ):
        yield client


def _get(client: httpx.Client, query: str | None = None, **params: Any) -> httpx.Response:
    """`variables` and `extensions` go as JSON, `operationName` as it is (Apollo's GET)."""
    encoded = {
        name: value if isinstance(value, str) else json.dumps(value)
        for name, value in params.items()
    }
    if query is not None:
        encoded["query"] = query
    return client.get("/graphql", params=encoded)


@pytest.mark.parametrize("method", ["POST", "GET"])
def test_the_apollo_round_trip(client: httpx.Client, upstream: FakeUpstream, method: str) -> None:
    """Hash alone: not found; hash and document: it runs and is kept; hash alone again: it runs."""
    grid = upstream.dataset.grids[0]
    request: dict[str, Any] = {
        "variables": {"id": grid.id},
        "operationName": "Grid",
        "extensions": _apq(QUERY),
    }

    def send(query: str | None) -> httpx.Response:
        if method == "GET":
            return _get(client, query, **request)
        return client.post("/graphql", json={**request, "query": query})

    unknown = send(None)
    assert unknown.status_code == 200
    assert unknown.json() == NOT_FOUND

    registered = send(QUERY)
    assert registered.status_code == 200
    assert registered.json() == {"data": {"grid": {"title": grid.title}}}

    by_hash = send(None)
    assert by_hash.status_code == 200
    assert by_hash.json() == registered.json()


def test_a_document_registered_over_post_runs_by_hash_over_get(
    client: httpx.Client, upstream: FakeUpstream
) -> None:
    grid = upstream.dataset.grids[1]
    registered = client.post(
        "/graphql",
        json={"query": QUERY, "variables": {"id": grid.id}, "extensions": _apq(QUERY)},
    )
    assert registered.json() == {"data": {"grid": {"title": grid.title}}}

    other = upstream.dataset.grids[2]
    response = _get(client, variables={"id": other.id}, extensions=_apq(QUERY))
    assert response.json() == {"data": {"grid": {"title": other.title}}}


def test_not_found_is_a_200_for_a_strict_client_too(client: httpx.Client) -> None:
    """Apollo clients stop using APQ altogether after a 400 or a 500: this one must be a 200."""
    response = client.post("/graphql", json={"extensions": _apq(QUERY)}, headers=STRICT)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/graphql-response+json"
    assert response.json() == NOT_FOUND

    get = client.get("/graphql", params={"extensions": json.dumps(_apq(QUERY))}, headers=STRICT)
    assert get.status_code == 200
    assert get.json() == NOT_FOUND
    assert get.headers["cache-control"] == "no-store"


def test_a_hash_that_is_not_the_documents_is_refused_and_not_kept(
    client: httpx.Client, upstream: FakeUpstream
) -> None:
    """HTTP 400 whatever the media type, as Apollo Server answers it."""
    grid = upstream.dataset.grids[0]
    other = "{ categories { totalCount } }"
    response = client.post(
        "/graphql",
        json={"query": other, "variables": {"id": grid.id}, "extensions": _apq(QUERY)},
    )
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {
        "errors": [
            {
                "message": "provided sha does not match query",
                "extensions": {"code": "BAD_USER_INPUT"},
            }
        ]
    }
    assert upstream.count == 0  # nothing ran

    strict = client.post(
        "/graphql", json={"query": other, "extensions": _apq(QUERY)}, headers=STRICT
    )
    assert strict.status_code == 400
    assert strict.headers["content-type"] == "application/graphql-response+json"
    get = _get(client, other, extensions=_apq(QUERY))
    assert get.status_code == 400
    assert get.headers["cache-control"] == "no-store"

    # The hash still names nothing: the other document was not kept under it.
    response = client.post(
        "/graphql", json={"variables": {"id": grid.id}, "extensions": _apq(QUERY)}
    )
    assert response.json() == NOT_FOUND


@pytest.mark.parametrize(
    ("persisted", "message"),
    [
        ({"version": 2, "sha256Hash": _sha(QUERY)}, "Unsupported persisted query version 2"),
        ({"version": "1", "sha256Hash": _sha(QUERY)}, "Unsupported persisted query version '1'"),
        ({"version": True, "sha256Hash": _sha(QUERY)}, "Unsupported persisted query version"),
        ({"sha256Hash": _sha(QUERY)}, "Unsupported persisted query version None"),
        ({"version": 1}, "must be a SHA-256 hash"),
        ({"version": 1, "sha256Hash": "abc"}, "must be a SHA-256 hash"),
        ("yes", "must be an object"),
    ],
)
def test_an_apq_extension_it_cannot_read_is_a_clear_error(
    client: httpx.Client, persisted: object, message: str
) -> None:
    response = client.post("/graphql", json={"extensions": {"persistedQuery": persisted}})
    assert response.status_code == 400  # Apollo Server's status, whatever the media type
    [error] = response.json()["errors"]
    assert message in error["message"]
    assert error["extensions"] == {"code": "BAD_USER_INPUT"}


def test_an_apq_extension_it_cannot_use_refuses_the_whole_batch(client: httpx.Client) -> None:
    """Like Apollo Server: the batch is answered with HTTP 400."""
    typename = "{ __typename }"
    response = client.post(
        "/graphql",
        json=[{"query": typename}, {"query": typename, "extensions": _apq(typename, version=2)}],
    )
    assert response.status_code == 400
    [error] = response.json()["errors"]
    assert "Unsupported persisted query version 2" in error["message"]


def test_a_hash_is_kept_whatever_answered_its_document(
    client: httpx.Client, upstream: FakeUpstream
) -> None:
    """The answer to a hash sent with its document may come from the response cache, or from
    another operation computing it at that moment: the hash is kept all the same."""
    grid = upstream.dataset.grids[0]
    cached = client.post("/graphql", json={"query": QUERY, "variables": {"id": grid.id}})
    expected = {"data": {"grid": {"title": grid.title}}}
    assert cached.json() == expected
    registered = client.post(
        "/graphql",
        json={"query": QUERY, "variables": {"id": grid.id}, "extensions": _apq(QUERY)},
    )
    assert registered.json() == expected
    by_hash = client.post(
        "/graphql", json={"variables": {"id": grid.id}, "extensions": _apq(QUERY)}
    )
    assert by_hash.json() == expected

    query = "query Title($id: Int!) { grid(id: $id) { title slug } }"
    other = upstream.dataset.grids[1]
    operation = {"query": query, "variables": {"id": other.id}}
    shared = client.post("/graphql", json=[operation, {**operation, "extensions": _apq(query)}])
    answer = {"data": {"grid": {"title": other.title, "slug": other.slug}}}
    assert shared.json() == [answer, answer]
    by_hash = client.post(
        "/graphql", json={"variables": {"id": other.id}, "extensions": _apq(query)}
    )
    assert by_hash.json() == answer


def test_a_refused_document_is_not_kept(client: httpx.Client) -> None:
    invalid = "{ nope }"
    response = client.post("/graphql", json={"query": invalid, "extensions": _apq(invalid)})
    assert response.json()["errors"][0]["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"
    response = client.post("/graphql", json={"extensions": _apq(invalid)})
    assert response.json() == NOT_FOUND


def test_the_hash_is_case_insensitive(client: httpx.Client) -> None:
    query = "{ __typename }"
    upper = {"persistedQuery": {"version": 1, "sha256Hash": _sha(query).upper()}}
    response = client.post("/graphql", json={"query": query, "extensions": upper})
    assert response.json() == {"data": {"__typename": "Query"}}
    response = client.post("/graphql", json={"extensions": _apq(query)})
    assert response.json() == {"data": {"__typename": "Query"}}


def test_each_operation_of_a_batch_may_be_persisted(
    client: httpx.Client, upstream: FakeUpstream
) -> None:
    grid = upstream.dataset.grids[0]
    typename = "{ __typename }"
    client.post("/graphql", json={"query": typename, "extensions": _apq(typename)})
    response = client.post(
        "/graphql",
        json=[
            {"extensions": _apq(typename)},
            {"variables": {"id": grid.id}, "extensions": _apq(QUERY)},
            {"query": QUERY, "variables": {"id": grid.id}, "extensions": _apq(QUERY)},
        ],
    )
    assert response.status_code == 200
    assert response.json() == [
        {"data": {"__typename": "Query"}},
        NOT_FOUND,
        {"data": {"grid": {"title": grid.title}}},
    ]


def test_a_browser_get_by_hash_gets_the_answer_not_graphiql(client: httpx.Client) -> None:
    query = "{ __typename }"
    client.post("/graphql", json={"query": query, "extensions": _apq(query)})
    response = client.get(
        "/graphql",
        params={"extensions": json.dumps(_apq(query))},
        headers={"accept": BROWSER_ACCEPT},
    )
    assert response.status_code == 200
    assert response.json() == {"data": {"__typename": "Query"}}


def test_a_get_without_query_or_hash_is_still_refused(client: httpx.Client) -> None:
    response = client.get("/graphql", params={"extensions": json.dumps({"other": 1})})
    assert bad_request(response) == "No GraphQL query found in the request"


def test_a_document_is_kept_without_its_comments(client: httpx.Client) -> None:
    """A registration padded with a comment keeps only the document: fifty of 95 KB each (more
    than the 4 MiB the process keeps) all stay, the first one included."""
    documents = [f"{{ __typename }}\n# {n} {'x' * 95_000}" for n in range(50)]
    for document in documents:
        response = client.post("/graphql", json={"query": document, "extensions": _apq(document)})
        assert response.json() == {"data": {"__typename": "Query"}}
    for document in (documents[0], documents[-1]):
        response = client.post("/graphql", json={"extensions": _apq(document)})
        assert response.json() == {"data": {"__typename": "Query"}}


def test_a_document_too_long_to_keep_is_refused(
    client: httpx.Client, upstream: FakeUpstream
) -> None:
    """Past 32 KiB without its comments and whitespace: refused before it runs, with a code; the
    same document sent without its hash runs."""
    aliases = " ".join(f"{letter * 12_000}: categories {{ totalCount }}" for letter in "abc")
    document = f"{{ {aliases} }}"
    response = client.post("/graphql", json={"query": document, "extensions": _apq(document)})
    assert response.status_code == 400
    [error] = response.json()["errors"]
    assert error["extensions"] == {"code": "PERSISTED_QUERY_TOO_LARGE"}
    assert "32768 bytes" in error["message"]
    assert upstream.count == 0
    assert client.post("/graphql", json={"extensions": _apq(document)}).json() == NOT_FOUND

    response = client.post("/graphql", json={"query": document})
    assert response.status_code == 200
    assert set(response.json()["data"]) == {"a" * 12_000, "b" * 12_000, "c" * 12_000}


def test_a_document_over_the_token_limit_is_refused_as_ever_and_not_kept(
    client: httpx.Client,
) -> None:
    document = "{" + " __typename" * 6_000 + " }"
    response = client.post("/graphql", json={"query": document, "extensions": _apq(document)})
    assert response.json()["errors"][0]["extensions"]["code"] == "TOO_MANY_TOKENS"
    assert client.post("/graphql", json={"extensions": _apq(document)}).json() == NOT_FOUND


async def test_a_registration_waits_for_the_documents_thread_not_the_loop(
    upstream: FakeUpstream,
) -> None:
    """Printing a document to keep it is work on documents like parsing it: with the documents'
    thread taken, a registration of a document otherwise answered without it (known to the
    engine, no response cache) ends at its deadline, unkept, while the loop serves others."""
    settings = Settings(upstream=upstream.base_url, response_cache_ttl=0, request_timeout=0.5)
    document = "{ categories { totalCount } }"
    registration = {"query": document, "extensions": _apq(document)}
    release = threading.Event()
    try:
        with serve_in_thread(create_app(settings)) as origin:
            async with httpx.AsyncClient(base_url=origin, timeout=10) as client:
                known = (await client.post("/graphql", json={"query": document})).json()
                busy = asyncio.ensure_future(off_the_loop(release.wait))
                waiting = asyncio.ensure_future(client.post("/graphql", json=registration))
                assert (await client.get("/healthz")).status_code == 200
                body = (await waiting).json()
                assert body["data"] is None
                assert body["errors"][0]["extensions"]["code"] == "REQUEST_TIMEOUT"
                release.set()
                await busy
                by_hash = {"extensions": _apq(document)}
                assert (await client.post("/graphql", json=by_hash)).json() == NOT_FOUND
                assert (await client.post("/graphql", json=registration)).json() == known
                assert (await client.post("/graphql", json=by_hash)).json() == known
    finally:
        release.set()
