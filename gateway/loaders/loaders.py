"""Per-request dataloaders over a backend.

Built fresh for every request (aiodataloader binds to the running loop and caches for the
request's lifetime). Each loader turns one query level's keys into one backend batch, and
every record a batch returns primes the loaders that could be asked for it next: by id and
by slug, whichever way it was reached, and from any list or relation page that held it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Iterable
from functools import cached_property
from typing import Any, Generic, TypeVar

from aiodataloader import DataLoader, dispatch_queue
from aiodataloader import Loader as Queued

from gateway.loaders.backend import Backend
from gateway.loaders.records import (
    Category,
    Grid,
    Order,
    Package,
    PackageFilter,
    Page,
    Slice,
    Window,
)
from gateway.observe import batch

R = TypeVar("R", Category, Grid, Package)
K = TypeVar("K")
V = TypeVar("V")


class _Futures(dict[K, "asyncio.Future[V]"], Generic[K, V]):
    """A loader's cache of futures by key, which makes the future of a primed value only
    when its key is first looked up (a key loaded keeps its future's value)."""

    def __init__(self, primed: dict[K, V]) -> None:
        super().__init__()
        self.primed = primed

    def get(self, key: K, default: Any = None) -> Any:
        future = super().get(key)
        if future is None and key in self.primed:
            future = self[key] = asyncio.get_running_loop().create_future()
            future.set_result(self.primed.pop(key))
        return default if future is None else future

    def pop(self, key: K, default: Any = None) -> Any:
        self.primed.pop(key, None)
        return super().pop(key, default)

    def clear(self) -> None:
        self.primed.clear()
        super().clear()


class _Loader(DataLoader[K, V]):
    """A dataloader whose primed values cost a dict entry each, not a future: a list page
    primes every record it holds by id and by slug, and few are asked for again. `primed`:
    the values primed before it was made."""

    def __init__(
        self,
        batch_load_fn: Callable[[list[K]], Coroutine[Any, Any, list[V]]],
        primed: dict[K, V] | None = None,
    ) -> None:
        self._futures: _Futures[K, V] = _Futures({} if primed is None else primed)
        super().__init__(batch_load_fn, cache_map=self._futures)

    def do_resolve_reject(self, key: K, future: asyncio.Future[V]) -> None:
        """Queue `key`, as `DataLoader` does: the first key of a queue has it dispatched two
        turns of the event loop later, as aiodataloader times it, by callbacks instead of its
        extra task (the batch alone runs in one)."""
        self._queue.append(Queued(key=key, future=future))
        if len(self._queue) == 1:
            self.loop.call_soon(self._dispatch_soon)

    def _dispatch_soon(self) -> None:
        self.loop.call_soon(dispatch_queue, self)

    def prime(self, key: K, value: V) -> _Loader[K, V]:
        """As `DataLoader.prime`: a key already loaded or primed keeps its value."""
        if key not in self._futures:
            self._futures.primed.setdefault(key, value)
        return self


def _prime(
    records: Iterable[R | None], by_id: dict[int, R | None], by_slug: dict[str, R | None]
) -> None:
    """Prime the id and slug loaders' values with `records`: a key primed keeps its value."""
    for record in records:
        if record is not None:
            by_id.setdefault(record.id, record)
            by_slug.setdefault(record.slug, record)


class _Primed:
    """The values primed for the id and slug loaders, kept apart from them: a page primes
    every record it holds, and a loader nobody asks is never made."""

    def __init__(self) -> None:
        self.category: dict[int, Category | None] = {}
        self.category_by_slug: dict[str, Category | None] = {}
        self.grid: dict[int, Grid | None] = {}
        self.grid_by_slug: dict[str, Grid | None] = {}
        self.package: dict[int, Package | None] = {}
        self.package_by_slug: dict[str, Package | None] = {}


class Loaders:
    """The dataloaders of one request, all over one backend; each made when first asked for
    (a request answered from the response cache, or asking for one thing, makes few)."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self._primed = _Primed()

    @cached_property
    def category(self) -> DataLoader[int, Category | None]:
        return _Loader(self._categories, self._primed.category)

    @cached_property
    def category_by_slug(self) -> DataLoader[str, Category | None]:
        return _Loader(self._categories_by_slug, self._primed.category_by_slug)

    @cached_property
    def grid(self) -> DataLoader[int, Grid | None]:
        return _Loader(self._grids, self._primed.grid)

    @cached_property
    def grid_by_slug(self) -> DataLoader[str, Grid | None]:
        return _Loader(self._grids_by_slug, self._primed.grid_by_slug)

    @cached_property
    def package(self) -> DataLoader[int, Package | None]:
        return _Loader(self._packages, self._primed.package)

    @cached_property
    def package_by_slug(self) -> DataLoader[str, Package | None]:
        return _Loader(self._packages_by_slug, self._primed.package_by_slug)

    @cached_property
    def packages_of_grid(self) -> DataLoader[Window, Page[Package]]:
        return _Loader(self._packages_of_grids)

    @cached_property
    def grids_of_package(self) -> DataLoader[Window, Page[Grid]]:
        return _Loader(self._grids_of_packages)

    @cached_property
    def packages_of_category(self) -> DataLoader[Window, Page[Package]]:
        return _Loader(self._packages_of_categories)

    @batch("category")
    async def _categories(self, ids: list[int]) -> list[Category | None]:
        records = await self.backend.categories(ids)
        _prime(records, self._primed.category, self._primed.category_by_slug)
        return records

    @batch("category_by_slug")
    async def _categories_by_slug(self, slugs: list[str]) -> list[Category | None]:
        records = await self.backend.categories_by_slug(slugs)
        _prime(records, self._primed.category, self._primed.category_by_slug)
        return records

    @batch("grid")
    async def _grids(self, ids: list[int]) -> list[Grid | None]:
        records = await self.backend.grids(ids)
        _prime(records, self._primed.grid, self._primed.grid_by_slug)
        return records

    @batch("grid_by_slug")
    async def _grids_by_slug(self, slugs: list[str]) -> list[Grid | None]:
        records = await self.backend.grids_by_slug(slugs)
        _prime(records, self._primed.grid, self._primed.grid_by_slug)
        return records

    @batch("package")
    async def _packages(self, ids: list[int]) -> list[Package | None]:
        records = await self.backend.packages(ids)
        _prime(records, self._primed.package, self._primed.package_by_slug)
        return records

    @batch("package_by_slug")
    async def _packages_by_slug(self, slugs: list[str]) -> list[Package | None]:
        records = await self.backend.packages_by_slug(slugs)
        _prime(records, self._primed.package, self._primed.package_by_slug)
        return records

    @batch("packages_of_grid")
    async def _packages_of_grids(self, windows: list[Window]) -> list[Page[Package]]:
        pages = await self.backend.packages_of_grids(windows)
        for page in pages:
            _prime(page.items, self._primed.package, self._primed.package_by_slug)
        return pages

    @batch("packages_of_category")
    async def _packages_of_categories(self, windows: list[Window]) -> list[Page[Package]]:
        pages = await self.backend.packages_of_categories(windows)
        for page in pages:
            _prime(page.items, self._primed.package, self._primed.package_by_slug)
        return pages

    @batch("grids_of_package")
    async def _grids_of_packages(self, windows: list[Window]) -> list[Page[Grid]]:
        pages = await self.backend.grids_of_packages(windows)
        for page in pages:
            _prime(page.items, self._primed.grid, self._primed.grid_by_slug)
        return pages

    # Whole-list windows: a list page holds full records, which prime the id loaders.

    async def list_categories(self, slice: Slice, order: Order | None = None) -> Page[Category]:
        page = await self.backend.list_categories(slice, order)
        _prime(page.items, self._primed.category, self._primed.category_by_slug)
        return page

    async def list_grids(self, slice: Slice, order: Order | None = None) -> Page[Grid]:
        page = await self.backend.list_grids(slice, order)
        _prime(page.items, self._primed.grid, self._primed.grid_by_slug)
        return page

    async def list_packages(
        self, slice: Slice, filter: PackageFilter | None = None, order: Order | None = None
    ) -> Page[Package]:
        page = await self.backend.list_packages(slice, filter, order)
        _prime(page.items, self._primed.package, self._primed.package_by_slug)
        return page
