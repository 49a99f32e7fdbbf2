"""Running one operation in-process, outside HTTP (the `query` command, tests)."""

from __future__ import annotations

import asyncio
from typing import Any

from strawberry.http import GraphQLHTTPResponse

from gateway.backends import BackendFactory
from gateway.errors import response_body
from gateway.http.request_limits import in_time
from gateway.loaders.loaders import Loaders
from gateway.schema import GatewaySchema
from gateway.schema.context import Context


async def run_operation(
    schema: GatewaySchema,
    backend: BackendFactory,
    query: str,
    variables: dict[str, Any] | None = None,
    operation_name: str | None = None,
    *,
    timeout: float,
) -> GraphQLHTTPResponse:
    """The operation's response, under the schema's query limits and within `timeout` seconds,
    as `gateway serve` would answer it (but for the body and batch limits of HTTP)."""
    context = Context(loaders=Loaders(backend()))
    deadline = asyncio.get_running_loop().time() + timeout
    operation = schema.execute(
        query,
        variable_values=variables,
        operation_name=operation_name,
        context_value=context,
    )
    result = await in_time(operation, deadline, timeout)
    return response_body(result, stale=context.loaders.backend.stale)
