"""The backend's statements, each built and compiled once and kept for the life of the process.

Building a SQLAlchemy statement, deriving its cache key and finding its compiled form cost more
than running a small one. So each kind of batch has its statement built once per shape (for a
relation or a list: the filter, order and direction asked for, and which cursors it has),
compiled to its SQL for the database's dialect, and kept (`Prepared`); a batch binds only its
own values, by position: ids, slugs, the windows it pages, a page's size, its cursors' keys.
The driver keeps its prepared statement by the same text, so a client paging through a list
costs no new statement per page. The values a shape compiles in (a filter's) are processed by
their types once, at compile time; a cursor's key, as each execution binds it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence, Set
from typing import Any, NamedTuple

import msgspec
import orjson
from sqlalchemy import (
    ARRAY,
    CTE,
    JSON,
    BigInteger,
    BindParameter,
    ColumnElement,
    FromClause,
    Select,
    String,
    Table,
    Text,
    any_,
    bindparam,
    cast,
    column,
    func,
    select,
    true,
    union_all,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import ClauseElement
from sqlalchemy.types import TypeEngine

from gateway.loaders import records
from gateway.loaders.entities import fields_of
from gateway.loaders.records import Category, Form, Grid, Order, Package, PackageFilter, Slice
from gateway.loaders.sql.features import SqlFeatures
from gateway.loaders.sql.relations import Relation, key_columns, kind_of
from gateway.loaders.sql.sort_keys import Key, Plan, Plans, beyond
from gateway.loaders.sql.tables import category, grid, grid_package, package, version

__all__ = [
    "WINDOW_COLUMNS",
    "Listing",
    "Prepared",
    "Shape",
    "Statements",
    "Windowed",
    "cursor_values",
    "shape_of",
    "statements_for",
]

# A window of a relation batch, as the statement reads it from the JSON parameter of its
# shape: which answer it is, and whose members it pages.
WINDOW_COLUMNS = ("slot", "parent")

# Shapes kept per kind of batch: the ones a client's pages use again and again stay.
_KEPT_SHAPES = 512


class Shape(NamedTuple):
    """What makes a relation's or a list's statement: the rows it keeps, their order, which
    cursors it has and which end of the rows between them it takes. A cursor's shape is which
    terms of its key are null (None: no cursor); its key, like a page's size, is a parameter
    (`cursor_values`)."""

    filter: PackageFilter | None
    order: Order | None
    after: tuple[bool, ...] | None
    before: tuple[bool, ...] | None
    backward: bool


def shape_of(filter: PackageFilter | None, order: Order | None, slice: Slice) -> Shape:
    """The shape of a slice's statement."""
    return Shape(filter, order, _nulls(slice.after), _nulls(slice.before), slice.backward)


def _nulls(key: records.Key | None) -> tuple[bool, ...] | None:
    return None if key is None else tuple(value is None for value in key)


def cursor_values(slice: Slice, part: int | None = None) -> dict[str, Any]:
    """What a slice's cursors bind: the terms of their keys that are not null, as the
    statement of its shape names them (those of a relation's `part`, for a relation)."""
    values: dict[str, Any] = {}
    for side, key in (("after", slice.after), ("before", slice.before)):
        for term, value in enumerate(key or ()):
            if value is not None:
                values[f"{_cursor(side, part)}_{term}"] = value
    return values


def _cursor(side: str, part: int | None) -> str:
    """The prefix of a cursor's parameters (`sort_keys.beyond`)."""
    return side if part is None else f"{side}_{part}"


class Prepared(NamedTuple):
    """A statement compiled for one dialect: its SQL, each positional parameter's name, the
    values compiled into it, processed as their types say, and how to process those bound
    with each execution (only those whose type asks for it)."""

    sql: str
    names: tuple[str, ...]
    fixed: Mapping[str, Any]
    processors: Mapping[str, Callable[[Any], Any]]

    def parameters(self, values: Mapping[str, Any]) -> tuple[Any, ...]:
        """The statement's parameters, in order: `values` by name, and its own."""
        if self.processors:
            values = {
                name: process(values[name]) if (process := self.processors.get(name)) else value
                for name, value in values.items()
            }
        fixed = self.fixed
        return tuple(values[name] if name in values else fixed[name] for name in self.names)


