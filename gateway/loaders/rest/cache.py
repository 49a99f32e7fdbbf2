"""The process-wide cache of decoded upstream resources, shared by every request.

What it holds, by which key and for how long: the table in gateway/loaders/rest/__init__.py.

Concurrent requests for the same key share one fetch (single-flight): a burst of identical
cold queries costs the upstream one request per resource. The fetch runs in a task of its
own, so a caller that gives up (a client gone, a request timed out) does not cancel it for
the others; once the last caller has given up, nobody waits for it and it is cancelled, so
that nothing of it reaches the upstream any more.

Each fetch is handed a `Fetching`: the oldest body shared by processes it may take as fresh,
and the age of the oldest it took (shared.py notes it there). The value is stored as old as
that body: no process serves a resource as fresh for longer than `ttl` after the upstream
sent it.

The cache is bounded by size: each entry counts the bytes of the JSON it was decoded from
plus `ENTRY_OVERHEAD` for its key and bookkeeping, and the least recently used entries are
evicted past `max_bytes`. The default, 32 MiB, holds the whole catalogue with room for pages
and searches: at the real site's scale, the catalogue snapshot (snapshot.py) and every record
it primes by id and by slug count 18.0 MiB and take about 23 MiB of memory (primed entries
share their objects with the snapshot's lists). The count estimates memory to the right
order; it does not measure it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeAlias, TypeVar, cast

import msgspec
from cachetools import LRUCache

from gateway.errors import UpstreamError
from gateway.tasks import taken

T = TypeVar("T")

MAX_BYTES = 32 * 2**20
ENTRY_OVERHEAD = 200


class _Entry(msgspec.Struct, frozen=True, gc=False):
    """A value kept, out of the garbage collector's sight: one object fewer per entry for each
    full collection to go through. It can be in no cycle: nothing but the cache holds it, and
    its value, decoded before it was made, cannot hold it."""

    value: Any
    size: int
    stored: float


@dataclass(slots=True)
class _Flight:
    """A fetch in progress and how many callers still wait for it."""

    task: asyncio.Task[tuple[Any, bool]]
    waiters: int = 0


@dataclass(slots=True)
class Fetching:
    """A fetch in progress: the oldest copy it may take as fresh, and what it has read."""

    max_age: float
    age: float = 0.0  # of the oldest body read
    stale: bool = False  # whether one was a stale copy, served as the upstream failed

    def read(self, age: float, *, stale: bool = False) -> None:
        self.age = max(self.age, age)
        self.stale = self.stale or stale


# What the cache runs on a miss, handed its `Fetching`: the value, and the size of the JSON
# it was decoded from.
Fetch: TypeAlias = Callable[[Fetching], Awaitable[tuple[T, int]]]


class ResourceCache:
    """Upstream resources by path: fresh for `ttl`, then served on failure for `stale` more."""

    def __init__(
        self,
        *,
        ttl: float,
        stale: float,
        max_bytes: int = MAX_BYTES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl = ttl
        self.stale = stale
        self.max_bytes = max_bytes
        self._clock = clock
        self._entries: LRUCache[str, _Entry] = LRUCache(
            max_bytes, getsizeof=lambda entry: entry.size
        )
        self._flights: dict[str, _Flight] = {}

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def size(self) -> int:
        """What the entries kept count, in bytes."""
        return int(self._entries.currsize)

    def put(self, key: str, value: object, size: int, *, age: float = 0.0) -> None:
        """Store `value`, decoded from `size` bytes of JSON `age` seconds old, evicting the
        least recently used."""
        self._entries.pop(key, None)
        entry = _Entry(value, size + ENTRY_OVERHEAD, self._clock() - age)
        if entry.size <= self.max_bytes:
            self._entries[key] = entry

    async def get(
        self, key: str, fetch: Fetch[T], *, starting: Callable[[], None] | None = None
    ) -> tuple[T, bool]:
        """The value at `key` and whether it is a stale copy.

        A fresh entry costs nothing; otherwise `fetch` runs once for all concurrent callers.
        If it fails, a copy no older than `ttl + stale` is served instead; without one the
        `UpstreamError` goes to every caller. `starting` is called just before this caller
        starts a fetch (rather than joining one): what it raises fails this caller alone.
        """
        entry = self._lookup(key, self.ttl)
        if entry is not None:
            return cast(T, entry.value), False
        try:
            return await self._flight(key, fetch, self.ttl, starting)
        except UpstreamError:
            entry = self._lookup(key, self.ttl + self.stale)
            if entry is None:
                raise
            return cast(T, entry.value), True

    async def refresh(self, key: str, fetch: Fetch[T]) -> T:
        """Fetch `key` anew, fresh or not, sharing a fetch already in flight; store the value.

        A copy shared by processes younger than half the TTL will do: the value then stays fresh
        for at least the other half, and among processes refreshing on their own schedules the
        first to find the copy past that age refetches it for the others.
        """
        value, _ = await self._flight(key, fetch, self.ttl / 2)
        return value

    async def _flight(
        self,
        key: str,
        fetch: Fetch[T],
        max_age: float,
        starting: Callable[[], None] | None = None,
    ) -> tuple[T, bool]:
        """The value `fetch` returns and whether it is stale; concurrent callers share it,
        and it is cancelled when the last of them stops waiting."""
        flight = self._flights.get(key)
        if flight is None:
            if starting is not None:
                starting()
            flight = self._flights[key] = _Flight(
                asyncio.ensure_future(self._fetch(key, fetch, max_age))
            )
            flight.task.add_done_callback(lambda done: self._landed(key, done))
        flight.waiters += 1
        try:
            value, stale = await asyncio.shield(flight.task)
        finally:
            flight.waiters -= 1
            if not flight.waiters and not flight.task.done():
                self._abandon(key, flight)
            # A failure raised from here keeps this frame in its traceback, and the flight's
            # task keeps the failure: holding no flight, the frame makes no cycle of them.
            del flight
        return cast(T, value), stale

    def _abandon(self, key: str, flight: _Flight) -> None:
        """Cancel a fetch nobody waits for; a caller coming next starts one of its own."""
        if self._flights.get(key) is flight:
            del self._flights[key]
        flight.task.cancel()

    def holds(self, key: str) -> bool:
        """Whether `key` is fresh here: asking for it costs no request and no wait."""
        return self._lookup(key, self.ttl) is not None

    def fresh(self, key: str) -> tuple[Any] | None:
        """The value at `key`, as a 1-tuple, if it is fresh here (a value may be None: a
        resource the upstream does not have); None if it is not."""
        entry = self._lookup(key, self.ttl)
        return None if entry is None else (entry.value,)

    def kept(self, key: str) -> tuple[Any] | None:
        """The value at `key`, as a 1-tuple, if a copy young enough to be served is here,
        fresh or stale (what `get` serves when its fetch fails); None if there is none."""
        entry = self._lookup(key, self.ttl + self.stale)
        return None if entry is None else (entry.value,)

    async def aclose(self) -> None:
        """Cancel the fetches still in flight: at shutdown nobody waits for them."""
        flights = [flight.task for flight in self._flights.values()]
        for flight in flights:
            flight.cancel()
        await asyncio.gather(*flights, return_exceptions=True)

    def fresh_for(self, key: str) -> float:
        """Seconds the entry at `key` stays fresh: 0 when there is none, or it is stale."""
        entry = self._entries.get(key)
        return 0.0 if entry is None else max(0.0, entry.stored + self.ttl - self._clock())

    async def _fetch(self, key: str, fetch: Fetch[T], max_age: float) -> tuple[T, bool]:
        fetching = Fetching(max_age)
        value, size = await fetch(fetching)
        self.put(key, value, size, age=fetching.age)
        return value, fetching.stale

    def _landed(self, key: str, flight: asyncio.Task[tuple[Any, bool]]) -> None:
        """Forget a finished flight; its failure was raised to whoever still waited."""
        if key in self._flights and self._flights[key].task is flight:
            del self._flights[key]
        taken(flight)  # no "exception was never retrieved" when all left, no cycle if cancelled

    def _lookup(self, key: str, max_age: float) -> _Entry | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        age = self._clock() - entry.stored
        if age > self.ttl + self.stale:
            del self._entries[key]
            return None
        return None if age > max_age else entry
