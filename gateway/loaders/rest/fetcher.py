"""What one request reads from the upstream: each path once, through the caches, in its time.

A `Fetcher` asks the process-wide `ResourceCache` (cache.py) for each resource by its upstream
path; on a miss the cache runs the fetcher's fetch, which reads the body from the bodies shared
by processes (shared.py, with `--cache`) or from the upstream itself (client.py). Every list page
read primes the cache with its items by id and by slug, as their detail GETs would answer; an
item equal to the one the cache holds is primed as that one, so that a renewal of the catalogue
snapshot keeps the objects of what did not change (snapshot.py says what that saves).
"""

from __future__ import annotations

import asyncio
import functools
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import KW_ONLY, dataclass, field
from typing import Any, TypeVar, cast
from urllib.parse import quote, urlencode

import msgspec

from gateway.errors import UpstreamBudgetExceeded, UpstreamError
from gateway.loaders.rest.breaker import Breaker
from gateway.loaders.rest.cache import Fetch, Fetching, ResourceCache
from gateway.loaders.rest.client import Upstream
from gateway.loaders.rest.shared import SharedBodies
from gateway.loaders.rest.snapshot import Catalogue
from gateway.loaders.rest.turns import Steps, in_chunks, in_turns
from gateway.loaders.rest.wire import (
    CategoryJSON,
    GridJSON,
    ListJSON,
    PackageJSON,
    SearchJSON,
    decode,
    snapshot_in_steps,
)
from gateway.observability import metrics
from gateway.tasks import taken

# The upstream has no maximum page size: one request with this limit reads a whole list.
WHOLE_LIST = 100_000

# The cache key of the catalogue snapshot: no upstream path, so no list or detail entry.
CATALOGUE = "catalogue"
# What the snapshot costs the upstream: its three whole lists, one request each.
SNAPSHOT_REQUESTS = 3

T = TypeVar("T")
Listed = TypeVar("Listed", CategoryJSON, GridJSON, PackageJSON)


