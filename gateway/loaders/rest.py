"""The REST backend: the Django Packages APIv4 over HTTP.

`Upstream` is the process-wide client (one keep-alive pool). `RestBackend` is built per
request around it and remembers every resource the request has seen, by id and by slug,
so that a list page, a slug lookup or a relation never costs a second request for the
same resource. Relation URLs are only parsed for their id; they are never followed, so
the gateway calls no host but its configured upstream.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, Literal, TypeVar
from urllib.parse import quote, urlsplit

import httpx
import msgspec

from gateway.errors import UpstreamError
from gateway.loaders.records import (
    Category,
    Grid,
    Package,
    Page,
    SearchHit,
    Window,
    site_time,
    split_participants,
)

# The upstream has no maximum page size: one request with this limit reads a whole list.
WHOLE_LIST = 100_000

T = TypeVar("T")
K = TypeVar("K")


class CategoryJSON(msgspec.Struct):
    id: int
    title: str
    slug: str
    description: str
    title_plural: str
    show_pypi: bool
    created: datetime
    modified: datetime


class GridJSON(msgspec.Struct):
    id: int
    title: str
    slug: str
    description: str
    is_locked: bool
    packages: list[str]
    header: bool
    created: datetime
    modified: datetime


class PackageJSON(msgspec.Struct):
    category: str
    grids: list[str]
    id: int
    title: str
    slug: str
    last_updated: datetime | None
    last_fetched: datetime | None
    repo_url: str
    pypi_version: str | None
    created: datetime
    modified: datetime
    repo_forks: int
    repo_description: str
    pypi_url: str
    documentation_url: str | None
    repo_watchers: int
    commits_over_52: list[int]
    participants: list[str]


class SearchJSON(msgspec.Struct):
    description: str
    title: str
    created: datetime
    modified: datetime
    weight: int
    item_type: Literal["package", "grid"]
    slug: str
    category: str
    absolute_url: str
    repo_watchers: int
    repo_forks: int
    pypi_downloads: int
    usage: int
    participants: str
    last_committed: datetime | None
    last_released: datetime | None


class ListJSON(msgspec.Struct):
    count: int
    results: list[msgspec.Raw]


def id_from_url(url: str) -> int:
    """The id at the end of a relation URL's path, whatever its host or query string."""
    last = urlsplit(url).path.rstrip("/").rpartition("/")[2]
    if not last.isdigit():
        raise UpstreamError("The upstream API returned a malformed relation link", f"link {url!r}")
    return int(last)


def _maybe_time(value: datetime | None) -> datetime | None:
    return None if value is None else site_time(value)


def _category(raw: CategoryJSON) -> Category:
    return Category(
        id=raw.id,
        title=raw.title,
        slug=raw.slug,
        description=raw.description,
        title_plural=raw.title_plural,
        show_pypi=raw.show_pypi,
        created=site_time(raw.created),
        modified=site_time(raw.modified),
    )


def _grid(raw: GridJSON) -> Grid:
    return Grid(
        id=raw.id,
        title=raw.title,
        slug=raw.slug,
        description=raw.description,
        is_locked=raw.is_locked,
        header=raw.header,
        created=site_time(raw.created),
        modified=site_time(raw.modified),
    )


def _package(raw: PackageJSON) -> Package:
    return Package(
        id=raw.id,
        title=raw.title,
        slug=raw.slug,
        category_id=id_from_url(raw.category),
        last_updated=_maybe_time(raw.last_updated),
        last_fetched=_maybe_time(raw.last_fetched),
        repo_url=raw.repo_url,
        pypi_version=raw.pypi_version,
        created=site_time(raw.created),
        modified=site_time(raw.modified),
        repo_forks=raw.repo_forks,
        repo_description=raw.repo_description,
        pypi_url=raw.pypi_url,
        documentation_url=raw.documentation_url,
        repo_watchers=raw.repo_watchers,
        commits_over_52=tuple(raw.commits_over_52),
        participants=tuple(raw.participants),
    )


def _search_hit(raw: SearchJSON) -> SearchHit:
    return SearchHit(
        item_type=raw.item_type,
        title=raw.title,
        slug=raw.slug,
        description=raw.description,
        category=raw.category,
        weight=raw.weight,
        repo_watchers=raw.repo_watchers,
        repo_forks=raw.repo_forks,
        pypi_downloads=raw.pypi_downloads,
        usage=raw.usage,
        participants=split_participants(raw.participants),
        last_committed=_maybe_time(raw.last_committed),
        last_released=_maybe_time(raw.last_released),
        absolute_url=raw.absolute_url,
        created=site_time(raw.created),
        modified=site_time(raw.modified),
    )


