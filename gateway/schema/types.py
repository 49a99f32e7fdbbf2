"""The GraphQL object types.

The backends' records (gateway/loaders/records.py) are served as these types directly:
scalar fields read the record's attributes, so only ids and relations need a resolver,
and relations only ask a loader. A connection's resolver serves the root's list of its kind
(`Query.packages`, where there is no parent) as well as each parent's relation (`RELATIONS`).
"""

from __future__ import annotations

from binascii import b2a_base64
from collections.abc import Awaitable, Callable
from datetime import datetime
from enum import Enum
from functools import partial
from operator import attrgetter
from typing import Any

import strawberry

from gateway.loaders import records
from gateway.loaders.loaders import Loader, Loaders
from gateway.loaders.records import Page, Slice, Window
from gateway.schema.context import Info
from gateway.schema.inputs import (
    CategoryOrder,
    GridOrder,
    PackageFilter,
    PackageOrder,
    order,
    package_filter,
)
from gateway.schema.pagination import (
    BY_ID,
    BY_MEMBERSHIP,
    BY_TITLE,
    Connection,
    Layout,
    Paged,
    connection,
    paged,
)


def _type_of(record_class: type) -> Any:
    """An `is_type_of` that recognises the backends' records as this type."""

    def is_type_of(cls: type, obj: object, info: Any) -> bool:
        return isinstance(obj, record_class)

    return classmethod(is_type_of)


@strawberry.interface(description="An object with a globally unique, opaque id.")
class Node:
    id: strawberry.ID

    @classmethod
    def resolve_type(cls, obj: object, info: Any, type_: Any) -> str | None:
        return NODE_TYPE_NAMES.get(type(obj))


def global_id(
    root: strawberry.Parent[records.Category | records.Grid | records.Package],
) -> strawberry.ID:
    return strawberry.ID(GLOBAL_IDS[NODE_TYPE_NAMES[type(root)]](root))


def global_ids(type_name: str) -> Callable[[Any], str]:
    """The global id of a record of the type `type_name`: Strawberry's `to_base64` of the
    type name and the record's id, written in one call."""
    prefix = f"{type_name}:"
    return lambda record: b2a_base64(f"{prefix}{record.id}".encode(), newline=False).decode()


def database_id(root: strawberry.Parent[records.Category | records.Grid | records.Package]) -> int:
    return root.id


async def found(record: Awaitable[Any] | None) -> Any:
    """What a lookup found: the record its loader's future gives, or None without one."""
    return None if record is None else await record


Relation = Callable[[Loaders], Loader[Window, Page[Any]]]

# The loader that windows each relation: asked by the resolvers below and by the engine.
CATEGORY_PACKAGES: Relation = attrgetter("packages_of_category")
GRID_PACKAGES: Relation = attrgetter("packages_of_grid")
PACKAGE_GRIDS: Relation = attrgetter("grids_of_package")

# Each parent's relation (a category's or a grid's packages, a package's grids), and the order
# of its own that its cursors follow unless ordered otherwise.
RELATIONS: dict[type, tuple[Relation, Layout]] = {
    records.Category: (CATEGORY_PACKAGES, BY_ID),
    records.Grid: (GRID_PACKAGES, BY_TITLE),
    records.Package: (PACKAGE_GRIDS, BY_MEMBERSHIP),
}


def counted(parent: int) -> Window:
    """The window whose total is a relation's size: empty, and batched like any window."""
    return Window(parent, Slice(0))


def window_of(
    own_order: Layout,
    first: int | None,
    last: int | None,
    after: str | None,
    before: str | None,
    filter: records.PackageFilter | None = None,
    order: records.Order | None = None,
) -> tuple[Paged, Callable[[int], Window]]:
    """A slice of a relation whose own order's key is `own_order`, and each parent's window
    of it (by the parent's id). The resolvers below and the engine (gateway/engine/) share it."""
    page = paged(first, last, after, before, own_order, order, filter, order)
    slice = page.slice
    return page, lambda parent: Window(parent, slice, filter, order)


