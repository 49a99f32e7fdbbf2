"""The database backend: the Django Packages tables over SQLAlchemy Core (asyncio).

The engine and what the database offers (`SqlFeatures`, read once by `inspect_database` in
features.py) are process-wide; `SqlBackend` is built per request around them and holds nothing
else. Each batch is one SQL statement, however many keys it has: lookups are `IN (...)`,
relations page every window in SQL at once, and a list page carries its total. Filters and
orders are part of that statement (sort_keys.py). A failure of the database is a
`DatabaseError` for the fields that needed it, and the next statement starts afresh.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import msgspec
from sqlalchemy import (
    CTE,
    JSON,
    BigInteger,
    Executable,
    Row,
    Select,
    Table,
    column,
    func,
    literal,
    select,
    true,
    union_all,
)
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway import observe
from gateway.errors import DatabaseError
from gateway.loaders.entities import fields_of, from_columns
from gateway.loaders.records import (
    Category,
    Grid,
    Order,
    Package,
    PackageFilter,
    Page,
    SearchHit,
    Slice,
    Window,
)
from gateway.loaders.sql.engine import reading
from gateway.loaders.sql.failures import FAILURES, failure_message
from gateway.loaders.sql.features import SqlFeatures
from gateway.loaders.sql.relations import Relation, key_of, kind_of
from gateway.loaders.sql.search import search_hit, search_statement
from gateway.loaders.sql.sort_keys import Key, Plan, Plans, beyond
from gateway.loaders.sql.tables import (
    category,
    grid,
    grid_package,
    package,
    version,
)

__all__ = ["SqlBackend"]

R = TypeVar("R")

_WINDOW_COLUMNS = ("slot", "parent", "shape", "size", "backward")

# Ids and offsets are bigint in the database: anything larger cannot exist or be reached.
_BIGINT_MAX = 2**63 - 1


def _selected(record: type[msgspec.Struct], table: Table, **elsewhere: Any) -> list[Any]:
    """The record's fields as columns labelled with its field names, in its order: the
    entity's own columns, and those `elsewhere` (joined) for the fields no column holds."""
    return [
        table.c[spec.column].label(spec.name) if spec.column else elsewhere[spec.name]
        for spec in fields_of(record)
    ]


_CATEGORIES = select(*_selected(Category, category))
_GRIDS = select(*_selected(Grid, grid))
_PACKAGES = select(
    *_selected(Package, package, pypi_version=version.c.number.label("pypi_version"))
).select_from(package.outerjoin(version, version.c.id == package.c.latest_version_id))

_category = from_columns(Category)
_grid = from_columns(Grid)
_package = from_columns(Package)


def _storable(ids: Sequence[int]) -> list[int]:
    return sorted({id for id in ids if -_BIGINT_MAX <= id <= _BIGINT_MAX})


def _by_id(rows: Sequence[Row[Any]], build: Callable[[Row[Any]], R]) -> dict[int, R]:
    return {row.id: build(row) for row in rows}


def _newest(table: Table) -> tuple[Key]:
    """The upstream's order of a list: newest id first."""
    return (Key(table.c.id, descending=True),)


