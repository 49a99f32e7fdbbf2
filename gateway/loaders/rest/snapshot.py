"""The REST backend's catalogue snapshot: the whole catalogue, filtered and ordered in memory.

The APIv4 cannot filter and has one order (id descending), so a list or relation asked for
with a filter or an order is answered from a snapshot of the three whole lists. `Catalogue`
is built once per snapshot from the records and the memberships the lists carry; it indexes
what every query needs (memberships by parent and by slug, each package's `text_key`) at
once, and each order the first time it is asked for. Everything here is pure: fetcher.py
reads the lists, and wire.py makes them a snapshot.

Cost at full scale, measured on the demo catalogue of `generate(scale=1.0)` (4 categories,
420 grids, 5,400 packages) served by `serve_upstream` in another process on loopback, 2 cores:

- Memory: the snapshot and the details it primes keep 22.8 MiB (tracemalloc; RSS +26 MiB),
  of which this module's records and indexes are 6.8 MiB, and every order memoised 0.3 MiB
  more; the rest is the decoded lists, which the primed details share. Each record is kept by
  the JSON it was made from too (wire.py `made_once`): 1.9 MiB more. The cache counts
  18.0 MiB of its 32 MiB bound. While a refresh runs the old snapshot is still held, but a
  refresh keeps the objects of every item that did not change (below): measured in-process
  over the unchanged catalogue, the objects a refresh leaves alive went from 18.4 to 5.4 MiB
  (the lists and indexes of this module, new each time) and its peak from +19.9 to +12.6 MiB.
- Refresh (once per `cache_ttl`, by the first request after it): 3 requests, one per list,
  5.3 MiB of JSON (packages 4.8 MB, grids 0.7 MB); 150-350 ms end to end, about 130 ms of it
  the gateway's CPU (median of 15, the collector's objects frozen as a renewal leaves them):
  of the package list, 5 ms to split it into items, 20 ms to decode them and 20-25 ms to prime
  their 10,800 cache entries (11,645 for the three lists); 35 ms to make the records and build
  this (converting 8, relation links 6, indexes 15); the rest is reading the bodies, a loop
  turn per chunk of them. From the real site the 5 MB download dominates.
  A refresh reuses what did not change, nearly everything at the real site: an item equal to
  the object the cache holds for its id is that object (fetcher.py `_held`), and its record
  and relation ids are the last snapshot's (wire.py `made_once`), so the long-lived set stays
  where it is rather than be copied anew among the requests' short-lived objects. Measured
  in-process (`Fetcher.refresh_snapshot` over `serve_upstream(generate(scale=1.0))` unchanged,
  the loop thread's CPU, median of 15, two runs each): 111-115 ms before, 88-89 ms after; the
  records and relations 33-36 ms to 17 (the indexes), the comparisons no dearer than the
  decoded copies they let go at once.
  None of it holds the event loop for long: items are decoded, primed and converted 500 at a
  time and this is built in four steps, the loop running its other tasks between two
  (turns.py). The longest the loop went without a turn during a refresh: 7-10 ms of CPU, where
  it was 58-69 ms (the package list, decoded and primed at once) and 37-50 ms (this, built at
  once). The total is the same (callgrind: 912 million instructions a refresh against 909).
- A query on a warm snapshot: no request; a filtered, ordered first page over all packages
  takes 0.01-0.8 ms, and each order costs 1-7 ms once per snapshot. Each page made (a list
  page, a relation's window) is kept by its arguments and served again as it is: at most
  `MAX_KEPT_RECORDS` records' worth, about 4 MiB more, then all are dropped at once. A kept
  page is tuples of untracked values, its key too: the collector's passes untrack them on
  their way to the old generation, which a full collection scans (gateway/observability/stalls.py);
  kept as they came, as lists and NamedTuples, they cost it about 5 objects a page.
"""

from __future__ import annotations

from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from functools import cmp_to_key
from operator import attrgetter
from typing import Any, Generic, NamedTuple, Protocol, TypeVar, cast

