"""`--cache redis://…`: every process and host shares the upstream bodies, the answers and the
persisted queries through a real Redis, and a burst on a cold key costs one upstream request.

The Redis is the server on 127.0.0.1:6379, in a database of its own for this test run (claimed
with a marker key, so that concurrent runs do not meet), emptied before and after each test.
Without that server these tests skip, except under CI, where they fail. The test of a Redis that
dies mid-run starts a `redis-server` of its own on a free port and kills it.
"""

from __future__ import annotations

import asyncio
import gc
import hashlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
import warnings
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from gateway.caching.persisted import TTL as APQ_TTL
from gateway.caching.response_cache import MemoryStore
from gateway.caching.shared_cache import SharedCache, SharedStore
from gateway.config import configure
from gateway.errors import ConfigError, SharedCacheUnavailable, UpstreamError
from gateway.loaders.rest.cache import Fetching, ResourceCache
from gateway.loaders.rest.shared import SharedBodies
from tests.fake_upstream import FakeUpstream
from tests.waiting import LISTENING, Output

ROOT = Path(__file__).resolve().parent.parent
REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
CLAIM = "djpgw-test:claim"  # marks a database as this run's
OURS = "djpgw:*"  # every key the gateway writes (KEY_PREFIX and the tests' own prefixes)

# Several resources: a list page, then each package's category and grids by id.
QUERY = (
    "{ packages(first: 6) { totalCount nodes { slug category { title }"
    " grids(first: 2) { nodes { slug } } } } }"
)


def _unreachable(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(reason)
    pytest.skip(reason)


def _only_ours(client: redis.Redis) -> bool:
    """Whether a database holds nothing but what these tests (or the gateway) left there."""
    return all(key.startswith((b"djpgw:", CLAIM.encode())) for key in client.scan_iter(count=1000))


@pytest.fixture(scope="session")
def redis_db() -> Iterator[int]:
    """A database of the test Redis for this run alone, emptied when the run ends."""
    token = uuid.uuid4().hex
    try:
        redis.Redis(host=REDIS_HOST, port=REDIS_PORT, socket_timeout=2).ping()
    except redis.RedisError as exc:
        _unreachable(f"Redis at {REDIS_HOST}:{REDIS_PORT} is unreachable: {exc}")
    for db in range(15, 0, -1):
        client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=db, socket_timeout=2)
        if not client.set(CLAIM, token, nx=True, ex=3600):
            continue  # another run's
        if _only_ours(client):
            client.flushdb()
            client.set(CLAIM, token, ex=3600)
            break
        client.delete(CLAIM)  # someone else's data: not ours to empty
    else:
        _unreachable("every database of the test Redis is in use")
    try:
        yield db
    finally:
        client.flushdb()


@pytest.fixture
def redis_url(redis_db: int) -> Iterator[str]:
    """The URL of this run's database, without a key of the gateway's before or after the test."""
    client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=redis_db)

    def clean() -> None:
        keys = list(client.scan_iter(OURS, count=1000))
        if keys:
            client.delete(*keys)

    clean()
    yield f"redis://{REDIS_HOST}:{REDIS_PORT}/{redis_db}"
    clean()


@pytest.fixture
async def caches(redis_url: str) -> AsyncIterator[tuple[SharedCache, SharedCache]]:
    """Two connections to the shared cache, as two processes have them, under a fresh prefix."""
    prefix = f"djpgw:test:{uuid.uuid4().hex[:8]}:"
    first, second = SharedCache(redis_url, prefix=prefix), SharedCache(redis_url, prefix=prefix)
    await first.start()
    await second.start()
    assert first.available and second.available
    yield first, second
    await first.aclose()
    await second.aclose()


class Origin:
    """A fake upstream body source: counts its fetches, slow if asked, failing if asked; `called`
    is set once it has been asked (its caller then holds the lock)."""

    def __init__(self, delay: float = 0.0, body: bytes = b'{"id": 1}') -> None:
        self.delay = delay
        self.body = body
        self.calls = 0
        self.failing = False
        self.called = asyncio.Event()

    async def __call__(self) -> bytes | None:
        self.calls += 1
        self.called.set()
        await asyncio.sleep(self.delay)  # the upstream's latency
        if self.failing:
            raise UpstreamError("The upstream API answered HTTP 503", "GET x/: HTTP 503")
        return self.body


