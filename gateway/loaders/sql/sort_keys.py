"""Package filters and list orders in SQL, agreeing with Python's to the row.

Case-insensitive means Python's `str.lower`, and titles order by code point (records.py), which
SQL cannot say portably: SQLite's lower() knows ASCII only, PostgreSQL's follows the database's
LC_CTYPE, and PostgreSQL's default collation its locale. So `write_dataset` stores the keys
computed by Python (`title_key`, `text_key`) in key tables beside the rows (tables.py), compared
byte by byte, and a word is a plain substring test (instr, strpos: no LIKE wildcards).

A database the gateway does not own has no key tables: lower() then stands in, in byte order.
That agrees with Python only for ASCII text on SQLite, and on PostgreSQL only as far as the
database's LC_CTYPE lower-cases as Python does (a UTF-8 locale mostly does; "C" does ASCII only;
neither knows Python's special cases such as the final sigma).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from sqlalchemy import (
    Column,
    ColumnElement,
    Select,
    Table,
    bindparam,
    exists,
    false,
    func,
    literal,
    select,
)
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.loaders.records import Order, PackageFilter, text_key, title_key
from gateway.loaders.sql.features import SqlFeatures
from gateway.loaders.sql.rows import Dataset
from gateway.loaders.sql.tables import (
    category,
    category_key,
    grid,
    grid_key,
    grid_package,
    package,
    package_key,
    version,
)

__all__ = ["Key", "Plan", "Plans", "beyond", "build_sort_keys"]


async def build_sort_keys(connection: AsyncConnection, dataset: Dataset) -> None:
    """Make the key tables the dataset's keys; call it in the transaction that wrote the rows."""
    keys: tuple[tuple[Table, list[dict[str, Any]]], ...] = (
        (
            package_key,
            [
                {
                    "package_id": row.id,
                    "title_key": title_key(row.title),
                    "text_key": text_key(row.title, row.slug, row.repo_description),
                }
                for row in dataset.packages
            ],
        ),
        (
            grid_key,
            [{"grid_id": row.id, "title_key": title_key(row.title)} for row in dataset.grids],
        ),
        (
            category_key,
            [
                {"category_id": row.id, "title_key": title_key(row.title)}
                for row in dataset.categories
            ],
        ),
    )
    for table, rows in keys:
        await connection.execute(table.delete())
        if rows:
            await connection.execute(table.insert(), rows)


class Key(NamedTuple):
    """One term of an order; a value that may be null puts its nulls last either way."""

    value: ColumnElement[Any]
    descending: bool = False
    nullable: bool = False

    def clause(self, reverse: bool = False) -> ColumnElement[Any]:
        """This term of the order, or with `reverse` of the order read from its end."""
        term = self.value.desc() if self.descending != reverse else self.value.asc()
        if not self.nullable:
            return term
        return term.nulls_first() if reverse else term.nulls_last()


def beyond(
    keys: Sequence[Key], nulls: Sequence[bool], later: bool, name: str
) -> ColumnElement[bool]:
    """The rows strictly after (`later`) or strictly before a cursor's key in the order of
    `keys`, term by term; a null comes after every value, and equals another null. `nulls`
    says which terms of the cursor's key are null; the others are parameters bound with each
    execution, `{name}_{term}` (typed as their term), so that every cursor of an order and
    direction shares one statement."""
    return _beyond(keys, nulls, later, name, 0)


def _beyond(
    keys: Sequence[Key], nulls: Sequence[bool], later: bool, name: str, term: int
) -> ColumnElement[bool]:
    (key, *rest), (null, *more) = keys, nulls
    tail = _beyond(rest, more, later, name, term + 1) if rest else false()
    column = key.value
    if null:
        if later:
            return column.is_(None) & tail
        return column.is_not(None) | (column.is_(None) & tail)
    bound = bindparam(f"{name}_{term}", None, type_=column.type)
    past = column > bound if later != key.descending else column < bound
    condition = past | ((column == bound) & tail)
    return column.is_(None) | condition if later and key.nullable else condition


@dataclass
class Plan:
    """What one filter and order add to a query over the records they are about."""

    keys: Sequence[Key] = ()
    where: list[ColumnElement[bool]] = field(default_factory=list)
    joins: dict[Table, ColumnElement[bool]] = field(default_factory=dict)  # what `where` reads
    sort_joins: dict[Table, ColumnElement[bool]] = field(default_factory=dict)  # what `keys` read

    def filtered(self, query: Select[Any]) -> Select[Any]:
        """The query with the rows the filter keeps: enough to count them."""
        return _joined(query, self.joins).where(*self.where)

    def apply(self, query: Select[Any]) -> Select[Any]:
        """The query with the rows the filter keeps, joined to what their order reads."""
        return _joined(query, self.sort_joins | self.joins).where(*self.where)

    def order_by(self, reverse: bool = False) -> list[ColumnElement[Any]]:
        return [key.clause(reverse) for key in self.keys]


def _joined(query: Select[Any], joins: Mapping[Table, ColumnElement[bool]]) -> Select[Any]:
    for table, on in joins.items():
        query = query.join(table, on)
    return query


class _Kind(NamedTuple):
    """A kind of record that can be ordered by title: its table and its key table."""

    table: Table
    keys: Table
    key_id: Column[int]


_PACKAGE = _Kind(package, package_key, package_key.c.package_id)
_GRID = _Kind(grid, grid_key, grid_key.c.grid_id)
_CATEGORY = _Kind(category, category_key, category_key.c.category_id)

