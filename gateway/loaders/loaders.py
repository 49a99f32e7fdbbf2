"""Per-request dataloaders over a backend.

Built fresh for every request (aiodataloader binds to the running loop and caches for the
request's lifetime). Each loader turns one query level's keys into one backend batch, and
every record a batch returns primes the loaders that could be asked for it next: by id and
by slug, whichever way it was reached, and from any list or relation page that held it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from functools import cached_property
from typing import Any, Generic, TypeVar

from aiodataloader import DataLoader, dispatch_queue
from aiodataloader import Loader as Queued

from gateway.loaders import records
from gateway.loaders.backend import Backend
from gateway.loaders.records import Order, PackageFilter, Page, Slice, Window
from gateway.observe import BatchLoad, batch

R = TypeVar("R", records.Category, records.Grid, records.Package)
K = TypeVar("K")
V = TypeVar("V")

# A backend's batch method: the answers for a batch of keys, aligned with them.
Fetch = Callable[[list[K]], Awaitable[list[V]]]


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

    def __init__(self, batch_load_fn: BatchLoad[K, V], primed: dict[K, V] | None = None) -> None:
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


class Lookups(Generic[R]):
    """The loaders of one kind of record, by id and by slug. Every record of the kind that
    any batch or page brings primes both: their primed values wait here in plain dicts, and a
    loader nobody asks is never made."""

    def __init__(
        self, name: str, by_ids: Fetch[int, R | None], by_slugs: Fetch[str, R | None]
    ) -> None:
        self._name = name
        self._by_ids: Fetch[int, R | None] = by_ids
        self._by_slugs: Fetch[str, R | None] = by_slugs
        self._primed_ids: dict[int, R | None] = {}
        self._primed_slugs: dict[str, R | None] = {}

    @cached_property
    def by_id(self) -> DataLoader[int, R | None]:
        return _Loader(self._priming(self._name, self._by_ids), self._primed_ids)

    @cached_property
    def by_slug(self) -> DataLoader[str, R | None]:
        load = self._priming(f"{self._name}_by_slug", self._by_slugs)
        return _Loader(load, self._primed_slugs)

    # The batch functions below hold the primed dicts, not the `Lookups` that holds their
    # loaders: no reference cycle keeps a request's loaders, backend and records alive until
    # the garbage collector finds them.

    def _priming(self, name: str, fetch: Fetch[K, R | None]) -> BatchLoad[K, R | None]:
        ids, slugs = self._primed_ids, self._primed_slugs

        @batch(name)
        async def load(keys: list[K]) -> list[R | None]:
            found = await fetch(keys)
            _prime(found, ids, slugs)
            return found

        return load

    def prime(self, found: Iterable[R | None]) -> None:
        """Prime both loaders with `found`: a key primed keeps its value."""
        _prime(found, self._primed_ids, self._primed_slugs)

    def pages(self, name: str, fetch: Fetch[Window, Page[R]]) -> DataLoader[Window, Page[R]]:
        """The loader of a relation's windows whose pages hold records of this kind."""
        ids, slugs = self._primed_ids, self._primed_slugs

        @batch(name)
        async def load(windows: list[Window]) -> list[Page[R]]:
            pages = await fetch(windows)
            for page in pages:
                _prime(page.items, ids, slugs)
            return pages

        return _Loader(load)

    async def page(self, loading: Awaitable[Page[R]]) -> Page[R]:
        """A page of a whole list, once its records primed the loaders."""
        page = await loading
        self.prime(page.items)
        return page


def _prime(found: Iterable[R | None], ids: dict[int, R | None], slugs: dict[str, R | None]) -> None:
    for record in found:
        if record is not None:
            ids.setdefault(record.id, record)
            slugs.setdefault(record.slug, record)


class Loaders:
    """The dataloaders of one request, all over one backend; each made when first asked for
    (a request answered from the response cache, or asking for one thing, makes few)."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend

    @cached_property
    def categories(self) -> Lookups[records.Category]:
        return Lookups("category", self.backend.categories, self.backend.categories_by_slug)

    @cached_property
    def grids(self) -> Lookups[records.Grid]:
        return Lookups("grid", self.backend.grids, self.backend.grids_by_slug)

    @cached_property
    def packages(self) -> Lookups[records.Package]:
        return Lookups("package", self.backend.packages, self.backend.packages_by_slug)

    # Relations, a window per parent: their pages prime the lookups of the records they hold.

    @cached_property
    def packages_of_grid(self) -> DataLoader[Window, Page[records.Package]]:
        return self.packages.pages("packages_of_grid", self.backend.packages_of_grids)

    @cached_property
    def grids_of_package(self) -> DataLoader[Window, Page[records.Grid]]:
        return self.grids.pages("grids_of_package", self.backend.grids_of_packages)

    @cached_property
    def packages_of_category(self) -> DataLoader[Window, Page[records.Package]]:
        return self.packages.pages("packages_of_category", self.backend.packages_of_categories)

    # Whole lists: a list page holds full records, which prime the lookups too.

    async def list_categories(
        self, slice: Slice, order: Order | None = None
    ) -> Page[records.Category]:
        return await self.categories.page(self.backend.list_categories(slice, order))

    async def list_grids(self, slice: Slice, order: Order | None = None) -> Page[records.Grid]:
        return await self.grids.page(self.backend.list_grids(slice, order))

    async def list_packages(
        self, slice: Slice, filter: PackageFilter | None = None, order: Order | None = None
    ) -> Page[records.Package]:
        return await self.packages.page(self.backend.list_packages(slice, filter, order))