def _age(client: redis.Redis, key: str, seconds: float) -> None:
    """Make `key` `seconds` older as Redis counts: what is left of its lifetime shrinks by as
    much (past its end, the key is gone, as if expired). Ages are Redis's own count (PTTL)."""
    left = client.pttl(key)
    assert left > 0, (key, left)
    client.pexpire(key, left - round(seconds * 1000))


def _bodies(shared: SharedCache, **options: Any) -> SharedBodies:
    settings: dict[str, Any] = {
        "ttl": 60.0,
        "stale": 600.0,
        "max_body": 2**20,
        "wait_limit": 5.0,
    }
    return SharedBodies(shared, "http://upstream.test/api/v4/", **{**settings, **options})


# -- the lock and the wait, against the real Redis ---------------------------------------


async def test_the_lock_is_one_holders_until_released_or_expired(
    caches: tuple[SharedCache, SharedCache], redis_url: str
) -> None:
    first, second = caches
    admin = redis.Redis.from_url(redis_url)
    assert await first.lock("lock:k", "a", 0.3)
    assert not await second.lock("lock:k", "b", 0.3)
    await second.unlock("lock:k", "b")  # not b's: left alone
    assert not await second.lock("lock:k", "b", 0.3)
    assert await first.extend("lock:k", "a", 0.3)
    assert not await second.extend("lock:k", "b", 0.3)
    await first.unlock("lock:k", "a")
    assert await second.lock("lock:k", "b", 0.2)
    assert 0 < admin.pttl(second.key("lock:k")) <= 200
    _age(admin, second.key("lock:k"), 0.3)  # expired: anyone may take it
    assert await first.lock("lock:k", "a", 0.2)
    assert not await first.extend("lock:k", "b", 0.3)


async def test_a_cold_burst_over_two_processes_fetches_once(
    caches: tuple[SharedCache, SharedCache],
) -> None:
    first, second = _bodies(caches[0]), _bodies(caches[1])
    origin = Origin(delay=0.3)
    started = time.monotonic()
    bodies = await asyncio.gather(
        first.get("packages/", {"limit": 5, "offset": 0}, origin),
        second.get("packages/", {"limit": 5, "offset": 0}, origin),
    )
    assert list(bodies) == [origin.body, origin.body]
    assert origin.calls == 1
    assert time.monotonic() - started < 1.0  # the waiter polled; it did not wait its limit
    # And later, fresh: from Redis, by either.
    assert await second.get("packages/", {"limit": 5, "offset": 0}, origin) == origin.body
    assert origin.calls == 1


async def test_a_404_is_shared_too(caches: tuple[SharedCache, SharedCache]) -> None:
    first, second = _bodies(caches[0]), _bodies(caches[1])
    origin = Origin(body=b"")

    async def missing() -> bytes | None:
        await origin()
        return None

    assert await first.get("grids/nope/", None, missing) is None
    assert await second.get("grids/nope/", None, missing) is None
    assert origin.calls == 1


async def test_a_fetch_longer_than_the_lock_keeps_it(
    caches: tuple[SharedCache, SharedCache],
) -> None:
    first, second = _bodies(caches[0], lock_ttl=0.3), _bodies(caches[1], lock_ttl=0.3)
    origin = Origin(delay=1.0)  # three lock lifetimes: extended all along
    holder = asyncio.create_task(first.get("search/", {"q": "forms"}, origin))
    await origin.called.wait()
    assert await second.get("search/", {"q": "forms"}, origin) == origin.body
    assert await holder == origin.body
    assert origin.calls == 1


async def test_when_the_holder_fails_a_waiter_fetches_at_once(
    caches: tuple[SharedCache, SharedCache],
) -> None:
    first, second = _bodies(caches[0]), _bodies(caches[1])
    failing = Origin(delay=0.2)
    failing.failing = True
    holder = asyncio.create_task(first.get("grids/1/", None, failing))
    await failing.called.wait()
    origin = Origin()
    started = time.monotonic()
    assert await second.get("grids/1/", None, origin) == origin.body
    assert origin.calls == 1
    assert time.monotonic() - started < 1.0  # not its wait limit (5 s)
    with pytest.raises(UpstreamError):
        await holder


