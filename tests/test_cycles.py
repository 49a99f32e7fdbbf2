"""No request leaves a reference cycle of the gateway's behind it, whatever became of it.

What a request leaves in cycles waits for a full collection of the garbage collector, which
stops the whole process for as long as it takes to go through every object it holds
(gateway/observability/stalls.py): under load, one every few seconds, 150 ms each. Each kind of
request bench/load.py sends (the frontend's queries, each attack of bench/hostile.py, answers
through upstream failures, stale copies, request timeouts, refusals past the connection cap) runs
here against a gateway on loopback with the collector off; a collection that keeps what it finds
(`DEBUG_SAVEALL`) then shows what they left: nothing may be a frame of the gateway's code, an
object of one of its classes, or an HTTP request of its to the upstream. (The test's own client,
httpx too, leaves cycles of its own.)
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import random
import types
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

import gateway
from bench.hostile import HANG_UP_AFTER, KINDS, Attacks
from bench.load import PACKAGE, hang_up
from bench.load import requests as frontend_requests
from gateway.app import create_app
from gateway.config import Settings
from gateway.http.connection_limits import HeadBoundedProtocol
from tests.conftest import settle
from tests.fake_upstream import FakeUpstream, serve_in_thread
from tests.waiting import documents_process_id

GATEWAY_CODE = str(Path(gateway.__file__).parent)
JSON_CONTENT = {"content-type": "application/json"}
WARM_UP = 20  # frontend queries before the requests looked at: the caches and plans filled

Send = Callable[[httpx.AsyncClient, FakeUpstream], Awaitable[None]]


def _of_the_gateway(found: object, upstream: str) -> str | None:
    """What `found` is, if it is a frame of the gateway's code, an object of its classes, or
    a request of its to the `upstream` (its base URL)."""
    if isinstance(found, types.FrameType):
        code = found.f_code
        if code.co_filename.startswith(GATEWAY_CODE):
            return f"frame {Path(code.co_filename).name}:{code.co_name}"
        return None
    if isinstance(found, httpx.Request) and str(found.url).startswith(upstream):
        return "httpx.Request to the upstream"
    kind = type(found)
    if kind.__module__.startswith("gateway."):
        return f"{kind.__module__}.{kind.__qualname__}"
    return None


@contextlib.contextmanager
def cycles_left(upstream: str) -> Iterator[list[str]]:
    """The gateway's objects, frames and requests to `upstream` left in reference cycles by
    what the block ran (with the collector off meanwhile), filled in as the block ends."""
    found: list[str] = []
    gc.collect()
    gc.disable()
    try:
        yield found
        gc.set_debug(gc.DEBUG_SAVEALL)
        gc.collect()
        found += filter(None, (_of_the_gateway(each, upstream) for each in gc.garbage))
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()


@contextlib.asynccontextmanager
async def gateway_client(
    upstream: FakeUpstream, settings: Settings
) -> AsyncIterator[httpx.AsyncClient]:
    """A gateway in front of `upstream`, served as `gateway serve` does (its protocol, its cap on
    connections), its documents' process up, warmed up by frontend queries; a client of it."""
    app = create_app(settings)
    with serve_in_thread(
        app, http=HeadBoundedProtocol, limit_concurrency=settings.max_connections + 1
    ) as origin:
        async with httpx.AsyncClient(base_url=origin, timeout=30) as client:
            await documents_process_id()
            for query, variables in _frontend(upstream, WARM_UP):
                await _post(client, {"query": query, "variables": variables})
            yield client


def _frontend(upstream: FakeUpstream, count: int) -> list[tuple[str, dict[str, Any]]]:
    made = frontend_requests(upstream.dataset, random.Random(count))
    return [next(made) for _ in range(count)]


async def _post(client: httpx.AsyncClient, body: object) -> int:
    response = await client.post("/graphql", content=orjson.dumps(body), headers=JSON_CONTENT)
    return response.status_code


async def _frontend_queries(client: httpx.AsyncClient, upstream: FakeUpstream) -> None:
    """bench.load's frontend mix, 20 at once."""
    queries = _frontend(upstream, 60)
    await asyncio.gather(*(_post(client, {"query": q, "variables": v}) for q, v in queries))