from gateway.loaders.records import (
    Category,
    Grid,
    Key,
    Order,
    Package,
    PackageFilter,
    Page,
    Slice,
    Window,
    text_key,
    title_key,
)
from gateway.loaders.rest.turns import Steps


class _Titled(Protocol):
    @property
    def id(self) -> int: ...

    @property
    def title(self) -> str: ...


R = TypeVar("R", bound=_Titled)

# What a field orders by, and a cursor carries: None where the record has no value (it then
# sorts last).
Field = Callable[[R], Any]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _instant(when: datetime | None) -> int | None:
    """Microseconds since the epoch: datetimes compared as instants, whatever their zone
    (two in one `ZoneInfo` would compare by wall time, wrong in the hour DST repeats)."""
    return None if when is None else (when - _EPOCH) // timedelta(microseconds=1)


def _utc(when: datetime | None) -> datetime | None:
    """An instant in UTC: aware datetimes in one zone compare as instants only in UTC (two in
    one `ZoneInfo` compare by wall time, wrong in the hour DST repeats)."""
    return None if when is None else when.astimezone(UTC)


PACKAGE_FIELDS: Mapping[str, Field[Package]] = {
    "title": lambda package: title_key(package.title),
    "repo_watchers": attrgetter("repo_watchers"),
    "repo_forks": attrgetter("repo_forks"),
    "last_updated": lambda package: _utc(package.last_updated),
    "created": lambda package: _utc(package.created),
    "modified": lambda package: _utc(package.modified),
    "id": attrgetter("id"),
}


def _compare(a: Key, b: Key, descending: Sequence[bool]) -> int:
    """Keys compared in a list's order: term by term, each its way; None last either way."""
    for x, y, down in zip(a, b, descending, strict=False):
        if x == y:
            continue
        if x is None or y is None:
            return 1 if x is None else -1
        return (1 if x < y else -1) if down else (-1 if x < y else 1)  # type: ignore[operator]
    return 0


def _listing_fields(members: Mapping[int, Sequence[int]]) -> Mapping[str, Field[_Titled]]:
    """The order fields of grids and categories: title, package count, id."""
    return {
        "title": lambda record: title_key(record.title),
        "package_count": lambda record: len(members.get(record.id, ())),
        "id": attrgetter("id"),
    }


class _Ranking(NamedTuple):
    """A field's ascending order as positions: by (value, id), then the valueless by id."""

    ascending: array[int]
    rank: array[int]  # each position's place in `ascending`
    valued: int  # how many positions have a value: the valueless come after them