async def test_when_the_holder_dies_a_waiter_fetches_once_its_lock_expires(
    caches: tuple[SharedCache, SharedCache], redis_db: int
) -> None:
    first, second = caches
    bodies = _bodies(second)
    key = bodies.key("grids/2/", None)
    assert await first.lock("lock:" + key, "dead", 0.4)  # taken, then never released
    origin = Origin()
    started = time.monotonic()
    assert await bodies.get("grids/2/", None, origin) == origin.body
    waited = time.monotonic() - started
    assert origin.calls == 1
    assert 0.3 <= waited < 2.0


async def test_the_age_of_a_shared_body_counts_in_each_process(
    caches: tuple[SharedCache, SharedCache], redis_url: str
) -> None:
    """B's copy of A's resource is fresh only for what is left of A's TTL; past it, A's copy
    is served by B as stale when the upstream fails."""
    admin = redis.Redis.from_url(redis_url)
    stored = caches[0].key(_bodies(caches[0]).key("categories/1/", None))
    ttl = 1.2
    a, b = ResourceCache(ttl=ttl, stale=60), ResourceCache(ttl=ttl, stale=60)
    bodies = _bodies(caches[0], ttl=ttl, stale=60), _bodies(caches[1], ttl=ttl, stale=60)
    origin = Origin()

    def via(shared: SharedBodies) -> Any:
        async def fetch(fetching: Fetching) -> tuple[bytes | None, int]:
            body = await shared.get("categories/1/", None, origin, fetching)
            return body, len(body or b"")

        return fetch

    assert await a.get("categories/1/", via(bodies[0])) == (origin.body, False)
    _age(admin, stored, 0.7)
    assert await b.get("categories/1/", via(bodies[1])) == (origin.body, False)
    assert origin.calls == 1
    assert 0 < b.fresh_for("categories/1/") <= ttl - 0.7
    # A refresh wants a copy younger than half the TTL: this one is not, so it refetches.
    await b.refresh("categories/1/", via(bodies[1]))
    assert origin.calls == 2
    assert b.fresh_for("categories/1/") > ttl - 0.3

    _age(admin, stored, ttl + 0.1)
    origin.failing = True
    c = ResourceCache(ttl=ttl, stale=60)
    assert await c.get("categories/1/", via(bodies[0])) == (origin.body, True)  # stale, and says so
    assert c.fresh_for("categories/1/") == 0


async def test_the_store_of_answers_and_documents_is_shared(
    caches: tuple[SharedCache, SharedCache],
) -> None:
    first = SharedStore(MemoryStore(2**20), caches[0])
    second = SharedStore(MemoryStore(2**20), caches[1])
    await first.set("response:abc", b"etag-and-body", 30)
    found = await second.get("response:abc")
    assert found is not None
    assert found[0] == b"etag-and-body"
    assert 29 < found[1] <= 30
    await first.set("apq:def", b"{ a }", float("inf"))
    assert await second.get("apq:def") == (b"{ a }", float("inf"))


# -- Redis unavailable or hung --------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def test_without_redis_everything_falls_back_and_says_so_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="gateway")
    shared = SharedCache(f"redis://:hunter2@127.0.0.1:{_free_port()}/0")  # nothing listens
    await shared.start()
    try:
        assert not shared.available
        reason = shared.health()
        assert reason is not None
        assert "unavailable" in reason
        assert "redis://:***@127.0.0.1" in reason
        assert "hunter2" not in reason + caplog.text
        bodies = _bodies(shared)
        origin = Origin()
        store = SharedStore(MemoryStore(2**20), shared)
        started = time.monotonic()
        for _ in range(20):
            assert await bodies.get("packages/1/", None, origin) == origin.body
            await store.set("response:x", b"y", 30)
            assert await store.get("response:x") is not None  # from this process's memory
        assert time.monotonic() - started < 0.5  # the circuit is open: Redis costs nothing
        assert origin.calls == 20  # no shared copy, no lock: each read is the upstream's
        with pytest.raises(SharedCacheUnavailable):
            await shared.get("anything")
        assert await shared.check() is not None
        assert caplog.text.count("is unavailable") == 1
    finally:
        await shared.aclose()


async def test_a_hung_redis_stalls_no_request() -> None:
    """A server that accepts connections and never answers: each call gives up in time."""

    accepted: list[asyncio.StreamWriter] = []

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)
        while await reader.read(65536):
            pass

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    shared = SharedCache(f"redis://127.0.0.1:{port}/0")
    try:
        started = time.monotonic()
        await shared.start()
        assert not shared.available
        origin = Origin()
        assert await _bodies(shared).get("packages/", None, origin) == origin.body
        assert time.monotonic() - started < 1.0
    finally:
        await shared.aclose()
        server.close()
        for writer in accepted:
            writer.transport.abort()
        await server.wait_closed()


