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
from typing import Any, NamedTuple, TypeVar

import msgspec
from sqlalchemy import (
    CTE,
    JSON,
    BigInteger,
    ColumnElement,
    Executable,
    FromClause,
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
    Window,
)
from gateway.loaders.sql.failures import FAILURES, failure_message
from gateway.loaders.sql.features import SqlFeatures
from gateway.loaders.sql.search import search_hit, search_statement
from gateway.loaders.sql.sort_keys import Key, Plan, Plans
from gateway.loaders.sql.tables import category, grid, grid_package, package, version

__all__ = ["SqlBackend"]

R = TypeVar("R")

_WINDOW_COLUMNS = ("slot", "parent", "shape", "after", "last")

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


class _Relation(NamedTuple):
    """A relation's narrow rows: which parent each belongs to, and which member it pages."""

    members: FromClause
    parent: ColumnElement[int]
    member: ColumnElement[int]

    def ranked(self, plan: Plan, shape: int, wanted: CTE) -> Select[Any]:
        """The members of the parents `wanted` asks for in this shape, numbered and counted."""
        asked = select(wanted.c.parent).where(wanted.c.shape == shape)
        return plan.apply(
            select(
                self.parent.label("parent"),
                self.member.label("member"),
                func.row_number()
                .over(partition_by=self.parent, order_by=plan.order_by())
                .label("position"),
                func.count().over(partition_by=self.parent).label("total"),
                literal(shape, BigInteger).label("shape"),
            )
            .select_from(self.members)
            .where(self.parent.in_(asked))
        )


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
        """Run one statement (counted and traced as `kind`); on any failure, drop its
        connection so the next one is fresh."""
        try:
            with observe.SqlStatement(kind, self.features.dialect):
                async with self.engine.connect() as connection:
                    try:
                        return (await connection.execute(statement)).all()
                    except FAILURES:
                        await connection.invalidate()
                        raise
        except FAILURES as exc:
            raise DatabaseError(failure_message(exc), detail=str(exc)) from exc

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
        relation: _Relation,
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
        if all(w.limit == 0 and w.filter is None for w in kept.values()):
            return await self._totals(windows, relation, parents)
        shapes: dict[tuple[PackageFilter | None, Order | None], int] = {}
        plans: list[Plan] = []
        for window in kept.values():
            if (window.filter, window.order) not in shapes:
                shapes[window.filter, window.order] = len(plans)
                plans.append(plan_of(window))
        bounds = {
            slot: (w.parent, shapes[w.filter, w.order], *_positions(w)) for slot, w in kept.items()
        }
        wanted = self._windows(bounds)
        ranked = union_all(
            *(relation.ranked(plan, shape, wanted) for shape, plan in enumerate(plans))
        ).subquery("ranked")
        position = ranked.c.position
        in_window = (position > wanted.c.after) & (position <= wanted.c.last)
        statement = (
            records.add_columns(wanted.c.slot, position, ranked.c.total)
            .join(ranked, ranked.c.member == records.selected_columns.id)
            .join(
                wanted,
                (wanted.c.parent == ranked.c.parent)
                & (wanted.c.shape == ranked.c.shape)
                & (in_window | (position == 1)),
            )
            .order_by(wanted.c.slot, position)
        )
        items: list[list[R]] = [[] for _ in windows]
        totals = [0] * len(windows)
        built: dict[int, R] = {}  # a record in several windows (a grid of many packages) once
        for row in await self._rows(statement, "relation"):
            _, _, after, last = bounds[row.slot]
            totals[row.slot] = row.total
            if after < row.position <= last:
                record = built.get(row.id)
                if record is None:
                    record = built[row.id] = build(row)
                items[row.slot].append(record)
        return [Page(page, total) for page, total in zip(items, totals, strict=True)]

    async def _totals(
        self, windows: Sequence[Window], relation: _Relation, parents: set[int]
    ) -> list[Page[R]]:
        """Only sizes were asked for (`packageCount`, `gridCount`): count, rank nothing."""
        statement = (
            select(relation.parent.label("parent"), func.count().label("total"))
            .select_from(relation.members)
            .where(relation.parent.in_(sorted(parents)))
            .group_by(relation.parent)
        )
        totals = {row.parent: row.total for row in await self._rows(statement, "count")}
        return [Page([], totals.get(window.parent, 0)) for window in windows]

    async def packages_of_grids(self, windows: Sequence[Window]) -> list[Page[Package]]:
        by_title = (Key(self.plans.in_byte_order(package.c.title)), Key(package.c.id))
        return await self._pages(
            windows,
            _Relation(
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
            _Relation(grid_package, grid_package.c.package_id, grid_package.c.grid_id),
            lambda window: self.plans.grids(
                window.order, grid_package.c.grid_id, in_membership_order
            ),
            _GRIDS,
            _grid,
        )

    async def packages_of_categories(self, windows: Sequence[Window]) -> list[Page[Package]]:
        return await self._pages(
            windows,
            _Relation(package, package.c.category_id, package.c.id),
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
        offset: int,
        limit: int,
        build: Callable[[Row[Any]], R],
    ) -> Page[R]:
        """A page of the table's rows that pass the plan, in its order, and their count, in
        one statement.

        The count is joined to the page (LEFT JOIN ... ON true), so that a page past the end
        still brings the total. The page carries its sort keys, to be put back in order by.
        """
        count = select(func.count().label("total")).select_from(table)
        total = plan.filtered(count).subquery("total")
        sorts = [key.value.label(f"sort_{index}") for index, key in enumerate(plan.keys)]
        page = (
            plan.apply(query.add_columns(*sorts))
            .order_by(*plan.order_by())
            .limit(min(limit, _BIGINT_MAX))
            .offset(min(offset, _BIGINT_MAX))
            .subquery("page")
        )
        in_page_order = (
            key._replace(value=page.c[sort.name])
            for key, sort in zip(plan.keys, sorts, strict=True)
        )
        statement = (
            select(page, total.c.total)
            .select_from(total.outerjoin(page, true()))
            .order_by(*(key.clause() for key in in_page_order))
        )
        rows = await self._rows(statement, "list")
        return Page([build(row) for row in rows if row.id is not None], rows[0].total)

    async def list_categories(
        self, offset: int, limit: int, order: Order | None = None
    ) -> Page[Category]:
        plan = self.plans.categories(order, _newest(category))
        return await self._list(_CATEGORIES, category, plan, offset, limit, _category)

    async def list_grids(self, offset: int, limit: int, order: Order | None = None) -> Page[Grid]:
        plan = self.plans.grids(order, grid.c.id, _newest(grid))
        return await self._list(_GRIDS, grid, plan, offset, limit, _grid)

    async def list_packages(
        self,
        offset: int,
        limit: int,
        filter: PackageFilter | None = None,
        order: Order | None = None,
    ) -> Page[Package]:
        plan = self.plans.packages(filter, order, _newest(package))
        return await self._list(_PACKAGES, package, plan, offset, limit, _package)

    # -- search ---------------------------------------------------------------------------

    async def search(self, query: str) -> list[SearchHit]:
        statement = search_statement(query, self.features)
        if statement is None:
            return []
        return [search_hit(row) for row in await self._rows(statement, "search")]


def _positions(window: Window) -> tuple[int, int]:
    """The window as (after, last) row positions, kept inside bigint."""
    after = min(window.offset, _BIGINT_MAX)
    return after, min(after + window.limit, _BIGINT_MAX)