def list_page(
    load: Callable[..., Awaitable[Page[Any]]],
    first: int | None,
    last: int | None,
    after: str | None,
    before: str | None,
    *arguments: Any,
) -> tuple[Paged, Callable[[], Awaitable[Page[Any]]]]:
    """A slice of a whole list (newest id first unless ordered), and what loads it:
    `load(slice, *arguments)`, the list's filter (packages only) then its order, both the
    cursors' shape. The resolvers below and the engine (gateway/engine/) share it."""
    order: records.Order | None = arguments[-1]
    page = paged(first, last, after, before, BY_ID, order, *arguments)
    return page, partial(load, page.slice, *arguments)


async def _connection(page: Paged, load: Callable[[], Awaitable[Page[Any]]]) -> Connection[Any]:
    """The connection of the slice `page` of a list or relation, once `load` has loaded it."""
    return connection(await load(), page.slice, page.shape)


async def _relation(root: Any, info: Info, *arguments: Any) -> Connection[Any]:
    """The connection of the parent's relation: `arguments` are `window_of`'s from `first`."""
    relation, own_order = RELATIONS[type(root)]
    page, window = window_of(own_order, *arguments)
    return await _connection(page, partial(relation(info.context.loaders).load, window(root.id)))


# The resolvers of the connections of each kind: the whole list at the root (where there is no
# parent), else the parent's relation; filtered and ordered as asked.


async def category_connection(
    info: Info,
    first: int | None = strawberry.UNSET,
    after: str | None = strawberry.UNSET,
    last: int | None = strawberry.UNSET,
    before: str | None = strawberry.UNSET,
    order_by: CategoryOrder | None = strawberry.UNSET,
) -> Connection[Any]:
    load = info.context.loaders.list_categories
    return await _connection(*list_page(load, first, last, after, before, order(order_by)))


async def grid_connection(
    root: strawberry.Parent[records.Package | None],
    info: Info,
    first: int | None = strawberry.UNSET,
    after: str | None = strawberry.UNSET,
    last: int | None = strawberry.UNSET,
    before: str | None = strawberry.UNSET,
    order_by: GridOrder | None = strawberry.UNSET,
) -> Connection[Any]:
    ordered = order(order_by)
    if root is None:
        load = info.context.loaders.list_grids
        return await _connection(*list_page(load, first, last, after, before, ordered))
    return await _relation(root, info, first, last, after, before, None, ordered)


async def package_connection(
    root: strawberry.Parent[records.Category | records.Grid | None],
    info: Info,
    first: int | None = strawberry.UNSET,
    after: str | None = strawberry.UNSET,
    last: int | None = strawberry.UNSET,
    before: str | None = strawberry.UNSET,
    filter: PackageFilter | None = strawberry.UNSET,
    order_by: PackageOrder | None = strawberry.UNSET,
) -> Connection[Any]:
    kept, ordered = package_filter(filter), order(order_by)
    if root is None:
        load = info.context.loaders.list_packages
        return await _connection(*list_page(load, first, last, after, before, kept, ordered))
    return await _relation(root, info, first, last, after, before, kept, ordered)


async def _count(
    root: strawberry.Parent[records.Category | records.Grid | records.Package], info: Info
) -> int:
    """The size of the parent's relation: `packageCount`, `gridCount`."""
    relation, _ = RELATIONS[type(root)]
    return (await relation(info.context.loaders).load(counted(root.id))).total


async def _package_category(root: strawberry.Parent[records.Package], info: Info) -> Any:
    return await info.context.loaders.categories.by_id.load(root.category_id)


@strawberry.type(description="A category of packages: App, Framework, Other, Project.")
class Category(Node):
    id: strawberry.ID = strawberry.field(resolver=global_id)
    database_id: int = strawberry.field(resolver=database_id, description="The REST id.")
    title: str
    slug: str
    description: str
    title_plural: str
    show_pypi: bool
    created: datetime
    modified: datetime
    packages: Connection[Package] = strawberry.field(
        resolver=package_connection,
        description="The packages in this category, newest first unless ordered.",
    )
    package_count: int = strawberry.field(
        resolver=_count, description="How many packages this category has."
    )
    is_type_of = _type_of(records.Category)


