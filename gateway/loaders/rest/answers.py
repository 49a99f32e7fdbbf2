"""What one request's memo and the catalogue snapshot answer, with no request to the upstream.

The REST backend (backend.py) answers from here whenever it has the snapshot, and offers the
same answers as its `AtHand` while the snapshot is at hand: then the request's loaders take
them at once, without a future or a turn of the event loop.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from operator import attrgetter, is_
from typing import Any, Generic, TypeVar

import msgspec

from gateway.loaders import records
from gateway.loaders.records import Order, PackageFilter, Page, Slice, Window
from gateway.loaders.rest.memo import Memo
from gateway.loaders.rest.snapshot import Catalogue
from gateway.loaders.rest.wire import CategoryJSON, GridJSON, PackageJSON

K = TypeVar("K")
V = TypeVar("V")
R = TypeVar("R", records.Category, records.Grid, records.Package)
J = TypeVar("J", CategoryJSON, GridJSON, PackageJSON)

_ID = attrgetter("id")


@dataclass(frozen=True, slots=True)
class Kind(Generic[J, R]):
    """A kind of record as a request looks it up: its APIv4 resource and wire type, how a
    request's memo remembers it and holds it by id, and how the snapshot finds it by id."""

    resource: str
    wire: type[J]
    remember: Callable[[Memo, J], R]
    seen: Callable[[Memo], dict[int, R | None]]
    in_snapshot: Callable[[Catalogue, int], R | None]


@dataclass(frozen=True, slots=True)
class Slugged(Kind[J, R]):
    """A kind the APIv4 also looks up by slug: the ids a memo holds by slug, and how the
    snapshot finds it by slug."""

    seen_ids: Callable[[Memo], dict[str, int | None]]
    by_slug_in_snapshot: Callable[[Catalogue, str], R | None]


CATEGORIES = Kind(
    "categories/",
    CategoryJSON,
    Memo.remember_category,
    attrgetter("categories"),
    Catalogue.category,
)
GRIDS = Slugged(
    "grids/",
    GridJSON,
    Memo.remember_grid,
    attrgetter("grids"),
    Catalogue.grid,
    attrgetter("grid_ids"),
    Catalogue.grid_by_slug,
)
PACKAGES = Slugged(
    "packages/",
    PackageJSON,
    Memo.remember_package,
    attrgetter("packages"),
    Catalogue.package,
    attrgetter("package_ids"),
    Catalogue.package_by_slug,
)


def known(
    missing: list[K],
    seen: dict[K, V | None],
    in_snapshot: Callable[[Catalogue, K], V | None],
    snapshot: Catalogue,
    fresh: bool,
) -> list[K]:
    """Remember in `seen` what the snapshot tells of the `missing` keys: a record, or, while
    it is `fresh`, that there is none. The keys it leaves open."""
    for key in missing:
        record = in_snapshot(snapshot, key)
        if record is not None or fresh:
            seen[key] = record
    return [key for key in missing if key not in seen]


def id_in_snapshot(kind: Slugged[Any, R], memo: Memo) -> Callable[[Catalogue, str], int | None]:
    """How the snapshot finds the id of a slug (the record remembered by its id)."""
    seen = kind.seen(memo)

    def find(snapshot: Catalogue, slug: str) -> int | None:
        record = kind.by_slug_in_snapshot(snapshot, slug)
        if record is None:
            return None
        seen[record.id] = record
        return record.id

    return find


def by_ids_seen(ids: list[int | None], kind: Kind[Any, R], memo: Memo) -> list[R | None]:
    """The records the memo holds by the ids a lookup by slug found."""
    seen = kind.seen(memo)
    return [None if id is None else seen.get(id) for id in ids]


def as_first_seen(page: Page[R], kind: Kind[Any, R], memo: Memo) -> Page[R]:
    """`page` with each record this request had already read as it first read it (only a
    record read from the upstream can differ: the memo keeps the snapshot's own)."""
    if not memo.read:
        return page
    seen, items = kind.seen(memo), page.items
    if not seen or seen.keys().isdisjoint(map(_ID, items)):
        return page
    firsts = [seen.get(record.id) or record for record in items]
    if all(map(is_, firsts, items)):
        return page
    return msgspec.structs.replace(page, items=firsts)


def oldest_by_slug(
    categories: Sequence[records.Category], slugs: Sequence[str]
) -> list[records.Category | None]:
    """The oldest category of each slug (category slugs are not unique), or None."""
    by_slug: dict[str, records.Category] = {}
    for category in sorted(categories, key=_ID):
        by_slug.setdefault(category.slug, category)
    return [by_slug.get(slug) for slug in slugs]


def paged(slice: Slice) -> bool:
    """Whether a slice is more than a first page: the upstream's offsets cannot hold a place."""
    return slice.after is not None or slice.before is not None or slice.backward


