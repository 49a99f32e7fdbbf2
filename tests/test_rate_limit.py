"""Per-client rate limits: a budget of N requests a minute, spent at once if the client likes,
refilled at N a minute; shared by every process through Redis, each process's share without it.

The budgets' arithmetic runs on a clock the tests move (no sleeping for a refill); Redis's own
clock drives the shared budgets, so a minute passing there is the client's stored moment moved
back. Over HTTP the gateway is real (uvicorn on loopback), and the shared budget is checked with
two real worker processes on the real Redis.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import socket
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from gateway.caching.shared_cache import KEY_PREFIX, SharedCache
from gateway.config import configure
from gateway.errors import ConfigError
from gateway.http.rate_limit import SPAN, Buckets, RateLimit, client_key
from tests.fake_upstream import FakeUpstream
from tests.observing import Metrics, served
from tests.test_redis_cache import _redis_server, redis_db, redis_url
from tests.test_trusted_documents import serving
from tests.test_workers import _free_port, _workers
from tests.waiting import Clock, frozen

# The shared fixtures pytest finds by name in this module.
__all__ = ["redis_db", "redis_url"]

QUERY = "{ __typename }"


# -- the budget's arithmetic, in one process ----------------------------------------------


def test_a_client_may_spend_its_whole_budget_at_once_and_no_more() -> None:
    buckets = Buckets(5, clock=Clock())
    verdicts = [buckets.spend("a", 1) for _ in range(6)]
    assert [v.allowed for v in verdicts] == [True] * 5 + [False]
    assert [v.remaining for v in verdicts] == [4, 3, 2, 1, 0, 0]
    assert [round(v.reset) for v in verdicts[:5]] == [12, 24, 36, 48, 60]
    refused = verdicts[-1]
    assert refused.retry_after == pytest.approx(12.0)
    assert dict(refused.headers()) == {
        b"ratelimit-limit": b"5",
        b"ratelimit-remaining": b"0",
        b"ratelimit-reset": b"60",
        b"retry-after": b"12",
    }
    assert b"retry-after" not in dict(verdicts[0].headers())
    # Another client has a budget of its own.
    assert buckets.spend("b", 5).allowed


def test_the_budget_refills_at_n_a_minute_up_to_n() -> None:
    clock = Clock()
    buckets = Buckets(5, clock=clock)
    assert buckets.spend("a", 5).allowed
    clock.advance(11.9)
    refused = buckets.spend("a", 1)
    assert not refused.allowed
    assert dict(refused.headers())[b"retry-after"] == b"1"  # 0.1 s: whole seconds, at least 1
    clock.advance(0.1)
    assert buckets.spend("a", 1).allowed
    assert not buckets.spend("a", 1).allowed
    clock.advance(3600)  # an hour idle fills the bucket, no more
    assert buckets.spend("a", 5).remaining == 0
    assert not buckets.spend("a", 1).allowed


def test_a_refused_request_spends_nothing() -> None:
    clock = Clock()
    buckets = Buckets(10, clock=clock)
    assert buckets.spend("a", 6).remaining == 4
    refused = buckets.spend("a", 5)  # a batch larger than what is left
    assert not refused.allowed
    assert refused.retry_after == pytest.approx(6.0)  # one more request's refill
    assert buckets.spend("a", 4).allowed


def test_a_fractional_budget_rounds_no_request_away() -> None:
    """7 a minute: 60/7 s each, whose sums are not exact in floating point."""
    clock = Clock()
    buckets = Buckets(7, clock=clock)
    assert all(buckets.spend("a", 1).allowed for _ in range(7))
    assert not buckets.spend("a", 1).allowed
    clock.advance(SPAN)
    assert buckets.spend("a", 7).allowed


def test_memory_is_bounded_by_forgetting_the_least_recent_clients() -> None:
    buckets = Buckets(1, clock=Clock(), max_clients=3)
    for key in "abcd":
        assert buckets.spend(key, 1).allowed
    assert len(buckets) == 3
    assert buckets.spend("a", 1).allowed  # forgotten: a full bucket again
    assert not buckets.spend("d", 1).allowed


def test_a_refused_client_is_not_the_first_forgotten() -> None:
    """Refused, a client counts as seen lately: hammering does not age its empty bucket out."""
    buckets = Buckets(1, clock=Clock(), max_clients=3)
    for key in "abc":
        assert buckets.spend(key, 1).allowed
    assert not buckets.spend("a", 1).allowed  # "b" is now the least recently seen
    assert buckets.spend("d", 1).allowed
    assert not buckets.spend("a", 1).allowed


def test_clients_are_told_apart_by_address_or_by_a_header() -> None:
    scope: dict[str, Any] = {
        "client": ("10.0.0.7", 40000),
        "headers": [(b"x-api-key", b"k1"), (b"accept", b"*/*")],
    }
    assert client_key(scope, None) == "address:10.0.0.7"
    assert client_key(scope, b"x-api-key") == "header:k1"
    assert client_key(scope, b"x-other") == "address:10.0.0.7"  # without it: its address
    # A header's value never passes for an address.
    assert client_key({**scope, "headers": [(b"x-api-key", b"10.0.0.7")]}, b"x-api-key") != (
        client_key(scope, None)
    )


def test_the_settings_are_checked() -> None:
    settings = configure({"rate_limit": 120, "rate_limit_key": "header:X-API-Key"}).settings
    assert (settings.rate_limit, settings.rate_limit_key) == (120, "header:X-API-Key")
    assert configure().settings.rate_limit == 0  # none by default
    refused: list[tuple[dict[str, object], str]] = [
        ({"rate_limit": -1}, "rate limit may not be negative"),
        ({"rate_limit_key": "cookie"}, "address or header:NAME"),
        ({"rate_limit_key": "header:"}, "address or header:NAME"),
        ({"rate_limit_key": "header:X Key"}, "address or header:NAME"),
    ]
    for flags, needle in refused:
        with pytest.raises(ConfigError, match=needle):
            configure(flags)


# -- the budget shared through Redis -------------------------------------------------------


def _key(per_minute: int, client: str) -> str:
    digest = hashlib.blake2b(client.encode(), digest_size=16).hexdigest()
    return f"{KEY_PREFIX}rate:{per_minute}:{digest}"


async def test_every_process_spends_the_one_shared_budget(redis_url: str) -> None:
    first, second = SharedCache(redis_url), SharedCache(redis_url)
    await first.start()
    await second.start()
    try:
        # Two processes of a host of two workers: with Redis, the whole budget is shared.
        a = RateLimit(6, processes=2, shared=first)
        b = RateLimit(6, processes=2, shared=second)
        verdicts = [await (a if n % 2 else b).spend("address:10.0.0.1", 1) for n in range(7)]
        assert [v.allowed for v in verdicts] == [True] * 6 + [False]
        assert [v.remaining for v in verdicts] == [5, 4, 3, 2, 1, 0, 0]
        assert verdicts[-1].limit == 6
        assert 9 < verdicts[-1].retry_after <= 10  # a sixth of a minute
        assert 59 < verdicts[-2].reset <= 60
        assert (await a.spend("address:10.0.0.2", 6)).allowed  # another client
        # Twenty seconds pass (on Redis's clock: the client's moment moves back): two more.
        client = redis.Redis.from_url(redis_url)
        key = _key(6, "address:10.0.0.1")
        full_at = int(client.get(key) or 0)
        client.set(key, full_at - 20_000_000, px=60_000)
        assert (await b.spend("address:10.0.0.1", 2)).allowed
        assert not (await a.spend("address:10.0.0.1", 1)).allowed
        # The stored key is a digest, and it goes once the bucket is full again.
        assert not any(b"10.0.0.1" in stored for stored in client.scan_iter())
        assert 0 < client.pttl(key) <= SPAN * 1000
    finally:
        await first.aclose()
        await second.aclose()


async def test_the_script_and_the_local_budget_agree(redis_url: str) -> None:
    shared = SharedCache(redis_url)
    await shared.start()
    try:
        in_redis = RateLimit(10, shared=shared)
        local = Buckets(10, clock=Clock())
        for cost in [3, 4, 4, 2, 1, 1, 5]:
            expected = local.spend("k", cost)
            got = await in_redis.spend("k", cost)
            assert (got.allowed, got.remaining) == (expected.allowed, expected.remaining), cost
    finally:
        await shared.aclose()


async def test_without_redis_each_process_limits_its_share_and_says_so_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="gateway")
    shared = SharedCache(f"redis://:hunter2@127.0.0.1:{_free_port()}/0")  # nothing listens
    await shared.start()
    try:
        limit = RateLimit(10, processes=2, shared=shared)
        verdicts = [await limit.spend("address:10.0.0.1", 1) for _ in range(6)]
        assert [v.allowed for v in verdicts] == [True] * 5 + [False]  # its share: 10 / 2
        assert verdicts[-1].limit == 5
        lines = [line for line in caplog.text.splitlines() if "rate limits:" in line]
        assert len(lines) == 1, caplog.text
        assert "limits each client on its own, 5 requests a minute" in lines[0]
        assert "hunter2" not in caplog.text
    finally:
        await shared.aclose()


async def test_redis_going_and_coming_back_moves_the_budgets_and_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gateway")
    port = _free_port()
    with _redis_server(port, tmp_path) as server:
        shared = SharedCache(f"redis://127.0.0.1:{port}/0")
        await shared.start()
        try:
            limit = RateLimit(4, processes=2, shared=shared)
            assert (await limit.spend("k", 4)).allowed  # the whole budget, in Redis
            server.kill()
            server.wait(timeout=10)
            local = [await limit.spend("k", 1) for _ in range(3)]
            assert [v.allowed for v in local] == [True, True, False]  # this process's 4 / 2
            with _redis_server(port, tmp_path):
                recovery = shared._recovery  # the shared cache's probes, until one answers
                assert recovery is not None
                await asyncio.wait_for(asyncio.shield(recovery), 15)
                assert shared.available
                back = await limit.spend("k", 4)  # a new server: an empty budget
                assert back.allowed
                assert back.limit == 4
        finally:
            await shared.aclose()
    lines = [line for line in caplog.text.splitlines() if "rate limits:" in line]
    assert len(lines) == 2, caplog.text
    assert "is unavailable" in lines[0]
    assert "again" in lines[1]


# -- over HTTP -----------------------------------------------------------------------------


def _post(client: httpx.Client, body: Any, **headers: str) -> httpx.Response:
    return client.post("/graphql", json=body, headers=headers)


def test_over_its_budget_a_client_gets_429_and_every_answer_says_where_it_stands(
    upstream: FakeUpstream,
) -> None:
    clock = Clock()
    settings: dict[str, Any] = {"upstream": upstream.base_url, "warm_catalogue": False}
    with served(clock, **settings, rate_limit=3) as client:
        seen = Metrics(client)
        answers = [_post(client, {"query": QUERY}) for _ in range(2)]
        answers.append(client.get("/graphql", params={"query": QUERY}))
        refused = _post(client, {"query": QUERY})
        refused_get = client.get("/graphql", params={"query": QUERY})
        seen.read()
        clock.advance(20)  # a third of a minute: one request back
        again = _post(client, {"query": QUERY})
        assert again.status_code == 200
        assert again.headers["ratelimit-remaining"] == "0"
        assert _post(client, {"query": QUERY}).status_code == 429

    for n, answer in enumerate(answers):
        assert answer.status_code == 200, answer.text
        assert answer.headers["ratelimit-limit"] == "3"
        assert answer.headers["ratelimit-remaining"] == str(2 - n)
        assert answer.headers["ratelimit-reset"] == str(20 * (n + 1))
        assert "retry-after" not in answer.headers
    for response in (refused, refused_get):
        assert response.status_code == 429
        assert response.headers["content-type"] == "application/json"
        assert response.headers["retry-after"] == "20"
        assert response.headers["ratelimit-remaining"] == "0"
        [error] = response.json()["errors"]
        assert error["extensions"] == {"code": "RATE_LIMITED"}
        assert "3 requests a minute" in error["message"]
    assert seen.gained("gateway_refusals_total", limit="rate") == 2
    assert seen.gained("gateway_requests_total", operation="unknown", outcome="refused") == 2
    assert upstream.requests == []  # `__typename` needs none: nothing else ran either


def test_each_operation_of_a_batch_counts(upstream: FakeUpstream) -> None:
    with served(upstream=upstream.base_url, warm_catalogue=False, rate_limit=5) as client:
        batch = _post(client, [{"query": QUERY}] * 3)
        assert batch.status_code == 200
        assert batch.headers["ratelimit-remaining"] == "2"
        over = _post(client, [{"query": QUERY}] * 3)  # 1 on arrival, then 2 more: refused
        assert over.status_code == 429
        assert over.json()["errors"][0]["extensions"]["code"] == "RATE_LIMITED"
        assert over.headers["retry-after"] == "12"
        assert over.headers["ratelimit-remaining"] == "1"
        last = _post(client, {"query": QUERY})
        assert last.status_code == 200
        assert last.headers["ratelimit-remaining"] == "0"


def test_clients_are_keyed_by_address_or_by_header(upstream: FakeUpstream) -> None:
    # uvicorn trusts X-Forwarded-For from loopback: each value is another client's address.
    with served(upstream=upstream.base_url, warm_catalogue=False, rate_limit=1) as client:
        assert _post(client, {"query": QUERY}, **{"x-forwarded-for": "10.0.0.1"}).is_success
        assert _post(client, {"query": QUERY}, **{"x-forwarded-for": "10.0.0.1"}).status_code == 429
        assert _post(client, {"query": QUERY}, **{"x-forwarded-for": "10.0.0.2"}).is_success
    key = "header:X-API-Key"
    with served(
        upstream=upstream.base_url, warm_catalogue=False, rate_limit=1, rate_limit_key=key
    ) as client:
        seen = Metrics(client)
        assert _post(client, {"query": QUERY}, **{"x-api-key": "secret-one"}).is_success
        assert _post(client, {"query": QUERY}, **{"x-api-key": "secret-one"}).status_code == 429
        assert _post(client, {"query": QUERY}, **{"x-api-key": "secret-two"}).is_success
        assert _post(client, {"query": QUERY}).is_success  # no key: its address's budget
        assert _post(client, {"query": QUERY}).status_code == 429
        seen.read()
        metrics_text = client.get("/metrics").text
    assert "secret" not in metrics_text and "127.0.0.1" not in metrics_text
    assert seen.gained("gateway_refusals_total", limit="rate") == 2


def test_a_refused_request_is_answered_before_its_body_arrives(upstream: FakeUpstream) -> None:
    """Over its budget a client costs the gateway a header read: the body is never waited for."""
    with served(upstream=upstream.base_url, warm_catalogue=False, rate_limit=1) as client:
        assert _post(client, {"query": QUERY}).is_success
        host, port = str(client.base_url.host), int(client.base_url.port or 80)
        with socket.create_connection((host, port), timeout=5) as sock:
            head = (
                "POST /graphql HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/json\r\n"
                "Content-Length: 100000\r\n\r\n"
            )
            sock.sendall(head.encode())  # and not one byte of the body
            answer = sock.recv(65536).decode("latin-1")
    assert answer.startswith("HTTP/1.1 429 "), answer
    assert "retry-after: 60" in answer.lower()


# -- two workers, one budget in Redis --------------------------------------------------------


def test_two_workers_share_each_clients_budget_through_redis(
    tmp_path: Path, upstream: FakeUpstream, redis_url: str
) -> None:
    flags = ["--cache", redis_url, "--rate-limit", "6", "--rate-limit-key", "header:X-API-Key"]
    with serving(tmp_path, upstream, 2, *flags) as gateway:
        first, second = _workers(gateway.process.pid)

        def send(key: str) -> int:
            # A new connection each time: whichever worker is running accepts it.
            headers = {"x-api-key": key}
            response = httpx.post(
                f"{gateway.origin}/graphql", json={"query": QUERY}, headers=headers
            )
            return response.status_code

        # Each worker alone would allow 3 (its share of 6): through Redis, the one answering
        # spends the whole budget, and then the other has nothing left to give.
        with frozen(first):
            assert [send("a") for _ in range(7)] == [200] * 6 + [429]
        with frozen(second):
            assert send("a") == 429
            assert send("b") == 200