def decode(body: bytes | msgspec.Raw, kind: type[T], path: str) -> T:
    """Decode and validate an upstream body; a body of the wrong shape is an upstream error."""
    try:
        return msgspec.json.decode(body, type=kind)
    except msgspec.ValidationError as exc:
        raise UpstreamError(
            "The upstream API returned data of an unexpected shape", f"{path}: {exc}"
        ) from exc
    except msgspec.DecodeError as exc:
        raise UpstreamError(
            "The upstream API returned a body that is not valid JSON", f"{path}: {exc}"
        ) from exc


class Upstream:
    """The process-wide HTTP client for one APIv4 base URL."""

    def __init__(self, base_url: str, *, timeout: float = 10.0, max_connections: int = 64):
        self.base_url = base_url if base_url.endswith("/") else base_url + "/"
        self.client = httpx.AsyncClient(
            base_url=self.base_url,
            timeout=httpx.Timeout(timeout, connect=min(timeout, 5.0)),
            limits=httpx.Limits(
                max_connections=max_connections, max_keepalive_connections=max_connections
            ),
            headers={"Accept": "application/json", "User-Agent": "djangopackages-gateway"},
            follow_redirects=False,
        )

    async def get(self, path: str, params: dict[str, str | int] | None = None) -> bytes | None:
        """The body of a 200 answer, None for a 404; anything else is an `UpstreamError`."""
        try:
            response = await self.client.get(path, params=params)
        except httpx.TimeoutException as exc:
            raise UpstreamError("The upstream API timed out", f"GET {path}: {exc!r}") from exc
        except httpx.HTTPError as exc:
            raise UpstreamError(
                "The upstream API could not be reached", f"GET {path}: {exc!r}"
            ) from exc
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise UpstreamError(
                f"The upstream API answered HTTP {response.status_code}",
                f"GET {response.url}: HTTP {response.status_code}",
            )
        return response.content

    async def aclose(self) -> None:
        await self.client.aclose()