def shaped(window: Window) -> bool:
    """Whether a window asks for a filter, an order or more than a first page: only the
    snapshot can answer it."""
    return window.filter is not None or window.order is not None or paged(window.slice)


def snapshot_pages(
    snapshot: Catalogue,
    windows: Sequence[Window],
    parents: Kind[Any, Any],
    members: Kind[Any, R],
    memo: Memo,
    from_snapshot: Callable[[Catalogue, Window], Page[R]],
) -> dict[Window, Page[R]]:
    """The pages the snapshot answers: of each window with a filter, an order or a cursor,
    and of each whose parent it knows."""
    parent_of = parents.in_snapshot
    return {
        window: as_first_seen(from_snapshot(snapshot, window), members, memo)
        for window in windows
        if parent_of(snapshot, window.parent) is not None or shaped(window)
    }


class SnapshotAnswers:
    """The batches of the REST backend answered from a request's memo and the catalogue
    snapshot, as the backend answers them with the snapshot at hand (its `AtHand`). A lookup
    the snapshot cannot settle (it is not `fresh`, and lacks the key) and a relation of a
    parent it lacks would need the upstream: None."""

    def __init__(self, memo: Memo, snapshot: Catalogue, fresh: Callable[[], bool]) -> None:
        self.memo = memo
        self.snapshot = snapshot
        self.fresh = fresh

    def _lookup(
        self,
        keys: Sequence[K],
        seen: dict[K, V | None],
        in_snapshot: Callable[[Catalogue, K], V | None],
    ) -> list[V | None] | None:
        missing = [key for key in dict.fromkeys(keys) if key not in seen]
        if missing and known(missing, seen, in_snapshot, self.snapshot, self.fresh()):
            return None
        return [seen[key] for key in keys]

    def _by_id(self, ids: Sequence[int], kind: Kind[Any, R]) -> list[R | None] | None:
        return self._lookup(ids, kind.seen(self.memo), kind.in_snapshot)

    def _by_slug(self, slugs: Sequence[str], kind: Slugged[Any, R]) -> list[R | None] | None:
        memo = self.memo
        ids = self._lookup(slugs, kind.seen_ids(memo), id_in_snapshot(kind, memo))
        return None if ids is None else by_ids_seen(ids, kind, memo)

    def categories(self, ids: Sequence[int]) -> list[records.Category | None] | None:
        return self._by_id(ids, CATEGORIES)

    def categories_by_slug(self, slugs: Sequence[str]) -> list[records.Category | None]:
        return oldest_by_slug(self.snapshot.categories(), slugs)

    def grids(self, ids: Sequence[int]) -> list[records.Grid | None] | None:
        return self._by_id(ids, GRIDS)

    def grids_by_slug(self, slugs: Sequence[str]) -> list[records.Grid | None] | None:
        return self._by_slug(slugs, GRIDS)

    def packages(self, ids: Sequence[int]) -> list[records.Package | None] | None:
        return self._by_id(ids, PACKAGES)

    def packages_by_slug(self, slugs: Sequence[str]) -> list[records.Package | None] | None:
        return self._by_slug(slugs, PACKAGES)

    def _relation(
        self,
        windows: Sequence[Window],
        parents: Kind[Any, Any],
        members: Kind[Any, R],
        from_snapshot: Callable[[Catalogue, Window], Page[R]],
    ) -> list[Page[R]] | None:
        pages = snapshot_pages(self.snapshot, windows, parents, members, self.memo, from_snapshot)
        return [pages[window] for window in windows] if len(pages) == len(windows) else None

    def packages_of_grids(self, windows: Sequence[Window]) -> list[Page[records.Package]] | None:
        return self._relation(windows, GRIDS, PACKAGES, Catalogue.packages_of_grid)

    def grids_of_packages(self, windows: Sequence[Window]) -> list[Page[records.Grid]] | None:
        return self._relation(windows, PACKAGES, GRIDS, Catalogue.grids_of_package)

    def packages_of_categories(self, windows: Sequence[Window]) -> list[Page[records.Package]]:
        memo, snapshot = self.memo, self.snapshot
        return [
            as_first_seen(snapshot.packages_of_category(window), PACKAGES, memo)
            for window in windows
        ]

    def list_categories(self, slice: Slice, order: Order | None = None) -> Page[records.Category]:
        return as_first_seen(self.snapshot.list_categories(slice, order), CATEGORIES, self.memo)

    def list_grids(self, slice: Slice, order: Order | None = None) -> Page[records.Grid]:
        return as_first_seen(self.snapshot.list_grids(slice, order), GRIDS, self.memo)

    def list_packages(
        self, slice: Slice, filter: PackageFilter | None = None, order: Order | None = None
    ) -> Page[records.Package]:
        page = self.snapshot.list_packages(slice, filter, order)
        return as_first_seen(page, PACKAGES, self.memo)
