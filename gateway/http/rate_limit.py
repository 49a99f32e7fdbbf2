"""Rate limits: each client may make `rate_limit` requests a minute, each operation of a batch
counted, and may spend its whole minute's budget at once, no more.

A budget is a token bucket of capacity N refilled at N a minute, kept as GCRA keeps it: one number
per client, the moment its bucket will be full again. A request costing `cost` moves that moment
`cost` sixtieths of a minute per N later; it is refused, and the moment left alone, when that would
put it more than a minute ahead of now.

With `--cache redis://…` the budgets live in Redis, shared by every process and host that names it:
one Lua script per request reads and moves the client's moment, atomically, on Redis's own clock
(no clocks are compared across hosts). Without Redis, or while it is unavailable (logged once
each way), each process keeps budgets of its own in memory, each its share of N (N divided by
`--workers`, so that a host's workers together allow about N).

`RateLimited` applies them in front of `/graphql`: a request over its client's budget is answered
at once with HTTP 429, `Retry-After` and a `RATE_LIMITED` error, before its body is read, and every
answer carries `RateLimit-Limit`, `RateLimit-Remaining` and `RateLimit-Reset` (the IETF RateLimit
header fields). A batch's other operations are charged once it has been parsed (`charge_more`).
Clients are told apart by their address, as uvicorn's proxy-headers settings give it, or by a
header (`header:NAME`); a key is stored only as its digest, and never becomes a metric label.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import orjson
from cachetools import LRUCache
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.caching.shared_cache import SharedCache
from gateway.errors import RATE_LIMITED, RateLimitExceeded, SharedCacheUnavailable
from gateway.middleware import HttpMiddleware
from gateway.observability import metrics

logger = logging.getLogger("gateway")

SPAN = 60.0  # seconds: a budget is so many requests a minute, all of which may come at once
MAX_CLIENTS = 100_000  # budgets one process keeps in memory; the least recently used go first
# Tokens are fractions: this much short of a whole one still counts as whole (rounding).
_EPSILON = 1e-6
# The key in the ASGI scope of the request's `Budget`, for `charge_more`.
BUDGET = "gateway.rate_budget"

# KEYS[1]: when the client's bucket will be full again, in microseconds of Redis's clock.
# ARGV: microseconds one request takes to refill, the span of a budget in microseconds, the
# requests to spend, `_EPSILON`. Returns: allowed (1 or 0), whole tokens left, microseconds until
# the bucket is full, microseconds until the refused request would be allowed (0 if it was).
_SPEND = """
local interval, span, cost, epsilon = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]),
  tonumber(ARGV[4])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local full_at = math.max(tonumber(redis.call('GET', KEYS[1]) or 0), now)
local tokens = (span - (full_at - now)) / interval
if tokens + epsilon < cost then
  return {0, math.floor(tokens + epsilon), full_at - now, math.ceil((cost - tokens) * interval)}
end
full_at = full_at + cost * interval
redis.call('SET', KEYS[1], string.format('%.0f', full_at), 'PX', math.ceil((full_at - now) / 1000))
return {1, math.floor(tokens - cost + epsilon), full_at - now, 0}
"""


@dataclass(frozen=True, slots=True)
class Verdict:
    """What a client's budget said to a request."""

    allowed: bool
    limit: int  # the requests a minute that applied
    remaining: int  # whole requests left now
    reset: float  # seconds until the whole budget is back
    retry_after: float  # seconds until the refused request would be allowed (0 if it was)

    def headers(self) -> list[tuple[bytes, bytes]]:
        """The IETF RateLimit header fields, and `Retry-After` (whole seconds, at least 1) for a
        refused request."""
        fields = [
            (b"ratelimit-limit", b"%d" % self.limit),
            (b"ratelimit-remaining", b"%d" % max(0, self.remaining)),
            (b"ratelimit-reset", b"%d" % math.ceil(self.reset)),
        ]
        if not self.allowed:
            fields.append((b"retry-after", b"%d" % max(1, math.ceil(self.retry_after))))
        return fields


class Buckets:
    """Clients' budgets in this process's memory: `per_minute` requests a minute each."""

    def __init__(
        self,
        per_minute: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_clients: int = MAX_CLIENTS,
    ) -> None:
        self.per_minute = per_minute
        self.interval = SPAN / per_minute  # seconds one request takes to refill
        self.clock = clock
        # A client forgotten starts with a full bucket; one refused counts as seen lately.
        self._full_at: LRUCache[str, float] = LRUCache(max_clients)

    def __len__(self) -> int:
        return len(self._full_at)

    def spend(self, key: str, cost: int) -> Verdict:
        now = self.clock()
        full_at = max(self._full_at.get(key, now), now)
        tokens = (SPAN - (full_at - now)) / self.interval
        limit = math.floor(self.per_minute + _EPSILON)
        if tokens + _EPSILON < cost:
            retry = (cost - tokens) * self.interval
            return Verdict(False, limit, math.floor(tokens + _EPSILON), full_at - now, retry)
        full_at += cost * self.interval
        self._full_at[key] = full_at
        return Verdict(True, limit, math.floor(tokens - cost + _EPSILON), full_at - now, 0.0)


