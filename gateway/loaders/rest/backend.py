"""The REST backend: the Django Packages APIv4 over HTTP.

`Upstream` is the process-wide client (one keep-alive pool), and it protects the upstream:
a cap on requests in flight, retries of transient failures within the caller's time, a
circuit breaker, a bound on body size. `ResourceCache` (cache.py) is the process-wide cache
of what it read (with `--cache`, over the bodies every process shares: shared.py).
`RestBackend` is built per request around both and remembers every resource the request has
seen, by id and by slug, so that a list page, a slug lookup or a relation never costs a
second request for the same resource. Relation URLs are only parsed
for their id; they are never followed, so the gateway calls no host but its configured
upstream.

The upstream cannot filter, and orders every list one way: what asks for a filter or an
order (and `Category.packages`, which the upstream cannot list either) is answered from a
`Catalogue` (catalogue.py), a snapshot of the three whole lists kept in the cache as one
entry. While that snapshot is fresh, plain lists, relations and lookups are read from it too,
and a batch of more records of one kind than `MAX_DETAILS` fetches it rather than a GET each;
otherwise the upstream's own list pages, details and relations answer.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol, TypeVar
from urllib.parse import quote, urlencode

from gateway import metrics
from gateway.errors import UpstreamError
from gateway.loaders.records import (
    Category,
    Grid,
    Order,
    Package,
    PackageFilter,
    Page,
    SearchHit,
    Window,
)
from gateway.loaders.rest.cache import Fetch, Fetching, ResourceCache
from gateway.loaders.rest.client import Upstream
from gateway.loaders.rest.shared import SharedBodies
from gateway.loaders.rest.snapshot import Catalogue
from gateway.loaders.rest.wire import (
    CategoryJSON,
    GridJSON,
    ListJSON,
    PackageJSON,
    SearchJSON,
    decode,
    id_from_url,
    to_category,
    to_grid,
    to_package,
    to_search_hit,
)

logger = logging.getLogger("gateway")

# The upstream has no maximum page size: one request with this limit reads a whole list.
WHOLE_LIST = 100_000

# The cache key of the catalogue snapshot: no upstream path, so no list or detail entry.
CATALOGUE = "catalogue"

# A batch that needs more records of one kind than this, none of them at hand, reads the
# snapshot (3 list requests) instead of as many detail GETs: a grid's hundred packages and
# their grids cost the lists, a package's ten grids their own GETs.
MAX_DETAILS = 16

T = TypeVar("T")
K = TypeVar("K")


class _Listed(Protocol):
    """What every listed resource has: its id, and a slug (not unique for categories)."""

    @property
    def id(self) -> int: ...

    @property
    def slug(self) -> str: ...


L = TypeVar("L", bound=_Listed)


def _retrieve(future: asyncio.Future[Any]) -> None:
    """Mark a shared fetch's failure as seen: its callers may all have given up already."""
    if not future.cancelled():
        future.exception()


async def _all_pages(read: Callable[[int], Awaitable[tuple[list[L], int]]]) -> list[L]:
    """A whole list from `read(offset)` pages: one request, unless the upstream caps pages."""
    items, count = await read(0)
    while len(items) < count:
        more, _ = await read(len(items))
        if not more:
            break
        items = items + more
    return items


def _readable(convert: Callable[[K], T], raws: Iterable[K]) -> list[T]:
    """The records of a whole list, leaving out (and logging) any with a malformed link: one
    odd package must not cost every filter, order and category its snapshot."""
    records = []
    for raw in raws:
        try:
            records.append(convert(raw))
        except UpstreamError as exc:
            logger.warning("catalogue snapshot: left out a record: %s (%s)", exc, exc.detail)
    return records


def _link_ids(urls: Iterable[str]) -> list[int]:
    """The ids of a relation's links, leaving out any malformed one (logged)."""
    ids = []
    for url in urls:
        try:
            ids.append(id_from_url(url))
        except UpstreamError as exc:
            logger.warning("catalogue snapshot: left out a link: %s (%s)", exc, exc.detail)
    return ids


def _shaped(window: Window) -> bool:
    """Whether a window asks for a filter or an order: only the catalogue can answer it."""
    return window.filter is not None or window.order is not None