class RestBackend:
    """The `Backend` over one `Upstream`, remembering what this request has fetched."""

    def __init__(self, upstream: Upstream) -> None:
        self.upstream = upstream
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
            self._in_flight[key] = future
        result: T = await asyncio.shield(future)
        return result

    async def _detail(self, path: str, kind: type[T]) -> T | None:
        body = await self.upstream.get(path)
        return None if body is None else decode(body, kind, path)

    async def _list(self, path: str, kind: type[T], offset: int, limit: int) -> tuple[list[T], int]:
        body = await self.upstream.get(path, {"limit": limit, "offset": offset})
        if body is None:
            raise UpstreamError("The upstream API has no such list", f"GET {path}: 404")
        page = decode(body, ListJSON, path)
        return [decode(raw, kind, path) for raw in page.results], page.count

    async def _whole_list(self, path: str, kind: type[T]) -> list[T]:
        items, count = await self._list(path, kind, 0, WHOLE_LIST)
        while len(items) < count:
            more, _ = await self._list(path, kind, len(items), WHOLE_LIST)
            if not more:
                break
            items.extend(more)
        return items

    # -- remembering ------------------------------------------------------------------

    def _remember_category(self, raw: CategoryJSON) -> Category:
        record = _category(raw)
        self._categories[record.id] = record
        return record

    def _remember_grid(self, raw: GridJSON) -> Grid:
        record = _grid(raw)
        self._grids[record.id] = record
        self._grid_slugs[record.slug] = record.id
        self._package_ids_of_grid[record.id] = tuple(id_from_url(url) for url in raw.packages)
        return record

    def _remember_package(self, raw: PackageJSON) -> Package:
        record = _package(raw)
        self._packages[record.id] = record
        self._package_slugs[record.slug] = record.id
        self._grid_ids_of_package[record.id] = tuple(id_from_url(url) for url in raw.grids)
        return record

    async def _all_categories(self) -> list[Category]:
        async def fetch() -> list[Category]:
            raw = await self._whole_list("categories/", CategoryJSON)
            return [self._remember_category(item) for item in raw]

        return await self._once("categories/", fetch)

    async def _all_packages(self) -> list[Package]:
        async def fetch() -> list[Package]:
            raw = await self._whole_list("packages/", PackageJSON)
            return [self._remember_package(item) for item in raw]

        return await self._once("packages/", fetch)

    async def _by_keys(
        self,
        keys: Sequence[K],
        known: dict[K, T | None],
        fetch_one: Callable[[K], Awaitable[T | None]],
    ) -> list[T | None]:
        missing = [key for key in dict.fromkeys(keys) if key not in known]
        if missing:
            fetched = await asyncio.gather(*(fetch_one(key) for key in missing))
            for key, record in zip(missing, fetched, strict=True):
                known.setdefault(key, record)
        return [known[key] for key in keys]

    # -- the Backend interface --------------------------------------------------------

    async def categories(self, ids: Sequence[int]) -> list[Category | None]:
        async def fetch_one(id: int) -> Category | None:
            path = f"categories/{id}/"
            raw = await self._once(path, lambda: self._detail(path, CategoryJSON))
            return None if raw is None else self._remember_category(raw)

        return await self._by_keys(ids, self._categories, fetch_one)

    async def categories_by_slug(self, slugs: Sequence[str]) -> list[Category | None]:
        # The upstream has no slug lookup for categories, and their slugs are not unique:
        # read the (short) list and take the oldest category with the slug.
        by_slug: dict[str, Category] = {}
        for category in sorted(await self._all_categories(), key=lambda c: c.id):
            by_slug.setdefault(category.slug, category)
        return [by_slug.get(slug) for slug in slugs]

    async def grids(self, ids: Sequence[int]) -> list[Grid | None]:
        async def fetch_one(id: int) -> Grid | None:
            path = f"grids/{id}/"
            raw = await self._once(path, lambda: self._detail(path, GridJSON))
            return None if raw is None else self._remember_grid(raw)

        return await self._by_keys(ids, self._grids, fetch_one)

    async def grids_by_slug(self, slugs: Sequence[str]) -> list[Grid | None]:
        async def fetch_one(slug: str) -> int | None:
            path = f"grids/{quote(slug, safe='')}/"
            raw = await self._once(path, lambda: self._detail(path, GridJSON))
            # An all-digit slug is an id to the upstream: accept only a real slug match.
            return self._remember_grid(raw).id if raw is not None and raw.slug == slug else None

        ids = await self._by_keys(slugs, self._grid_slugs, fetch_one)
        return [None if id is None else self._grids.get(id) for id in ids]

    async def packages(self, ids: Sequence[int]) -> list[Package | None]:
        async def fetch_one(id: int) -> Package | None:
            path = f"packages/{id}/"
            raw = await self._once(path, lambda: self._detail(path, PackageJSON))
            return None if raw is None else self._remember_package(raw)

        return await self._by_keys(ids, self._packages, fetch_one)

    async def packages_by_slug(self, slugs: Sequence[str]) -> list[Package | None]:
        async def fetch_one(slug: str) -> int | None:
            path = f"packages/{quote(slug, safe='')}/"
            raw = await self._once(path, lambda: self._detail(path, PackageJSON))
            if raw is None or raw.slug != slug:
                return None
            return self._remember_package(raw).id

        ids = await self._by_keys(slugs, self._package_slugs, fetch_one)
        return [None if id is None else self._packages.get(id) for id in ids]

    async def packages_of_grids(self, windows: Sequence[Window]) -> list[Page[Package]]:
        await self.grids([window.parent for window in windows])
        return await self._windows(windows, self._package_ids_of_grid, self.packages)

    async def grids_of_packages(self, windows: Sequence[Window]) -> list[Page[Grid]]:
        await self.packages([window.parent for window in windows])
        return await self._windows(windows, self._grid_ids_of_package, self.grids)

    async def packages_of_categories(self, windows: Sequence[Window]) -> list[Page[Package]]:
        # The upstream cannot filter packages by category: read the whole package list
        # (one request, no maximum page size) and group it. Its order is id descending.
        members: dict[int, list[int]] = {window.parent: [] for window in windows}
        for package in await self._all_packages():
            ids = members.get(package.category_id)
            if ids is not None:
                ids.append(package.id)
        return await self._windows(windows, members, self.packages)

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

    async def list_categories(self, offset: int, limit: int) -> Page[Category]:
        raw, total = await self._page("categories/", CategoryJSON, offset, limit)
        return Page([self._remember_category(item) for item in raw], total)

    async def list_grids(self, offset: int, limit: int) -> Page[Grid]:
        raw, total = await self._page("grids/", GridJSON, offset, limit)
        return Page([self._remember_grid(item) for item in raw], total)

    async def list_packages(self, offset: int, limit: int) -> Page[Package]:
        raw, total = await self._page("packages/", PackageJSON, offset, limit)
        return Page([self._remember_package(item) for item in raw], total)

    async def _page(self, path: str, kind: type[T], offset: int, limit: int) -> tuple[list[T], int]:
        # The upstream reads limit=0 as "the default": ask for one and keep none.
        items, total = await self._list(path, kind, offset, max(limit, 1))
        return items[:limit], total

    async def search(self, query: str) -> list[SearchHit]:
        if not query.strip():
            return []
        body = await self.upstream.get("search/", {"q": query})
        if body is None:
            raise UpstreamError("The upstream API has no search", "GET search/: 404")
        return [_search_hit(raw) for raw in decode(body, list[SearchJSON], "search/")]
