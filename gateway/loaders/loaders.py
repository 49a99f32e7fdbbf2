"""Per-request dataloaders over a backend.

Built fresh for every request (aiodataloader binds to the running loop and caches for the
request's lifetime). Each loader turns one query level's keys into one backend batch, and
every record a batch returns primes the loaders that could be asked for it next: by id and
by slug, whichever way it was reached, and from any list or relation page that held it.

A level's keys may also be asked for together (`load_all`, the engine's way): the keys a
loader has already are answered with their values, and the others, when the backend has them
all at hand (`Backend.at_hand`), as one batch at once; only what needs I/O is queued for a
batch as `load` queues it, with a future per key.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Sequence
from functools import cached_property
from typing import Any, Generic, TypeVar

from aiodataloader import DataLoader, dispatch_queue
from aiodataloader import Loader as Queued

from gateway.loaders import records
from gateway.loaders.backend import AtHand, Backend
from gateway.loaders.records import Order, PackageFilter, Page, Slice, Window
from gateway.observe import BatchLoad, batch, batch_answered

R = TypeVar("R", records.Category, records.Grid, records.Package)
K = TypeVar("K")
V = TypeVar("V")

# A backend's batch method: the answers for a batch of keys, aligned with them.
Fetch = Callable[[list[K]], Awaitable[list[V]]]
# The same batch answered at once from what the backend has at hand, or None.
Now = Callable[[list[K]], list[V] | None]


class _Futures(dict[K, "asyncio.Future[V]"], Generic[K, V]):
    """A loader's cache of futures by key, which makes the future of a primed value only
    when its key is first looked up (a key loaded keeps its future's value). `settle` applies
    the primes still pending before the primed values are read."""

    def __init__(self, primed: dict[K, V], settle: Callable[[], None] | None) -> None:
        super().__init__()
        self.primed = primed
        self.settle = settle or _nothing

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
    """The dataloader of one batch method (`name`) for one request.

    Its primed values cost a dict entry each, not a future: a list page primes every record
    it holds by id and by slug, and few are asked for again (`primed`: the values primed
    before it was made; `settle`: what applies the primes still pending). The keys of a batch
    the backend has at hand (`now`) are answered at once, and their values kept as primed
    ones; aiodataloader's `DataLoader`, with its futures, queue and batch task, is made only
    when a key needs a batch (`fetch`)."""

    def __init__(
        self,
        name: str,
        fetch: BatchLoad[K, V],
        now: Now[K, V],
        primed: dict[K, V] | None = None,
        settle: Callable[[], None] | None = None,
    ) -> None:
        self.name = name
        self._fetch = fetch
        self._now = now
        self._futures: _Futures[K, V] = _Futures({} if primed is None else primed, settle)

    @cached_property
    def _queue(self) -> _Queue[K, V]:
        return _Queue(batch(self.name)(self._fetch), cache_map=self._futures)

    def load(self, key: K) -> asyncio.Future[V]:
        """The future of `key`'s value, as `DataLoader.load` gives it."""
        return self._queue.load(key)

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


def _loaded(loader: Loader[K, V], key: K) -> Any:
    """`loader.load(key)`, or the error it raises."""
    try:
        return loader.load(key)
    except Exception as error:
        return error


def _answering(name: str, now: Now[K, V], prime: Callable[[list[V]], None]) -> Now[K, V]:
    """`now`, with what it answers counted and traced as a batch of the loader `name` and
    passed to `prime`."""

    def answer(keys: list[K]) -> list[V] | None:
        found = now(keys)
        if found is not None:
            batch_answered(name, len(keys))
            prime(found)
        return found

    return answer


class Lookups(Generic[R]):
    """The loaders of one kind of record, by id and by slug. Every record of the kind that
    any batch or page brings primes both: their primed values wait here in plain dicts, and a
    loader nobody asks is never made. What primes them waits too, until a loader reads them:
    most pages' records are never looked up again."""

    def __init__(
        self,
        name: str,
        by_ids: tuple[Fetch[int, R | None], Now[int, R | None]],
        by_slugs: tuple[Fetch[str, R | None], Now[str, R | None]],
    ) -> None:
        self._name = name
        self._by_ids: tuple[Fetch[int, R | None], Now[int, R | None]] = by_ids
        self._by_slugs: tuple[Fetch[str, R | None], Now[str, R | None]] = by_slugs
        self._primed_ids: dict[int, R | None] = {}
        self._primed_slugs: dict[str, R | None] = {}
        self._pending: list[Iterable[R | None]] = []

    @cached_property
    def by_id(self) -> Loader[int, R | None]:
        return self._loader(self._name, self._by_ids, self._primed_ids)

    @cached_property
    def by_slug(self) -> Loader[str, R | None]:
        return self._loader(f"{self._name}_by_slug", self._by_slugs, self._primed_slugs)

    def _loader(
        self,
        name: str,
        batches: tuple[Fetch[K, R | None], Now[K, R | None]],
        primed: dict[K, R | None],
    ) -> Loader[K, R | None]:
        fetch, now = batches

        async def load(keys: list[K]) -> list[R | None]:
            found = await fetch(keys)
            self.prime(found)
            return found

        return Loader(name, load, _answering(name, now, self.prime), primed, self._settle)

    def prime(self, found: Iterable[R | None]) -> None:
        """Prime both loaders with `found`, once they are read: a key primed keeps its value."""
        self._pending.append(found)

    def prime_pages(self, pages: Iterable[Page[R]]) -> None:
        """Prime both loaders with the records of `pages`."""
        self._pending.extend(page.items for page in pages)

    def _settle(self) -> None:
        """Apply the primes still pending, in the order they came."""
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        ids, slugs = self._primed_ids, self._primed_slugs
        for found in pending:
            for record in found:
                if record is not None:
                    ids.setdefault(record.id, record)
                    slugs.setdefault(record.slug, record)

    def pages(
        self, name: str, batches: tuple[Fetch[Window, Page[R]], Now[Window, Page[R]]]
    ) -> Loader[Window, Page[R]]:
        """The loader of a relation's windows whose pages hold records of this kind."""
        fetch, now = batches

        async def load(windows: list[Window]) -> list[Page[R]]:
            pages = await fetch(windows)
            self.prime_pages(pages)
            return pages

        return Loader(name, load, _answering(name, now, self.prime_pages))

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

    def _batches(self, method: str) -> tuple[Fetch[Any, Any], Now[Any, Any]]:
        """The backend's batch `method`, and its `AtHand`'s method of the same name."""

        def now(keys: list[Any]) -> list[Any] | None:
            at_hand = self.backend.at_hand()
            return None if at_hand is None else getattr(at_hand, method)(keys)

        return getattr(self.backend, method), now

    @cached_property
    def categories(self) -> Lookups[records.Category]:
        return Lookups("category", self._batches("categories"), self._batches("categories_by_slug"))

    @cached_property
    def grids(self) -> Lookups[records.Grid]:
        return Lookups("grid", self._batches("grids"), self._batches("grids_by_slug"))

    @cached_property
    def packages(self) -> Lookups[records.Package]:
        return Lookups("package", self._batches("packages"), self._batches("packages_by_slug"))

    # Relations, a window per parent: their pages prime the lookups of the records they hold.

    @cached_property
    def packages_of_grid(self) -> Loader[Window, Page[records.Package]]:
        return self.packages.pages("packages_of_grid", self._batches("packages_of_grids"))

    @cached_property
    def grids_of_package(self) -> Loader[Window, Page[records.Grid]]:
        return self.grids.pages("grids_of_package", self._batches("grids_of_packages"))

    @cached_property
    def packages_of_category(self) -> Loader[Window, Page[records.Package]]:
        batches = self._batches("packages_of_categories")
        return self.packages.pages("packages_of_category", batches)

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
