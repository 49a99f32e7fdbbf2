"""The root Query type."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any

import strawberry

from gateway.errors import BadUserInput
from gateway.loaders.loaders import Loader, Loaders, Lookups
from gateway.loaders.records import SearchHit
from gateway.schema.context import Info
from gateway.schema.inputs import MAX_SLUG, MAX_TEXT, checked_text
from gateway.schema.pagination import Connection, from_base64, is_number, shown
from gateway.schema.types import (
    Category,
    Grid,
    Node,
    Package,
    SearchResult,
    category_connection,
    found,
    grid_connection,
    package_connection,
)

# A record to load: the loader, and its key.
Keyed = tuple[Loader[Any, Any], Any]
# The lookups of each node type, by name.
_NODE_KINDS = {"Category": "categories", "Grid": "grids", "Package": "packages"}


def lookup_key(id: int | None, slug: str | None, kind: Lookups[Any]) -> Keyed | None:
    """The loader and key of one record of `kind` by id or by slug; None when none can match.

    `id` and `slug` have no defaults, so unset is UNSET (or absent, to the engine).
    """
    if isinstance(id, int) and not isinstance(slug, str):
        return kind.by_id, id
    if isinstance(slug, str) and not isinstance(id, int):
        # No slug is longer than its column (at most 100 characters) or holds a NUL (which
        # PostgreSQL cannot even receive): no need to ask.
        return (kind.by_slug, slug) if len(slug) <= MAX_SLUG and "\x00" not in slug else None
    raise BadUserInput("Pass exactly one of `id` and `slug`")


def lookup(id: int | None, slug: str | None, kind: Lookups[Any]) -> Awaitable[Any] | None:
    """One record of `kind` by id or by slug, as its loader's future; None when none can match."""
    return _loaded(lookup_key(id, slug, kind))


def node_key(loaders: Loaders, global_id: str) -> Keyed | None:
    """The loader and key of the record a global id names; None for an unknown type."""
    try:
        type_name, raw_id = from_base64(global_id)
    except ValueError:
        raise BadUserInput(f"Not a valid node id: {shown(global_id)}") from None
    if type_name not in _NODE_KINDS or not is_number(raw_id):
        return None
    return getattr(loaders, _NODE_KINDS[type_name]).by_id, int(raw_id)


def load_node(loaders: Loaders, global_id: str) -> Awaitable[Any] | None:
    """The record a global id names, as its loader's future; None for an unknown type."""
    return _loaded(node_key(loaders, global_id))


def _loaded(keyed: Keyed | None) -> Awaitable[Any] | None:
    return None if keyed is None else keyed[0].load(keyed[1])


def search(loaders: Loaders, query: str) -> Awaitable[list[SearchHit]]:
    """The backend's hits for `query`, once it is text a backend can receive."""
    checked_text("query", query, MAX_TEXT)
    return loaders.backend.search(query)


async def _node(info: Info, id: strawberry.ID) -> Any:
    return await found(load_node(info.context.loaders, id))


async def _nodes(info: Info, ids: list[strawberry.ID]) -> list[Any]:
    loaders = info.context.loaders
    records = [load_node(loaders, id) for id in ids]
    return list(await asyncio.gather(*map(found, records)))


def _by_id_or_slug(kind: str, name: str) -> Any:
    """The root field that finds one `name` by `id` or `slug`, in the loaders' lookups of
    `kind` (`categories`, `grids` or `packages`)."""

    async def one(
        info: Info, id: int | None = strawberry.UNSET, slug: str | None = strawberry.UNSET
    ) -> Any:
        return await found(lookup(id, slug, getattr(info.context.loaders, kind)))

    return strawberry.field(
        resolver=one, description=f"One {name} by `id` or `slug` (exactly one)."
    )


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
    category: Category | None = _by_id_or_slug("categories", "category")
    categories: Connection[Category] = strawberry.field(
        resolver=category_connection, description="All categories, newest id first unless ordered."
    )
    grid: Grid | None = _by_id_or_slug("grids", "grid")
    grids: Connection[Grid] = strawberry.field(
        resolver=grid_connection, description="All grids, newest id first unless ordered."
    )
    package: Package | None = _by_id_or_slug("packages", "package")
    packages: Connection[Package] = strawberry.field(
        resolver=package_connection, description="All packages, newest id first unless ordered."
    )
    search: list[SearchResult] = strawberry.field(
        resolver=_search, description="Search packages and grids, at most 20 hits, best first."
    )
