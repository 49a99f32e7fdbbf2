"""The database backend: the Django Packages tables over SQLAlchemy Core (asyncio).

The engine, what the database offers (`SqlFeatures`, read once by `inspect_database` in
features.py), its statements (statements.py, built once per shape) and the records built lately
are process-wide; `SqlBackend` is built per request around them and holds only its change stamp.
Each batch is one SQL statement, however many keys it has, read straight on the driver
(engine.py): lookups bind their keys, relations page every window in SQL at once, and a list
page carries its total (an empty page's counts are read by a second). Filters and orders are
part of that statement (sort_keys.py). A failure of the database is a `DatabaseError` for the
fields that needed it, and the next statement starts afresh. With a store (kept.py), what
batches read is kept across requests while the database's change stamp, read once per request
before its first statement, holds: then a batch is answered from there, and on SQLite at hand
(`at_hand`).
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Hashable, Mapping, Sequence
from typing import Any, Generic, TypeVar

from sqlalchemy import Executable
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.errors import DatabaseError
from gateway.loaders.entities import fields_of, from_columns
from gateway.loaders.records import (
    Category,
    Grid,
    Key,
    Order,
    Package,
    PackageFilter,
    Page,
    SearchHit,
    Slice,
    Window,
)
from gateway.loaders.sql.engine import change_stamp, change_stamp_now, execute, read
from gateway.loaders.sql.failures import FAILURES, failure_message
from gateway.loaders.sql.features import SqlFeatures
from gateway.loaders.sql.kept import Kept, KeptAnswers
from gateway.loaders.sql.relations import key_reader
from gateway.loaders.sql.search import search_hit, search_statement
from gateway.loaders.sql.statements import (
    WINDOW_COLUMNS,
    Prepared,
    Shape,
    cursor_values,
    shape_of,
    statements_for,
)
from gateway.observability import observe

__all__ = ["SqlBackend"]

R = TypeVar("R", Category, Grid, Package)
V = TypeVar("V")

# Ids and offsets are bigint in the database: anything larger cannot exist or be reached.
_BIGINT_MAX = 2**63 - 1

RECORDS = (Category, Grid, Package)
# Where a record's id and slug are in its row (the first of its fields).
_ID, _SLUG = 0, 2
# Records remembered per kind (and driver), at most: a grid's hundred packages, their grids.
_REMEMBERED = 4096


class _Remembered(Generic[R]):
    """The records of rows whose first values are the record's fields, as a driver hands
    them over, and the records built lately, by id, with the values they were built from.

    A record is all its row says (and immutable): a row read again, unchanged, is the record
    built before, not converted again (times parsed, lists decoded). Whether it is unchanged
    is told by comparing its values with those remembered for its id, which costs a fifth of
    hashing them all (as a cache keyed by the whole row would: each time and text anew).
    """

    def __init__(self, record: type[R], sqlite: bool) -> None:
        self._build: Callable[[Sequence[Any]], R] = from_columns(record, sqlite=sqlite)
        self._fields = len(fields_of(record))
        self._by_id: dict[int, tuple[Sequence[Any], R]] = {}

    def __call__(self, row: Sequence[Any]) -> R:
        values = row[: self._fields]
        known = self._by_id.get(values[_ID])
        if known is not None and known[0] == values:
            return known[1]
        record = self._build(values)
        if len(self._by_id) >= _REMEMBERED:
            del self._by_id[next(iter(self._by_id))]  # the longest remembered
        self._by_id[values[_ID]] = (values, record)
        return record


# Each kind's records as each driver hands their rows over (SQLite's: sqlite=True).
_RECORDS: dict[tuple[bool, type[Any]], _Remembered[Any]] = {
    (sqlite, record): _Remembered(record, sqlite) for sqlite in (False, True) for record in RECORDS
}
assert all(
    [spec.name for spec in fields_of(record)][:3] == ["id", "title", "slug"] for record in RECORDS
)


@functools.lru_cache(maxsize=64)
def _autocommit(engine: AsyncEngine) -> AsyncEngine:
    """Every batch is one statement: on PostgreSQL a transaction around it would only add two
    round trips (SQLite's driver opens none for a SELECT). Made once per engine: a request's
    own would cost more than its statements' bookkeeping."""
    return engine.execution_options(isolation_level="AUTOCOMMIT")


def _storable(ids: Sequence[int]) -> list[int]:
    return sorted({id for id in ids if -_BIGINT_MAX <= id <= _BIGINT_MAX})


class SqlBackend:
    """The `Backend` over one database, for one request; with `kept` (kept.py), it answers
    from there what was read since the database last changed."""

    stale = False  # a database answers now or fails: it has no older copy to serve

    def __init__(
        self, engine: AsyncEngine, features: SqlFeatures, kept: Kept | None = None
    ) -> None:
        self._stamps = engine  # whose change stamps are read (the engine `create_engine` made)
        if features.dialect == "postgresql":
            engine = _autocommit(engine)
        self.engine = engine
        self.features = features
        self.statements = statements_for(features, engine.dialect)
        self.kept = kept if features.change_stamp else None
        self._stamp: Hashable | None = None  # the change stamp this request read, once
        self._unstamped: tuple[str, str] | None = None  # why `ready` could not read it
        self._at_hand: KeptAnswers | None = None

    def close(self) -> None:
        """Nothing to stop: a statement still running ends within `statement_timeout`."""

    def at_hand(self) -> KeptAnswers | None:
        """The answers kept under the change stamp this request read, read here if that needs
        no waiting (SQLite); else (PostgreSQL: a round trip) nothing is at hand until `ready`
        or the request's first batch has read it."""
        if self._at_hand is None and self.kept is not None:
            stamp = change_stamp_now(self._stamps)
            if stamp is not None:
                self._stamped(stamp)
        return self._at_hand

    async def ready(self) -> None:
        """Read the request's change stamp now if that needs waiting (PostgreSQL), so that its
        first level is answered at hand too. A failure is left to the request's batches, which
        report it as their fields' error without reading again: a moment later, a second read
        would find the database no better, and cost it (and the request) as much again."""
        if self.kept is not None and self.at_hand() is None:
            try:
                await self._read_stamp()
            except DatabaseError as error:  # kept as text: the error's traceback holds us
                self._unstamped = (error.message, error.detail)

    def _stamped(self, stamp: Hashable) -> None:
        assert self.kept is not None
        self._stamp = stamp
        self.kept.stamped(stamp)
        self._at_hand = KeptAnswers(self.kept, stamp)

    async def _read_stamp(self) -> Hashable:
        """Read the request's change stamp (counted and traced as `stamp`)."""
        try:
            with observe.SqlStatement("stamp", self.features.dialect):
                stamp = await change_stamp(self._stamps)
        except FAILURES as exc:
            raise DatabaseError(failure_message(exc), detail=str(exc)) from exc
        self._stamped(stamp)
        return stamp

    async def _kept(
        self, method: str, keys: Sequence[Hashable], read: Callable[[], Awaitable[list[V]]]
    ) -> list[V]:
        """`method`'s answers for `keys`: kept ones if all are, else `read`'s (then kept).
        The request's change stamp is read first, if it was not yet."""
        kept = self.kept
        if kept is None:
            return await read()
        stamp = self._stamp
        if stamp is None:
            if self._unstamped is not None:
                raise DatabaseError(*self._unstamped)
            stamp = await self._read_stamp()
        found: list[V] | None = kept.answers(stamp, method, keys)
        if found is None:
            found = await read()
            kept.keep(stamp, method, keys, found)
        return found

    async def _rows(
        self,
        kind: str,
        statement: Prepared | Executable,
        values: Mapping[str, Any] | None = None,
        *,
        inline: bool = True,
    ) -> Sequence[Any]:
        """Run one statement (counted and traced as `kind`): a `Prepared` one with its
        `values`, straight on the driver (`read`; one that scans text, a filter by words, not
        `inline`); a search through SQLAlchemy, which types its rows (`execute`)."""
        try:
            with observe.SqlStatement(kind, self.features.dialect):
                if isinstance(statement, Prepared):
                    parameters = statement.parameters(values or {})
                    return await read(self.engine, statement.sql, parameters, inline=inline)
                return await execute(self.engine, statement)
        except FAILURES as exc:
            raise DatabaseError(failure_message(exc), detail=str(exc)) from exc

    # -- by key -----------------------------------------------------------------------

    def _reader(self, record: type[R]) -> _Remembered[R]:
        """The record of a row whose first values are its fields."""
        return _RECORDS[self.statements.sqlite, record]

    async def _by_ids(
        self, ids: Sequence[int], statement: Prepared, record: type[R]
    ) -> list[R | None]:
        wanted = _storable(ids)
        if not wanted:
            return [None] * len(ids)
        rows = await self._rows("by_id", statement, {"ids": self.statements.array(wanted)})
        build = self._reader(record)
        found = {row[_ID]: build(row) for row in rows}
        return [found.get(id) for id in ids]

    async def _by_slugs(
        self, slugs: Sequence[str], statement: Prepared, record: type[R]
    ) -> list[R | None]:
        if not slugs:
            return []
        wanted = self.statements.array(sorted(set(slugs)))
        rows = await self._rows("by_slug", statement, {"slugs": wanted})
        build = self._reader(record)
        found = {row[_SLUG]: build(row) for row in rows}
        return [found.get(slug) for slug in slugs]

    async def categories(self, ids: Sequence[int]) -> list[Category | None]:
        read = functools.partial(self._by_ids, ids, self.statements.categories, Category)
        return await self._kept("categories", ids, read)

    async def categories_by_slug(self, slugs: Sequence[str]) -> list[Category | None]:
        read = functools.partial(
            self._by_slugs, slugs, self.statements.categories_by_slug, Category
        )
        return await self._kept("categories_by_slug", slugs, read)

    async def grids(self, ids: Sequence[int]) -> list[Grid | None]:
        read = functools.partial(self._by_ids, ids, self.statements.grids, Grid)
        return await self._kept("grids", ids, read)

    async def grids_by_slug(self, slugs: Sequence[str]) -> list[Grid | None]:
        read = functools.partial(self._by_slugs, slugs, self.statements.grids_by_slug, Grid)
        return await self._kept("grids_by_slug", slugs, read)

    async def packages(self, ids: Sequence[int]) -> list[Package | None]:
        read = functools.partial(self._by_ids, ids, self.statements.packages, Package)
        return await self._kept("packages", ids, read)

    async def packages_by_slug(self, slugs: Sequence[str]) -> list[Package | None]:
        read = functools.partial(self._by_slugs, slugs, self.statements.packages_by_slug, Package)
        return await self._kept("packages_by_slug", slugs, read)

    # -- relations, paged in SQL --------------------------------------------------------

    async def _pages(self, windows: Sequence[Window], name: str, record: type[R]) -> list[Page[R]]:
        """Every window's page in one statement (`Statements.relation`): the windows of a
        shape, size and cursors share a part of it, which the others' need not repeat."""
        parents = set(_storable([window.parent for window in windows]))
        kept = {slot: w for slot, w in enumerate(windows) if w.parent in parents}
        if not kept:
            return [Page([], 0) for _ in windows]
        if all(w.slice == Slice(0) and w.filter is None for w in kept.values()):
            return await self._totals(windows, name, parents)
        parts: dict[tuple[Shape, Slice], int] = {}
        part_of: dict[int, int] = {}
        for slot, window in kept.items():
            slice = window.slice._replace(limit=_size(window.slice))
            key = (shape_of(window.filter, window.order, slice), slice)
            part_of[slot] = parts.setdefault(key, len(parts))
        windowed = self.statements.relation(name, tuple(shape for shape, _ in parts))
        values: dict[str, Any] = {}
        for (_, slice), part in parts.items():
            values[f"size_{part}"] = slice.limit
            values.update(cursor_values(slice, part))
            values[f"windows_{part}"] = self.statements.json(
                [
                    dict(zip(WINDOW_COLUMNS, (slot, kept[slot].parent), strict=True))
                    for slot, of in part_of.items()
                    if of == part
                ]
            )
        # A row: the record's fields, then its window's slot, its position there, the
        # window's total (with cursors, its lower and upper bounds too), the key columns.
        slot_at = len(fields_of(record))
        keys_at = slot_at + (5 if windowed.bounded else 3)
        read_key = [
            key_reader([keys_at + at for at in columns], kinds, self.statements.sqlite)
            for kinds, columns in zip(windowed.kinds, windowed.keys, strict=True)
        ]
        build = self._reader(record)
        placed: list[list[tuple[int, R, Key]]] = [[] for _ in windows]
        counts = [(0, 0, 0)] * len(windows)
        built: dict[int, R] = {}  # a record in several windows (a grid of many packages) once
        scans = any(_scans_text(window.filter) for window in kept.values())
        rows = await self._rows("relation", windowed.statement, values, inline=not scans)
        for row in rows:
            slot, total = row[slot_at], row[slot_at + 2]
            if windowed.bounded:
                counts[slot] = row[slot_at + 2 : slot_at + 5]
            else:
                counts[slot] = (total, 0, total)
            id = row[_ID]
            if id is not None:
                found = built.get(id)
                if found is None:
                    found = built[id] = build(row)
                placed[slot].append((row[slot_at + 1], found, read_key[part_of[slot]](row)))
        pages = []
        for members, (total, lower, upper) in zip(placed, counts, strict=True):
            members.sort(key=_position)
            items = [record for _, record, _ in members]
            pages.append(Page(items, total, [key for _, _, key in members], lower, upper))
        return pages

    async def _totals(
        self, windows: Sequence[Window], name: str, parents: set[int]
    ) -> list[Page[R]]:
        """Only sizes were asked for (`packageCount`, `gridCount`): count, rank nothing."""
        wanted = {"parents": self.statements.array(sorted(parents))}
        rows = await self._rows("count", self.statements.totals(name), wanted)
        totals = {row[0]: row[1] for row in rows}
        sizes = [totals.get(window.parent, 0) for window in windows]
        return [Page([], size, [], 0, size) for size in sizes]

    async def packages_of_grids(self, windows: Sequence[Window]) -> list[Page[Package]]:
        read = functools.partial(self._pages, windows, "packages_of_grids", Package)
        return await self._kept("packages_of_grids", windows, read)

    async def grids_of_packages(self, windows: Sequence[Window]) -> list[Page[Grid]]:
        read = functools.partial(self._pages, windows, "grids_of_packages", Grid)
        return await self._kept("grids_of_packages", windows, read)

    async def packages_of_categories(self, windows: Sequence[Window]) -> list[Page[Package]]:
        read = functools.partial(self._pages, windows, "packages_of_categories", Package)
        return await self._kept("packages_of_categories", windows, read)

    # -- lists ----------------------------------------------------------------------------

    async def _list(
        self,
        name: str,
        slice: Slice,
        filter: PackageFilter | None,
        order: Order | None,
        record: type[R],
    ) -> Page[R]:
        """A slice of a list, its total and where its cursors fall (`Statements.list`): the
        slice's rows carry the counts; an empty slice's are read alone."""
        listing = self.statements.list(name, shape_of(filter, order, slice))
        values = {"size": _size(slice), **cursor_values(slice)}
        inline = not _scans_text(filter)
        rows = await self._rows("list", listing.page, values, inline=inline) if slice.limit else []
        # A row: the record's fields, its sort keys, then total, past and upper (those of the
        # cursors it has).
        sorts_at = len(fields_of(record))
        counts_at = sorts_at + len(listing.kinds)
        if rows:
            counts = rows[0][counts_at:]
        else:
            counts = (await self._rows("count", listing.counts, values, inline=inline))[0]
        total = counts[0]
        past = counts[1] if slice.after is not None else total
        upper = counts[-1] if slice.before is not None else total
        read_key = key_reader(range(sorts_at, counts_at), listing.kinds, self.statements.sqlite)
        build = self._reader(record)
        in_order = rows[::-1] if slice.backward else rows
        return Page(
            [build(row) for row in in_order],
            total,
            [read_key(row) for row in in_order],
            total - past,
            upper,
        )

    async def _kept_list(
        self,
        name: str,
        slice: Slice,
        filter: PackageFilter | None,
        order: Order | None,
        record: type[R],
    ) -> Page[R]:
        async def read() -> list[Page[R]]:
            return [await self._list(name, slice, filter, order, record)]

        return (await self._kept(f"list_{name}", [(slice, filter, order)], read))[0]

    async def list_categories(self, slice: Slice, order: Order | None = None) -> Page[Category]:
        return await self._kept_list("categories", slice, None, order, Category)

    async def list_grids(self, slice: Slice, order: Order | None = None) -> Page[Grid]:
        return await self._kept_list("grids", slice, None, order, Grid)

    async def list_packages(
        self, slice: Slice, filter: PackageFilter | None = None, order: Order | None = None
    ) -> Page[Package]:
        return await self._kept_list("packages", slice, filter, order, Package)

    # -- search ---------------------------------------------------------------------------

    async def search(self, query: str) -> list[SearchHit]:
        statement = search_statement(query, self.features)
        if statement is None:
            return []
        return [search_hit(row) for row in await self._rows("search", statement, inline=False)]


def _scans_text(filter: PackageFilter | None) -> bool:
    """Whether a filter has words to find in every package's text: a scan of the table."""
    return filter is not None and bool(filter.words)


def _position(member: tuple[int, object, Key]) -> int:
    """Where a member comes in its window's page."""
    return member[0]


def _size(slice: Slice) -> int:
    """A slice's size, kept inside bigint."""
    return min(slice.limit, _BIGINT_MAX)
