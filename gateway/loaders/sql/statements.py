"""The backend's statements, each built once and kept for the life of the process.

Building a SQLAlchemy statement, and the cache key SQLAlchemy finds its compiled form by, costs
more than running a small one. So each kind of batch has its statement built once per shape (for
a relation or a list: the filter, order and cursors asked for) and kept; a batch binds only its
own values: ids, slugs, the windows it pages, a page's size. SQLAlchemy then finds the compiled
form by the key it derived once, and the driver its prepared statement by the same text.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import msgspec
from sqlalchemy import (
    ARRAY,
    CTE,
    JSON,
    BigInteger,
    ColumnElement,
    FromClause,
    Select,
    Table,
    any_,
    bindparam,
    column,
    func,
    select,
    true,
    union_all,
)

from gateway.loaders import records
from gateway.loaders.entities import fields_of
from gateway.loaders.records import Category, Grid, Order, Package, PackageFilter
from gateway.loaders.sql.features import SqlFeatures
from gateway.loaders.sql.relations import Relation, kind_of
from gateway.loaders.sql.sort_keys import Key, Plan, Plans, beyond
from gateway.loaders.sql.tables import category, grid, grid_package, package, version

__all__ = ["WINDOW_COLUMNS", "Shape", "Statements", "statements_for"]

# A window of a relation batch, as the statement reads it from its one JSON parameter: which
# answer it is, whose members it pages, and which of the statement's shapes it has.
WINDOW_COLUMNS = ("slot", "parent", "shape")

# Shapes kept per kind of batch: the ones a client's pages use again and again stay.
_KEPT_SHAPES = 512


class Shape(NamedTuple):
    """What makes a relation's or a list's statement: the rows it keeps, where its cursors
    fall and which end of them it takes (a page's size is a parameter)."""

    filter: PackageFilter | None
    order: Order | None
    after: records.Key | None
    before: records.Key | None
    backward: bool


def _selected(record: type[msgspec.Struct], table: Table, **elsewhere: Any) -> list[Any]:
    """The record's fields as columns labelled with its field names, in its order: the
    entity's own columns, and those `elsewhere` (joined) for the fields no column holds."""
    return [
        table.c[spec.column].label(spec.name) if spec.column else elsewhere[spec.name]
        for spec in fields_of(record)
    ]


class _Records(NamedTuple):
    """How a kind of record is read: its table's rows, with what `joins` add (outer joins)."""

    table: Table
    select: Select[Any]
    joins: tuple[tuple[Table, ColumnElement[bool]], ...] = ()

    def joined(self, rows: FromClause, id: ColumnElement[int]) -> FromClause:
        """`rows` joined to the records whose id is `id` (none where it is null)."""
        joined = rows.outerjoin(self.table, self.table.c.id == id)
        for table, on in self.joins:
            joined = joined.outerjoin(table, on)
        return joined


CATEGORIES = _Records(category, select(*_selected(Category, category)))
GRIDS = _Records(grid, select(*_selected(Grid, grid)))
_LATEST = ((version, version.c.id == package.c.latest_version_id),)
PACKAGES = _Records(
    package,
    select(
        *_selected(Package, package, pypi_version=version.c.number.label("pypi_version"))
    ).select_from(package.outerjoin(*_LATEST[0])),
    _LATEST,
)


def _newest(table: Table) -> tuple[Key]:
    """The upstream's order of a list: newest id first."""
    return (Key(table.c.id, descending=True),)


class _Related(NamedTuple):
    """A relation, how a window's filter and order make its plan, and its records."""

    relation: Relation
    plan: Callable[[PackageFilter | None, Order | None], Plan]
    records: _Records


class _Listed(NamedTuple):
    """A list: its table, how a page's filter and order make its plan, and its records."""

    table: Table
    plan: Callable[[PackageFilter | None, Order | None], Plan]
    records: _Records


@functools.cache
def statements_for(features: SqlFeatures) -> Statements:
    """The statements of a database with these features, for the life of the process."""
    return Statements(features)


class Statements:
    """One database's statements, built when first asked for and kept."""

    def __init__(self, features: SqlFeatures) -> None:
        self.features = features
        plans = self.plans = Plans(features)
        self.categories = CATEGORIES.select.where(self._one_of(category.c.id, "ids"))
        oldest = (  # category slugs are not unique: the oldest category with the slug answers
            select(func.min(category.c.id))
            .where(self._one_of(category.c.slug, "slugs"))
            .group_by(category.c.slug)
        )
        self.categories_by_slug = CATEGORIES.select.where(category.c.id.in_(oldest))
        self.grids = GRIDS.select.where(self._one_of(grid.c.id, "ids"))
        self.grids_by_slug = GRIDS.select.where(self._one_of(grid.c.slug, "slugs"))
        self.packages = PACKAGES.select.where(self._one_of(package.c.id, "ids"))
        self.packages_by_slug = PACKAGES.select.where(self._one_of(package.c.slug, "slugs"))
        by_title = (Key(plans.in_byte_order(package.c.title)), Key(package.c.id))
        in_membership_order = (Key(grid_package.c.id),)
        self._related = {
            "packages_of_grids": _Related(
                Relation(
                    grid_package.join(package, package.c.id == grid_package.c.package_id),
                    grid_package.c.grid_id,
                    package.c.id,
                ),
                lambda kept, order: plans.packages(kept, order, by_title),
                PACKAGES,
            ),
            "grids_of_packages": _Related(
                Relation(grid_package, grid_package.c.package_id, grid_package.c.grid_id),
                lambda kept, order: plans.grids(order, grid_package.c.grid_id, in_membership_order),
                GRIDS,
            ),
            "packages_of_categories": _Related(
                Relation(package, package.c.category_id, package.c.id),
                lambda kept, order: plans.packages(kept, order, _newest(package)),
                PACKAGES,
            ),
        }
        self._listed = {
            "categories": _Listed(
                category, lambda kept, order: plans.categories(order, _newest(category)), CATEGORIES
            ),
            "grids": _Listed(
                grid, lambda kept, order: plans.grids(order, grid.c.id, _newest(grid)), GRIDS
            ),
            "packages": _Listed(
                package, lambda kept, order: plans.packages(kept, order, _newest(package)), PACKAGES
            ),
        }
        self.relation = functools.lru_cache(maxsize=_KEPT_SHAPES)(self._relation)
        self.totals = functools.lru_cache(maxsize=None)(self._totals)
        self.list = functools.lru_cache(maxsize=_KEPT_SHAPES)(self._list)

    def _one_of(self, value: ColumnElement[Any], name: str) -> ColumnElement[bool]:
        """`value` among the values bound to `name`: one array on PostgreSQL (one statement
        text, prepared once, however many values), an expanded `IN` on SQLite."""
        if self.features.dialect == "postgresql":
            return value == any_(bindparam(name, type_=ARRAY(value.type)))
        return value.in_(bindparam(name, expanding=True))

    def _windows(self) -> CTE:
        """The batch's windows as a table (a CTE, so SQLite reads the JSON once), from one
        JSON parameter, `windows`: one parameter whatever the batch size, clear of the
        drivers' limits on parameters.
        """
        rows = bindparam("windows", type_=JSON)
        if self.features.dialect == "postgresql":
            columns = (column(name, BigInteger) for name in WINDOW_COLUMNS)
            table = (
                func.json_to_recordset(rows).table_valued(*columns).render_derived(with_types=True)
            )
            return select(table).cte("windows")
        each = func.json_each(rows).table_valued("value")
        fields = (
            func.json_extract(each.c.value, f"$.{name}").label(name) for name in WINDOW_COLUMNS
        )
        return select(*fields).cte("windows")

    def _relation(
        self, name: str, shapes: tuple[Shape, ...]
    ) -> tuple[Select[Any], list[list[str]]]:
        """Every window of a batch in one statement, and the kinds of each shape's key
        columns. The windows come in the `windows` parameter; each shape (`n`, in order) takes
        at most `size_n` members per window (`Relation.sliced`), all shapes in one UNION ALL,
        joined to their records; a window with no member in its slice is one row without a
        record, for its counts.
        """
        related = self._related[name]
        plans = [related.plan(shape.filter, shape.order) for shape in shapes]
        wanted = self._windows()
        postgresql = self.features.dialect == "postgresql"
        picked = union_all(
            *(
                related.relation.sliced(
                    plan,
                    index,
                    shape.after,
                    shape.before,
                    shape.backward,
                    bindparam(f"size_{index}", type_=BigInteger),
                    wanted,
                    postgresql,
                )
                for index, (plan, shape) in enumerate(zip(plans, shapes, strict=True))
            )
        ).subquery("picked")
        records = related.records
        statement = (
            select(
                *records.select.selected_columns,
                *(picked.c[name] for name in ("slot", "total", "lower", "upper")),
                *(c for c in picked.c if c.name.startswith("key_")),
            )
            .select_from(records.joined(picked, picked.c.member))
            .order_by(picked.c.slot, picked.c.position)
        )
        return statement, [[kind_of(key) for key in plan.keys] for plan in plans]

    def _totals(self, name: str) -> Select[int, int]:
        """Only sizes were asked for (`packageCount`, `gridCount`): count, rank nothing."""
        relation = self._related[name].relation
        return (
            select(relation.parent.label("parent"), func.count().label("total"))
            .select_from(relation.members)
            .where(self._one_of(relation.parent, "parents"))
            .group_by(relation.parent)
        )

    def _list(self, name: str, shape: Shape) -> tuple[Select[Any], int]:
        """A slice of a list, `size` rows, their count and where the cursors fall, in one
        statement; and how many sort keys each row carries.

        The rows strictly between the cursors are read by their keys, the first or the last
        of them; the counts are joined to the page (LEFT JOIN ... ON true), so that an empty
        page still brings them. The page carries its sort keys (`sort_0`, ...), to be put back
        in order by and to make its cursors.
        """
        listed = self._listed[name]
        plan = listed.plan(shape.filter, shape.order)
        past = None if shape.after is None else beyond(plan.keys, shape.after, later=True)
        short = None if shape.before is None else beyond(plan.keys, shape.before, later=False)
        counts = select(
            func.count().label("total"),
            (func.count() if past is None else func.count().filter(past)).label("past"),
            (func.count() if short is None else func.count().filter(short)).label("upper"),
        ).select_from(listed.table)
        cursors = past is not None or short is not None
        counted = plan.apply if cursors else plan.filtered
        total = counted(counts).subquery("total")  # type: ignore[arg-type]
        sorts = [key.value.label(f"sort_{index}") for index, key in enumerate(plan.keys)]
        between = [condition for condition in (past, short) if condition is not None]
        page = (
            plan.apply(listed.records.select.add_columns(*sorts))
            .where(*between)
            .order_by(*plan.order_by(reverse=shape.backward))
            .limit(bindparam("size", type_=BigInteger))
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
        return statement, len(sorts)
