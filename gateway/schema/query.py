"""The root Query type."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import strawberry
from aiodataloader import DataLoader
from strawberry.relay.utils import from_base64

from gateway.errors import BadUserInput
from gateway.loaders.loaders import Loaders, Lookups
from gateway.loaders.records import Order, Page, SearchHit
from gateway.schema.context import Info
from gateway.schema.inputs import (
    MAX_SLUG,
    MAX_TEXT,
    CategoryOrder,
    GridOrder,
    PackageFilter,
    PackageOrder,
    checked_text,
    order,
    package_filter,
)
from gateway.schema.pagination import (
    BY_ID,
    Connection,
    Paged,
    connection,
    is_number,
    paged,
    shown,
)
from gateway.schema.types import Category, Grid, Node, Package, SearchResult, found


def lookup(id: int | None, slug: str | None, kind: Lookups[Any]) -> Awaitable[Any] | None:
    """One record of `kind` by id or by slug, as its loader's future; None when none can match.

    `id` and `slug` have no defaults, so unset is UNSET (or absent, to the engine).
    """
    if isinstance(id, int) and not isinstance(slug, str):
        return kind.by_id.load(id)
    if isinstance(slug, str) and not isinstance(id, int):
        # No slug is longer than its column (at most 100 characters) or holds a NUL (which
        # PostgreSQL cannot even receive): no need to ask.
        return kind.by_slug.load(slug) if len(slug) <= MAX_SLUG and "\x00" not in slug else None
    raise BadUserInput("Pass exactly one of `id` and `slug`")


def load_node(loaders: Loaders, global_id: str) -> Awaitable[Any] | None:
    """The record a global id names, as its loader's future; None for an unknown type."""
    try:
        type_name, raw_id = from_base64(global_id)
    except ValueError:
        raise BadUserInput(f"Not a valid node id: {shown(global_id)}") from None
    by_type: dict[str, DataLoader[int, Any]] = {
        "Category": loaders.categories.by_id,
        "Grid": loaders.grids.by_id,
        "Package": loaders.packages.by_id,
    }
    loader = by_type.get(type_name)
    if loader is None or not is_number(raw_id):
        return None
    return loader.load(int(raw_id))


def search(loaders: Loaders, query: str) -> Awaitable[list[SearchHit]]:
    """The backend's hits for `query`, once it is text a backend can receive."""
    checked_text("query", query, MAX_TEXT)
    return loaders.backend.search(query)


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
    order: Order | None = arguments[-1]
    page = paged(first, last, after, before, BY_ID, order, *arguments)
    return page, partial(load, page.slice, *arguments)


async def _node(info: Info, id: strawberry.ID) -> Any:
    return await found(load_node(info.context.loaders, id))


async def _nodes(info: Info, ids: list[strawberry.ID]) -> list[Any]:
    loaders = info.context.loaders
    records = [load_node(loaders, id) for id in ids]
    return list(await asyncio.gather(*map(found, records)))


async def _category(
    info: Info, id: int | None = strawberry.UNSET, slug: str | None = strawberry.UNSET
) -> Any:
    loaders = info.context.loaders
    return await found(lookup(id, slug, loaders.categories))


async def _grid(
    info: Info, id: int | None = strawberry.UNSET, slug: str | None = strawberry.UNSET
) -> Any:
    loaders = info.context.loaders
    return await found(lookup(id, slug, loaders.grids))


async def _package(
    info: Info, id: int | None = strawberry.UNSET, slug: str | None = strawberry.UNSET
) -> Any:
    loaders = info.context.loaders
    return await found(lookup(id, slug, loaders.packages))


async def _list_page(
    load: Callable[..., Awaitable[Page[Any]]],
    first: int | None,
    last: int | None,
    after: str | None,
    before: str | None,
    *arguments: Any,
) -> Connection[Any]:
    page, loading = list_page(load, first, last, after, before, *arguments)
    return connection(await loading(), page.slice, page.shape)


async def _categories(
    info: Info,
    first: int | None = strawberry.UNSET,
    after: str | None = strawberry.UNSET,
    last: int | None = strawberry.UNSET,
    before: str | None = strawberry.UNSET,
    order_by: CategoryOrder | None = strawberry.UNSET,
) -> Connection[Any]:
    ordered = order(order_by)
    loaders = info.context.loaders
    return await _list_page(loaders.list_categories, first, last, after, before, ordered)


async def _grids(
    info: Info,
    first: int | None = strawberry.UNSET,
    after: str | None = strawberry.UNSET,
    last: int | None = strawberry.UNSET,
    before: str | None = strawberry.UNSET,
    order_by: GridOrder | None = strawberry.UNSET,
) -> Connection[Any]:
    ordered = order(order_by)
    loaders = info.context.loaders
    return await _list_page(loaders.list_grids, first, last, after, before, ordered)


async def _packages(
    info: Info,
    first: int | None = strawberry.UNSET,
    after: str | None = strawberry.UNSET,
    last: int | None = strawberry.UNSET,
    before: str | None = strawberry.UNSET,
    filter: PackageFilter | None = strawberry.UNSET,
    order_by: PackageOrder | None = strawberry.UNSET,
) -> Connection[Any]:
    kept, ordered = package_filter(filter), order(order_by)
    loaders = info.context.loaders
    return await _list_page(loaders.list_packages, first, last, after, before, kept, ordered)


async def _search(info: Info, query: str) -> list[Any]:
    return list(await search(info.context.loaders, query))


@strawberry.type
class Query:
    node: Node | None = strawberry.field(
        resolver=_node, description="Refetch any object by its global id; unknown ids give null."
    )
    nodes: list[Node | None] = strawberry.field(
        resolver=_nodes, description="Refetch several objects by global id, in the given order."
    )
    category: Category | None = strawberry.field(
        resolver=_category, description="One category by `id` or `slug` (exactly one)."
    )
    categories: Connection[Category] = strawberry.field(
        resolver=_categories, description="All categories, newest id first unless ordered."
    )
    grid: Grid | None = strawberry.field(
        resolver=_grid, description="One grid by `id` or `slug` (exactly one)."
    )
    grids: Connection[Grid] = strawberry.field(
        resolver=_grids, description="All grids, newest id first unless ordered."
    )
    package: Package | None = strawberry.field(
        resolver=_package, description="One package by `id` or `slug` (exactly one)."
    )
    packages: Connection[Package] = strawberry.field(
        resolver=_packages, description="All packages, newest id first unless ordered."
    )
    search: list[SearchResult] = strawberry.field(
        resolver=_search, description="Search packages and grids, at most 20 hits, best first."
    )