def test_the_cache_url_is_checked_and_its_password_masked() -> None:
    report = configure({"cache": "redis://:hunter2@cache.internal:6379/3"}).report()
    assert 'cache = "redis://:***@cache.internal:6379/3"' in report
    assert "hunter2" not in report
    for wrong in ("http://cache.internal/", "redis://:hunter2@cache.internal/x", "redis://h:p"):
        with pytest.raises(ConfigError, match="--cache") as raised:
            configure({"cache": wrong})
        assert "hunter2" not in str(raised.value)


# -- real gateway processes ---------------------------------------------------------------


@dataclass
class Gateway:
    origin: str
    log: Output
    process: subprocess.Popen[str]

    def post(self, body: Any, **headers: str) -> httpx.Response:
        return httpx.post(f"{self.origin}/graphql", json=body, headers=headers, timeout=15)


def _env() -> dict[str, str]:
    return {name: value for name, value in os.environ.items() if not name.startswith("GATEWAY_")}


@contextmanager
def _gateways(
    tmp_path: Path, upstream: FakeUpstream, cache: str, *flags: str, count: int = 2
) -> Iterator[list[Gateway]]:
    """`count` gateway processes on ports of their own, sharing `cache`."""
    gateways: list[Gateway] = []
    try:
        for _ in range(count):
            port = _free_port()
            command = [sys.executable, "-m", "gateway", "serve", "--port", str(port)]
            command += ["--upstream", upstream.base_url, "--cache", cache]
            command += ["--no-warm-catalogue", "--log-level", "info", *flags]
            process = subprocess.Popen(
                command,
                env=_env(),
                cwd=tmp_path,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
            gateways.append(Gateway(f"http://127.0.0.1:{port}", Output(process.stderr), process))
        for gateway in gateways:
            gateway.log.wait_for(LISTENING)
            assert httpx.get(f"{gateway.origin}/healthz", timeout=5).status_code == 200
        yield gateways
    finally:
        for gateway in gateways:
            gateway.process.terminate()
        for gateway in gateways:
            gateway.process.wait(timeout=30)
            gateway.log.close()
    for gateway in gateways:
        text = gateway.log.text
        assert "Traceback" not in text, text
        assert gateway.process.returncode == -signal.SIGTERM


def _data(response: httpx.Response) -> Any:
    assert response.status_code == 200, response.text
    body = response.json()
    assert "errors" not in body, body
    return body["data"]


def test_a_resource_one_process_fetched_is_not_fetched_by_another(
    tmp_path: Path, upstream: FakeUpstream, redis_url: str
) -> None:
    # No response cache: the second process executes the query, from the shared bodies.
    with _gateways(tmp_path, upstream, redis_url, "--response-cache-ttl", "0") as (a, b):
        expected = _data(a.post({"query": QUERY}))
        fetched = len(upstream.requests)
        assert fetched >= 3
        upstream.reset()
        assert _data(b.post({"query": QUERY})) == expected
        assert upstream.requests == []


def test_a_cold_burst_across_two_processes_costs_one_request_per_resource(
    tmp_path: Path, upstream: FakeUpstream, redis_url: str
) -> None:
    with _gateways(tmp_path, upstream, redis_url, "--response-cache-ttl", "0") as gateways:
        upstream.latency = 0.3  # every upstream answer takes long enough for the burst to meet

        async def burst() -> list[httpx.Response]:
            async with httpx.AsyncClient(timeout=30) as client:
                return await asyncio.gather(
                    *(
                        client.post(f"{gateways[n % 2].origin}/graphql", json={"query": QUERY})
                        for n in range(50)
                    )
                )

        answers = [_data(response) for response in asyncio.run(burst())]
        assert all(answer == answers[0] for answer in answers)
        counted = Counter(upstream.requests)
        assert len(counted) >= 3  # a list page, categories, grids
        assert set(counted.values()) == {1}, counted


def test_the_response_cache_is_shared(
    tmp_path: Path, upstream: FakeUpstream, redis_url: str
) -> None:
    with _gateways(tmp_path, upstream, redis_url) as (a, b):
        first = a.post({"query": QUERY})
        expected = _data(first)
        # Without the bodies, only the shared answer can spare the second an upstream request.
        client = redis.Redis.from_url(redis_url)
        bodies = list(client.scan_iter("djpgw:v1:body:*"))
        assert bodies
        client.delete(*bodies)
        upstream.reset()
        second = b.post({"query": QUERY})
        assert _data(second) == expected
        assert second.headers["etag"] == first.headers["etag"]
        assert upstream.requests == []
        params = {"query": QUERY}
        revalidated = httpx.get(
            f"{b.origin}/graphql",
            params=params,
            headers={"if-none-match": first.headers["etag"]},
            timeout=15,
        )
        assert revalidated.status_code == 304
        assert upstream.requests == []


def test_a_persisted_query_registered_with_one_process_runs_on_another(
    tmp_path: Path, upstream: FakeUpstream, redis_url: str
) -> None:
    query = "{ categories { totalCount } }"
    extensions = {
        "persistedQuery": {"version": 1, "sha256Hash": hashlib.sha256(query.encode()).hexdigest()}
    }
    with _gateways(tmp_path, upstream, redis_url) as (a, b):
        expected = _data(a.post({"query": query, "extensions": extensions}))
        assert _data(b.post({"extensions": extensions})) == expected
    # Kept for a while, not for ever: clients cannot fill Redis with documents.
    client = redis.Redis.from_url(redis_url)
    [key] = client.scan_iter("djpgw:v1:gateway:apq:*")
    assert 0 < client.pttl(key) <= APQ_TTL * 1000


def test_a_persisted_query_is_kept_in_redis_without_its_comments(
    tmp_path: Path, upstream: FakeUpstream, redis_url: str
) -> None:
    """A registration padded with a 95 KB comment keeps the document alone, in Redis too."""
    query = "query Count {\n  categories { totalCount }  # " + "x" * 95_000 + "\n}\n"
    extensions = {
        "persistedQuery": {"version": 1, "sha256Hash": hashlib.sha256(query.encode()).hexdigest()}
    }
    with _gateways(tmp_path, upstream, redis_url, count=1) as [gateway]:
        expected = _data(gateway.post({"query": query, "extensions": extensions}))
        assert _data(gateway.post({"extensions": extensions})) == expected
    client = redis.Redis.from_url(redis_url)
    [key] = client.scan_iter("djpgw:v1:gateway:apq:*")
    assert client.get(key) == b"query Count{categories{totalCount}}"


@contextmanager
def _redis_server(port: int, tmp_path: Path, *options: str) -> Iterator[subprocess.Popen[str]]:
    binary = shutil.which("redis-server")
    if binary is None:
        _unreachable("redis-server is not installed")
    assert binary is not None
    command = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
    command += ["--appendonly", "no", "--dir", str(tmp_path), *options]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    log = Output(process.stdout)
    try:
        log.wait_for("Ready to accept connections", timeout=10)
        assert redis.Redis(port=port, socket_timeout=1).ping()
        yield process
    finally:
        process.kill()
        process.wait(timeout=10)
        log.close()


def test_redis_stopping_mid_run_leaves_both_processes_answering(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    port = _free_port()
    cache = f"redis://127.0.0.1:{port}/0"
    other = "{ grids(first: 3) { nodes { slug packages(first: 2) { nodes { slug } } } } }"
    third = "{ categories(first: 2) { nodes { slug title } } }"
    with _redis_server(port, tmp_path) as server, _gateways(tmp_path, upstream, cache) as (a, b):
        expected = _data(a.post({"query": QUERY}))
        upstream.reset()
        assert _data(b.post({"query": QUERY})) == expected
        assert upstream.requests == []

        server.kill()
        server.wait(timeout=10)
        for gateway in (a, b):
            assert _data(gateway.post({"query": QUERY})) == expected
            assert _data(gateway.post({"query": other}))  # cold: straight from the upstream
            assert _data(gateway.post({"query": other}))
        for gateway in (a, b):
            text = gateway.log.text
            assert text.count("is unavailable") == 1, text
            assert f"Redis at {cache}" in text

        with _redis_server(port, tmp_path):
            # The probes in the background find it back (within their cap, 5 s): then the cache
            # is shared again. Meanwhile each process answers from its own memory.
            for gateway in (a, b):
                _data(gateway.post({"query": QUERY}))
                gateway.log.wait_for("answers again", timeout=15)
            expected = _data(a.post({"query": third}))
            upstream.reset()
            assert _data(b.post({"query": third})) == expected
            assert upstream.requests == []
        for gateway in (a, b):
            assert gateway.log.text.count("is unavailable") == 1


async def test_a_command_the_server_refuses_is_a_miss_and_redis_stays_in_use(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An error reply (here OOM: the server is over its `maxmemory`) fails that command only:
    Redis is not marked down, reads go on, and the refusals are logged once, not each time."""
    caplog.set_level(logging.INFO, logger="gateway")
    port = _free_port()
    with _redis_server(port, tmp_path):
        admin = redis.Redis(port=port)
        shared = SharedCache(f"redis://127.0.0.1:{port}/0")
        await shared.start()
        try:
            await shared.set("kept", b"body", 60)
            admin.config_set("maxmemory-policy", "noeviction")
            admin.config_set("maxmemory", 1)  # every write is refused from now on
            store = SharedStore(MemoryStore(2**20), shared)
            origin = Origin()
            for n in range(20):
                with pytest.raises(SharedCacheUnavailable, match="OutOfMemoryError"):
                    await shared.set(f"refused:{n}", b"body", 60)
                await store.set(f"response:{n}", b"y", 30)  # in this process's memory only
                assert await _bodies(shared).get(f"grids/{n}/", None, origin) == origin.body
                assert shared.available
                assert await shared.get("kept") is not None  # reads still reach Redis
            assert origin.calls == 20
            assert shared.health() is None
            assert await shared.check() is None
            assert caplog.text.count("refused a command") == 1, caplog.text
            assert "OutOfMemoryError" in caplog.text
            assert "is unavailable" not in caplog.text
            assert "answers again" not in caplog.text
        finally:
            await shared.aclose()


async def test_a_busy_pool_is_a_miss_not_a_failure(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A command that finds every pooled connection in use (here, one connection, held by a
    command that the server answers late but in time) fails alone; Redis stays in use."""
    caplog.set_level(logging.INFO, logger="gateway")
    port = _free_port()
    with _redis_server(port, tmp_path, "--enable-debug-command", "yes"):
        shared = SharedCache(f"redis://127.0.0.1:{port}/0", max_connections=1)
        await shared.start()
        reader, sleeper = await asyncio.open_connection("127.0.0.1", port)
        try:
            await shared.set("kept", b"body", 60)
            # The server answers nobody for half a second (under a body's time limit, 1 s):
            # sent before the two reads below, it is the first command the server runs.
            sleeper.write(b"*3\r\n$5\r\nDEBUG\r\n$5\r\nSLEEP\r\n$3\r\n0.5\r\n")
            await sleeper.drain()

            async def timed_get() -> tuple[object, float]:
                """What a read gets (or the error it fails with), and how long it took."""
                started = time.monotonic()
                try:
                    found: object = await shared.get("kept")
                except SharedCacheUnavailable as exc:
                    found = exc
                return found, time.monotonic() - started

            # One read takes the only connection and waits for the server; the other finds
            # the pool busy.
            answers = await asyncio.gather(timed_get(), timed_get())
            [(refused, waited)] = [a for a in answers if isinstance(a[0], SharedCacheUnavailable)]
            assert "No connection available" in str(refused)
            assert waited < 0.3  # the pool's wait, not the server's
            assert shared.available
            [(held, _)] = [a for a in answers if not isinstance(a[0], SharedCacheUnavailable)]
            assert held is not None
            assert await reader.readline() == b"+OK\r\n"  # the server slept
            assert await shared.get("kept") is not None
            assert await shared.check() is None
            assert "is unavailable" not in caplog.text
        finally:
            sleeper.close()
            await sleeper.wait_closed()
            await shared.aclose()


async def test_closing_closes_every_pooled_connection(redis_url: str) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        shared = SharedCache(redis_url, prefix="djpgw:test:close:", max_connections=4)
        await shared.start()
        # Concurrent commands: several connections are opened, then back in the pool.
        await asyncio.gather(*(shared.set(f"k{n}", b"v" * 100_000, 10) for n in range(4)))
        await shared.aclose()
        del shared
        gc.collect()
    unclosed = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
    assert unclosed == []
