"""The response cache and batches, over HTTP against a served gateway and the fake APIv4.

The process-wide cache of upstream resources would hide whether a query ran, so each gateway's
backend is wrapped to count the backend calls (dataloader batches) and the backends made (one
per HTTP request): a query answered from the response cache makes none.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import hashlib
import inspect
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Route

from gateway.app import GraphQLEndpoint, create_app
from gateway.compose import schema_for
from gateway.config import Settings, answer_settings, setting_type
from gateway.loaders.backend import Backend
from gateway.reading import Readings
from gateway.response_cache import Cached, MemoryStore, ResponseCache, namespace
from tests.fake_upstream import FakeUpstream, serve_in_thread
from tests.waiting import Clock

PACKAGE = "query($id: Int!) { package(id: $id) { databaseId title category { title } } }"
PACKAGE_REFORMATTED = """
# the same document, written otherwise
query ($id: Int!) {
  package(id: $id) { databaseId, title, category { title } }
}
"""
TWO_OPERATIONS = """
query Grids { grids(first: 2) { nodes { title } } }
query Categories { categories(first: 2) { nodes { title } } }
"""
STRICT = {"accept": "application/graphql-response+json"}

Compute = Callable[[], Awaitable[tuple[str, bytes | None]]]


class Gateway:
    """A served gateway of the test's own, its backend calls counted."""

    def __init__(self, app: Starlette, client: httpx.Client) -> None:
        self.app = app
        self.client = client
        self.calls: Counter[str] = Counter()
        self.backends = 0
        self._lock = threading.Lock()
        made = app.state.backend

        def counted() -> Backend:
            with self._lock:
                self.backends += 1
            return _Counting(made(), self._count)

        app.state.backend = counted

    def _count(self, name: str) -> None:
        with self._lock:
            self.calls[name] += 1

    def reset(self) -> None:
        with self._lock:
            self.calls.clear()
            self.backends = 0

    @property
    def total(self) -> int:
        return sum(self.calls.values())

    @property
    def endpoint(self) -> GraphQLEndpoint:
        route = self.app.routes[0]
        assert isinstance(route, Route)
        endpoint = route.app
        assert isinstance(endpoint, GraphQLEndpoint)
        return endpoint


class _Counting:
    """A backend whose batches (async methods but `ready`) report each call; everything else
    (`stale`, `ready`) is its own."""

    def __init__(self, backend: Backend, count: Callable[[str], None]) -> None:
        self._backend = backend
        self._count = count

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._backend, name)
        if name == "ready" or not inspect.iscoroutinefunction(value):
            return value

        async def counted(*args: Any, **kwargs: Any) -> Any:
            self._count(name)
            return await value(*args, **kwargs)

        return counted


@contextmanager
def serve(
    upstream: FakeUpstream, clock: Callable[[], float] = time.monotonic, **settings: Any
) -> Iterator[Gateway]:
    # The tests count what queries cost.
    options = {"warm_catalogue": False, "upstream_timeout": 0.5, **settings}
    app = create_app(Settings(upstream=upstream.base_url, **options), clock=clock)
    with serve_in_thread(app) as origin, httpx.Client(base_url=origin, timeout=10) as client:
        yield Gateway(app, client)


@pytest.fixture
def gateway(upstream: FakeUpstream) -> Iterator[Gateway]:
    with serve(upstream) as gateway:
        yield gateway


def _data(response: httpx.Response) -> Any:
    assert response.status_code == 200, response.text
    body = response.json()
    assert "errors" not in body, body
    return body["data"]


def _package(upstream: FakeUpstream, index: int = 0) -> Any:
    return upstream.dataset.packages[index]