@strawberry.type(description="A comparison grid of packages.")
class Grid(Node):
    id: strawberry.ID = strawberry.field(resolver=global_id)
    database_id: int = strawberry.field(resolver=database_id, description="The REST id.")
    title: str
    slug: str
    description: str
    is_locked: bool
    header: bool
    created: datetime
    modified: datetime
    packages: Connection[Package] = strawberry.field(
        resolver=package_connection,
        description="The packages in this grid, by title unless ordered.",
    )
    package_count: int = strawberry.field(
        resolver=_count, description="How many packages this grid lists."
    )
    is_type_of = _type_of(records.Grid)


@strawberry.type(description="A Django package.")
class Package(Node):
    id: strawberry.ID = strawberry.field(resolver=global_id)
    database_id: int = strawberry.field(resolver=database_id, description="The REST id.")
    title: str
    slug: str
    category: Category = strawberry.field(resolver=_package_category)
    grids: Connection[Grid] = strawberry.field(
        resolver=grid_connection, description="The grids listing this package."
    )
    grid_count: int = strawberry.field(
        resolver=_count, description="How many grids list this package."
    )
    last_updated: datetime | None = strawberry.field(description="Date of the last commit.")
    last_fetched: datetime | None
    repo_url: str
    pypi_version: str | None
    created: datetime
    modified: datetime
    repo_forks: int
    repo_description: str
    pypi_url: str
    documentation_url: str | None
    repo_watchers: int
    commits_over_52: list[int] = strawberry.field(description="Weekly commit counts, 52 weeks.")
    participants: list[str]
    is_type_of = _type_of(records.Package)


GLOBAL_IDS = {name: global_ids(name) for name in ("Category", "Grid", "Package")}

NODE_TYPE_NAMES: dict[type, str] = {
    records.Category: "Category",
    records.Grid: "Grid",
    records.Package: "Package",
}


@strawberry.enum
class SearchItemType(Enum):
    PACKAGE = "package"
    GRID = "grid"


def item_type(root: strawberry.Parent[records.SearchHit]) -> SearchItemType:
    return SearchItemType(root.item_type)


def hit_slug(hit: records.SearchHit, kind: SearchItemType) -> str | None:
    """The slug of the package or grid a search hit is, if it is of `kind`."""
    return hit.slug if hit.item_type == kind.value else None


def hit_of(
    hit: records.SearchHit, kind: SearchItemType, by_slug: Loader[str, Any]
) -> Awaitable[Any] | None:
    """The package or grid a search hit is, if it is of `kind`, as its loader's future."""
    slug = hit_slug(hit, kind)
    return None if slug is None else by_slug.load(slug)


# Plain functions returning the loader's future, not coroutines: graphql-core leaves a sibling's
# coroutine un-awaited when a non-null field beside it fails, and Python warns of each one.
def _hit_package(root: strawberry.Parent[records.SearchHit], info: Info) -> Any:
    return hit_of(root, SearchItemType.PACKAGE, info.context.loaders.packages.by_slug)


def _hit_grid(root: strawberry.Parent[records.SearchHit], info: Info) -> Any:
    return hit_of(root, SearchItemType.GRID, info.context.loaders.grids.by_slug)


@strawberry.type(description="One hit of a search, best first.")
class SearchResult:
    item_type: SearchItemType = strawberry.field(resolver=item_type)
    title: str
    slug: str
    description: str
    category: str = strawberry.field(description="The category's title; empty for grids.")
    weight: int
    repo_watchers: int
    repo_forks: int
    pypi_downloads: int
    usage: int
    participants: list[str]
    last_committed: datetime | None
    last_released: datetime | None
    absolute_url: str
    created: datetime
    modified: datetime
    package: Package | None = strawberry.field(
        resolver=_hit_package, description="The package, when the hit is a package."
    )
    grid: Grid | None = strawberry.field(
        resolver=_hit_grid, description="The grid, when the hit is a grid."
    )
