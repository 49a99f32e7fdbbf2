"""The GraphQL schema: types and resolvers only; all I/O is behind the loaders."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from datetime import datetime

import strawberry
from graphql import GraphQLError
from strawberry.schema.config import StrawberryConfig
from strawberry.types import ExecutionContext

from gateway.documents import limits
from gateway.documents.document_cache import DocumentCache
from gateway.documents.reading import Readings
from gateway.errors import VariableErrors, log_unexpected
from gateway.internals import allow_types_of_one_name
from gateway.schema.direct import use_direct_resolvers
from gateway.schema.query import Query
from gateway.schema.scalars import DateTime
from gateway.schema.types import Category, Grid, Package


class GatewaySchema(strawberry.Schema):
    documents: DocumentCache  # the documents that passed its query limits, parsed
    readings: Readings  # the documents seen lately, read (refused or normalised), by text

    def process_errors(
        self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None
    ) -> None:
        # Request errors are the client's to read; only our own failures go to the log.
        log_unexpected(errors)


def build_schema(
    query_limits: limits.QueryLimits,
    *,
    federation: bool = False,
    extensions: Sequence[limits.Extension] = (),
    readings: Readings | None = None,
) -> GatewaySchema:
    """The schema, enforcing `query_limits`; with `federation`, an Apollo Federation 2 subgraph
    (gateway/schema/federation.py). Limits do not change the SDL. New documents are read by
    `readings` (by default in the documents' process, and validated here:
    gateway/documents/reading.py).

    Batching is on: how many operations a batch may hold is the HTTP view's limit (gateway/app.py),
    which refuses more with a code of its own. `extensions` come after the limits' own: the
    execution engine (gateway/engine/).
    """
    schema_class: type[GatewaySchema] = GatewaySchema
    types: list[type] = [Category, Grid, Package]
    config = StrawberryConfig(
        scalar_map={datetime: DateTime}, batching_config={"max_operations": sys.maxsize}
    )
    if federation:
        from gateway.schema.federation import ENTITIES, FederatedSchema

        schema_class, types = FederatedSchema, ENTITIES
        # The entities are subclasses of Category, Grid and Package, with their names and their
        # keys: converted first (`types`), they stand for them wherever the query reaches those
        # types, which Strawberry would otherwise refuse as a duplicate name.
        allow_types_of_one_name(config)
    documents = DocumentCache()
    if readings is None:
        readings = Readings(query_limits.max_tokens, query_limits.max_selections)
    built = schema_class(
        query=Query,
        types=types,
        extensions=[
            *limits.extensions(query_limits, documents, readings),
            VariableErrors,
            *extensions,
        ],
        config=config,
    )
    built.documents = documents
    built.readings = readings
    use_direct_resolvers(built)
    return built
