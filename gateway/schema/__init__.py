"""The GraphQL schema: types and resolvers only; all I/O is behind the loaders."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import strawberry
from graphql import GraphQLError
from strawberry.schema.config import StrawberryConfig
from strawberry.types import ExecutionContext

from gateway import limits
from gateway.config import Settings
from gateway.errors import log_unexpected
from gateway.schema.direct import use_direct_resolvers
from gateway.schema.query import Query
from gateway.schema.scalars import DateTime
from gateway.schema.types import Category, Grid, Package


class GatewaySchema(strawberry.Schema):
    def process_errors(
        self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None
    ) -> None:
        # Request errors are the client's to read; only our own failures go to the log.
        log_unexpected(errors)


def build_schema(settings: Settings, extensions: Sequence[limits.Extension] = ()) -> GatewaySchema:
    """The schema with `settings`' query limits; batching allows `max_batch` operations.

    With `federation`, an Apollo Federation 2 subgraph (gateway/schema/federation.py).
    `extensions` come after the limits' own: the execution engine (gateway/engine/).
    """
    schema_class: type[GatewaySchema] = GatewaySchema
    types: list[type] = [Category, Grid, Package]
    if settings.federation:
        from gateway.schema.federation import ENTITIES, FederatedSchema

        schema_class, types = FederatedSchema, ENTITIES
    built = schema_class(
        query=Query,
        types=types,
        extensions=[*limits.extensions(settings), *extensions],
        config=StrawberryConfig(
            scalar_map={datetime: DateTime},
            batching_config={"max_operations": settings.max_batch},
            # The entities are subclasses of Category, Grid and Package, with their names and
            # their keys: converted first (`types`), they stand for them wherever the query
            # reaches those types, which this validation would refuse as a duplicate name.
            _unsafe_disable_same_type_validation=settings.federation,
        ),
    )
    use_direct_resolvers(built)
    return built


# The default settings' schema, for `gateway export-schema`: limits do not change the SDL.
schema = build_schema(Settings())
