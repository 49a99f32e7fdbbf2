"""The REST backend: the `Backend` interface answered from the Django Packages APIv4.

The upstream cannot filter, orders every list one way (id descending) and cannot list a
category's packages: whatever asks for one of those is answered from the catalogue snapshot
(snapshot.py). Relation URLs are only parsed for their id; they are never followed, so the
gateway calls no host but its configured upstream.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar

from gateway.errors import UpstreamError
from gateway.loaders import records
from gateway.loaders.backend import AtHand
from gateway.loaders.records import Key, Order, PackageFilter, Page, Slice, Window
from gateway.loaders.rest.answers import (
    CATEGORIES,
    GRIDS,
    PACKAGES,
    Kind,
    Slugged,
    SnapshotAnswers,
    by_ids_seen,
    id_in_snapshot,
    known,
    oldest_by_slug,
    paged,
    shaped,
    snapshot_pages,
)
from gateway.loaders.rest.fetcher import Fetcher
from gateway.loaders.rest.memo import Memo
from gateway.loaders.rest.snapshot import Catalogue
from gateway.loaders.rest.wire import CategoryJSON, GridJSON, PackageJSON, to_search_hit

# A batch that needs more records of one kind than this, none of them at hand, reads the
# snapshot (3 list requests) instead of as many detail GETs: a grid's hundred packages and
# their grids cost the lists, a package's ten grids their own GETs.
MAX_DETAILS = 16

K = TypeVar("K")
V = TypeVar("V")
R = TypeVar("R", records.Category, records.Grid, records.Package)
J = TypeVar("J", CategoryJSON, GridJSON, PackageJSON)


class RestBackend:
    """The `Backend` of one request over the APIv4.

    A record is looked up, by id or by slug, in the first of these that has it:

    1. the request's memo (memo.py): what this request has read already, so that one answer
       shows each record one way and no record costs a second request;
    2. the catalogue snapshot (snapshot.py), if it is at hand (this request has it, or the
       resource cache holds it fresh), or if more records of one kind are missing than
       `MAX_DETAILS` (its three list requests then cost less than a GET each);
    3. the fetcher (fetcher.py), one GET a record: from the resource cache, else the bodies
       shared by processes (`--cache`), else the upstream. A record a fresh snapshot lacks
       does not exist (as a fresh detail's 404 would say) and costs no request; one a stale
       snapshot lacks (served while the upstream failed) is asked for, unless the upstream
       refuses every fetch (its circuit breaker open): then each has its stale copy, or the
       lookup fails at once, with no task started for each of thousands of ids.

    Lists and relations are answered from the snapshot while it is at hand, and always when
    they ask for a filter, an order, a cursor or the last records, or are a category's
    packages (the upstream can do none of these: its pages are offsets, which a record added
    or removed shifts); otherwise, for a first page, from the upstream's list pages, or from
    the parents' links with each record looked up as above. A record the memo has is served
    as the memo has it, wherever its page came from.
    """

    def __init__(self, fetcher: Fetcher) -> None:
        self.fetcher = fetcher
        self.memo = Memo()
        self._at_hand: SnapshotAnswers | None = None

    @property
    def stale(self) -> bool:
        return self.fetcher.stale

    def close(self) -> None:
        self.fetcher.close()

    # -- where a record comes from ---------------------------------------------------------

    async def _snapshot_if_cheap(self, missing: int) -> Catalogue | None:
        """The snapshot, if it is at hand or `missing` records are more than a GET each is
        worth; None if not, or if it cannot be had (each record is then asked for alone)."""
        if missing <= MAX_DETAILS and not self.fetcher.snapshot_at_hand():
            return None
        try:
            return await self.fetcher.snapshot()
        except UpstreamError:
            return None

    async def _snapshot_for_list(self, *, shaped: bool) -> Catalogue | None:
        """The snapshot for a list or relation: needed for a filter, an order or anything but
        a first page (`shaped`), else used when at hand, since it answers as the upstream's
        own pages would."""
        return await self.fetcher.snapshot() if shaped else await self._snapshot_if_cheap(0)

    async def _lookup(
        self,
        keys: Sequence[K],
        seen: dict[K, V | None],
        in_snapshot: Callable[[Catalogue, K], V | None],
        at_hand: Callable[[K], tuple[V | None] | None],
        fetch_one: Callable[[K], Awaitable[V | None]],
    ) -> list[V | None]:
        """The records for `keys`: the memo's (`seen`), else the snapshot's, else a GET each,
        answered at once where it is `at_hand` (a 1-tuple), fetched together where not."""
        missing = [key for key in dict.fromkeys(keys) if key not in seen]
        snapshot = await self._snapshot_if_cheap(len(missing)) if missing else None
        if snapshot is not None:
            fresh = self.fetcher.snapshot_is_fresh()
            missing = known(missing, seen, in_snapshot, snapshot, fresh)
        for key in missing:
            found = at_hand(key)
            if found is not None:
                seen.setdefault(key, found[0])
        missing = [key for key in missing if key not in seen]
        if missing:
            self.fetcher.check_upstream()
            fetched = await asyncio.gather(*(fetch_one(key) for key in missing))
            for key, record in zip(missing, fetched, strict=True):
                seen.setdefault(key, record)
        return [seen[key] for key in keys]

    async def _by_id(self, ids: Sequence[int], kind: Kind[J, R]) -> list[R | None]:
        """The records of `ids`, each read at its resource if need be."""

        def record(raw: J | None) -> R | None:
            return None if raw is None else kind.remember(self.memo, raw)

        def at_hand(id: int) -> tuple[R | None] | None:
            found = self.fetcher.detail_at_hand(kind.resource, str(id))
            return None if found is None else (record(found[0]),)

        async def fetch_one(id: int) -> R | None:
            return record(await self.fetcher.detail(kind.resource, str(id), kind.wire))

        seen = kind.seen(self.memo)
        return await self._lookup(ids, seen, kind.in_snapshot, at_hand, fetch_one)

    async def _by_slug(self, slugs: Sequence[str], kind: Slugged[J, R]) -> list[R | None]:
        """The records of `slugs`, by way of their ids (`seen_ids`): one record, one way."""

        def id_of(slug: str, raw: J | None) -> int | None:
            # An all-digit slug is an id to the upstream: accept only a real slug match.
            if raw is None or raw.slug != slug:
                return None
            return kind.remember(self.memo, raw).id

        def at_hand(slug: str) -> tuple[int | None] | None:
            found = self.fetcher.detail_at_hand(kind.resource, slug)
            return None if found is None else (id_of(slug, found[0]),)

        async def fetch_one(slug: str) -> int | None:
            return id_of(slug, await self.fetcher.detail(kind.resource, slug, kind.wire))

        memo = self.memo
        in_snapshot = id_in_snapshot(kind, memo)
        ids = await self._lookup(slugs, kind.seen_ids(memo), in_snapshot, at_hand, fetch_one)
        return by_ids_seen(ids, kind, memo)

    # -- lookups -----------------------------------------------------------------------------

    async def categories(self, ids: Sequence[int]) -> list[records.Category | None]:
        return await self._by_id(ids, CATEGORIES)

    async def categories_by_slug(self, slugs: Sequence[str]) -> list[records.Category | None]:
        # The upstream has no slug lookup for categories, and their slugs are not unique:
        # read the (short) list, or the snapshot's, and take the oldest category with the slug.
        snapshot = await self._snapshot_if_cheap(0)
        if snapshot is not None:
            return self._answers(snapshot).categories_by_slug(slugs)
        raws = await self.fetcher.whole_list("categories/", CategoryJSON)
        return oldest_by_slug([self.memo.remember_category(raw) for raw in raws], slugs)

    async def grids(self, ids: Sequence[int]) -> list[records.Grid | None]:
        return await self._by_id(ids, GRIDS)

    async def grids_by_slug(self, slugs: Sequence[str]) -> list[records.Grid | None]:
        return await self._by_slug(slugs, GRIDS)

    async def packages(self, ids: Sequence[int]) -> list[records.Package | None]:
        return await self._by_id(ids, PACKAGES)

    async def packages_by_slug(self, slugs: Sequence[str]) -> list[records.Package | None]:
        return await self._by_slug(slugs, PACKAGES)

    # -- relations -----------------------------------------------------------------------------

    async def packages_of_grids(self, windows: Sequence[Window]) -> list[Page[records.Package]]:
        return await self._relation(
            windows, GRIDS, PACKAGES, self._grid_members, Catalogue.packages_of_grid
        )

    async def grids_of_packages(self, windows: Sequence[Window]) -> list[Page[records.Grid]]:
        return await self._relation(
            windows, PACKAGES, GRIDS, self._package_grids, Catalogue.grids_of_package
        )

    async def packages_of_categories(
        self, windows: Sequence[Window]
    ) -> list[Page[records.Package]]:
        # The upstream cannot filter packages by category: the snapshot's whole package
        # list answers every window, filtered or not.
        snapshot = await self.fetcher.snapshot()
        return self._answers(snapshot).packages_of_categories(windows)

    async def _relation(
        self,
        windows: Sequence[Window],
        parents: Kind[Any, Any],
        members: Kind[Any, R],
        plain: Callable[[Sequence[Window]], Awaitable[list[Page[R]]]],
        from_snapshot: Callable[[Catalogue, Window], Page[R]],
    ) -> list[Page[R]]:
        """Answer from the snapshot the windows with a filter or order, and any window whose
        parent it knows while it is at hand; the others from the parents' links (`plain`)."""
        snapshot = await self._snapshot_for_list(shaped=any(map(shaped, windows)))
        pages: dict[Window, Page[R]] = {}
        if snapshot is not None:
            pages = snapshot_pages(snapshot, windows, parents, members, self.memo, from_snapshot)
        own = [window for window in windows if window not in pages]
        if own:
            pages.update(zip(own, await plain(own), strict=True))
        return [pages[window] for window in windows]

    async def _grid_members(self, windows: Sequence[Window]) -> list[Page[records.Package]]:
        await self.grids([window.parent for window in windows])
        return await self._windows(
            windows, self.memo.packages_of_grid, self.packages, lambda record, _: _by_title(record)
        )

    async def _package_grids(self, windows: Sequence[Window]) -> list[Page[records.Grid]]:
        await self.packages([window.parent for window in windows])
        return await self._windows(
            windows, self.memo.grids_of_package, self.grids, lambda _, place: (place,)
        )

    async def _windows(
        self,
        windows: Sequence[Window],
        members: Mapping[int, Sequence[int]],
        load: Callable[[Sequence[int]], Awaitable[list[R | None]]],
        key: Callable[[R, int], Key],
    ) -> list[Page[R]]:
        """Cut each window's first page out of its parent's id list and load the records in
        all of them; `key` is a record's key in the relation's order, given its place."""
        slices = [members.get(window.parent, ())[: window.slice.limit] for window in windows]
        wanted = list(dict.fromkeys(id for ids in slices for id in ids))
        loaded = dict(zip(wanted, await load(wanted), strict=True))
        pages: list[Page[R]] = []
        for window, ids in zip(windows, slices, strict=True):
            found = [(place, record) for place, id in enumerate(ids) if (record := loaded[id])]
            total = len(members.get(window.parent, ()))
            keys = [key(record, place) for place, record in found]
            pages.append(Page([record for _, record in found], total, keys, 0, total))
        return pages

    # -- whole lists ---------------------------------------------------------------------------

    async def list_categories(
        self, slice: Slice, order: Order | None = None
    ) -> Page[records.Category]:
        snapshot = await self._snapshot_for_list(shaped=order is not None or paged(slice))
        if snapshot is not None:
            return self._answers(snapshot).list_categories(slice, order)
        raws, total = await self.fetcher.page("categories/", CategoryJSON, 0, slice.limit)
        return _first_page([self.memo.remember_category(raw) for raw in raws], total)

    async def list_grids(self, slice: Slice, order: Order | None = None) -> Page[records.Grid]:
        snapshot = await self._snapshot_for_list(shaped=order is not None or paged(slice))
        if snapshot is not None:
            return self._answers(snapshot).list_grids(slice, order)
        raws, total = await self.fetcher.page("grids/", GridJSON, 0, slice.limit)
        return _first_page([self.memo.remember_grid(raw) for raw in raws], total)

    async def list_packages(
        self, slice: Slice, filter: PackageFilter | None = None, order: Order | None = None
    ) -> Page[records.Package]:
        special = filter is not None or order is not None or paged(slice)
        snapshot = await self._snapshot_for_list(shaped=special)
        if snapshot is not None:
            return self._answers(snapshot).list_packages(slice, filter, order)
        raws, total = await self.fetcher.page("packages/", PackageJSON, 0, slice.limit)
        return _first_page([self.memo.remember_package(raw) for raw in raws], total)

    async def search(self, query: str) -> list[records.SearchHit]:
        if not query.strip():
            return []
        return [to_search_hit(raw) for raw in await self.fetcher.search(query)]

    def at_hand(self) -> AtHand | None:
        """While the snapshot is at hand: the answers of the memo and the snapshot (a
        request keeps the snapshot it first had)."""
        if self._at_hand is None:
            snapshot = self.fetcher.snapshot_now()
            if snapshot is not None:
                self._at_hand = self._answers(snapshot)
        return self._at_hand

    async def ready(self) -> None:
        """Nothing to wait for: the snapshot is fetched by the batches that need it."""

    def _answers(self, snapshot: Catalogue) -> SnapshotAnswers:
        return SnapshotAnswers(self.memo, snapshot, self.fetcher.snapshot_is_fresh)


def _by_title(package: records.Package) -> Key:
    """A package's key in a grid's own order: by title, then id."""
    return package.title, package.id


def _first_page(items: list[R], total: int) -> Page[R]:
    """A first page of the upstream's list, newest id first."""
    return Page(items, total, [(record.id,) for record in items], 0, total)
