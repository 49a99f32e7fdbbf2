"""Per-request dataloaders over a backend.

Built fresh for every request (aiodataloader binds to the running loop and caches for the
request's lifetime). Each loader turns one query level's keys into one backend batch, and
every record a batch returns primes the loaders that could be asked for it next: by id and
by slug, whichever way it was reached, and from any list or relation page that held it.

A level's keys may also be asked for together (`load_all`, the engine's way): the keys a
loader has already are answered with their values, and the others, when the backend has them
all at hand (`Backend.at_hand`), as one batch at once; only what needs I/O is queued for a
batch as `load` queues it, with a future per key. Everything here is made when first asked
for: most requests need few loaders, and most records primed are never looked up.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, Generic, TypeVar

from aiodataloader import DataLoader, dispatch_queue
from aiodataloader import Loader as Queued

from gateway.loaders import records
from gateway.loaders.backend import AtHand, Backend
from gateway.loaders.records import Order, PackageFilter, Page, Slice, Window
from gateway.observability.observe import batch, batch_answered

R = TypeVar("R", records.Category, records.Grid, records.Package)
K = TypeVar("K")
V = TypeVar("V")


class _Futures(dict[K, "asyncio.Future[V]"], Generic[K, V]):
    """A loader's cache of futures by key, which makes the future of a primed value only
    when its key is first looked up (a key loaded keeps its future's value). `settle` applies
    the primes still pending before the primed values are read."""

    def __init__(self, primed: dict[K, V], settle: Callable[[], None]) -> None:
        super().__init__()
        self.primed = primed
        self.settle = settle

    def get(self, key: K, default: Any = None) -> Any:
        future = super().get(key)
        if future is None:
            self.settle()
            if key in self.primed:
                future = self[key] = asyncio.get_running_loop().create_future()
                future.set_result(self.primed.pop(key))
        return default if future is None else future

    def pop(self, key: K, default: Any = None) -> Any:
        self.settle()
        self.primed.pop(key, None)
        return super().pop(key, default)

    def clear(self) -> None:
        self.settle()
        self.primed.clear()
        super().clear()


def _nothing() -> None:
    pass


class _Queue(DataLoader[K, V]):
    """aiodataloader's `DataLoader` over a loader's cache, for the keys that need a batch."""

    def do_resolve_reject(self, key: K, future: asyncio.Future[V]) -> None:
        """Queue `key`, as `DataLoader` does: the first key of a queue has it dispatched two
        turns of the event loop later, as aiodataloader times it, by callbacks instead of its
        extra task (the batch alone runs in one)."""
        self._queue.append(Queued(key=key, future=future))
        if len(self._queue) == 1:
            self.loop.call_soon(self._dispatch_soon)

    def _dispatch_soon(self) -> None:
        self.loop.call_soon(dispatch_queue, self)


class Loader(Generic[K, V]):
    """The dataloader of one batch method of the backend (`method`) for one request,
    counted and traced as `name`; what it finds goes to `prime`.

    Its primed values cost a dict entry each, not a future: a list page primes every record
    it holds by id and by slug, and few are asked for again (`primed`: the values primed
    before it was made; `settle`: what applies the primes still pending). The keys of a batch
    the backend has at hand are answered at once, and their values kept as primed ones;
    aiodataloader's `DataLoader`, with its futures, queue and batch task, is made only when a
    key needs the batch method itself."""

    def __init__(
        self,
        name: str,
        backend: Backend,
        method: str,
        prime: Callable[[list[V]], None],
        primed: dict[K, V] | None = None,
        settle: Callable[[], None] = _nothing,
    ) -> None:
        self.name = name
        self._backend = backend
        self._method = method
        self._prime = prime
        self._futures: _Futures[K, V] = _Futures({} if primed is None else primed, settle)
        self._queued: _Queue[K, V] | None = None

    def load(self, key: K) -> asyncio.Future[V]:
        """The future of `key`'s value, as `DataLoader.load` gives it."""
        if self._queued is None:
            fetch = functools.partial(_fetch, self._backend, self._method, self._prime)
            answer = functools.partial(_answered, batch(self.name)(fetch), self._futures)
            self._queued = _Queue(answer, cache_map=self._futures)
        return self._queued.load(key)

    def load_all(self, keys: Sequence[K]) -> list[Any]:
        """What `load` gives each of `keys`, but a value where there is one rather than a
        future: a key loaded or primed before gives its future or its value; the others are
        answered at once, as one batch, if the backend has them all at hand, else each is
        queued as `load` queues it (its future). A key `load` refuses (None) gives the error
        `load` raises."""
        futures = self._futures
        futures.settle()
        primed = futures.primed
        missing = [key for key in dict.fromkeys(keys) if key not in futures and key not in primed]
        if None in missing:  # as `load` answers each
            return [_loaded(self, key) for key in keys]
        found = self._now(missing) if missing else None
        if found is None:
            for key in missing:
                self.load(key)
        else:
            futures.settle()
            for key, value in zip(missing, found, strict=True):
                primed.setdefault(key, value)
        return [futures[key] if key in futures else primed[key] for key in keys]

    def _now(self, keys: list[K]) -> list[V] | None:
        """The batch of `keys` answered from what the backend has at hand (counted and
        traced as a batch), or None."""
        at_hand = self._backend.at_hand()
        found: list[V] | None = None if at_hand is None else getattr(at_hand, self._method)(keys)
        if found is not None:
            batch_answered(self.name, len(keys))
            self._prime(found)
        return found


async def _fetch(
    backend: Backend, method: str, prime: Callable[[list[V]], None], keys: list[K]
) -> list[V]:
    """A loader's batch: the backend's `method` for `keys`, its records primed. (A function of
    its own, not the loader's method: the queue it is given to would hold the loader, which
    holds the queue, and a cycle keeps a request's objects until the garbage collector runs.)"""
    found: list[V] = await getattr(backend, method)(keys)
    prime(found)
    return found


async def _answered(
    fetch: Callable[[list[K]], Awaitable[list[V]]], futures: _Futures[K, V], keys: list[K]
) -> list[Any]:
    """`fetch(keys)`, or its failure as every key's answer, the keys forgotten as aiodataloader
    forgets a failed batch's. (Raised into aiodataloader's batch task, the failure's traceback
    would hold the task's frame, which holds the keys' futures, which hold the failure: a
    cycle for each failed batch, kept until the garbage collector runs.)"""
    try:
        return await fetch(keys)
    except Exception as error:
        for key in keys:
            futures.pop(key, None)
        return [error] * len(keys)


def _loaded(loader: Loader[K, V], key: K) -> Any:
    """`loader.load(key)`, or the error it raises."""
    try:
        return loader.load(key)
    except Exception as error:
        return error


class _Primes(Generic[R]):
    """The records primed for one kind, by id and by slug, applied only once a loader reads
    them (`settle`): most pages' records are never looked up again. Apart from the `Lookups`
    that uses it, so that its loaders, which call it, hold no reference back to what holds them."""

    def __init__(self) -> None:
        self.ids: dict[int, R | None] = {}
        self.slugs: dict[str, R | None] = {}
        self._pending: list[Iterable[R | None]] = []

    def prime(self, found: Iterable[R | None]) -> None:
        """Prime both loaders with `found`, once they are read: a key primed keeps its value."""
        self._pending.append(found)

    def prime_pages(self, pages: Iterable[Page[R]]) -> None:
        """Prime both loaders with the records of `pages`."""
        self._pending.extend(page.items for page in pages)

    def settle(self) -> None:
        """Apply the primes still pending, in the order they came."""
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        ids, slugs = self.ids, self.slugs
        for found in pending:
            for record in found:
                if record is not None:
                    ids.setdefault(record.id, record)
                    slugs.setdefault(record.slug, record)


class Lookups(Generic[R]):
    """The loaders of one kind of record, by id and by slug (the backend's batch methods
    `by_ids` and `by_slugs`). Every record of the kind that any batch or page brings primes
    both (`_Primes`), and a loader nobody asks is never made."""

    def __init__(self, name: str, backend: Backend, by_ids: str, by_slugs: str) -> None:
        self._name = name
        self._backend = backend
        self._methods = by_ids, by_slugs
        self._primes: _Primes[R] = _Primes()
        self.prime: Callable[[Iterable[R | None]], None] = self._primes.prime
        self._by_id: Loader[int, R | None] | None = None
        self._by_slug: Loader[str, R | None] | None = None

    @property
    def by_id(self) -> Loader[int, R | None]:
        if self._by_id is None:
            primes = self._primes
            self._by_id = Loader(
                self._name, self._backend, self._methods[0], primes.prime, primes.ids, primes.settle
            )
        return self._by_id

    @property
    def by_slug(self) -> Loader[str, R | None]:
        if self._by_slug is None:
            primes = self._primes
            self._by_slug = Loader(
                f"{self._name}_by_slug",
                self._backend,
                self._methods[1],
                primes.prime,
                primes.slugs,
                primes.settle,
            )
        return self._by_slug

    def pages(self, name: str, method: str) -> Loader[Window, Page[R]]:
        """The loader of a relation's windows (the backend's batch `method`), whose pages
        hold records of this kind."""
        return Loader(name, self._backend, method, self._primes.prime_pages)

    async def page(self, loading: Awaitable[Page[R]]) -> Page[R]:
        """A page of a whole list, once its records primed the loaders."""
        page = await loading
        self.prime(page.items)
        return page


class Loaders:
    """The dataloaders of one request, all over one backend; each made when first asked for
    (a request answered from the response cache, or asking for one thing, makes few)."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self._categories: Lookups[records.Category] | None = None
        self._grids: Lookups[records.Grid] | None = None
        self._packages: Lookups[records.Package] | None = None
        self._relations: dict[str, Loader[Window, Page[Any]]] = {}

    @property
    def categories(self) -> Lookups[records.Category]:
        if self._categories is None:
            self._categories = Lookups("category", self.backend, "categories", "categories_by_slug")
        return self._categories

    @property
    def grids(self) -> Lookups[records.Grid]:
        if self._grids is None:
            self._grids = Lookups("grid", self.backend, "grids", "grids_by_slug")
        return self._grids

    @property
    def packages(self) -> Lookups[records.Package]:
        if self._packages is None:
            self._packages = Lookups("package", self.backend, "packages", "packages_by_slug")
        return self._packages

    # Relations, a window per parent: their pages prime the lookups of the records they hold.

    @property
    def packages_of_grid(self) -> Loader[Window, Page[records.Package]]:
        return self._relation(self.packages, "packages_of_grid", "packages_of_grids")

    @property
    def grids_of_package(self) -> Loader[Window, Page[records.Grid]]:
        return self._relation(self.grids, "grids_of_package", "grids_of_packages")

    @property
    def packages_of_category(self) -> Loader[Window, Page[records.Package]]:
        return self._relation(self.packages, "packages_of_category", "packages_of_categories")

    def _relation(self, members: Lookups[R], name: str, method: str) -> Loader[Window, Page[R]]:
        loader = self._relations.get(name)
        if loader is None:
            loader = self._relations[name] = members.pages(name, method)
        return loader

    # Whole lists: a list page holds full records, which prime the lookups too. Each also
    # answers at once (`…_now`) where the backend has the page at hand, else None.

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

    def list_categories_now(
        self, slice: Slice, order: Order | None = None
    ) -> Page[records.Category] | None:
        return self._page_now(self.categories, lambda now: now.list_categories(slice, order))

    def list_grids_now(self, slice: Slice, order: Order | None = None) -> Page[records.Grid] | None:
        return self._page_now(self.grids, lambda now: now.list_grids(slice, order))

    def list_packages_now(
        self, slice: Slice, filter: PackageFilter | None = None, order: Order | None = None
    ) -> Page[records.Package] | None:
        return self._page_now(self.packages, lambda now: now.list_packages(slice, filter, order))

    def _page_now(
        self, lookups: Lookups[R], ask: Callable[[AtHand], Page[R] | None]
    ) -> Page[R] | None:
        at_hand = self.backend.at_hand()
        page = None if at_hand is None else ask(at_hand)
        if page is not None:
            lookups.prime(page.items)
        return page