def _parameter(name: str, type_: TypeEngine[Any]) -> BindParameter[Any]:
    """A parameter each execution binds (`Prepared.parameters`); compiled without a value."""
    return bindparam(name, None, type_=type_)


def _prepare(
    statement: ClauseElement, dialect: Dialect, bound: Set[str], typed: Set[str] = frozenset()
) -> Prepared:
    """`statement` compiled for `dialect`. The parameters named in `bound` come with each
    execution as the driver takes them, those in `typed` (a cursor's key) as the gateway
    holds them, to be processed as their types say; the others are its own values,
    processed once here."""
    compiled = statement.compile(dialect=dialect)
    assert isinstance(compiled, SQLCompiler) and compiled.positiontup is not None
    assert "POSTCOMPILE" not in compiled.string, "an expanding IN has no fixed SQL"
    names = tuple(compiled.positiontup)
    own = compiled.construct_params()
    fixed, processors = {}, {}
    for name in set(names) - bound:
        process = compiled.binds[name].type.dialect_impl(dialect).bind_processor(dialect)
        if name in typed:
            if process is not None:
                processors[name] = process
        else:
            fixed[name] = own[name] if process is None else process(own[name])
    return Prepared(compiled.string, names, fixed, processors)


def _cursor_parameters(keys: Sequence[Key], part: int | None = None) -> set[str]:
    """The names a slice's cursors may bind, for an order of these `keys`."""
    return {
        f"{_cursor(side, part)}_{term}" for side in ("after", "before") for term in range(len(keys))
    }


def _selected(record: type[msgspec.Struct], table: Table, **elsewhere: Any) -> list[Any]:
    """The record's fields as columns labelled with its field names, in its order: the
    entity's own columns (JSON as its text, which every driver hands over as it is), and
    those `elsewhere` (joined) for the fields no column holds."""
    columns = []
    for spec in fields_of(record):
        value = table.c[spec.column] if spec.column else elsewhere[spec.name]
        if spec.column_form is Form.JSON:
            value = cast(value, Text)
        columns.append(value.label(spec.name))
    return columns


class Windowed(NamedTuple):
    """A relation batch's statement (`Statements.relation`) and how to read its rows: after
    the record's fields come the window's `slot`, the member's `position` in it and the
    window's `total`, with `bounded` where its cursors fall (`lower`, `upper`: when a shape
    has cursors), then the key columns; for each shape, the kinds of its key's terms and
    which key columns hold them."""

    statement: Prepared
    bounded: bool
    kinds: list[list[str]]
    keys: list[list[int]]


class Listing(NamedTuple):
    """A list's statements for one shape (`Statements.list`): a slice of it with the list's
    counts, the counts alone, and the kinds of the sort keys the slice's rows carry."""

    page: Prepared
    counts: Prepared
    kinds: list[str]


class _Records(NamedTuple):
    """How a kind of record is read: its table's rows, with what `joins` add (outer joins)."""

    table: Table
    select: Select[Any]
    joins: tuple[tuple[Table, ColumnElement[bool]], ...] = ()

    def joined(
        self, rows: FromClause, id: ColumnElement[int], postgresql: bool
    ) -> tuple[FromClause, list[ColumnElement[Any]]]:
        """`rows` joined to the records whose id is `id` (none where it is null), and the
        records' columns.

        On PostgreSQL each row's record is a LATERAL subquery of one row: a lookup by primary
        key per row, whatever the planner guesses of how many rows the windows make (it cannot
        see into their JSON, and would rather scan the whole table).
        """
        if postgresql:
            record = self.select.where(self.table.c.id == id).limit(1).lateral("record")
            return rows.outerjoin(record, true()), list(record.c)
        joined = rows.outerjoin(self.table, self.table.c.id == id)
        for table, on in self.joins:
            joined = joined.outerjoin(table, on)
        return joined, list(self.select.selected_columns)