class _Table(Generic[R]):
    """Records of one kind, newest id first (the upstream's list order), ordered on demand.

    A record is named by its position in `records`. Each field's order is computed the first
    time a query asks for it and kept as long as the snapshot.
    """

    def __init__(self, records: Iterable[R], fields: Mapping[str, Field[R]]) -> None:
        self.records = sorted(records, key=lambda record: -record.id)
        self.position = {record.id: i for i, record in enumerate(self.records)}
        self.by_id = {record.id: record for record in self.records}
        self._fields = fields
        self._rankings: dict[str, _Ranking] = {}
        self._descending: dict[str, Sequence[int]] = {}  # the whole table's, once asked for

    def ordered(self, positions: Sequence[int] | None, order: Order | None) -> Sequence[int]:
        """`positions` (None: the whole table) in `order`, or as they are without one.

        Ties go by id the same way; records without a value come last either way.
        """
        if order is None:
            return range(len(self.records)) if positions is None else positions
        ranking = self._ranking(order.field)
        rank = ranking.rank.__getitem__
        ascending = ranking.ascending if positions is None else sorted(positions, key=rank)
        if not order.descending:
            return ascending
        if positions is None and order.field in self._descending:
            return self._descending[order.field]
        cut = bisect_left(ascending, ranking.valued, key=rank)
        descending = [*reversed(ascending[:cut]), *reversed(ascending[cut:])]
        if positions is None:
            self._descending[order.field] = descending
        return descending

    def page(
        self,
        positions: Sequence[int],
        slice: Slice,
        key: Callable[[int], Key],
        descending: Sequence[bool],
    ) -> Page[R]:
        """The slice of `positions`, whose order is that of `key` (each term `descending` or
        not): the cursors are found by bisection, so a record gone since stays a place."""
        lower, upper = 0, len(positions)
        if slice.after is not None or slice.before is not None:
            lower, upper = _bounds(positions, slice, key, descending)
        if slice.backward:
            chosen = positions[max(lower, upper - slice.limit) : upper]
        else:
            chosen = positions[lower : min(upper, lower + slice.limit)]
        items = tuple(map(self.records.__getitem__, chosen))
        return Page(items, len(positions), tuple(map(key, chosen)), lower, upper)

    def ordered_page(
        self,
        positions: Sequence[int] | None,
        slice: Slice,
        order: Order | None,
        own: tuple[Callable[[int], Key], Sequence[bool]],
    ) -> Page[R]:
        """The slice of `positions` (None: the whole table) in `order`, or in their own order,
        whose key and directions are `own`."""
        if order is None:
            key, descending = own
            every = range(len(self.records)) if positions is None else positions
            return self.page(every, slice, key, descending)
        value, records = self._fields[order.field], self.records

        def ordered_key(i: int) -> Key:
            return value(records[i]), records[i].id

        both = (order.descending, order.descending)
        return self.page(self.ordered(positions, order), slice, ordered_key, both)

    def newest_key(self, i: int) -> Key:
        """The key of the upstream's order, newest id first (with `NEWEST`)."""
        return (self.records[i].id,)

    def _ranking(self, field: str) -> _Ranking:
        ranking = self._rankings.get(field)
        if ranking is None:
            value = self._fields[field]
            values = [value(record) for record in self.records]
            # Positions run newest id first: reversed, a stable sort breaks ties by id.
            by_id = range(len(values) - 1, -1, -1)
            valued = sorted((i for i in by_id if values[i] is not None), key=values.__getitem__)
            ascending = array("i", valued + [i for i in by_id if values[i] is None])
            rank = array("i", bytes(ascending.itemsize * len(ascending)))
            for place, i in enumerate(ascending):
                rank[i] = place
            ranking = self._rankings[field] = _Ranking(ascending, rank, len(valued))
        return ranking


def _bounds(
    positions: Sequence[int], slice: Slice, key: Callable[[int], Key], descending: Sequence[bool]
) -> tuple[int, int]:
    """Where a slice's cursors fall in `positions`: the records at or before `after`, and
    those strictly before `before`."""

    def compare(a: Key, b: Key) -> int:
        return _compare(a, b, descending)

    sortable = cmp_to_key(compare)

    def at(i: int) -> Any:
        return sortable(key(i))

    lower, upper = 0, len(positions)
    if slice.after is not None:
        lower = bisect_right(positions, sortable(slice.after), key=at)
    if slice.before is not None:
        upper = bisect_left(positions, sortable(slice.before), key=at)
    return lower, upper


_NOTHING: frozenset[int] = frozenset()
NEWEST = (True,)  # the upstream's order: by id, descending

# The pages a snapshot keeps, counted by the records they hold: past this, all are forgotten
# at once (they share their records with the snapshot; a record costs a page about 80 bytes).
MAX_KEPT_RECORDS = 50_000

Kept = TypeVar("Kept", bound=Callable[..., Page[Any]])


def _kept(compute: Kept) -> Kept:
    """A method of `Catalogue` whose pages the snapshot keeps by their arguments (positional
    ones): a snapshot never changes, and the same windows and list pages are asked for again
    and again.

    A page is kept under its method's name and its arguments made exact tuples: a tuple of
    untracked values (a NamedTuple never) leaves the collector's sight at a pass, the
    innermost first, and equals and hashes as the NamedTuple it was made from, which a lookup
    is asked with: only a page made pays for its key."""
    name = compute.__name__

    def page(catalogue: Catalogue, *arguments: Any) -> Page[Any]:
        key = (name, *arguments)
        found: Page[Any] | None = catalogue._pages.get(key)
        if found is None:
            found = compute(catalogue, *arguments)
            catalogue._kept_records += len(found.items)
            if catalogue._kept_records > MAX_KEPT_RECORDS:
                catalogue._pages.clear()
                catalogue._kept_records = len(found.items)
            catalogue._pages[_exact(key)] = found
        return found

    return cast(Kept, page)


