"""The upstream work one request can cause is bounded, and stops when nobody waits for it.

Each attack of the kind a hostile client would try runs against a real gateway on loopback in
front of the fake APIv4, whose request log counts what reached the upstream.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gc
import logging
import threading
import unittest
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest

from gateway.app import create_app
from gateway.config import Settings
from gateway.errors import UPSTREAM_BUDGET_EXCEEDED
from gateway.loaders.rest.cache import Fetching, ResourceCache
from tests.fake_upstream import FakeUpstream, serve_in_thread

NODES = "query($ids: [ID!]!) { nodes(ids: $ids) { id } }"


@contextlib.asynccontextmanager
async def gateway(upstream: FakeUpstream, **settings: Any) -> AsyncIterator[httpx.AsyncClient]:
    """A gateway of the test's own in front of `upstream`, and a client of it."""
    app = create_app(Settings(upstream=upstream.base_url, **settings))
    with serve_in_thread(app) as origin:
        async with httpx.AsyncClient(base_url=origin, timeout=30) as client:
            yield client


def unknown_package_ids(upstream: FakeUpstream, count: int) -> list[str]:
    """Global ids of packages the catalogue does not have, below its highest id and above."""
    known = {row.id for row in upstream.dataset.packages}
    ids = [id for id in range(1, max(known) + count + 1) if id not in known][:count]
    return [base64.b64encode(f"Package:{id}".encode()).decode() for id in ids]


def aliased_searches(operation: int, count: int) -> str:
    fields = " ".join(
        f'q{i}: search(query: "nothing-{operation}-{i}") {{ title }}' for i in range(count)
    )
    return "{ " + fields + " }"


def codes(body: dict[str, Any]) -> list[str]:
    return [error["extensions"]["code"] for error in body.get("errors", [])]


class AccessLine(logging.Handler):
    """Sets `seen` once the gateway logs a request line with `status`."""

    def __init__(self, status: int) -> None:
        super().__init__()
        self.status = status
        self.seen = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        access = getattr(record, "access", None)
        if access is not None and access["status"] == self.status:
            self.seen.set()


@contextlib.contextmanager
def access_line(status: int) -> Any:
    handler = AccessLine(status)
    logger = logging.getLogger("gateway.access")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield handler.seen
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


async def nothing_more_reaches_the_upstream(
    upstream: FakeUpstream, client: httpx.AsyncClient, before: int
) -> None:
    """Once the abandoned work's requests have ended, a sentinel query is the only request
    that reaches the upstream: the upstream's slots are handed out in order, so anything of
    the abandoned work still queued would have gone first."""
    assert await asyncio.to_thread(upstream.wait_until, lambda: upstream.in_flight == 0)
    assert upstream.count <= before
    abandoned = upstream.count
    body = (
        await client.post("/graphql", json={"query": '{ search(query: "sentinel") { title } }'})
    ).json()
    assert "errors" not in body
    assert upstream.requests[abandoned:] == ["/api/v4/search/?q=sentinel"]


# -- ids and slugs the warm snapshot proves unknown ---------------------------------------------


async def test_four_thousand_unknown_global_ids_cost_no_request_on_a_warm_snapshot(
    upstream: FakeUpstream,
) -> None:
    ids = unknown_package_ids(upstream, 4000)
    async with gateway(upstream, warm_catalogue=True) as client:
        upstream.reset()  # the snapshot's three lists, read at start-up
        response = await client.post("/graphql", json={"query": NODES, "variables": {"ids": ids}})
    assert response.json() == {"data": {"nodes": [None] * len(ids)}}
    assert upstream.count == 0


async def test_unknown_ids_cost_a_cold_gateway_only_the_snapshot(upstream: FakeUpstream) -> None:
    ids = unknown_package_ids(upstream, 4000)
    async with gateway(upstream, warm_catalogue=False) as client:
        upstream.reset()
        response = await client.post("/graphql", json={"query": NODES, "variables": {"ids": ids}})
    assert response.json() == {"data": {"nodes": [None] * len(ids)}}
    assert sorted(upstream.requests) == [
        "/api/v4/categories/?limit=100000&offset=0",
        "/api/v4/grids/?limit=100000&offset=0",
        "/api/v4/packages/?limit=100000&offset=0",
    ]


async def test_a_batch_of_aliased_unknown_slugs_costs_no_request_on_a_warm_snapshot(
    upstream: FakeUpstream,
) -> None:
    operations = [
        {
            "query": "{ "
            + " ".join(f'p{i}: package(slug: "no-such-{op}-{i}") {{ id }}' for i in range(30))
            + " }"
        }
        for op in range(10)
    ]
    async with gateway(upstream, warm_catalogue=True) as client:
        upstream.reset()
        bodies = (await client.post("/graphql", json=operations)).json()
    assert all(body == {"data": {f"p{i}": None for i in range(30)}} for body in bodies)
    assert upstream.count == 0


# -- the budget --------------------------------------------------------------------------------


