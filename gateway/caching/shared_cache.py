"""The cache every process and every host shares: Redis, with `--cache redis://…`.

Three things live there, each also kept in the process's own memory in front of it: the upstream's
raw bodies (gateway/loaders/rest/shared.py, the second layer of the resource cache), whole answers
(gateway/caching/response_cache.py) and persisted queries (gateway/caching/persisted.py). The
clients' rate budgets live there too (gateway/http/rate_limit.py): each process keeps its own only
while Redis is away. Every key starts with `KEY_PREFIX`, which carries the format's version, so that
gateways of another version sharing the server never read what they cannot decode.

Redis is a help, never a need. Every command has a short time limit (`COMMAND_TIMEOUT`, or
`TRANSFER_TIMEOUT` for one that carries a body), and the first failure to reach the server (no
connection, a timeout) marks it unavailable: from then on no request calls it, each one is served
from the process's own memory and the upstream, until a probe in the background (a PING, after half
a second, then less and less often, up to every `PROBE_CAP` seconds) finds it answering again. Both
changes are logged once. A command the server answers with an error (OOM, READONLY) or one that
finds every pooled connection busy for `POOL_TIMEOUT` only fails (a miss, a write not done); the
server stays in use. The server's errors are logged at most once per `REFUSAL_LOG_INTERVAL`.
`available` and `health()` tell `/readyz` the state without asking the server; `check()` asks it
(a PING) while it is thought available.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError

from gateway.caching.response_cache import MemoryStore
from gateway.config import mask
from gateway.errors import SharedCacheUnavailable
from gateway.observability import metrics

logger = logging.getLogger("gateway")

T = TypeVar("T")

KEY_PREFIX = "djpgw:v1:"
COMMAND_TIMEOUT = 0.2  # seconds for a small command: a hung server stalls no request longer
TRANSFER_TIMEOUT = 1.0  # seconds for a command that carries a body (up to megabytes)
PROBE_FIRST = 0.5  # seconds from a failure to the first probe; doubled after each failed one
PROBE_CAP = 5.0
MAX_CONNECTIONS = 64  # per process
# Seconds a command waits for a pooled connection, less than any command's time limit: a busy
# pool fails that command alone (a miss), where a hung server times it out and marks it down.
POOL_TIMEOUT = 0.1
REFUSAL_LOG_INTERVAL = 60.0  # seconds between two warnings about commands the server refused
_BUSY = "every pooled connection is in use"

# Delete (or extend) a lock only if it is still the caller's: it may have expired and been taken.
_UNLOCK = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end"
_EXTEND = (
    "if redis.call('get', KEYS[1]) == ARGV[1] then"
    " return redis.call('pexpire', KEYS[1], ARGV[2]) end"
)


class SharedCache:
    """One process's connection pool to the shared Redis, and what it knows of its state."""

    def __init__(
        self, url: str, *, prefix: str = KEY_PREFIX, max_connections: int = MAX_CONNECTIONS
    ) -> None:
        self.url = url
        self.shown_url = mask(url)
        self.prefix = prefix
        self.max_connections = max_connections
        self._refusal_logged = -math.inf  # when a refused command was last logged
        self._client: aioredis.Redis | None = None
        self._down: str | None = "not started"
        self._recovery: asyncio.Task[None] | None = None

    # -- lifetime and state -------------------------------------------------------------

    async def start(self) -> None:
        """Open the pool (in the serving event loop) and try the server once; never raises."""
        pool = aioredis.BlockingConnectionPool.from_url(
            self.url,
            max_connections=self.max_connections,
            timeout=POOL_TIMEOUT,
            socket_timeout=TRANSFER_TIMEOUT,
            socket_connect_timeout=COMMAND_TIMEOUT,
            retry=Retry(NoBackoff(), 0),
        )
        self._client = aioredis.Redis(connection_pool=pool)
        reason = await self._ping()
        if reason is None:
            self._down = None
            logger.info("shared cache: Redis at %s answers", self.shown_url)
        else:
            self._mark_down(reason)

    async def aclose(self) -> None:
        if self._recovery is not None:
            self._recovery.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._recovery
        if self._client is not None:
            client, self._client = self._client, None
            with contextlib.suppress(Exception):
                # The client was given the pool: it closes the pool's connections only if told.
                await client.aclose(close_connection_pool=True)
        self._down = "closed"

    @property
    def available(self) -> bool:
        """Whether the server answered last time it was asked (requests use it)."""
        return self._down is None

    def health(self) -> str | None:
        """None while available; otherwise why not, in one line (passwords masked)."""
        if self._down is None:
            return None
        return f"shared cache Redis at {self.shown_url} unavailable: {self._down}"

    async def check(self) -> str | None:
        """`health()`, after a PING if the server is thought available (a failure marks it
        down, unless every pooled connection was busy); while it is down, the probes in the
        background keep the reason current."""
        if self._down is None:
            reason = await self._ping()
            if reason is not None and reason != _BUSY:
                self._mark_down(reason)
        return self.health()

    def _mark_down(self, reason: str) -> None:
        """Stop using the server; log it once, and probe it in the background until it is back."""
        if self._down is None or self._down == "not started":
            logger.warning(
                "shared cache: Redis at %s is unavailable (%s): serving from this process's"
                " memory until it is back",
                self.shown_url,
                reason,
            )
        self._down = reason
        if self._recovery is None and self._client is not None:
            self._recovery = asyncio.get_running_loop().create_task(self._recover())

    async def _recover(self) -> None:
        """PING after `PROBE_FIRST` seconds, then twice as long after each failure (up to
        `PROBE_CAP`), until the server answers; then let requests use it again."""
        delay = PROBE_FIRST
        try:
            while True:
                await asyncio.sleep(delay)
                reason = await self._ping()
                if reason is None:
                    break
                self._down = reason
                delay = min(delay * 2, PROBE_CAP)
            if self._client is not None:
                # The pooled connections are from before the failure: a restarted server has
                # closed them, and each would fail its next command.
                with contextlib.suppress(Exception):
                    await self._client.connection_pool.disconnect()
            logger.warning("shared cache: Redis at %s answers again", self.shown_url)
            self._down = None
        finally:
            self._recovery = None

    def _admit(self) -> aioredis.Redis:
        """The client, if requests may use the server now."""
        if self._client is None or self._down is not None:
            raise SharedCacheUnavailable(self._down)
        return self._client

    async def _ping(self) -> str | None:
        """None if the server answers a PING in time, else the reason it did not."""
        if self._client is None:
            return "not started"
        try:
            async with asyncio.timeout(COMMAND_TIMEOUT):
                await self._client.ping()
        except (RedisError, OSError, TimeoutError) as exc:
            return _BUSY if _pool_busy(exc) else _reason(exc)
        return None

    async def _run(
        self, command: Callable[[aioredis.Redis], Awaitable[T]], timeout: float = COMMAND_TIMEOUT
    ) -> T:
        """Run a command within `timeout`; any failure raises `SharedCacheUnavailable`, and one
        that says the server cannot be reached (no connection, a timeout) marks it down."""
        client = self._admit()
        try:
            async with asyncio.timeout(timeout):
                return await command(client)
        except ResponseError as exc:  # the server answered, with an error: it is up
            self._log_refusal(exc)
            raise SharedCacheUnavailable(_reason(exc)) from exc
        except (RedisError, OSError, TimeoutError) as exc:
            reason = _reason(exc)
            if not _pool_busy(exc):
                self._mark_down(reason)
            raise SharedCacheUnavailable(reason) from exc

    def _log_refusal(self, exc: ResponseError) -> None:
        """Warn of a command the server refused (OOM, READONLY), at most once per interval."""
        now = time.monotonic()
        if now - self._refusal_logged >= REFUSAL_LOG_INTERVAL:
            self._refusal_logged = now
            logger.warning(
                "shared cache: Redis at %s refused a command (%s): it counts as a miss, or a"
                " write not done (logged at most every %g s)",
                self.shown_url,
                _reason(exc),
                REFUSAL_LOG_INTERVAL,
            )

    # -- commands (keys without the prefix) --------------------------------------------

    def key(self, key: str) -> str:
        return self.prefix + key

    async def get(self, key: str) -> tuple[bytes, int] | None:
        """The value at `key` and the milliseconds it has left (-1: no expiry), or None."""

        async def command(client: aioredis.Redis) -> list[object]:
            async with client.pipeline(transaction=False) as pipe:
                pipe.get(self.key(key))
                pipe.pttl(self.key(key))
                return await pipe.execute()

        value, left = await self._run(command, TRANSFER_TIMEOUT)
        if isinstance(value, bytes) and isinstance(left, int) and left != -2:
            metrics.cache_lookup("redis", True)
            return value, left
        metrics.cache_lookup("redis", False)
        return None

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        """Keep `value` at `key` for `ttl` seconds (`math.inf`: until Redis evicts it)."""
        if ttl <= 0:
            return
        px = None if math.isinf(ttl) else max(1, round(ttl * 1000))
        await self._run(lambda client: client.set(self.key(key), value, px=px), TRANSFER_TIMEOUT)

    async def lock(self, key: str, token: str, ttl: float) -> bool:
        """Take the lock at `key` for `ttl` seconds unless another holds it: whether taken."""
        taken = await self._run(
            lambda client: client.set(self.key(key), token, nx=True, px=round(ttl * 1000))
        )
        return bool(taken)

    async def extend(self, key: str, token: str, ttl: float) -> bool:
        """Give the caller's lock `ttl` more seconds: False if it is no longer the caller's."""
        px = str(round(ttl * 1000))
        done = await self._run(lambda client: _eval(client, _EXTEND, self.key(key), token, px))
        return bool(done)

    async def unlock(self, key: str, token: str) -> None:
        """Release the caller's lock (another's is left alone)."""
        await self._run(lambda client: _eval(client, _UNLOCK, self.key(key), token))

    async def script(self, script: str, key: str, *args: str) -> object:
        """Run a Lua script on `key`, atomically (EVAL): a client's rate budget
        (gateway/http/rate_limit.py)."""
        return await self._run(lambda client: _eval(client, script, self.key(key), *args))

    async def peek(self, key: str, lock: str) -> tuple[tuple[bytes, int] | None, bool]:
        """The value at `key` as `get` has it, and whether the lock at `lock` is held.

        The lock is read first: its holder stores the value before it lets the lock go, so a
        lock seen gone means the value, if it came, is seen too.
        """

        async def command(client: aioredis.Redis) -> list[object]:
            async with client.pipeline(transaction=False) as pipe:
                pipe.exists(self.key(lock))
                pipe.get(self.key(key))
                pipe.pttl(self.key(key))
                return await pipe.execute()

        locked, value, left = await self._run(command, TRANSFER_TIMEOUT)
        held = isinstance(locked, int) and locked > 0
        if not isinstance(value, bytes) or not isinstance(left, int) or left == -2:
            return None, held
        return (value, left), held