@dataclass(eq=False)
class Fetcher:
    """The upstream resources of one request, each fetched at most once.

    A fetch may be shared with other requests (the cache's single flight); this request waits
    for it only until its own `deadline`, or until it is `close`d (the fetch goes on while
    another request waits for it, and is cancelled when none does). The fetches this request
    starts, at most `max_requests` (the snapshot counts its three lists), are its upstream
    budget: past it, a lookup fails with `UpstreamBudgetExceeded` and costs nothing. `stale`
    tells whether any answer was a stale copy served while the upstream failed.
    """

    upstream: Upstream
    cache: ResourceCache
    bodies: SharedBodies | None = None
    _: KW_ONLY
    deadline: float | None = None
    max_requests: int | None = None
    requests: int = field(default=0, init=False)  # the fetches this request started
    stale: bool = field(default=False, init=False)
    closed: bool = field(default=False, init=False)
    _in_flight: dict[str, asyncio.Future[Any]] = field(default_factory=dict, init=False)
    _loop: asyncio.AbstractEventLoop | None = field(default=None, init=False)

    def close(self) -> None:
        """The request is over: stop waiting for its fetches, start no more, and let go of
        them. (A failed fetch's task keeps its traceback, whose first frame holds this
        fetcher, which would hold the task: a cycle left for the garbage collector.)"""
        self.closed = True
        for future in self._in_flight.values():
            future.cancel()
        self._in_flight.clear()

    def snapshot_at_hand(self) -> bool:
        """Whether the snapshot costs no request and no wait: this request has it (or is
        reading it), or the cache holds it fresh."""
        return CATALOGUE in self._in_flight or self.cache.holds(CATALOGUE)

    def snapshot_is_fresh(self) -> bool:
        """Whether the cache holds the snapshot fresh: what it lacks, the upstream lacks."""
        return self.cache.holds(CATALOGUE)

    def snapshot_now(self) -> Catalogue | None:
        """The snapshot, if `snapshot` would answer it at once with no wait and no error:
        this request has read it, or the cache holds it fresh. None otherwise."""
        future = self._in_flight.get(CATALOGUE)
        if future is not None and (
            not future.done() or future.cancelled() or future.exception() is not None
        ):
            return None
        found = self._at_hand(CATALOGUE)
        return None if found is None else cast(Catalogue, found[0])

    async def snapshot(self) -> Catalogue:
        """The catalogue snapshot: the three whole lists, refetched together once stale."""
        return await self._get(CATALOGUE, self._fetch_snapshot)

    async def refresh_snapshot(self) -> Catalogue:
        """Fetch the snapshot anew, fresh or not: what keeps it warm before it expires."""
        return await self.cache.refresh(CATALOGUE, self._fetch_snapshot)

    def detail_at_hand(self, resource: str, key: str) -> tuple[Any] | None:
        """What `detail` would answer, as a 1-tuple, if it is at hand (see `_at_hand`); None
        if it must be fetched."""
        path = _detail_path(resource, key)
        return (None,) if path is None else self._at_hand(path)

    def check_upstream(self) -> None:
        """Raise what a fetch would fail with now, if the upstream refuses every fetch: a
        lookup of thousands of records then fails at once, rather than by a task for each."""
        if self._refused():
            self.upstream.breaker.check()  # raises what it refuses with

    async def detail(self, resource: str, key: str, kind: type[T]) -> T | None:
        """The resource at `resource` + `key` (an id or a slug), None if there is none."""
        path = _detail_path(resource, key)
        if path is None:
            return None

        async def fetch(fetching: Fetching) -> tuple[T | None, int]:
            body = await self._body(path, None, fetching)
            return (None, 0) if body is None else (decode(body, kind, path), len(body))

        return await self._get(path, fetch)

    async def page(
        self, resource: str, kind: type[Listed], offset: int, limit: int
    ) -> tuple[list[Listed], int]:
        """A page of the upstream's list, and the whole list's size."""
        # The upstream reads limit=0 as "the default": ask for one and keep none.
        items, total = await self._list(resource, kind, offset, max(limit, 1))
        return items[:limit], total

    async def whole_list(self, resource: str, kind: type[Listed]) -> list[Listed]:
        """A whole list of the upstream's: one request, unless the upstream caps its pages."""
        return await _all_pages(lambda offset: self._list(resource, kind, offset, WHOLE_LIST))

    async def search(self, query: str) -> list[SearchJSON]:
        """The upstream's search results for `query`."""
        params = {"q": query}

        async def fetch(fetching: Fetching) -> tuple[list[SearchJSON], int]:
            body = await self._body("search/", params, fetching)
            if body is None:
                raise UpstreamError("The upstream API has no search", "GET search/: 404")
            return decode(body, list[SearchJSON], "search/"), len(body)

        return await self._get(f"search/?{urlencode(params)}", fetch)

    async def _once(self, key: str, fetch: Callable[[], Awaitable[T]]) -> T:
        """Run `fetch` once per key for this request; concurrent callers share it."""
        future = self._in_flight.get(key)
        if future is None:
            if self.closed:
                raise asyncio.CancelledError("the request is over")
            future = asyncio.ensure_future(fetch())
            future.add_done_callback(taken)
            self._in_flight[key] = future
        try:
            result: T = await asyncio.shield(future)
        finally:
            # A failure raised from here keeps this frame in its traceback, and the task keeps
            # the failure: holding no task, the frame makes no cycle of them.
            del future
        return result

    async def _get(self, key: str, fetch: Fetch[T]) -> T:
        """The resource at `key`: this request's copy, else the cache's, else `fetch`'s.

        What is at hand is answered at once; only a fetch, or a wait for one, runs in a task
        of its own.
        """
        found = self._at_hand(key)
        if found is not None:
            return cast(T, found[0])
        fetched = False

        def starting() -> None:
            nonlocal fetched
            cost = SNAPSHOT_REQUESTS if key == CATALOGUE else 1
            if self.max_requests is not None and self.requests + cost > self.max_requests:
                raise UpstreamBudgetExceeded(
                    f"The request needed more than {self.max_requests} upstream requests",
                    f"GET {key}: over the request's upstream budget",
                )
            self.requests += cost
            fetched = True

        async def cached() -> T:
            # A miss is a lookup that fetched; a hit found the value, or another's fetch of it.
            layer = "catalogue" if key == CATALOGUE else "upstream"
            try:
                async with asyncio.timeout_at(self.deadline):
                    value, stale = await self.cache.get(key, fetch, starting=starting)
            except TimeoutError:
                pass
            except UpstreamError:
                metrics.cache_lookup(layer, hit=False)
                raise
            else:
                metrics.cache_lookup(layer, hit=not fetched)
                self.stale = self.stale or stale
                return value
            # Raised out of the `except` block, so not chained to the `TimeoutError`: its
            # traceback holds the timeout, which holds this task, which would hold this error.
            raise UpstreamError(
                "The upstream API timed out", f"GET {key}: the request's time ran out"
            )

        return await self._once(key, cached)

    def _at_hand(self, key: str) -> tuple[Any] | None:
        """The value at `key` as a 1-tuple if this request has it, or the cache holds it fresh,
        or holds a stale copy while the upstream refuses every fetch (what the fetch's failure
        would serve, served without one); then kept as this request's copy. None if it must be
        fetched or waited for."""
        future = self._in_flight.get(key)
        if future is not None:
            return (future.result(),) if future.done() else None  # raises as awaiting it would
        if self.closed:
            return None
        found = self.cache.fresh(key)
        fresh = found is not None
        if not fresh and self._refused():
            found = self.cache.kept(key)
            self.stale = self.stale or found is not None
        if found is not None:
            metrics.cache_lookup("catalogue" if key == CATALOGUE else "upstream", hit=fresh)
            self._in_flight[key] = self._settled(found[0])
        return found

    def _refused(self) -> bool:
        """Whether a fetch fails at once now: the breaker refuses, and no shared bodies stand in."""
        return self.bodies is None and self.upstream.breaker.refuses()

    def _settled(self, value: object) -> asyncio.Future[Any]:
        """A future already holding `value`: a resource this request had at hand, kept as it
        was. (The request's loop looked up once: on Python 3.11 each lookup is a system call.)"""
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        future = self._loop.create_future()
        future.set_result(value)
        return future

    async def _body(
        self, path: str, params: Mapping[str, str | int] | None, fetching: Fetching
    ) -> bytes | None:
        """An upstream body, through the bodies shared by processes when there are."""
        if self.bodies is None:
            return await self.upstream.get(path, params)
        fetch = functools.partial(self.upstream.get, path, params)
        return await self.bodies.get(path, params, fetch, fetching)

    async def _list(
        self, resource: str, kind: type[Listed], offset: int, limit: int
    ) -> tuple[list[Listed], int]:
        key = f"{resource}?{urlencode({'limit': limit, 'offset': offset})}"
        return await self._get(
            key, lambda fetching: self._read_page(resource, kind, offset, limit, fetching)
        )

    async def _read_page(
        self, resource: str, kind: type[Listed], offset: int, limit: int, fetching: Fetching
    ) -> tuple[tuple[list[Listed], int], int]:
        """A list page from the upstream, its items primed by id and slug; and its size."""
        body = await self._body(resource, {"limit": limit, "offset": offset}, fetching)
        if body is None:
            raise UpstreamError("The upstream API has no such list", f"GET {resource}: 404")
        page = decode(body, ListJSON, resource)
        items = await in_turns(self._decoded(resource, kind, page.results, fetching.age))
        return (items, page.count), len(body)

    def _decoded(
        self, resource: str, kind: type[Listed], raws: Sequence[msgspec.Raw], age: float
    ) -> Steps[list[Listed]]:
        """A page's items decoded, then primed: a whole list's thousands a chunk at a time
        (turns.py). None is primed unless all decoded, as a list that fails is no answer. An
        item equal to the one the cache holds is that one (see `_held`)."""
        items: list[Listed] = []
        yield from in_chunks(
            raws,
            lambda chunk: items.extend(
                self._held(resource, decode(r, kind, resource)) for r in chunk
            ),
        )

        def prime(positions: Sequence[int]) -> None:
            for i in positions:
                self._prime(resource, items[i], len(raws[i]), age)

        yield from in_chunks(range(len(items)), prime)
        return items

    def _held(self, resource: str, item: Listed) -> Listed:
        """The object the cache holds for `item`'s id (fresh or stale) if it equals `item` field
        by field, else `item`. A renewal of the snapshot, where little has changed, then keeps
        the last one's objects and what was made of them (wire.py's `made_once`), rather than
        scatter new long-lived copies among the requests' short-lived objects; each copy dies
        as soon as it is compared, its memory reused for the next."""
        held = self.cache.kept(f"{resource}{item.id}/")
        return cast(Listed, held[0]) if held is not None and held[0] == item else item

    def _prime(self, resource: str, item: Listed, size: int, age: float) -> None:
        """Cache a listed object as its detail GET would answer it, by id and by slug."""
        self.cache.put(f"{resource}{item.id}/", item, size, age=age)
        # Categories have no slug lookup, and an all-digit slug is an id to the upstream.
        if resource != "categories/" and not item.slug.isdigit():
            self.cache.put(f"{resource}{quote(item.slug, safe='')}/", item, size, age=age)

    async def _fetch_snapshot(self, fetching: Fetching) -> tuple[Catalogue, int]:
        """The three whole lists and the snapshot built from them, and their JSON size.

        Their pages are read straight from the upstream, not bound to this request's time
        (the fetch is shared), and cached only as the snapshot; their items prime the
        details, as any list page does, so that a lookup by id or slug costs no request.
        """

        async def read_all(resource: str, kind: type[Listed]) -> tuple[list[Listed], int]:
            sizes: list[int] = []

            async def read(offset: int) -> tuple[list[Listed], int]:
                page, size = await self._read_page(resource, kind, offset, WHOLE_LIST, fetching)
                sizes.append(size)
                return page

            return await _all_pages(read), sum(sizes)

        reads: list[Callable[[], Awaitable[tuple[list[Any], int]]]] = [
            functools.partial(read_all, "categories/", CategoryJSON),
            functools.partial(read_all, "grids/", GridJSON),
            functools.partial(read_all, "packages/", PackageJSON),
        ]
        (categories, a), (grids, b), (packages, c) = await _probing_first(
            self.upstream.breaker, reads
        )
        return await in_turns(snapshot_in_steps(categories, grids, packages)), a + b + c