_PACKAGE_COLUMNS: dict[str, ColumnElement[Any]] = {
    "repo_watchers": package.c.repo_watchers,
    "repo_forks": package.c.repo_forks,
    "last_updated": package.c.last_commit_date,
    "created": package.c.created,
    "modified": package.c.modified,
    "id": package.c.id,
}

# Subqueries read their own aliases, never the rows of the query around them.
_released = version.alias("released")
_listed = grid_package.alias("listed")
_listing = grid.alias("listing")
_counted = grid_package.alias("counted")
_counted_package = package.alias("counted_package")


class Plans:
    """The plans for one database: with its key tables if it has them, else lower()."""

    def __init__(self, features: SqlFeatures) -> None:
        self.postgresql = features.dialect == "postgresql"
        self.stored = features.sort_keys

    def in_byte_order(self, text: ColumnElement[str]) -> ColumnElement[str]:
        """`text` compared by code point: SQLite's default, not always PostgreSQL's."""
        return text.collate("C") if self.postgresql else text

    def packages(
        self, kept: PackageFilter | None, order: Order | None, default: Sequence[Key]
    ) -> Plan:
        """Packages that pass `kept` (if any), by `order` or else by `default`."""
        plan = Plan(default)
        if kept is not None:
            self._filter(plan, kept)
        self._order(plan, order, _PACKAGE, package.c.id, _PACKAGE_COLUMNS)
        return plan

    def grids(
        self, order: Order | None, grid_id: ColumnElement[int], default: Sequence[Key]
    ) -> Plan:
        """Grids (whose ids `grid_id` holds) by `order`, or else by `default`."""
        members = select(func.count()).select_from(_counted).where(_counted.c.grid_id == grid_id)
        return self._records(_GRID, order, grid_id, members, default)

    def categories(self, order: Order | None, default: Sequence[Key]) -> Plan:
        """Categories by `order`, or else by `default`."""
        members = (
            select(func.count())
            .select_from(_counted_package)
            .where(_counted_package.c.category_id == category.c.id)
        )
        return self._records(_CATEGORY, order, category.c.id, members, default)

    def _records(
        self,
        kind: _Kind,
        order: Order | None,
        id_: ColumnElement[int],
        members: Select[Any],
        default: Sequence[Key],
    ) -> Plan:
        plan = Plan(default)
        values = {"id": id_, "package_count": members.scalar_subquery()}
        self._order(plan, order, kind, id_, values)
        return plan

    def _order(
        self,
        plan: Plan,
        order: Order | None,
        kind: _Kind,
        id_: ColumnElement[int],
        values: Mapping[str, ColumnElement[Any]],
    ) -> None:
        """Order by `order` (unless None): its field, then the id, both the same way."""
        if order is None:
            return
        if order.field == "title":
            value = self._title(plan.sort_joins, kind, id_)
        else:
            value = values[order.field]
        nullable = isinstance(value, Column) and bool(value.nullable)
        plan.keys = (Key(value, order.descending, nullable), Key(id_, order.descending))

    def _filter(self, plan: Plan, kept: PackageFilter) -> None:
        """Keep the packages that meet every condition set; the costly word scan last."""
        if kept.category is not None:
            slugs = select(category.c.id).where(category.c.slug == kept.category)
            plan.where.append(package.c.category_id.in_(slugs))
        if kept.grids:
            grids = sorted(set(kept.grids))
            in_all = (
                select(_listed.c.package_id)
                .join(_listing, _listing.c.id == _listed.c.grid_id)
                .where(_listing.c.slug.in_([literal(slug) for slug in grids]))  # not expanding
                .group_by(_listed.c.package_id)
                .having(func.count(_listing.c.slug.distinct()) == len(grids))
            )
            plan.where.append(package.c.id.in_(in_all))
        if kept.has_pypi_release is not None:
            released = exists().where(_released.c.id == package.c.latest_version_id)
            plan.where.append(released if kept.has_pypi_release else ~released)
        if kept.updated_after is not None:
            plan.where.append(package.c.last_commit_date > kept.updated_after)
        if kept.updated_before is not None:
            plan.where.append(package.c.last_commit_date < kept.updated_before)
        if kept.min_watchers is not None:
            plan.where.append(package.c.repo_watchers >= kept.min_watchers)
        if kept.words:
            text = self._text(plan.joins)
            find = func.strpos if self.postgresql else func.instr
            plan.where.extend(find(text, word) > 0 for word in kept.words)

    def _title(
        self, joins: dict[Table, ColumnElement[bool]], kind: _Kind, id_: ColumnElement[int]
    ) -> ColumnElement[str]:
        """The `title_key` of the record whose id is `id_`, adding the join it needs."""
        if self.stored:
            joins[kind.keys] = kind.key_id == id_
            return kind.keys.c.title_key
        if id_ is not kind.table.c.id:
            joins[kind.table] = kind.table.c.id == id_
        return self.in_byte_order(func.lower(kind.table.c.title))

    def _text(self, joins: dict[Table, ColumnElement[bool]]) -> ColumnElement[str]:
        """A package's `text_key`, adding the join it needs."""
        if self.stored:
            joins[package_key] = package_key.c.package_id == package.c.id
            return package_key.c.text_key
        return func.lower(
            package.c.title + "\n" + package.c.slug + "\n" + package.c.repo_description
        )
