"""Running one operation in-process, outside HTTP (the `query` command, tests)."""

from __future__ import annotations

import asyncio
from typing import Any

from strawberry.http import GraphQLHTTPResponse

from gateway.config import Settings
from gateway.engine.engine import Engine
from gateway.errors import response_body
from gateway.limits import in_time
from gateway.loaders.factory import open_backend
from gateway.loaders.loaders import Loaders
from gateway.schema import build_schema
from gateway.schema.context import Context


async def run_query(
    settings: Settings,
    query: str,
    variables: dict[str, Any] | None = None,
    operation_name: str | None = None,
) -> GraphQLHTTPResponse:
    """The operation's response, under the limits of `gateway serve` but body and batch size."""
    schema = build_schema(settings, [Engine(settings.max_cost)])
    async with open_backend(settings) as backend:
        context = Context(loaders=Loaders(backend()))
        deadline = asyncio.get_running_loop().time() + settings.request_timeout
        operation = schema.execute(
            query,
            variable_values=variables,
            operation_name=operation_name,
            context_value=context,
        )
        result = await in_time(operation, deadline, settings.request_timeout)
    return response_body(result, stale=context.loaders.backend.stale)