def _eval(client: aioredis.Redis, script: str, key: str, *args: str) -> Awaitable[object]:
    return client.eval(script, 1, key, *args)


def _pool_busy(exc: BaseException) -> bool:
    """Whether a command found every connection of the pool in use for `POOL_TIMEOUT`."""
    return (
        isinstance(exc, RedisConnectionError)
        and isinstance(exc.__cause__, TimeoutError)
        and str(exc).startswith("No connection available")
    )


def _reason(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    text = " ".join(str(exc).split()).rstrip(".")
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class SharedStore:
    """A response-cache `Store` (gateway/caching/response_cache.py) in this process's memory, in
    front of the shared cache: what one process keeps, the others find. Without Redis, the memory
    alone."""

    def __init__(self, local: MemoryStore, shared: SharedCache) -> None:
        self.local = local
        self.shared = shared

    def at_hand(self, key: str) -> tuple[bytes, float] | None:
        return self.local.at_hand(key)

    async def get(self, key: str) -> tuple[bytes, float] | None:
        found = await self.local.get(key)
        if found is not None:
            return found
        try:
            stored = await self.shared.get(key)
        except SharedCacheUnavailable:
            return None
        if stored is None:
            return None
        value, left_ms = stored
        left = math.inf if left_ms < 0 else left_ms / 1000
        await self.local.set(key, value, left)
        return value, left

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        await self.local.set(key, value, ttl)
        with contextlib.suppress(SharedCacheUnavailable):
            await self.shared.set(key, value, ttl)