class RestBackend:
    """The `Backend` over one `Upstream`, remembering what this request has fetched.

    Resources come from the process-wide `cache` when it has them fresh; what this request
    read once it reads again from its own memo, so that one answer shows a record one way.
    `stale` tells whether any of it was a stale copy served while the upstream failed.
    """

    def __init__(
        self,
        upstream: Upstream,
        cache: ResourceCache,
        bodies: SharedBodies | None = None,
        *,
        deadline: float | None = None,
    ) -> None:
        self.upstream = upstream
        self.cache = cache
        self.bodies = bodies
        self.deadline = deadline
        self.stale = False
        self._categories: dict[int, Category | None] = {}
        self._grids: dict[int, Grid | None] = {}
        self._packages: dict[int, Package | None] = {}
        self._grid_slugs: dict[str, int | None] = {}
        self._package_slugs: dict[str, int | None] = {}
        self._package_ids_of_grid: dict[int, tuple[int, ...]] = {}
        self._grid_ids_of_package: dict[int, tuple[int, ...]] = {}
        self._in_flight: dict[str, asyncio.Future[Any]] = {}

    # -- fetching, once per path ------------------------------------------------------

    async def _once(self, key: str, fetch: Callable[[], Awaitable[T]]) -> T:
        """Run `fetch` once per key for this request; concurrent callers share it."""
        future = self._in_flight.get(key)
        if future is None:
            future = asyncio.ensure_future(fetch())
            future.add_done_callback(_retrieve)
            self._in_flight[key] = future
        result: T = await asyncio.shield(future)
        return result

    async def _get(self, key: str, fetch: Fetch[T]) -> T:
        """The resource at `key`: this request's copy, else the cache's, else `fetch`'s.

        The fetch may be shared with other requests; this one waits for it only until its
        own deadline (the fetch goes on for the others, and fills the cache).
        """

        fetched = False

        async def fetching(progress: Fetching) -> tuple[T, int]:
            nonlocal fetched
            fetched = True
            return await fetch(progress)

        async def shared() -> T:
            # A miss is a lookup that fetched; a hit found the value, or another's fetch of it.
            layer = "catalogue" if key == CATALOGUE else "upstream"
            try:
                async with asyncio.timeout_at(self.deadline):
                    value, stale = await self.cache.get(key, fetching)
            except TimeoutError:
                raise UpstreamError(
                    "The upstream API timed out", f"GET {key}: the request's time ran out"
                ) from None
            except UpstreamError:
                metrics.cache_lookup(layer, hit=False)
                raise
            metrics.cache_lookup(layer, hit=not fetched)
            self.stale = self.stale or stale
            return value

        return await self._once(key, shared)

    async def _body(
        self, path: str, params: Mapping[str, str | int] | None, fetching: Fetching
    ) -> bytes | None:
        """An upstream body, through the bodies shared by processes when there are."""
        if self.bodies is None:
            return await self.upstream.get(path, params)
        return await self.bodies.get(
            path, params, lambda: self.upstream.get(path, params), fetching
        )

    async def _detail(self, resource: str, key: str, kind: type[T]) -> T | None:
        if key in ("", ".", ".."):  # as a path segment these name the list, not a resource
            return None
        path = f"{resource}{quote(key, safe='')}/"

        async def fetch(fetching: Fetching) -> tuple[T | None, int]:
            body = await self._body(path, None, fetching)
            return (None, 0) if body is None else (decode(body, kind, path), len(body))

        return await self._get(path, fetch)

    async def _list(
        self, resource: str, kind: type[L], offset: int, limit: int
    ) -> tuple[list[L], int]:
        key = f"{resource}?{urlencode({'limit': limit, 'offset': offset})}"
        return await self._get(
            key, lambda fetching: self._read_page(resource, kind, offset, limit, fetching)
        )

    async def _read_page(
        self, resource: str, kind: type[L], offset: int, limit: int, fetching: Fetching
    ) -> tuple[tuple[list[L], int], int]:
        """A list page from the upstream, its items primed by id and slug; and its size."""
        body = await self._body(resource, {"limit": limit, "offset": offset}, fetching)
        if body is None:
            raise UpstreamError("The upstream API has no such list", f"GET {resource}: 404")
        page = decode(body, ListJSON, resource)
        items = [decode(raw, kind, resource) for raw in page.results]
        for raw, item in zip(page.results, items, strict=True):
            self._prime(resource, item, len(raw), fetching.age)
        return (items, page.count), len(body)

    def _prime(self, resource: str, item: L, size: int, age: float) -> None:
        """Cache a listed object as its detail GET would answer it, by id and by slug."""
        self.cache.put(f"{resource}{item.id}/", item, size, age=age)
        # Categories have no slug lookup, and an all-digit slug is an id to the upstream.
        if resource != "categories/" and not item.slug.isdigit():
            self.cache.put(f"{resource}{quote(item.slug, safe='')}/", item, size, age=age)

    async def _whole_list(self, resource: str, kind: type[L]) -> list[L]:
        return await _all_pages(lambda offset: self._list(resource, kind, offset, WHOLE_LIST))

    async def _catalogue(self) -> Catalogue:
        """The catalogue snapshot: the three whole lists, refetched together once stale."""
        return await self._get(CATALOGUE, self._fetch_catalogue)

    async def refresh_catalogue(self) -> Catalogue:
        """Fetch the snapshot anew, fresh or not: what keeps it warm before it expires."""
        return await self.cache.refresh(CATALOGUE, self._fetch_catalogue)

    async def _fetch_catalogue(self, fetching: Fetching) -> tuple[Catalogue, int]:
        """The three whole lists and the snapshot built from them, and their JSON size.

        Their pages are read straight from the upstream, not bound to this request's time
        (the fetch is shared), and cached only as the snapshot; their items prime the
        details, as any list page does, so that a lookup by id or slug costs no request.
        """

        async def read_all(resource: str, kind: type[L]) -> tuple[list[L], int]:
            sizes: list[int] = []

            async def read(offset: int) -> tuple[list[L], int]:
                page, size = await self._read_page(resource, kind, offset, WHOLE_LIST, fetching)
                sizes.append(size)
                return page

            return await _all_pages(read), sum(sizes)

        (categories, a), (grids, b), (packages, c) = await asyncio.gather(
            read_all("categories/", CategoryJSON),
            read_all("grids/", GridJSON),
            read_all("packages/", PackageJSON),
        )
        catalogue = Catalogue(
            _readable(to_category, categories),
            _readable(to_grid, grids),
            _readable(to_package, packages),
            packages_of_grid={raw.id: _link_ids(raw.packages) for raw in grids},
            grids_of_package={raw.id: _link_ids(raw.grids) for raw in packages},
        )
        return catalogue, a + b + c

    # -- remembering ------------------------------------------------------------------

    def _remember_category(self, raw: CategoryJSON) -> Category:
        record = to_category(raw)
        self._categories[record.id] = record
        return record

    def _remember_grid(self, raw: GridJSON) -> Grid:
        record = to_grid(raw)
        self._grids[record.id] = record
        self._grid_slugs[record.slug] = record.id
        self._package_ids_of_grid[record.id] = tuple(id_from_url(url) for url in raw.packages)
        return record

    def _remember_package(self, raw: PackageJSON) -> Package:
        record = to_package(raw)
        self._packages[record.id] = record
        self._package_slugs[record.slug] = record.id
        self._grid_ids_of_package[record.id] = tuple(id_from_url(url) for url in raw.grids)
        return record

    async def _all_categories(self) -> list[Category]:
        async def fetch() -> list[Category]:
            raw = await self._whole_list("categories/", CategoryJSON)
            return [self._remember_category(item) for item in raw]

        return await self._once("categories/", fetch)

    async def _at_hand(self, wanted: int) -> Catalogue | None:
        """The snapshot, when it costs no request and no wait (this request has it, or the
        cache has it fresh) or when `wanted` records of one kind are more than a GET each is
        worth; None if it cannot be had (each record is then asked for alone)."""
        if wanted <= MAX_DETAILS and not (
            CATALOGUE in self._in_flight or self.cache.holds(CATALOGUE)
        ):
            return None
        try:
            return await self._catalogue()
        except UpstreamError:
            return None

    @staticmethod
    def _as_seen(page: Page[L], seen: Mapping[int, L | None]) -> Page[L]:
        """`page` with each record this request has already `seen` as it saw it."""
        if not seen:
            return page
        return Page([seen.get(record.id) or record for record in page.items], page.total)

    async def _catalogue_for(self, *, shaped: bool) -> Catalogue | None:
        """The snapshot for a list or relation: needed for a filter or an order (`shaped`),
        else used when at hand, since it answers as the upstream's own pages would."""
        return await self._catalogue() if shaped else await self._at_hand(0)

    async def _by_keys(
        self,
        keys: Sequence[K],
        known: dict[K, T | None],
        fetch_one: Callable[[K], Awaitable[T | None]],
        in_catalogue: Callable[[Catalogue, K], T | None],
    ) -> list[T | None]:
        """The records for `keys`: this request's, else the snapshot's, else a GET each (what
        the snapshot lacks may be newer than it, or not exist)."""
        missing = [key for key in dict.fromkeys(keys) if key not in known]
        catalogue = await self._at_hand(len(missing)) if missing else None
        if catalogue is not None:
            for key in missing:
                record = in_catalogue(catalogue, key)
                if record is not None:
                    known[key] = record
            missing = [key for key in missing if key not in known]
        if missing:
            fetched = await asyncio.gather(*(fetch_one(key) for key in missing))
            for key, record in zip(missing, fetched, strict=True):
                known.setdefault(key, record)
        return [known[key] for key in keys]

    def _grid_in(self, catalogue: Catalogue, slug: str) -> int | None:
        grid = catalogue.grid_by_slug(slug)
        if grid is None:
            return None
        self._grids[grid.id] = grid
        return grid.id

    def _package_in(self, catalogue: Catalogue, slug: str) -> int | None:
        package = catalogue.package_by_slug(slug)
        if package is None:
            return None
        self._packages[package.id] = package
        return package.id

    # -- the Backend interface --------------------------------------------------------

    async def categories(self, ids: Sequence[int]) -> list[Category | None]:
        async def fetch_one(id: int) -> Category | None:
            raw = await self._detail("categories/", str(id), CategoryJSON)
            return None if raw is None else self._remember_category(raw)

        return await self._by_keys(ids, self._categories, fetch_one, Catalogue.category)

    async def categories_by_slug(self, slugs: Sequence[str]) -> list[Category | None]:
        # The upstream has no slug lookup for categories, and their slugs are not unique:
        # read the (short) list, or the snapshot's, and take the oldest category with the slug.
        catalogue = await self._at_hand(0)
        listed = catalogue.categories() if catalogue else await self._all_categories()
        by_slug: dict[str, Category] = {}
        for category in sorted(listed, key=lambda c: c.id):
            by_slug.setdefault(category.slug, category)
        return [by_slug.get(slug) for slug in slugs]

    async def grids(self, ids: Sequence[int]) -> list[Grid | None]:
        async def fetch_one(id: int) -> Grid | None:
            raw = await self._detail("grids/", str(id), GridJSON)
            return None if raw is None else self._remember_grid(raw)

        return await self._by_keys(ids, self._grids, fetch_one, Catalogue.grid)

    async def grids_by_slug(self, slugs: Sequence[str]) -> list[Grid | None]:
        async def fetch_one(slug: str) -> int | None:
            raw = await self._detail("grids/", slug, GridJSON)
            # An all-digit slug is an id to the upstream: accept only a real slug match.
            return self._remember_grid(raw).id if raw is not None and raw.slug == slug else None

        ids = await self._by_keys(slugs, self._grid_slugs, fetch_one, self._grid_in)
        return [None if id is None else self._grids.get(id) for id in ids]

    async def packages(self, ids: Sequence[int]) -> list[Package | None]:
        async def fetch_one(id: int) -> Package | None:
            raw = await self._detail("packages/", str(id), PackageJSON)
            return None if raw is None else self._remember_package(raw)

        return await self._by_keys(ids, self._packages, fetch_one, Catalogue.package)

    async def packages_by_slug(self, slugs: Sequence[str]) -> list[Package | None]:
        async def fetch_one(slug: str) -> int | None:
            raw = await self._detail("packages/", slug, PackageJSON)
            if raw is None or raw.slug != slug:
                return None
            return self._remember_package(raw).id

        ids = await self._by_keys(slugs, self._package_slugs, fetch_one, self._package_in)
        return [None if id is None else self._packages.get(id) for id in ids]

    async def packages_of_grids(self, windows: Sequence[Window]) -> list[Page[Package]]:
        return await self._relation(
            windows, self._grid_members, Catalogue.grid, Catalogue.packages_of_grid, self._packages
        )

    async def grids_of_packages(self, windows: Sequence[Window]) -> list[Page[Grid]]:
        return await self._relation(
            windows, self._package_grids, Catalogue.package, Catalogue.grids_of_package, self._grids
        )

    async def packages_of_categories(self, windows: Sequence[Window]) -> list[Page[Package]]:
        # The upstream cannot filter packages by category: the snapshot's whole package
        # list answers every window, filtered or not.
        catalogue = await self._catalogue()
        return [
            self._as_seen(catalogue.packages_of_category(window), self._packages)
            for window in windows
        ]

    async def _relation(
        self,
        windows: Sequence[Window],
        plain: Callable[[Sequence[Window]], Awaitable[list[Page[L]]]],
        parent_in: Callable[[Catalogue, int], object | None],
        from_catalogue: Callable[[Catalogue, Window], Page[L]],
        seen: Mapping[int, L | None],
    ) -> list[Page[L]]:
        """Answer from the snapshot the windows with a filter or order, and any window whose
        parent it knows while it is at hand; the others as the upstream's relation. A record
        this request has seen already is served as it saw it, wherever the page came from."""
        catalogue = await self._catalogue_for(shaped=any(map(_shaped, windows)))
        pages: dict[Window, Page[L]] = {}
        if catalogue is not None:
            pages = {
                window: self._as_seen(from_catalogue(catalogue, window), seen)
                for window in windows
                if _shaped(window) or parent_in(catalogue, window.parent) is not None
            }
        own = [window for window in windows if window not in pages]
        if own:
            pages.update(zip(own, await plain(own), strict=True))
        return [pages[window] for window in windows]

    async def _grid_members(self, windows: Sequence[Window]) -> list[Page[Package]]:
        await self.grids([window.parent for window in windows])
        return await self._windows(windows, self._package_ids_of_grid, self.packages)

    async def _package_grids(self, windows: Sequence[Window]) -> list[Page[Grid]]:
        await self.packages([window.parent for window in windows])
        return await self._windows(windows, self._grid_ids_of_package, self.grids)

    async def _windows(
        self,
        windows: Sequence[Window],
        members: Mapping[int, Sequence[int]],
        load: Callable[[Sequence[int]], Awaitable[list[T | None]]],
    ) -> list[Page[T]]:
        """Cut each window out of its parent's id list and load the records in all of them."""
        slices = [
            members.get(window.parent, ())[window.offset : window.offset + window.limit]
            for window in windows
        ]
        wanted = list(dict.fromkeys(id for ids in slices for id in ids))
        records = dict(zip(wanted, await load(wanted), strict=True))
        return [
            Page(
                [record for id in ids if (record := records[id]) is not None],
                len(members.get(window.parent, ())),
            )
            for window, ids in zip(windows, slices, strict=True)
        ]

    async def list_categories(
        self, offset: int, limit: int, order: Order | None = None
    ) -> Page[Category]:
        catalogue = await self._catalogue_for(shaped=order is not None)
        if catalogue is not None:
            return self._as_seen(catalogue.list_categories(offset, limit, order), self._categories)
        raw, total = await self._page("categories/", CategoryJSON, offset, limit)
        return Page([self._remember_category(item) for item in raw], total)

    async def list_grids(self, offset: int, limit: int, order: Order | None = None) -> Page[Grid]:
        catalogue = await self._catalogue_for(shaped=order is not None)
        if catalogue is not None:
            return self._as_seen(catalogue.list_grids(offset, limit, order), self._grids)
        raw, total = await self._page("grids/", GridJSON, offset, limit)
        return Page([self._remember_grid(item) for item in raw], total)

    async def list_packages(
        self,
        offset: int,
        limit: int,
        filter: PackageFilter | None = None,
        order: Order | None = None,
    ) -> Page[Package]:
        catalogue = await self._catalogue_for(shaped=filter is not None or order is not None)
        if catalogue is not None:
            page = catalogue.list_packages(offset, limit, filter, order)
            return self._as_seen(page, self._packages)
        raw, total = await self._page("packages/", PackageJSON, offset, limit)
        return Page([self._remember_package(item) for item in raw], total)

    async def _page(
        self, resource: str, kind: type[L], offset: int, limit: int
    ) -> tuple[list[L], int]:
        # The upstream reads limit=0 as "the default": ask for one and keep none.
        items, total = await self._list(resource, kind, offset, max(limit, 1))
        return items[:limit], total

    async def search(self, query: str) -> list[SearchHit]:
        if not query.strip():
            return []
        params = {"q": query}

        async def fetch(fetching: Fetching) -> tuple[list[SearchJSON], int]:
            body = await self._body("search/", params, fetching)
            if body is None:
                raise UpstreamError("The upstream API has no search", "GET search/: 404")
            return decode(body, list[SearchJSON], "search/"), len(body)

        hits = await self._get(f"search/?{urlencode(params)}", fetch)
        return [to_search_hit(raw) for raw in hits]