def test_a_repeated_query_is_answered_from_the_cache_whatever_its_layout(
    gateway: Gateway, upstream: FakeUpstream
) -> None:
    row = _package(upstream)
    first = gateway.client.post("/graphql", json={"query": PACKAGE, "variables": {"id": row.id}})
    assert _data(first)["package"]["title"] == row.title
    assert gateway.total > 0  # it ran

    gateway.reset()
    again = gateway.client.get(
        "/graphql", params={"query": PACKAGE_REFORMATTED, "variables": f'{{"id": {row.id}}}'}
    )
    assert again.status_code == 200
    assert again.content == first.content
    assert again.headers["content-type"] == "application/json"
    assert gateway.total == 0  # it did not run
    # A POST answer carries the ETag too; it is the hash of the body.
    assert again.headers["etag"] == first.headers["etag"]
    assert (
        again.headers["etag"] == '"%s"' % hashlib.blake2b(first.content, digest_size=16).hexdigest()
    )

    strict = gateway.client.post(
        "/graphql", json={"query": PACKAGE, "variables": {"id": row.id}}, headers=STRICT
    )
    assert strict.status_code == 200
    assert strict.headers["content-type"] == "application/graphql-response+json"
    assert strict.content == first.content
    assert gateway.total == 0


def test_a_cached_get_answer_is_public_with_an_etag_and_revalidates_to_304(
    upstream: FakeUpstream,
) -> None:
    clock = Clock()
    with serve(upstream, clock) as gateway:
        params = {"query": PACKAGE, "variables": f'{{"id": {_package(upstream).id}}}'}
        response = gateway.client.get("/graphql", params=params)
        assert response.status_code == 200
        assert response.headers["cache-control"] == "public, max-age=60"
        assert response.headers["vary"] == "Accept"
        etag = response.headers["etag"]

        gateway.reset()
        clock.advance(1.1)
        unchanged = gateway.client.get("/graphql", params=params, headers={"if-none-match": etag})
        assert unchanged.status_code == 304
        assert unchanged.content == b""
        assert unchanged.headers["etag"] == etag
        age = int(unchanged.headers["cache-control"].removeprefix("public, max-age="))
        assert 55 <= age < 60  # what is left of the minute
        assert gateway.total == 0

        listed = f'"other", W/{etag}'  # a list, and a weak tag: both match
        matched = gateway.client.get("/graphql", params=params, headers={"if-none-match": listed})
        assert matched.status_code == 304

        other = gateway.client.get("/graphql", params=params, headers={"if-none-match": '"other"'})
        assert other.status_code == 200
        assert other.content == response.content


def test_each_representation_of_an_answer_has_its_own_etag(upstream: FakeUpstream) -> None:
    with serve(upstream) as gateway:
        params = {"query": PACKAGE, "variables": f'{{"id": {_package(upstream).id}}}'}
        plain = gateway.client.get("/graphql", params=params)
        strict = gateway.client.get("/graphql", params=params, headers=STRICT)
        assert plain.headers["content-type"] == "application/json"
        assert strict.headers["content-type"] == "application/graphql-response+json"
        assert strict.content == plain.content
        assert strict.headers["etag"] != plain.headers["etag"]
        assert strict.headers["vary"] == plain.headers["vary"] == "Accept"

        # Each validator matches its own representation only.
        for response, headers in ((plain, {}), (strict, STRICT)):
            etag = response.headers["etag"]
            same = gateway.client.get(
                "/graphql", params=params, headers={**headers, "if-none-match": etag}
            )
            assert same.status_code == 304
            assert same.headers["etag"] == etag
        crossed = gateway.client.get(
            "/graphql", params=params, headers={**STRICT, "if-none-match": plain.headers["etag"]}
        )
        assert crossed.status_code == 200
        assert crossed.headers["etag"] == strict.headers["etag"]

        # Over POST too, each media type carries its own tag.
        posted = gateway.client.post(
            "/graphql",
            json={"query": PACKAGE, "variables": {"id": _package(upstream).id}},
            headers=STRICT,
        )
        assert posted.headers["etag"] == strict.headers["etag"]


