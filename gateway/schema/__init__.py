"""The GraphQL schema: types and resolvers only; all I/O is behind the loaders."""

from __future__ import annotations

from datetime import datetime

import strawberry
from graphql import GraphQLError
from strawberry.schema.config import StrawberryConfig
from strawberry.types import ExecutionContext

from gateway.errors import log_unexpected
from gateway.schema.query import Query
from gateway.schema.scalars import DateTime
from gateway.schema.types import Category, Grid, Package


class GatewaySchema(strawberry.Schema):
    def process_errors(
        self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None
    ) -> None:
        # Request errors are the client's to read; only our own failures go to the log.
        log_unexpected(errors)


def build_schema() -> GatewaySchema:
    return GatewaySchema(
        query=Query,
        types=[Category, Grid, Package],
        config=StrawberryConfig(scalar_map={datetime: DateTime}),
    )


schema = build_schema()