def _exact(value: Any) -> Any:
    """`value` with every tuple in it, a NamedTuple's too, an exact tuple."""
    return tuple(map(_exact, value)) if isinstance(value, tuple) else value


class Lists(NamedTuple):
    """What a `Catalogue` is built from: the three whole lists and the memberships they carry.

    `packages_of_grid` and `grids_of_package` map a record's id to the ids of its relation in
    the relation's own order (a grid's packages by title, a package's grids in membership
    order); the catalogue leaves out ids it has no record for, so that counts and pages agree.
    """

    categories: Iterable[Category]
    grids: Iterable[Grid]
    packages: Iterable[Package]
    packages_of_grid: Mapping[int, Iterable[int]]
    grids_of_package: Mapping[int, Iterable[int]]


class Catalogue:
    """One snapshot of the catalogue, answering filtered and ordered windows of every list."""

    def __init__(self, lists: Lists) -> None:
        for _ in self._index(lists):
            pass  # at once: no loop to give a turn to

    @classmethod
    def in_steps(cls, lists: Lists) -> Steps[Catalogue]:
        """The catalogue built a few milliseconds at a time (turns.py): a refresh's last part."""
        catalogue = cls.__new__(cls)
        yield from catalogue._index(lists)
        return catalogue

    def _index(self, lists: Lists) -> Steps[None]:
        """Index what every query needs, yielding between steps of a few milliseconds each."""
        self._packages = _Table(lists.packages, PACKAGE_FIELDS)
        records, at = self._packages.records, self._packages.position
        self._texts = [text_key(p.title, p.slug, p.repo_description) for p in records]
        yield
        self._updated = [_instant(p.last_updated) for p in records]
        yield

        self._of_grid = {
            grid: tuple(at[id] for id in ids if id in at)
            for grid, ids in lists.packages_of_grid.items()
        }
        self._grids = _Table(lists.grids, _listing_fields(self._of_grid))
        grid_at = self._grids.position
        self._of_package = {
            package: tuple(grid_at[id] for id in ids if id in grid_at)
            for package, ids in lists.grids_of_package.items()
        }
        yield
        self._grid_slugs = {grid.slug: grid for grid in self._grids.records}
        self._package_slugs = {package.slug: package for package in records}
        self._by_grid_slug = {
            grid.slug: frozenset(self._of_grid.get(grid.id, ())) for grid in self._grids.records
        }

        of_category: dict[int, list[int]] = {}
        for i, package in enumerate(records):  # newest id first, the relation's order
            of_category.setdefault(package.category_id, []).append(i)
        self._of_category = {id: tuple(members) for id, members in of_category.items()}
        self._categories = _Table(lists.categories, _listing_fields(self._of_category))
        by_category_slug: dict[str, set[int]] = {}
        for category in self._categories.records:  # slugs are not unique: pool their packages
            members = self._of_category.get(category.id, ())
            by_category_slug.setdefault(category.slug, set()).update(members)
        self._by_category_slug = {slug: frozenset(ids) for slug, ids in by_category_slug.items()}
        self._pages: dict[tuple[Any, ...], Page[Any]] = {}  # see `_kept`
        self._kept_records = 0

    # -- by key -----------------------------------------------------------------------

    def categories(self) -> Sequence[Category]:
        return self._categories.records

    def category(self, id: int) -> Category | None:
        return self._categories.by_id.get(id)

    def grid(self, id: int) -> Grid | None:
        return self._grids.by_id.get(id)

    def package(self, id: int) -> Package | None:
        return self._packages.by_id.get(id)

    def grid_by_slug(self, slug: str) -> Grid | None:
        return self._grid_slugs.get(slug)

    def package_by_slug(self, slug: str) -> Package | None:
        return self._package_slugs.get(slug)

    # -- whole lists ------------------------------------------------------------------

    @_kept
    def list_categories(self, slice: Slice, order: Order | None) -> Page[Category]:
        table = self._categories
        return table.ordered_page(None, slice, order, (table.newest_key, NEWEST))

    @_kept
    def list_grids(self, slice: Slice, order: Order | None) -> Page[Grid]:
        return self._grids.ordered_page(None, slice, order, (self._grids.newest_key, NEWEST))

    @_kept
    def list_packages(
        self, slice: Slice, filter: PackageFilter | None, order: Order | None
    ) -> Page[Package]:
        return self._packages_in(None, filter, order, slice, (self._packages.newest_key, NEWEST))

    # -- relations: a window of one parent's records ------------------------------------

    @_kept
    def packages_of_grid(self, window: Window) -> Page[Package]:
        records = self._packages.records

        def by_title(i: int) -> Key:
            return records[i].title, records[i].id

        members = self._of_grid.get(window.parent, ())
        return self._packages_in(
            members, window.filter, window.order, window.slice, (by_title, (False, False))
        )

    @_kept
    def packages_of_category(self, window: Window) -> Page[Package]:
        members = self._of_category.get(window.parent, ())
        own = (self._packages.newest_key, NEWEST)
        return self._packages_in(members, window.filter, window.order, window.slice, own)

    @_kept
    def grids_of_package(self, window: Window) -> Page[Grid]:
        members = self._of_package.get(window.parent, ())
        place = {grid: i for i, grid in enumerate(members)}

        def by_membership(i: int) -> Key:
            return (place[i],)

        own = (by_membership, (False,))
        return self._grids.ordered_page(members, window.slice, window.order, own)

    def _packages_in(
        self,
        members: Sequence[int] | None,
        filter: PackageFilter | None,
        order: Order | None,
        slice: Slice,
        own: tuple[Callable[[int], Key], Sequence[bool]],
    ) -> Page[Package]:
        """The slice of `members` (None: all) that pass `filter`, in `order` or their own."""
        if filter is None:
            return self._packages.ordered_page(members, slice, order, own)
        return self._packages.ordered_page(self._passed(members, filter), slice, order, own)

    # -- filtering ----------------------------------------------------------------------

    def _passed(self, base: Sequence[int] | None, filter: PackageFilter) -> Sequence[int]:
        """The packages of `base` (None: all) that pass `filter`, in base's order."""
        allowed = self._allowed(filter)
        if allowed is not None:
            base = sorted(allowed) if base is None else [i for i in base if i in allowed]
        return self._passing(range(len(self._texts)) if base is None else base, filter)

    def _allowed(self, filter: PackageFilter) -> frozenset[int] | None:
        """The packages in the filter's category and all its grids; None if it names neither."""
        sets = [self._by_grid_slug.get(slug, _NOTHING) for slug in filter.grids]
        if filter.category is not None:
            sets.append(self._by_category_slug.get(filter.category, _NOTHING))
        if not sets:
            return None
        first, *rest = sorted(sets, key=len)
        return first.intersection(*rest)

    def _passing(self, positions: Sequence[int], filter: PackageFilter) -> Sequence[int]:
        """The packages that meet the filter's conditions on their own fields, in order.

        One pass a condition, each over what the previous one kept.
        """
        records, texts = self._packages.records, self._texts
        for word in filter.words:
            positions = [i for i in positions if word in texts[i]]
        if (released := filter.has_pypi_release) is not None:
            positions = [i for i in positions if (records[i].pypi_version is not None) is released]
        if (watchers := filter.min_watchers) is not None:
            positions = [i for i in positions if records[i].repo_watchers >= watchers]
        after, before = _instant(filter.updated_after), _instant(filter.updated_before)
        if after is not None or before is not None:
            updated = self._updated
            positions = [i for i in positions if _within(updated[i], after, before)]
        return positions


def _within(when: int | None, after: int | None, before: int | None) -> bool:
    """Whether `when` is strictly inside the bounds that are set; a missing `when` never is."""
    return (
        when is not None and (after is None or when > after) and (before is None or when < before)
    )