async def test_a_batch_of_aliased_searches_stops_at_the_budget(upstream: FakeUpstream) -> None:
    """10 operations x 30 aliased searches: 300 searches, of which the budget allows 100.

    `search` is non-null: an operation with a search past the budget has null data."""
    operations = [{"query": aliased_searches(op, 30)} for op in range(10)]
    async with gateway(upstream, warm_catalogue=False) as client:
        bodies = (await client.post("/graphql", json=operations)).json()
    assert 90 <= upstream.count <= 100  # the default `--max-upstream-requests`
    assert all("errors" not in body for body in bodies[:3])
    for body in bodies[3:]:
        assert body["data"] is None and set(codes(body)) == {UPSTREAM_BUDGET_EXCEEDED}
    message = bodies[3]["errors"][0]["message"]
    assert message == "The request needed more than 100 upstream requests"


async def test_the_budget_is_a_setting_and_shared_work_is_not_charged_twice(
    upstream: FakeUpstream,
) -> None:
    operations = [{"query": aliased_searches(op, 1)} for op in range(8)]
    async with gateway(upstream, warm_catalogue=False, max_upstream_requests=5) as client:
        first = (await client.post("/graphql", json=operations)).json()
        assert upstream.count == 5
        assert [codes(body) for body in first] == [[]] * 5 + [[UPSTREAM_BUDGET_EXCEEDED]] * 3
        # The five searches cached cost nothing now: three more requests, within the budget.
        again = (await client.post("/graphql", json=operations)).json()
    assert all("errors" not in body for body in again) and upstream.count == 8


# -- work nobody waits for ---------------------------------------------------------------------


async def hang_up_during(upstream: FakeUpstream, client: httpx.AsyncClient, sent: Any) -> None:
    """Post `sent` over a connection of its own, and close it once two upstream requests have
    arrived; return once the gateway has logged the request as a 499."""
    body = orjson.dumps(sent)
    with access_line(499) as logged:
        port = int(str(client.base_url).rsplit(":", 1)[1].rstrip("/"))
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            b"POST /graphql HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        await writer.drain()
        assert await asyncio.to_thread(upstream.wait_until, lambda: upstream.count >= 2)
        writer.close()
        await writer.wait_closed()
        assert await asyncio.to_thread(logged.wait, 10)


async def test_a_client_hanging_up_stops_its_upstream_work(upstream: FakeUpstream) -> None:
    upstream.latency = 0.3  # 30 searches, two at a time: about 4.5 s, if it went on
    async with gateway(upstream, warm_catalogue=False, upstream_max_in_flight=2) as client:
        await hang_up_during(upstream, client, {"query": aliased_searches(0, 30)})
        upstream.latency = 0.0
        await nothing_more_reaches_the_upstream(upstream, client, before=4)


async def test_work_nobody_waits_for_ends_without_a_traceback(upstream: FakeUpstream) -> None:
    """The searches the client left, cancelled or failed, leave no "Task exception was never
    retrieved" behind: a traceback per field in the log for each client that hangs up."""
    upstream.latency = 0.3
    async with gateway(upstream, warm_catalogue=False, upstream_max_in_flight=2) as client:
        with unittest.TestCase().assertNoLogs("asyncio", logging.ERROR):
            batch = [{"query": aliased_searches(op, 30)} for op in range(10)]
            await hang_up_during(upstream, client, batch)
            upstream.latency = 0.0
            await nothing_more_reaches_the_upstream(upstream, client, before=4)
            gc.collect()  # what is left of the request, so that asyncio would log it now


async def test_a_timed_out_request_stops_its_upstream_work(upstream: FakeUpstream) -> None:
    upstream.latency = 0.4
    async with gateway(
        upstream, warm_catalogue=False, upstream_max_in_flight=2, request_timeout=1.0
    ) as client:
        body = (await client.post("/graphql", json={"query": aliased_searches(0, 30)})).json()
        assert codes(body) == ["REQUEST_TIMEOUT"]
        upstream.latency = 0.0
        await nothing_more_reaches_the_upstream(upstream, client, before=8)


async def test_a_shared_fetch_goes_on_while_anyone_waits_and_stops_when_none_does() -> None:
    cache = ResourceCache(ttl=60, stale=0)
    release = asyncio.Event()
    started = cancelled = 0

    async def fetch(fetching: Fetching) -> tuple[str, int]:
        nonlocal started, cancelled
        started += 1
        try:
            await release.wait()
        except asyncio.CancelledError:
            cancelled += 1
            raise
        return "value", 5

    first = asyncio.create_task(cache.get("key", fetch))
    second = asyncio.create_task(cache.get("key", fetch))
    await asyncio.sleep(0)  # both wait for the one fetch
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    release.set()
    assert await second == ("value", False) and (started, cancelled) == (1, 0)

    release.clear()
    alone = asyncio.create_task(cache.get("other", fetch))
    await asyncio.sleep(0)
    alone.cancel()
    with pytest.raises(asyncio.CancelledError):
        await alone
    await asyncio.sleep(0)  # the fetch's own cancellation runs
    assert (started, cancelled) == (2, 1)
    # The next caller starts a fetch of its own, and gets its value.
    release.set()
    assert await cache.get("other", fetch) == ("value", False) and started == 3
