"""The schema as an Apollo Federation 2 subgraph (`--federation`).

Package, Grid and Category are entities with two keys, `id` (the global relay id) and
`slug`; a router resolves their representations through `_entities`, by the same loaders as
`node` and the `package(slug:)` fields. The keys live on subclasses of the types, used only
here: the schema without federation, and its SDL, stay exactly as they are.
"""

from __future__ import annotations

from typing import Any, cast

import strawberry
from strawberry.federation.schema import FederationAny
from strawberry.types.base import get_object_definition

from gateway.errors import BadUserInput
from gateway.loaders.loaders import Lookups
from gateway.schema import GatewaySchema
from gateway.schema.context import Info
from gateway.schema.query import load_node, lookup
from gateway.schema.types import NODE_TYPE_NAMES, Category, Grid, Package, found

KEYS = ["id", "slug"]


async def _reference(info: Info, type_name: str, id: object, slug: object) -> Any:
    """The record a representation names, by global id or by slug; null when there is none."""
    if isinstance(id, str):
        record = await found(load_node(info.context.loaders, id))
        # The global id of another type names no entity of this one.
        return record if NODE_TYPE_NAMES.get(type(record)) == type_name else None
    if isinstance(slug, str):
        loaders = info.context.loaders
        kinds: dict[str, Lookups[Any]] = {
            "Category": loaders.categories,
            "Grid": loaders.grids,
            "Package": loaders.packages,
        }
        return await found(lookup(None, slug, kinds[type_name]))
    raise BadUserInput(f"A {type_name} representation needs an `id` or a `slug` string")


def _entity(base: type) -> type:
    """`base` with the keys `id` and `slug`, and the reference resolver for each."""
    definition = get_object_definition(base, strict=True)
    type_name = definition.name

    @strawberry.federation.type(name=type_name, description=definition.description, keys=KEYS)
    class Entity(base):  # type: ignore[misc]
        @classmethod
        async def resolve_reference(
            cls, info: Info, id: object = None, slug: object = None, **fields: object
        ) -> Any:
            return await _reference(info, type_name, id, slug)

    return Entity


ENTITIES = [_entity(Category), _entity(Grid), _entity(Package)]
ENTITY_NAMES = frozenset(NODE_TYPE_NAMES.values())


class FederatedSchema(GatewaySchema, strawberry.federation.Schema):
    def entities_resolver(
        self, info: strawberry.Info, representations: list[FederationAny]
    ) -> list[FederationAny]:
        """Strawberry's for the representations that name one of our entities; each other one
        fails on its own, as routers expect of a subgraph (an error at `["_entities", i]`)."""
        refusals = [_refusal(representation) for representation in representations]
        named = [r for r, refusal in zip(representations, refusals, strict=True) if refusal is None]
        resolved = iter(super().entities_resolver(info, named))
        # An exception in the list is that item's error (graphql-core raises it at its path).
        return [next(resolved) if refusal is None else cast(Any, refusal) for refusal in refusals]


def _refusal(representation: object) -> BadUserInput | None:
    """Why `representation` names none of our entities, or None when it names one."""
    if not isinstance(representation, dict):
        return BadUserInput("A representation must be an object")
    if representation.get("__typename") not in ENTITY_NAMES:
        names = ", ".join(sorted(ENTITY_NAMES))
        return BadUserInput(f"A representation's __typename must be one of {names}")
    return None
