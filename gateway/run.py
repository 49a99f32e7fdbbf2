"""Running one operation in-process, outside HTTP (the `query` command, tests)."""

from __future__ import annotations

from typing import Any

from strawberry.http import GraphQLHTTPResponse

from gateway.config import Settings
from gateway.errors import response_body
from gateway.loaders.factory import mark_stale, open_backend
from gateway.loaders.loaders import Loaders
from gateway.schema import schema
from gateway.schema.context import Context


async def run_query(
    settings: Settings,
    query: str,
    variables: dict[str, Any] | None = None,
    operation_name: str | None = None,
) -> GraphQLHTTPResponse:
    async with open_backend(settings) as backend:
        context = Context(loaders=Loaders(backend()))
        result = await schema.execute(
            query,
            variable_values=variables,
            operation_name=operation_name,
            context_value=context,
        )
        mark_stale(result, context.loaders.backend)
    return response_body(result)