class SqlBackend:
    """The `Backend` over one database, for one request."""

    stale = False  # a database answers now or fails: it has no older copy to serve

    def __init__(self, engine: AsyncEngine, features: SqlFeatures) -> None:
        # Every batch is one statement: on PostgreSQL a transaction around it would only add
        # two round trips (SQLite's driver opens none for a SELECT).
        if features.dialect == "postgresql":
            engine = engine.execution_options(isolation_level="AUTOCOMMIT")
        self.engine = engine
        self.features = features
        self.plans = Plans(features)

    def close(self) -> None:
        """Nothing to stop: a statement still running ends within `statement_timeout`."""

    async def _rows(self, statement: Executable, kind: str) -> Sequence[Row[Any]]:
        """Run one statement (counted and traced as `kind`). A failure drops its connection,
        so that the next statement starts afresh; a connection found dropped (the server
        restarted, or ended it while it sat in the pool) gets the statement once more, on a
        new connection."""
        try:
            with observe.SqlStatement(kind, self.features.dialect):
                try:
                    return await self._run(statement)
                except DBAPIError as exc:
                    if not exc.connection_invalidated:
                        raise
                    return await self._run(statement)
        except FAILURES as exc:
            raise DatabaseError(failure_message(exc), detail=str(exc)) from exc

    async def _run(self, statement: Executable) -> Sequence[Row[Any]]:
        async with reading(self.engine) as connection:
            try:
                return (await connection.execute(statement)).all()
            except FAILURES:
                await connection.invalidate()
                raise

    # -- by key -----------------------------------------------------------------------

    async def _by_ids(
        self, ids: Sequence[int], query: Select[Any], table: Table, build: Callable[[Row[Any]], R]
    ) -> list[R | None]:
        wanted = _storable(ids)
        if not wanted:
            return [None] * len(ids)
        found = _by_id(await self._rows(query.where(table.c.id.in_(wanted)), "by_id"), build)
        return [found.get(id) for id in ids]

    async def _by_slugs(
        self, slugs: Sequence[str], query: Select[Any], build: Callable[[Row[Any]], R]
    ) -> list[R | None]:
        if not slugs:
            return []
        rows = await self._rows(query, "by_slug")
        found = {row.slug: build(row) for row in rows}
        return [found.get(slug) for slug in slugs]

    async def categories(self, ids: Sequence[int]) -> list[Category | None]:
        return await self._by_ids(ids, _CATEGORIES, category, _category)

    async def categories_by_slug(self, slugs: Sequence[str]) -> list[Category | None]:
        # Category slugs are not unique: the oldest category with the slug answers.
        oldest = (
            select(func.min(category.c.id))
            .where(category.c.slug.in_(sorted(set(slugs))))
            .group_by(category.c.slug)
        )
        return await self._by_slugs(slugs, _CATEGORIES.where(category.c.id.in_(oldest)), _category)

    async def grids(self, ids: Sequence[int]) -> list[Grid | None]:
        return await self._by_ids(ids, _GRIDS, grid, _grid)

    async def grids_by_slug(self, slugs: Sequence[str]) -> list[Grid | None]:
        query = _GRIDS.where(grid.c.slug.in_(sorted(set(slugs))))
        return await self._by_slugs(slugs, query, _grid)

    async def packages(self, ids: Sequence[int]) -> list[Package | None]:
        return await self._by_ids(ids, _PACKAGES, package, _package)

    async def packages_by_slug(self, slugs: Sequence[str]) -> list[Package | None]:
        query = _PACKAGES.where(package.c.slug.in_(sorted(set(slugs))))
        return await self._by_slugs(slugs, query, _package)

    # -- relations, paged in SQL --------------------------------------------------------

    def _windows(self, bounds: Mapping[int, tuple[int, ...]]) -> CTE:
        """The batch's windows as a table (a CTE, so SQLite reads the JSON once), from one
        JSON parameter: one parameter whatever the batch size keeps the statement's
        compiled form cached and clear of the drivers' limits on parameters.
        """
        rows = literal(
            [
                dict(zip(_WINDOW_COLUMNS, (slot, *bound), strict=True))
                for slot, bound in bounds.items()
            ],
            JSON,
        )
        if self.features.dialect == "postgresql":
            columns = (column(name, BigInteger) for name in _WINDOW_COLUMNS)
            table = (
                func.json_to_recordset(rows).table_valued(*columns).render_derived(with_types=True)
            )
            return select(table).cte("windows")
        each = func.json_each(rows).table_valued("value")
        fields = (
            func.json_extract(each.c.value, f"$.{name}").label(name) for name in _WINDOW_COLUMNS
        )
        return select(*fields).cte("windows")

    async def _pages(
        self,
        windows: Sequence[Window],
        relation: Relation,
        plan_of: Callable[[Window], Plan],
        records: Select[Any],
        build: Callable[[Row[Any]], R],
    ) -> list[Page[R]]:
        """Every window's rows in one statement, whatever their offsets, limits and shapes.

        Each parent's members (the narrow rows that decide the order) are filtered, numbered
        and counted in SQL, once per shape (filter and order) in the batch, all shapes in one
        UNION ALL; the records are joined only to the rows in a window, plus each parent's
        first row, so that a window past the end (or of limit 0) still learns the total. A
        parent with no members returns no row and has a total of 0.
        """
        parents = set(_storable([window.parent for window in windows]))
        kept = {slot: w for slot, w in enumerate(windows) if w.parent in parents}
        if not kept:
            return [Page([], 0) for _ in windows]
        if all(w.slice == Slice(0) and w.filter is None for w in kept.values()):
            return await self._totals(windows, relation, parents)
        Shape = tuple[PackageFilter | None, Order | None, Any, Any]
        shapes: dict[Shape, int] = {}
        plans: list[tuple[Plan, Slice]] = []
        for window in kept.values():
            shape = (window.filter, window.order, window.slice.after, window.slice.before)
            if shape not in shapes:
                shapes[shape] = len(plans)
                plans.append((plan_of(window), window.slice))
        shape_of = {
            slot: shapes[w.filter, w.order, w.slice.after, w.slice.before]
            for slot, w in kept.items()
        }
        wanted = self._windows(
            {
                slot: (w.parent, shape_of[slot], _size(w.slice), int(w.slice.backward))
                for slot, w in kept.items()
            }
        )
        ranked = union_all(
            *(
                relation.ranked(plan, shape, slice, wanted)
                for shape, (plan, slice) in enumerate(plans)
            )
        ).subquery("ranked")
        position, lower, upper = ranked.c.position, ranked.c.lower, ranked.c.upper
        forward = (wanted.c.backward == 0) & (position <= lower + wanted.c.size)
        backward = (wanted.c.backward == 1) & (position > upper - wanted.c.size)
        in_window = (position > lower) & (position <= upper) & (forward | backward)
        key_columns = [c for c in ranked.c if c.name.startswith("key_")]
        statement = (
            records.add_columns(wanted.c.slot, position, ranked.c.total, lower, upper, *key_columns)
            .join(ranked, ranked.c.member == records.selected_columns.id)
            .join(
                wanted,
                (wanted.c.parent == ranked.c.parent)
                & (wanted.c.shape == ranked.c.shape)
                & (in_window | (position == 1)),
            )
            .order_by(wanted.c.slot, position)
        )
        kinds = [[kind_of(key) for key in plan.keys] for plan, _ in plans]
        items: list[list[R]] = [[] for _ in windows]
        keys: list[list[Any]] = [[] for _ in windows]
        bounds = [(0, 0, 0)] * len(windows)
        built: dict[int, R] = {}  # a record in several windows (a grid of many packages) once
        for row in await self._rows(statement, "relation"):
            bounds[row.slot] = (row.total, row.lower, row.upper)
            if _in_slice(kept[row.slot].slice, row.position, row.lower, row.upper):
                record = built.get(row.id)
                if record is None:
                    record = built[row.id] = build(row)
                items[row.slot].append(record)
                keys[row.slot].append(key_of(row, kinds[shape_of[row.slot]]))
        return [
            Page(page, total, key, lower, upper)
            for page, key, (total, lower, upper) in zip(items, keys, bounds, strict=True)
        ]

    async def _totals(
        self, windows: Sequence[Window], relation: Relation, parents: set[int]
    ) -> list[Page[R]]:
        """Only sizes were asked for (`packageCount`, `gridCount`): count, rank nothing."""
        statement = (
            select(relation.parent.label("parent"), func.count().label("total"))
            .select_from(relation.members)
            .where(relation.parent.in_(sorted(parents)))
            .group_by(relation.parent)
        )
        totals = {row.parent: row.total for row in await self._rows(statement, "count")}
        sizes = [totals.get(window.parent, 0) for window in windows]
        return [Page([], size, [], 0, size) for size in sizes]

    async def packages_of_grids(self, windows: Sequence[Window]) -> list[Page[Package]]:
        by_title = (Key(self.plans.in_byte_order(package.c.title)), Key(package.c.id))
        return await self._pages(
            windows,
            Relation(
                grid_package.join(package, package.c.id == grid_package.c.package_id),
                grid_package.c.grid_id,
                package.c.id,
            ),
            lambda window: self.plans.packages(window.filter, window.order, by_title),
            _PACKAGES,
            _package,
        )

    async def grids_of_packages(self, windows: Sequence[Window]) -> list[Page[Grid]]:
        in_membership_order = (Key(grid_package.c.id),)
        return await self._pages(
            windows,
            Relation(grid_package, grid_package.c.package_id, grid_package.c.grid_id),
            lambda window: self.plans.grids(
                window.order, grid_package.c.grid_id, in_membership_order
            ),
            _GRIDS,
            _grid,
        )

    async def packages_of_categories(self, windows: Sequence[Window]) -> list[Page[Package]]:
        return await self._pages(
            windows,
            Relation(package, package.c.category_id, package.c.id),
            lambda window: self.plans.packages(window.filter, window.order, _newest(package)),
            _PACKAGES,
            _package,
        )

    # -- lists ----------------------------------------------------------------------------

    async def _list(
        self,
        query: Select[Any],
        table: Table,
        plan: Plan,
        slice: Slice,
        build: Callable[[Row[Any]], R],
    ) -> Page[R]:
        """A slice of the table's rows that pass the plan, in its order, their count and where
        the cursors fall, in one statement.

        The rows strictly between the cursors are read by their keys, the first or the last
        of them; the counts are joined to the page (LEFT JOIN ... ON true), so that an empty
        page still brings them. The page carries its sort keys, to be put back in order by
        and to make its cursors.
        """
        past = None if slice.after is None else beyond(plan.keys, slice.after, later=True)
        short = None if slice.before is None else beyond(plan.keys, slice.before, later=False)
        counts = select(
            func.count().label("total"),
            (func.count() if past is None else func.count().filter(past)).label("past"),
            (func.count() if short is None else func.count().filter(short)).label("upper"),
        ).select_from(table)
        cursors = past is not None or short is not None
        counted = plan.apply if cursors else plan.filtered
        total = counted(counts).subquery("total")  # type: ignore[arg-type]
        sorts = [key.value.label(f"sort_{index}") for index, key in enumerate(plan.keys)]
        between = [condition for condition in (past, short) if condition is not None]
        page = (
            plan.apply(query.add_columns(*sorts))
            .where(*between)
            .order_by(*plan.order_by(reverse=slice.backward))
            .limit(_size(slice))
            .subquery("page")
        )
        in_page_order = (
            key._replace(value=page.c[sort.name])
            for key, sort in zip(plan.keys, sorts, strict=True)
        )
        statement = (
            select(page, total.c.total, total.c.past, total.c.upper)
            .select_from(total.outerjoin(page, true()))
            .order_by(*(key.clause() for key in in_page_order))
        )
        rows = await self._rows(statement, "list")
        found = [row for row in rows if row.id is not None]
        first = rows[0]
        return Page(
            [build(row) for row in found],
            first.total,
            [tuple(getattr(row, sort.name) for sort in sorts) for row in found],
            first.total - first.past,
            first.upper,
        )

    async def list_categories(self, slice: Slice, order: Order | None = None) -> Page[Category]:
        plan = self.plans.categories(order, _newest(category))
        return await self._list(_CATEGORIES, category, plan, slice, _category)

    async def list_grids(self, slice: Slice, order: Order | None = None) -> Page[Grid]:
        plan = self.plans.grids(order, grid.c.id, _newest(grid))
        return await self._list(_GRIDS, grid, plan, slice, _grid)

    async def list_packages(
        self, slice: Slice, filter: PackageFilter | None = None, order: Order | None = None
    ) -> Page[Package]:
        plan = self.plans.packages(filter, order, _newest(package))
        return await self._list(_PACKAGES, package, plan, slice, _package)

    # -- search ---------------------------------------------------------------------------

    async def search(self, query: str) -> list[SearchHit]:
        statement = search_statement(query, self.features)
        if statement is None:
            return []
        return [search_hit(row) for row in await self._rows(statement, "search")]


def _size(slice: Slice) -> int:
    """A slice's size, kept inside bigint."""
    return min(slice.limit, _BIGINT_MAX)


def _in_slice(slice: Slice, position: int, lower: int, upper: int) -> bool:
    """Whether a relation row at `position` (from 1) is in the slice, given its cursors'
    bounds: between them, among the first or the last `slice.limit`."""
    if not lower < position <= upper:
        return False
    return position > upper - slice.limit if slice.backward else position <= lower + slice.limit