# A key `quote` leaves as it is (its always-safe characters): most slugs, every id.
_UNQUOTED = re.compile(r"[A-Za-z0-9_.~-]*").fullmatch


def _detail_path(resource: str, key: str) -> str | None:
    """The upstream path of a detail; None for a key that, as a path segment, names the list
    (`""`, `.`, `..`), not a resource."""
    if key in ("", ".", ".."):
        return None
    return f"{resource}{key if _UNQUOTED(key) else quote(key, safe='')}/"


async def _probing_first(breaker: Breaker, reads: Sequence[Callable[[], Awaitable[T]]]) -> list[T]:
    """What each of `reads` returns: all read together while the circuit is closed; else one
    at a time until it is. Together, one would be the half-open probe and the others refused
    beside it, failing the whole even when the probe's answer closes the circuit."""
    done: list[T] = []
    while len(done) < len(reads) and not breaker.closed():
        done.append(await reads[len(done)]())
    return done + await asyncio.gather(*(read() for read in reads[len(done) :]))


async def _all_pages(
    read: Callable[[int], Awaitable[tuple[list[Listed], int]]],
) -> list[Listed]:
    """A whole list from `read(offset)` pages: one request, unless the upstream caps pages."""
    items, count = await read(0)
    while len(items) < count:
        more, _ = await read(len(items))
        if not more:
            break
        items = items + more
    return items
