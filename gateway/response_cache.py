"""The response cache: whole answers to queries, by document, variables and operation name.

A key is made from the document as graphql-core prints it (so whitespace, commas and comments do
not matter), the operation name and the variables, under a namespace that holds everything else
that changes an answer: the schema and the settings declared as changing one (gateway/config.py:
the source and the query limits). Each raw text is read for its normal form once, by the query
limits' own reading (reading.py), then remembered. Only a query is ever cached, and only a
complete, successful answer (no errors, nothing stale): the HTTP view (gateway/app.py) decides
that and hands over the encoded body. A refused request is never looked up: the body and batch
limits refuse it before, a document the reading refuses has no key, and the document limits are
part of the namespace, so an answer cached under laxer limits is never served under stricter
ones.

Concurrent requests for the same key share one execution (single-flight): the first runs it, the
others wait for its answer and run their own only if it could not be cached.

Entries live in a `Store`, a small async protocol of bytes by key with a time to live: `MemoryStore`
keeps them in this process, least recently used out first past a bound in bytes; with `--cache`,
`SharedStore` (gateway/shared_cache.py) puts the Redis every process shares behind it. The stored
value is the ETag (the hash of the body) followed by the body, so every process that serves an
answer gives it the same ETag.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import msgspec
import orjson
from cachetools import TLRUCache

from gateway.reading import Normal, Readings

logger = logging.getLogger("gateway")

T = TypeVar("T")

MAX_BYTES = 32 * 2**20  # the responses kept by one process
ENTRY_OVERHEAD = 200  # bytes counted per entry for its key and bookkeeping
_ETAG_LENGTH = 32  # hex digits of a 16-byte BLAKE2b digest


class Store(Protocol):
    """Bytes by key, each for a time. An implementation may forget an entry at any time."""

    async def get(self, key: str) -> tuple[bytes, float] | None:
        """The value at `key` and the seconds it has left (`math.inf`: no end), or None."""
        ...

    def at_hand(self, key: str) -> tuple[bytes, float] | None:
        """As `get`, from this process's memory alone: no wait, and None for what is not in
        it (it may still be in the store)."""
        ...

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        """Keep `value` at `key` for `ttl` seconds (`math.inf`: until it is evicted)."""
        ...


class _Entry(msgspec.Struct, frozen=True, gc=False):
    """An answer kept: out of the garbage collector's sight (it holds no object that could
    hold it), one object fewer per answer for each full collection to go through."""

    value: bytes
    expires: float
    size: int


class MemoryStore:
    """A `Store` in this process's memory: bounded in bytes, least recently used out first, and
    the entries past their time dropped as the next is set: what is kept follows what was asked
    for lately, not everything asked for until the bound is reached."""

    def __init__(self, max_bytes: int, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_bytes = max_bytes
        self._clock = clock
        self._entries: TLRUCache[str, _Entry, float] = TLRUCache(
            max_bytes,
            ttu=lambda key, entry, now: entry.expires,
            timer=clock,
            getsizeof=lambda entry: entry.size,
        )

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def size(self) -> int:
        """What the entries kept weigh, in bytes, about."""
        return int(self._entries.currsize)

    async def get(self, key: str) -> tuple[bytes, float] | None:
        return self.at_hand(key)

    def at_hand(self, key: str) -> tuple[bytes, float] | None:
        try:  # one lookup (`get` is two, in Python): this is every cache hit's
            entry = self._entries[key]
        except KeyError:  # not there, or past its time
            return None
        left = entry.expires - self._clock()
        return None if left <= 0 else (entry.value, left)

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        self._entries.pop(key, None)
        entry = _Entry(value, self._clock() + ttl, len(key) + len(value) + ENTRY_OVERHEAD)
        if ttl > 0 and entry.size <= self.max_bytes:
            self._entries[key] = entry


@dataclass(frozen=True, slots=True)
class Cached:
    """A cached answer: its encoded body, its ETag (quoted), and the seconds it stays fresh."""

    body: bytes
    etag: str
    max_age: float


def namespace(sdl: str, answer_settings: Mapping[str, object]) -> bytes:
    """What, besides the request, decides an answer: the schema, and the values of the settings
    that change an answer, by name (`config.answer_settings`)."""
    decisive = (sdl, sorted(answer_settings.items()))
    return hashlib.sha256(repr(decisive).encode()).digest()


def effective_ttl(ttl: float, upstream_ttl: float | None) -> float:
    """How long an answer stays fresh: `ttl`, and over an upstream no longer than the resources
    it is made of (`upstream_ttl`, None without an upstream)."""
    return ttl if upstream_ttl is None else min(ttl, upstream_ttl)


class ResponseCache:
    def __init__(self, store: Store, *, ttl: float, namespace: bytes, readings: Readings) -> None:
        self.store = store
        self.ttl = ttl
        self.namespace = namespace
        self._readings = readings
        self._flights: dict[str, asyncio.Future[Cached | None]] = {}

    async def key(
        self, query: str, variables: Mapping[str, Any] | None, operation_name: str | None
    ) -> str | None:
        """The key of a query's answer, or None when it is not a query (or not a document)."""
        return self._key((await self._readings.get(query)).normal, variables, operation_name)

    def key_at_hand(
        self, query: str, variables: Mapping[str, Any] | None, operation_name: str | None
    ) -> str | None:
        """As `key`, without a wait: None too for a document whose normal form is not known
        yet (reading it may take a thread's while)."""
        reading = self._readings.known(query)
        return self._key(None if reading is None else reading.normal, variables, operation_name)

    def _key(
        self,
        document: Normal | None,
        variables: Mapping[str, Any] | None,
        operation_name: str | None,
    ) -> str | None:
        if document is None:
            return None
        if operation_name is None:  # then only a document of one operation runs: that one
            if document.operations != 1 or not document.queries:
                return None
            [operation_name] = document.queries
        elif operation_name not in document.queries:
            return None
        try:
            request = orjson.dumps([operation_name, variables or {}], option=orjson.OPT_SORT_KEYS)
        except TypeError:  # orjson.JSONEncodeError: nothing JSON can decode to
            return None
        digest = hashlib.sha256(self.namespace + document.digest + request).hexdigest()
        return f"gateway:response:{digest}"

    def at_hand(self, key: str) -> Cached | None:
        """The cached answer at `key` if this process holds it in memory: no wait (a miss here
        may still be in the store's shared part)."""
        found = self.store.at_hand(key)
        return None if found is None else self._cached(*found)

    async def fetch(
        self, key: str, compute: Callable[[], Awaitable[tuple[T, bytes | None]]]
    ) -> T | Cached:
        """The cached answer at `key`, or `compute`'s: its result, and the body to cache (None
        when it may not be). Concurrent callers with the same key share one `compute`."""
        cached = await self._get(key)
        if cached is not None:
            return cached
        flight = self._flights.get(key)
        if flight is not None:
            shared = await asyncio.shield(flight)
            if shared is not None:
                return shared
            result, _ = await compute()  # the first caller's answer could not be cached
            return result
        flight = asyncio.get_running_loop().create_future()
        self._flights[key] = flight
        stored: Cached | None = None
        try:
            result, body = await compute()
            if body is None:
                return result
            stored = await self._put(key, body)
            return stored
        finally:
            del self._flights[key]
            flight.set_result(stored)

    async def _get(self, key: str) -> Cached | None:
        try:
            found = await self.store.get(key)
        except Exception:
            logger.warning("response cache: reading %s failed", key, exc_info=True)
            return None
        return None if found is None else self._cached(*found)

    def _cached(self, value: bytes, left: float) -> Cached:
        """A stored value (the ETag, then the body) with the seconds it has left."""
        etag = value[:_ETAG_LENGTH].decode()
        return Cached(value[_ETAG_LENGTH:], f'"{etag}"', min(left, self.ttl))

    async def _put(self, key: str, body: bytes) -> Cached:
        etag = hashlib.blake2b(body, digest_size=_ETAG_LENGTH // 2).hexdigest()
        try:
            await self.store.set(key, etag.encode() + body, self.ttl)
        except Exception:
            logger.warning("response cache: writing %s failed", key, exc_info=True)
        return Cached(body, f'"{etag}"', self.ttl)


def matches(if_none_match: str, etag: str) -> bool:
    """Whether an `If-None-Match` header names `etag` (weak comparison, as RFC 9110 asks)."""
    for candidate in if_none_match.split(","):
        candidate = candidate.strip()
        if candidate == "*" or candidate.removeprefix("W/") == etag:
            return True
    return False


def max_age(cached: Cached) -> int:
    return max(0, math.floor(cached.max_age))