def test_head_answers_as_the_get_would_headers_only(upstream: FakeUpstream) -> None:
    with serve(upstream, Clock()) as gateway:  # time stands still: the same max-age
        params = {"query": PACKAGE, "variables": f'{{"id": {_package(upstream).id}}}'}
        for headers in ({}, STRICT):
            got = gateway.client.get("/graphql", params=params, headers=headers)
            head = gateway.client.head("/graphql", params=params, headers=headers)
            assert head.status_code == got.status_code == 200
            assert head.content == b""
            for name in ("content-type", "content-length", "etag", "cache-control", "vary"):
                assert head.headers[name] == got.headers[name], name

            revalidated = gateway.client.head(
                "/graphql", params=params, headers={**headers, "if-none-match": got.headers["etag"]}
            )
            assert revalidated.status_code == 304


class _ElsewhereOnly:
    """A store none of whose entries this process holds in memory (as Redis's, before a read
    copies one here): each hit goes the view's whole way."""

    def __init__(self, store: MemoryStore) -> None:
        self.store = store

    async def get(self, key: str) -> tuple[bytes, float] | None:
        return await self.store.get(key)

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        await self.store.set(key, value, ttl)

    def at_hand(self, key: str) -> tuple[bytes, float] | None:
        return None


def test_a_hit_at_hand_answers_as_the_whole_path_does_and_makes_no_backend(
    upstream: FakeUpstream,
) -> None:
    """A hit this process holds in memory is answered before the view makes a backend; its
    status, headers and body are those of the same hit answered the whole way."""
    with serve(upstream, Clock()) as gateway:  # time stands still: the same max-age
        responses = gateway.endpoint.responses
        assert responses is not None
        memory = MemoryStore(2**20)
        responses.store = memory
        variables = {"id": _package(upstream).id}
        params = {"query": PACKAGE, "variables": f'{{"id": {variables["id"]}}}'}
        _data(gateway.client.post("/graphql", json={"query": PACKAGE, "variables": variables}))
        _data(gateway.client.get("/graphql", params=params))
        etag = gateway.client.get("/graphql", params=params).headers["etag"]
        asked: list[tuple[str, dict[str, Any]]] = [
            ("POST", {"json": {"query": PACKAGE, "variables": variables}}),
            ("POST", {"json": {"query": PACKAGE, "variables": variables}, "headers": STRICT}),
            ("GET", {"params": params}),
            ("GET", {"params": params, "headers": STRICT}),
            ("GET", {"params": params, "headers": {"if-none-match": etag}}),
            ("HEAD", {"params": params}),
        ]
        for method, request in asked:
            answers = []
            for store in (_ElsewhereOnly(memory), memory):
                responses.store = store
                gateway.reset()
                answer = gateway.client.request(method, "/graphql", **request)
                headers = [
                    (name, value)
                    for name, value in answer.headers.multi_items()
                    if name not in ("date", "x-request-id")
                ]
                answers.append(((answer.status_code, headers, answer.content), gateway.backends))
            (whole, backends), (lean, lean_backends) = answers
            assert lean == whole, method
            assert whole[0] in (200, 304)
            assert (backends, lean_backends) == (1, 0), method
            assert gateway.total == 0


def _post(gateway: Gateway, query: str, **request: Any) -> httpx.Response:
    return gateway.client.post("/graphql", json={"query": query, **request})


def test_variables_and_the_operation_name_are_part_of_the_key(
    gateway: Gateway, upstream: FakeUpstream
) -> None:
    for index in (0, 1):
        row = _package(upstream, index)
        gateway.reset()
        response = _post(gateway, PACKAGE, variables={"id": row.id})
        assert _data(response)["package"]["databaseId"] == row.id
        assert gateway.total > 0

    grids = _data(_post(gateway, TWO_OPERATIONS, operationName="Grids"))
    categories = _data(_post(gateway, TWO_OPERATIONS, operationName="Categories"))
    assert list(grids) == ["grids"]
    assert list(categories) == ["categories"]

    # The variables' order is not: the same values, written in another order, are a hit.
    query = (
        "query($id: Int!, $first: Int) { package(id: $id) { grids(first: $first) { totalCount } } }"
    )
    row = _package(upstream, 2)
    first = _post(gateway, query, variables={"id": row.id, "first": 2})
    gateway.reset()
    again = _post(gateway, query, variables={"first": 2, "id": row.id})
    assert again.content == first.content
    assert gateway.total == 0