CATEGORIES = _Records(category, select(*_selected(Category, category)))
GRIDS = _Records(grid, select(*_selected(Grid, grid)))
_LATEST = ((version, version.c.id == package.c.latest_version_id),)
PACKAGES = _Records(
    package,
    select(*_selected(Package, package, pypi_version=version.c.number)).select_from(
        package.outerjoin(*_LATEST[0])
    ),
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


# The parameters each execution binds.
_BOUND = frozenset({"ids", "slugs", "parents", "size"})


@functools.lru_cache(maxsize=64)
def statements_for(features: SqlFeatures, dialect: Dialect) -> Statements:
    """The statements of a database with these features, for the life of its engine."""
    return Statements(features, dialect)


class Statements:
    """One database's statements, built when first asked for and kept."""

    def __init__(self, features: SqlFeatures, dialect: Dialect) -> None:
        self.features = features
        self.dialect = dialect
        self.sqlite = features.dialect == "sqlite"
        plans = self.plans = Plans(features)
        self.categories = self._lookup(CATEGORIES.select.where(self._one_of(category.c.id, "ids")))
        oldest = (  # category slugs are not unique: the oldest category with the slug answers
            select(func.min(category.c.id))
            .where(self._one_of(category.c.slug, "slugs"))
            .group_by(category.c.slug)
        )
        self.categories_by_slug = self._lookup(CATEGORIES.select.where(category.c.id.in_(oldest)))
        self.grids = self._lookup(GRIDS.select.where(self._one_of(grid.c.id, "ids")))
        self.grids_by_slug = self._lookup(GRIDS.select.where(self._one_of(grid.c.slug, "slugs")))
        self.packages = self._lookup(PACKAGES.select.where(self._one_of(package.c.id, "ids")))
        self.packages_by_slug = self._lookup(
            PACKAGES.select.where(self._one_of(package.c.slug, "slugs"))
        )
        by_title = (Key(plans.in_byte_order(package.c.title)), Key(package.c.id))
        in_membership_order = (Key(grid_package.c.id),)
        self._related = {
            "packages_of_grids": _Related(
                Relation(
                    grid_package.join(package, package.c.id == grid_package.c.package_id),
                    grid_package.c.grid_id,
                    package.c.id,
                    grid_package,
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

    def _lookup(self, statement: ClauseElement) -> Prepared:
        return _prepare(statement, self.dialect, _BOUND)

    def _one_of(self, value: ColumnElement[Any], name: str) -> ColumnElement[bool]:
        """`value` among the values bound to `name` (`array`): one parameter whatever their
        number, so one statement text, prepared once: an array on PostgreSQL, a JSON array
        on SQLite."""
        if self.sqlite:
            each = func.json_each(_parameter(name, String())).table_valued("value")
            return value.in_(select(each.c.value))
        return value == any_(_parameter(name, ARRAY(value.type)))

    def array(self, values: Sequence[Any]) -> Any:
        """`values` as a parameter of `_one_of`."""
        return orjson.dumps(values).decode() if self.sqlite else values

    def json(self, value: Any) -> str:
        """`value` as a JSON parameter (the windows)."""
        return orjson.dumps(value).decode()

    def _windows(self, name: str) -> CTE:
        """The windows of one shape as a table (a CTE, so SQLite reads the JSON once), from one
        JSON parameter, `name`: one parameter whatever the batch size, clear of the drivers'
        limits on parameters. (A shape of its own, rather than a column of one table of all
        the windows: PostgreSQL cannot estimate how many windows such a filter keeps, and
        planned for one.)
        """
        rows = _parameter(name, JSON())
        if not self.sqlite:
            columns = (column(name, BigInteger) for name in WINDOW_COLUMNS)
            table = (
                func.json_to_recordset(rows).table_valued(*columns).render_derived(with_types=True)
            )
            return select(table).cte(name)
        each = func.json_each(rows).table_valued("value")
        fields = (func.json_extract(each.c.value, f"$.{key}").label(key) for key in WINDOW_COLUMNS)
        return select(*fields).cte(name)

    def _relation(self, name: str, shapes: tuple[Shape, ...]) -> Windowed:
        """Every window of a batch in one statement, and how to read its rows. Each shape
        (`n`, in order) takes its windows from the `windows_n` parameter and at most `size_n`
        members per window (`Relation.sliced`), all shapes in one UNION ALL, joined to their
        records; a window with no member in its slice is one row without a record, for its
        counts. The rows come in no order: each says its window and its place in it.
        """
        related = self._related[name]
        plans = [related.plan(shape.filter, shape.order) for shape in shapes]
        columns = key_columns(plans)
        bounded = any(shape.after is not None or shape.before is not None for shape in shapes)
        sizes = [f"size_{index}" for index in range(len(shapes))]
        windows = [f"windows_{index}" for index in range(len(shapes))]
        shaped = union_all(
            *(
                related.relation.sliced(
                    plan,
                    index,
                    shape.after,
                    shape.before,
                    shape.backward,
                    _parameter(sizes[index], BigInteger()),
                    self._windows(windows[index]),
                    not self.sqlite,
                    cursors=(_cursor("after", index), _cursor("before", index)),
                    columns=columns,
                    bounded=bounded,
                )
                for index, (plan, shape) in enumerate(zip(plans, shapes, strict=True))
            )
        )
        picked = shaped.subquery("picked")
        joined, fields = related.records.joined(picked, picked.c.member, not self.sqlite)
        counted = ("slot", "position", "total", *(("lower", "upper") if bounded else ()))
        statement = select(
            *fields,
            *(picked.c[name] for name in counted),
            *(c for c in picked.c if c.name.startswith("key_")),
        ).select_from(joined)
        cursors = (_cursor_parameters(plan.keys, index) for index, plan in enumerate(plans))
        bound = _BOUND.union(sizes, windows)
        return Windowed(
            _prepare(statement, self.dialect, bound, set().union(*cursors)),
            bounded,
            [[kind_of(key) for key in plan.keys] for plan in plans],
            [
                [columns.index((term, kind_of(key))) for term, key in enumerate(plan.keys)]
                for plan in plans
            ],
        )

    def _totals(self, name: str) -> Prepared:
        """Only sizes were asked for (`packageCount`, `gridCount`): count, rank nothing."""
        relation = self._related[name].relation
        statement = (
            select(relation.parent.label("parent"), func.count().label("total"))
            .select_from(relation.counted)
            .where(self._one_of(relation.parent, "parents"))
            .group_by(relation.parent)
        )
        return self._lookup(statement)

    def _list(self, name: str, shape: Shape) -> Listing:
        """A slice of a list, its counts, and the kinds of the sort keys its rows carry.

        The slice is `size` rows strictly between the cursors, the first or the last of them
        by their keys (the last ones last first), each with its sort keys (`sort_0`, ...: to
        make its cursor) and the list's counts: its `total`, then where the cursors it has
        fall (`past`, `upper`). The counts are one row, computed once and read by every row
        of the slice, which is read at the top of its statement: joined to the counts (so that
        an empty slice still brings them) SQLite stored the slice, then sorted it again, half
        as much work again as reading it. An empty slice's counts are read alone (`counts`).
        """
        listed = self._listed[name]
        plan = listed.plan(shape.filter, shape.order)
        past = None if shape.after is None else beyond(plan.keys, shape.after, True, "after")
        short = None if shape.before is None else beyond(plan.keys, shape.before, False, "before")
        # Without cursors, one count(*) alone: SQLite then counts the b-tree's entries instead
        # of stepping through its rows.
        aggregates = [func.count().label("total")]
        if past is not None:
            aggregates.append(func.count().filter(past).label("past"))
        if short is not None:
            aggregates.append(func.count().filter(short).label("upper"))
        counted = plan.apply if past is not None or short is not None else plan.filtered
        counts = (
            counted(select(*aggregates).select_from(listed.table))  # type: ignore[arg-type]
            .cte("counts")
            .prefix_with("MATERIALIZED")
        )
        sorts = [key.value.label(f"sort_{index}") for index, key in enumerate(plan.keys)]
        each = [select(count).scalar_subquery().label(count.name) for count in counts.c]
        between = [condition for condition in (past, short) if condition is not None]
        page = (
            plan.apply(listed.records.select.add_columns(*sorts, *each))
            .where(*between)
            .order_by(*plan.order_by(reverse=shape.backward))
            .limit(_parameter("size", BigInteger()))
        )
        cursors = _cursor_parameters(plan.keys)
        return Listing(
            _prepare(page, self.dialect, _BOUND, cursors),
            _prepare(select(counts), self.dialect, _BOUND, cursors),
            [kind_of(key) for key in plan.keys],
        )