def _attack(kind: str) -> Send:
    async def send(client: httpx.AsyncClient, upstream: FakeUpstream) -> None:
        attacks = iter(Attacks(upstream.dataset, random.Random(0), [kind]))
        for _ in range(2):
            post = next(attacks)
            if post.hang_up is None:
                assert await _post(client, post.body) == 200
            else:
                upstream.latency = 0.2  # its searches in flight as it leaves
                await hang_up(client.base_url, post, HANG_UP_AFTER)
                await asyncio.sleep(0.5)  # the gateway notices, and cancels the request's work

    return send


def _faulty(**faults: Any) -> Send:
    """The frontend's queries while the upstream answers with `faults` (FakeUpstream's)."""

    async def send(client: httpx.AsyncClient, upstream: FakeUpstream) -> None:
        for name, value in faults.items():
            setattr(upstream, name, value)
        await _frontend_queries(client, upstream)

    return send


async def _stale(client: httpx.AsyncClient, upstream: FakeUpstream) -> None:
    """Queries answered from stale copies: the cache's TTL passed, the upstream down."""
    await asyncio.sleep(1.1)  # past `cache_ttl`
    upstream.outage = "503"
    await _frontend_queries(client, upstream)


async def _failed_then_timed_out(client: httpx.AsyncClient, upstream: FakeUpstream) -> None:
    """Requests timed out after a field failed: a package's category fails at once, its grids
    hang. The failure, already in its batch, never reaches an answer."""
    await asyncio.sleep(1.1)  # past `cache_ttl`: the records are fetched again
    upstream.faults = {"/api/v4/categories/": "503", "/api/v4/grids/": "hang"}
    queries = [(q, v) for q, v in _frontend(upstream, 60) if q == PACKAGE]
    await asyncio.gather(*(_post(client, {"query": q, "variables": v}) for q, v in queries))
    upstream.faults = {}


async def _refused(client: httpx.AsyncClient, upstream: FakeUpstream) -> None:
    """Many requests at once past the connection cap: some refused with a 503."""
    queries = _frontend(upstream, 40)
    statuses = await asyncio.gather(
        *(_post(client, {"query": q, "variables": v}) for q, v in queries)
    )
    assert 503 in statuses


KIND_OF_REQUESTS: dict[str, tuple[Send, dict[str, Any]]] = {
    "frontend": (_frontend_queries, {}),
    **{kind: (_attack(kind), {}) for kind in KINDS},
    "upstream-errors": (_faulty(random_faults={"503": 0.3, "hang": 0.05}), {"upstream_timeout": 1}),
    "outage": (_faulty(outage="503"), {}),
    "stale": (_stale, {"cache_ttl": 1, "warm_catalogue": False}),
    "request-timeouts": (_faulty(outage="hang"), {"request_timeout": 1}),
    "failed-then-timed-out": (
        _failed_then_timed_out,
        {
            "request_timeout": 1,
            "cache_ttl": 1,
            "cache_stale": 0.01,  # no stale copy to serve instead
            "warm_catalogue": False,  # nor a snapshot
            "upstream_retries": 0,
        },
    ),
    "refusals": (_refused, {"max_connections": 2}),
}


@pytest.mark.parametrize("kind", KIND_OF_REQUESTS)
def test_a_request_leaves_no_cycle_of_the_gateway(upstream: FakeUpstream, kind: str) -> None:
    send, settings = KIND_OF_REQUESTS[kind]

    async def requests() -> list[str]:
        gateway = Settings(upstream=upstream.base_url, response_cache_ttl=0, **settings)
        async with gateway_client(upstream, gateway) as client:
            with cycles_left(upstream.base_url) as found:
                await send(client, upstream)
                upstream.outage = None
                upstream.random_faults = {}
                await asyncio.to_thread(settle, upstream)
                await asyncio.sleep(0.2)  # the server's tasks end just after their answers
            return found

    found = asyncio.run(requests())
    counted: dict[str, int] = {}
    for name in found:
        counted[name] = counted.get(name, 0) + 1
    assert not counted, sorted(counted.items(), key=lambda item: -item[1])[:20]