def test_answers_with_errors_are_never_cached(gateway: Gateway, upstream: FakeUpstream) -> None:
    grid = upstream.dataset.grids[0]
    params = {
        "query": "query($id: Int!) { grid(id: $id) { title } }",
        "variables": f'{{"id": {grid.id}}}',
    }
    upstream.faults["/api/v4/grids/"] = "500"
    failed = gateway.client.get("/graphql", params=params)
    assert failed.status_code == 200
    assert failed.json()["errors"][0]["extensions"]["code"] == "UPSTREAM_ERROR"
    assert failed.headers["cache-control"] == "no-store"
    assert "etag" not in failed.headers

    del upstream.faults["/api/v4/grids/"]
    gateway.reset()
    recovered = gateway.client.get("/graphql", params=params)
    assert _data(recovered) == {"grid": {"title": grid.title}}
    assert gateway.total > 0  # it ran again
    assert recovered.headers["cache-control"].startswith("public, max-age=")


def test_request_errors_are_never_cached(gateway: Gateway) -> None:
    for _ in range(2):
        response = _post(gateway, "query($id: Int!) { package(id: $id) { title } }", variables={})
        assert response.json()["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
        assert "etag" not in response.headers


def test_stale_answers_are_not_cached(upstream: FakeUpstream) -> None:
    """Over an upstream an answer is fresh no longer than the resources it is made of."""
    clock = Clock()
    with serve(upstream, clock, cache_ttl=0.5) as gateway:
        grid = upstream.dataset.grids[1]
        params = {"query": "{ grid(id: %d) { title } }" % grid.id}
        fresh = gateway.client.get("/graphql", params=params)
        assert _data(fresh) == {"grid": {"title": grid.title}}
        assert fresh.headers["cache-control"] == "public, max-age=0"  # 0.5 s, rounded down

        clock.advance(0.6)  # the answer and the resource are both past their time
        upstream.faults["/api/v4/grids/"] = "500"
        for _ in range(2):
            gateway.reset()
            stale = gateway.client.get("/graphql", params=params)
            assert stale.json() == {
                "data": {"grid": {"title": grid.title}},
                "extensions": {"stale": True},
            }
            assert stale.headers["cache-control"] == "no-store"
            assert gateway.total > 0  # the stale answer was not kept: it ran again


def test_a_timed_out_answer_is_not_cached(upstream: FakeUpstream) -> None:
    with serve(upstream, request_timeout=0.3) as gateway:
        grid = upstream.dataset.grids[4]
        operation = {"query": "{ grid(id: %d) { title } }" % grid.id}
        upstream.latency = 1.0
        slow = gateway.client.post("/graphql", json=operation)
        assert slow.json()["errors"][0]["extensions"]["code"] == "REQUEST_TIMEOUT"
        assert "etag" not in slow.headers

        upstream.latency = 0.0
        # The fetch the request left behind is answered, and lands in the resource cache (or
        # is joined, on its way).
        assert upstream.wait_until(lambda: upstream.in_flight == 0)
        gateway.reset()
        assert _data(gateway.client.post("/graphql", json=operation)) == {
            "grid": {"title": grid.title}
        }
        assert gateway.total > 0


def test_a_refused_request_is_not_answered_from_the_cache(upstream: FakeUpstream) -> None:
    with serve(upstream, max_body_bytes=1000, max_batch=2) as gateway:
        operation = {"query": PACKAGE, "variables": {"id": _package(upstream).id}}
        cached = gateway.client.post("/graphql", json=operation)
        assert cached.status_code == 200

        padded = {**operation, "query": PACKAGE + " " * 1000}
        too_large = gateway.client.post("/graphql", json=padded)
        assert too_large.status_code == 413
        assert too_large.json()["errors"][0]["extensions"]["code"] == "REQUEST_TOO_LARGE"

        too_many = gateway.client.post("/graphql", json=[operation] * 3)
        assert too_many.status_code == 400
        assert too_many.json()["errors"][0]["extensions"]["code"] == "BATCH_TOO_LARGE"

        assert gateway.client.post("/graphql", json=[operation] * 2).json() == [cached.json()] * 2


def test_a_shared_store_keeps_gateways_with_other_limits_apart(upstream: FakeUpstream) -> None:
    """The store is what a Redis store will replace: gateways with the same schema, source and
    limits share answers; one with stricter limits never gets an answer it would refuse."""
    store = MemoryStore(2**20)
    introspection = "{ __schema { queryType { name } } }"
    operation = {"query": PACKAGE, "variables": {"id": _package(upstream).id}}
    with (
        serve(upstream) as lax,
        serve(upstream) as twin,
        serve(upstream, introspection=False, max_depth=1) as strict,
    ):
        for gateway in (lax, twin, strict):
            responses = gateway.endpoint.responses
            assert responses is not None
            responses.store = store
        assert _data(_post(lax, introspection)) == {"__schema": {"queryType": {"name": "Query"}}}
        answer = lax.client.post("/graphql", json=operation)
        assert answer.status_code == 200
        assert len(store) == 2

        assert twin.client.post("/graphql", json=operation).content == answer.content
        assert twin.total == 0

        refused = _post(strict, introspection).json()
        assert refused["errors"][0]["extensions"]["code"] == "INTROSPECTION_DISABLED"
        refused = strict.client.post("/graphql", json=operation).json()
        assert refused["errors"][0]["extensions"]["code"] == "QUERY_TOO_DEEP"


def test_concurrent_identical_queries_run_once(upstream: FakeUpstream) -> None:
    with serve(upstream, upstream_timeout=5) as gateway:  # past the upstream's latency below
        operation = {"query": PACKAGE, "variables": {"id": _package(upstream, 3).id}}
        _data(gateway.client.post("/graphql", json=operation))
        one_run = gateway.total

        gateway.reset()
        upstream.latency = 1  # for all eight to arrive while the first waits, on a loaded machine
        operation = {"query": PACKAGE, "variables": {"id": _package(upstream, 4).id}}
        origin = str(gateway.client.base_url)

        def ask(_: int) -> bytes:
            with httpx.Client(base_url=origin, timeout=10) as client:
                response = client.post("/graphql", json=operation)
                assert response.status_code == 200
                return response.content

        with ThreadPoolExecutor(8) as pool:
            answers = set(pool.map(ask, range(8)))
        assert len(answers) == 1
        assert gateway.backends == 8
        assert gateway.total == one_run  # one execution served all eight


def test_with_the_cache_off_every_query_runs(upstream: FakeUpstream) -> None:
    with serve(upstream, response_cache_ttl=0) as gateway:
        params = {"query": "{ grid(id: %d) { title } }" % upstream.dataset.grids[2].id}
        for _ in range(2):
            gateway.reset()
            response = gateway.client.get("/graphql", params=params)
            assert response.status_code == 200
            assert response.headers["cache-control"] == "no-store"
            assert "etag" not in response.headers
            assert gateway.total > 0


def test_a_batch_shares_one_set_of_loaders(upstream: FakeUpstream) -> None:
    """Two operations asking for the same package cost one backend call and one upstream GET."""
    with serve(upstream, response_cache_ttl=0) as gateway:
        row = _package(upstream, 5)
        operations = [
            {
                "query": "query($id: Int!) { package(id: $id) { title } }",
                "variables": {"id": row.id},
            },
            {
                "query": "query($n: Int!) { package(id: $n) { databaseId } }",
                "variables": {"n": row.id},
            },
        ]
        response = gateway.client.post("/graphql", json=operations)
        assert response.status_code == 200
        assert response.json() == [
            {"data": {"package": {"title": row.title}}},
            {"data": {"package": {"databaseId": row.id}}},
        ]
        assert gateway.backends == 1  # one context for the whole request
        assert gateway.calls == {"packages": 1}
        assert upstream.requests.count(f"/api/v4/packages/{row.id}/") == 1


def test_a_batch_is_answered_from_the_cache_operation_by_operation(
    gateway: Gateway, upstream: FakeUpstream
) -> None:
    cached = {"query": PACKAGE, "variables": {"id": _package(upstream, 6).id}}
    single = gateway.client.post("/graphql", json=cached)
    assert single.status_code == 200

    gateway.reset()
    grid = upstream.dataset.grids[3]
    fresh = {"query": "{ grid(id: %d) { title } }" % grid.id}
    response = gateway.client.post("/graphql", json=[cached, fresh, fresh])
    assert response.status_code == 200
    assert response.json() == [single.json(), *[{"data": {"grid": {"title": grid.title}}}] * 2]
    assert gateway.calls == {"grids": 1}
    assert "etag" not in response.headers  # the tags are per answer, not per batch


# The cache's parts, without HTTP.


async def test_memory_store_evicts_the_least_recently_used_past_its_bound() -> None:
    now = [0.0]
    store = MemoryStore(3 * (200 + 2 + 100), clock=lambda: now[0])
    for key in ("k1", "k2", "k3"):
        await store.set(key, b"x" * 100, 10)
    assert await store.get("k1") == (b"x" * 100, 10)  # k1 is now the most recent
    await store.set("k4", b"x" * 100, 10)
    assert await store.get("k2") is None
    assert len(store) == 3
    assert store.size <= store.max_bytes
    await store.set("big", b"x" * 10_000, 10)  # larger than the whole store: not kept
    assert await store.get("big") is None
    assert len(store) == 3

    now[0] = 9.5
    assert await store.get("k3") == (b"x" * 100, 0.5)
    now[0] = 10
    assert await store.get("k3") is None


async def test_memory_store_drops_what_is_past_its_time_within_its_bound() -> None:
    """Well under its bound, entries past their time and used before any still fresh go as the
    next is set: what is kept follows what was asked for lately."""
    now = [0.0]
    store = MemoryStore(2**20, clock=lambda: now[0])
    for second, key in enumerate(("old", "older-but-used", "fresh")):
        now[0] = second
        await store.set(key, b"x" * 100, 10)
    now[0] = 5
    assert await store.get("older-but-used") is not None  # now the most recently used
    now[0] = 10.5  # "old" and "older-but-used" are past their time, "fresh" is not
    await store.set("new", b"x" * 100, 10)
    assert len(store) == 3  # "old" dropped; "older-but-used" waits behind "fresh"
    now[0] = 12.5  # "fresh" is past its time too
    await store.set("newer", b"x" * 100, 10)
    assert len(store) == 2 and await store.get("new") is not None
    assert store.size == (len("new") + 100 + 200) + (len("newer") + 100 + 200)


async def test_memory_store_keeps_an_answer_as_one_object_for_the_garbage_collector() -> None:
    """Each full collection goes through every object kept: an answer is its place in the
    store's order only, its entry (bytes and numbers) out of the collector's sight."""
    store = MemoryStore(2**20)
    keys = [f"k{i}" for i in range(1_000)]
    gc.collect()
    before = len(gc.get_objects())
    for key in keys:
        await store.set(key, key.encode(), 60)
    gc.collect()
    assert len(gc.get_objects()) - before <= len(keys) + 10


async def test_keys_follow_the_document_not_its_layout() -> None:
    cache = ResponseCache(MemoryStore(2**20), ttl=60, namespace=b"", readings=Readings(1000, 200))
    key = await cache.key(PACKAGE, {"id": 1}, None)
    assert key is not None
    assert await cache.key(PACKAGE_REFORMATTED, {"id": 1}, None) == key
    assert await cache.key(PACKAGE, {"id": 2}, None) != key
    assert await cache.key(TWO_OPERATIONS, None, "Grids") != await cache.key(
        TWO_OPERATIONS, None, "Categories"
    )
    # Nothing but a query is cached; nor is a document that will not run.
    assert await cache.key("mutation { anything }", None, None) is None
    assert await cache.key("subscription { anything }", None, None) is None
    assert await cache.key(TWO_OPERATIONS, None, None) is None  # which one?
    assert await cache.key(TWO_OPERATIONS, None, "Nope") is None
    assert await cache.key("{ package(id: 1) { title }", None, None) is None
    assert await cache.key("{ a " + "b " * 1000 + "}", None, None) is None  # over the token limit
    named = "query Named { categories { totalCount } }"
    assert await cache.key(named, None, None) == await cache.key(named, None, "Named")


def _namespace(sdl: str, settings: Settings) -> bytes:
    return namespace(sdl, answer_settings(settings))


def test_the_namespace_holds_the_limits_and_the_source() -> None:
    sdl = schema_for(Settings()).as_str()
    base = _namespace(sdl, Settings())
    assert _namespace(sdl, Settings(port=9000)) == base
    assert _namespace(sdl, Settings(introspection=False)) != base
    assert _namespace(sdl, Settings(max_cost=10)) != base
    assert _namespace(sdl, Settings(upstream="http://a.example")) != base
    assert _namespace(sdl + " ", Settings()) != base


def _another_value(field: dataclasses.Field[Any]) -> object:
    """A value of the setting's type other than its default."""
    kind, default = setting_type(field.name), getattr(Settings(), field.name)
    if kind is bool:
        return not default
    if kind is str:
        return f"{default or ''}x"
    return kind(default + 1)


def test_every_setting_that_changes_an_answer_is_in_the_namespace() -> None:
    """Declared in config.py as changing an answer, a setting cannot be left out of the response
    cache's namespace; the others, which do not, never split the cache."""
    sdl = "type Query { a: Int }"
    base = _namespace(sdl, Settings())
    changing: set[str] = set()
    for field in dataclasses.fields(Settings):
        other = Settings(**{field.name: _another_value(field)})  # type: ignore[arg-type]
        if _namespace(sdl, other) != base:
            changing.add(field.name)
    declared = {
        field.name for field in dataclasses.fields(Settings) if field.metadata["changes_answer"]
    }
    assert changing == declared
    # The source, the schema and the limits; not, for instance, the timeouts or the cache TTLs.
    assert declared == {
        "database",
        "upstream",
        "max_depth",
        "max_cost",
        "max_aliases",
        "max_tokens",
        "max_selections",
        "introspection",
        "federation",
    }


async def test_followers_run_their_own_when_the_first_answer_cannot_be_cached() -> None:
    cache = ResponseCache(MemoryStore(2**20), ttl=60, namespace=b"", readings=Readings(1000, 200))
    runs = 0
    asked = 0
    everyone_asked = asyncio.Event()  # the first run ends once all three wait for it

    async def ask(key: str, compute: Compute) -> str | Cached:
        nonlocal asked
        asked += 1
        if asked % 3 == 0:
            everyone_asked.set()
        return await cache.fetch(key, compute)

    async def failing() -> tuple[str, bytes | None]:
        nonlocal runs
        runs += 1
        await everyone_asked.wait()
        return "error", None

    assert await asyncio.gather(*(ask("a", failing) for _ in range(3))) == ["error"] * 3
    assert runs == 3

    async def succeeding() -> tuple[str, bytes | None]:
        nonlocal runs
        runs += 1
        await everyone_asked.wait()
        return "ok", b'{"data":{}}'

    runs = 0
    everyone_asked.clear()
    answers = await asyncio.gather(*(ask("b", succeeding) for _ in range(3)))
    assert runs == 1
    assert {answer.body for answer in answers if not isinstance(answer, str)} == {b'{"data":{}}'}
    assert len({id(answer) for answer in answers}) == 1
