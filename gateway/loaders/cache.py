"""The process-wide cache of upstream resources, shared by every request.

Entries are keyed by the upstream path with its query string (`packages/12/`,
`packages/?limit=20&offset=0`, `search/?q=forms`) and hold the decoded resource. An entry is
fresh for `ttl` seconds; after that it is refetched, but for `stale` more seconds it is still
served when the refetch fails (stale-if-error), and the caller is told it was stale.

Concurrent requests for the same key share one fetch (single-flight): a burst of identical
cold queries costs the upstream one request per resource. The fetch runs in a task of its
own, so a caller that gives up (a client gone, a request timed out) does not cancel it for
the others, and its answer still lands in the cache.

The cache is bounded by size: each entry counts the bytes of the JSON it was decoded from
plus `ENTRY_OVERHEAD` for its key and bookkeeping, and the least recently used entries are
evicted past `max_bytes`. The default, 32 MiB, holds the whole catalogue with room for pages
and searches: at the real site's scale, the catalogue snapshot (rest.py, catalogue.py) and
every record it primes by id and by slug count 18.0 MiB and take about 23 MiB of memory
(primed entries share their objects with the snapshot's lists). The count estimates memory to
the right order; it does not measure it.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from gateway.errors import UpstreamError

T = TypeVar("T")

MAX_BYTES = 32 * 2**20
ENTRY_OVERHEAD = 200


@dataclass(frozen=True, slots=True)
class _Entry:
    value: Any
    size: int
    stored: float


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
        self.size = 0
        self._clock = clock
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._flights: dict[str, asyncio.Task[Any]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def put(self, key: str, value: object, size: int) -> None:
        """Store `value`, decoded from `size` bytes of JSON, evicting the least recently used."""
        self._drop(key)
        entry = _Entry(value, size + ENTRY_OVERHEAD, self._clock())
        if entry.size > self.max_bytes:
            return
        self._entries[key] = entry
        self.size += entry.size
        while self.size > self.max_bytes:
            self._drop(next(iter(self._entries)))

    async def get(self, key: str, fetch: Callable[[], Awaitable[tuple[T, int]]]) -> tuple[T, bool]:
        """The value at `key` and whether it is a stale copy.

        A fresh entry costs nothing; otherwise `fetch` (returning the value and its JSON size)
        runs once for all concurrent callers. If it fails, a copy no older than `ttl + stale`
        is served instead; without one the `UpstreamError` goes to every caller.
        """
        entry = self._lookup(key, self.ttl)
        if entry is not None:
            return cast(T, entry.value), False
        try:
            return await self.refresh(key, fetch), False
        except UpstreamError:
            entry = self._lookup(key, self.ttl + self.stale)
            if entry is None:
                raise
            return cast(T, entry.value), True

    async def refresh(self, key: str, fetch: Callable[[], Awaitable[tuple[T, int]]]) -> T:
        """Fetch `key` anew, fresh or not, sharing a fetch already in flight; store the value."""
        flight = self._flights.get(key)
        if flight is None:
            flight = asyncio.ensure_future(self._fetch(key, fetch))
            self._flights[key] = flight
            flight.add_done_callback(lambda done: self._landed(key, done))
        return cast(T, await asyncio.shield(flight))

    def holds(self, key: str) -> bool:
        """Whether `key` is fresh here or being fetched: asking for it costs no new request."""
        return key in self._flights or self._lookup(key, self.ttl) is not None

    async def aclose(self) -> None:
        """Cancel the fetches still in flight: at shutdown nobody waits for them."""
        flights = list(self._flights.values())
        for flight in flights:
            flight.cancel()
        await asyncio.gather(*flights, return_exceptions=True)

    async def _fetch(self, key: str, fetch: Callable[[], Awaitable[tuple[T, int]]]) -> T:
        value, size = await fetch()
        self.put(key, value, size)
        return value

    def _landed(self, key: str, flight: asyncio.Task[Any]) -> None:
        """Forget a finished flight; its failure was raised to whoever still waited."""
        if self._flights.get(key) is flight:
            del self._flights[key]
        if not flight.cancelled():
            flight.exception()  # retrieved: no "exception was never retrieved" when all left

    def _lookup(self, key: str, max_age: float) -> _Entry | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        age = self._clock() - entry.stored
        if age > self.ttl + self.stale:
            self._drop(key)
            return None
        if age > max_age:
            return None
        self._entries.move_to_end(key)
        return entry

    def _drop(self, key: str) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self.size -= entry.size