class RateLimit:
    """Every client's budget: in the shared Redis when there is one and it answers, else in this
    process (`Buckets`), its share of it."""

    def __init__(
        self,
        per_minute: int,
        *,
        processes: int = 1,
        shared: SharedCache | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.per_minute = per_minute
        self.shared = shared
        self.local = Buckets(max(1.0, per_minute / processes), clock=clock)
        self._alone = False  # whether the last request was limited here, Redis being away

    async def spend(self, key: str, cost: int) -> Verdict:
        """Spend `cost` requests of the budget of the client `key` names, if it has them."""
        if self.shared is not None and self.shared.available:
            try:
                verdict = await self._spend_shared(self.shared, key, cost)
            except SharedCacheUnavailable:
                pass
            else:
                self._note_alone(False)
                return verdict
        if self.shared is not None:
            self._note_alone(True)
        return self.local.spend(key, cost)

    async def _spend_shared(self, shared: SharedCache, key: str, cost: int) -> Verdict:
        interval = str(round(SPAN * 1_000_000 / self.per_minute, 3))
        span = str(round(SPAN * 1_000_000))
        digest = hashlib.blake2b(key.encode(), digest_size=16).hexdigest()  # keys may be secrets
        stored = f"rate:{self.per_minute}:{digest}"
        reply = await shared.script(_SPEND, stored, interval, span, str(cost), str(_EPSILON))
        if not isinstance(reply, list) or len(reply) != 4:
            raise SharedCacheUnavailable(f"unexpected reply {reply!r}")
        allowed, remaining, reset, retry = (int(value) for value in reply)
        return Verdict(allowed == 1, self.per_minute, remaining, reset / 1e6, retry / 1e6)

    def _note_alone(self, alone: bool) -> None:
        """Log, once each way, that budgets are kept in this process or in Redis again."""
        if alone == self._alone:
            return
        self._alone = alone
        assert self.shared is not None
        if alone:
            logger.warning(
                "rate limits: Redis at %s is unavailable: this process limits each client on its"
                " own, %g requests a minute, until it is back",
                self.shared.shown_url,
                self.local.per_minute,
            )
        else:
            logger.warning(
                "rate limits: shared through Redis at %s again, %d requests a minute per client",
                self.shared.shown_url,
                self.per_minute,
            )


def client_key(scope: Scope, header: bytes | None) -> str:
    """Who sent the request: the value of `header` when it has one, else its address."""
    headers: list[tuple[bytes, bytes]] = scope["headers"]
    if header is not None:
        for name, value in headers:
            if name == header:
                return "header:" + value.decode("latin-1")
    client: tuple[str, int] | None = scope.get("client")
    return "address:" + (client[0] if client else "unknown")


def exceeded(verdict: Verdict) -> RateLimitExceeded:
    """The refusal of a request over its client's budget (`RateLimited` adds `Retry-After`)."""
    wait = max(1, math.ceil(verdict.retry_after))
    return RateLimitExceeded(
        f"Rate limit exceeded: {verdict.limit} requests a minute per client; retry in {wait} s"
    )


class Budget:
    """One request's client and what its budget said last."""

    def __init__(self, limit: RateLimit, key: str) -> None:
        self.limit = limit
        self.key = key
        self.verdict: Verdict | None = None

    async def spend(self, cost: int) -> Verdict:
        self.verdict = await self.limit.spend(self.key, cost)
        return self.verdict


async def charge_more(scope: Scope, cost: int) -> None:
    """Charge `cost` more requests to the client of the request (a batch's other operations),
    or raise `RateLimitExceeded`. Nothing without rate limits."""
    budget: Budget | None = scope.get(BUDGET)
    if budget is None or cost <= 0:
        return
    verdict = await budget.spend(cost)
    if not verdict.allowed:
        raise exceeded(verdict)


class RateLimited(HttpMiddleware):
    """ASGI middleware: each request is charged to its client's budget before anything else."""

    def __init__(self, app: ASGIApp, limit: RateLimit, keyed_by: str) -> None:
        """`keyed_by`: `address`, or `header:NAME` (`--rate-limit-key`)."""
        super().__init__(app)
        self.limit = limit
        name = keyed_by.removeprefix("header:")
        self.header = None if name == keyed_by else name.lower().encode("latin-1")

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        budget = Budget(self.limit, client_key(scope, self.header))
        verdict = await budget.spend(1)
        if not verdict.allowed:
            metrics.refused(RATE_LIMITED)
            await _refuse(send, verdict)
            return

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start" and budget.verdict is not None:
                headers = [*message.get("headers", ()), *budget.verdict.headers()]
                message = {**message, "headers": headers}
            await send(message)

        await self.app({**scope, BUDGET: budget}, receive, sending)


async def _refuse(send: Send, verdict: Verdict) -> None:
    body = orjson.dumps(exceeded(verdict).body)
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", b"%d" % len(body)),
        *verdict.headers(),
    ]
    await send({"type": "http.response.start", "status": 429, "headers": headers})
    await send({"type": "http.response.body", "body": body})
