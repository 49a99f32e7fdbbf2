"""The ASGI app: `/graphql` (POST, GET, GraphiQL) and `/healthz`.

It opens the backend for the process's lifetime and builds each request's context (the
dataloaders) and nothing else.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL
from strawberry.http import GraphQLHTTPResponse, GraphQLRequestData, GraphQLRequestProtocol
from strawberry.types import ExecutionResult
from strawberry.types.unset import UNSET

from gateway import graphiql, limits
from gateway.config import Settings
from gateway.cors import cors
from gateway.errors import BATCH_TOO_LARGE, is_request_error, response_body
from gateway.loaders.factory import BackendFactory, open_backend
from gateway.loaders.loaders import Loaders
from gateway.negotiation import quality
from gateway.schema import GatewaySchema, build_schema
from gateway.schema.context import Context

GRAPHQL_RESPONSE = "application/graphql-response+json"


class GraphQLEndpoint(GraphQL[Context, None]):
    """Strawberry's GraphQL-over-HTTP view with our context, errors, JSON, GraphiQL and limits."""

    def __init__(self, schema: GatewaySchema, settings: Settings) -> None:
        super().__init__(schema)
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            receive = limits.limit_body(receive, self.settings.max_body_bytes)
        await super().__call__(scope, receive, send)

    async def get_context(self, request: Request | WebSocket, response: Any) -> Context:
        backend: BackendFactory = request.app.state.backend
        context = Context(loaders=Loaders(backend()))
        request.state.backend = context.loaders.backend
        return context

    async def process_result(
        self, request: Request, result: ExecutionResult
    ) -> GraphQLHTTPResponse:
        request.state.request_error = is_request_error(result)
        return response_body(result, stale=request.state.backend.stale)

    async def run(self, request: Any, context: Any = UNSET, root_value: Any = UNSET) -> Any:
        """GraphQL-over-HTTP: a client that accepts `application/graphql-response+json`
        gets it, and with it a 400 for a request error (with `application/json`, 200).

        The request's deadline starts now and covers its body; a body or batch over its limit
        is answered with a GraphQL error and its own status, whatever the media type.
        """
        deadline = asyncio.get_running_loop().time() + self.settings.request_timeout
        request.state.deadline = deadline
        try:
            await limits.read_body(request, self.settings.max_body_bytes, deadline)
            response = await super().run(request, context, root_value)
        except limits.HTTPRefusal as refusal:
            body = self.encode_json(refusal.body)
            response = Response(body, refusal.status, media_type="application/json")
        if (
            isinstance(response, Response)
            and response.media_type == "application/json"
            and _prefers_graphql_response(request.headers.get("accept", ""))
        ):
            response.headers["content-type"] = GRAPHQL_RESPONSE
            # A batch is answered with a list, at 200, whatever its operations' errors.
            if getattr(request.state, "request_error", False) and response.body[:1] != b"[":
                response.status_code = 400
        return response

    async def execute_single(
        self,
        request: Request,
        request_adapter: Any,
        sub_response: Response,
        context: Context,
        root_value: None,
        request_data: GraphQLRequestData,
    ) -> ExecutionResult:
        """Each operation, alone or in a batch, ends by the request's deadline."""
        operation = super().execute_single(
            request=request,
            request_adapter=request_adapter,
            sub_response=sub_response,
            context=context,
            root_value=root_value,
            request_data=request_data,
        )
        deadline: float = request.state.deadline
        return await limits.in_time(operation, deadline, self.settings.request_timeout)

    def _validate_batch_request(
        self, request_data: list[GraphQLRequestData], protocol: GraphQLRequestProtocol
    ) -> None:
        """Strawberry refuses a batch over its `max_operations` in plain text; ours has a code."""
        if len(request_data) > self.settings.max_batch:
            raise limits.HTTPRefusal(
                400,
                BATCH_TOO_LARGE,
                f"A batch may hold {self.settings.max_batch} operations, not {len(request_data)}",
            )
        super()._validate_batch_request(request_data, protocol)

    def decode_json(self, data: str | bytes) -> object:
        """Bodies and GET variables; Strawberry answers a JSONDecodeError with a 400.

        orjson stops deep nesting with one where `json` overflows into a 500. Anything but an
        object or a non-empty array of operations is refused here: Strawberry would call `.get`
        on a scalar, and it passes a batch's operations on unchecked (both 500s).
        """
        value = orjson.loads(data)
        if isinstance(value, list) and value and all(map(_is_operation, value)):
            return value
        if not isinstance(value, dict):
            raise json.JSONDecodeError("not an object or a non-empty array of operations", "", 0)
        return value

    def encode_json(self, data: object) -> bytes:
        return orjson.dumps(data)

    def should_render_graphql_ide(self, request: Any) -> bool:
        return graphiql.wants_graphiql(request)

    async def render_graphql_ide(self, request: Request) -> Response:
        return graphiql.graphiql_page(request.url.path)


def _is_operation(value: object) -> bool:
    """An operation of a batch, with the members Strawberry checks in a single request's body."""
    return (
        isinstance(value, dict)
        and isinstance(value.get("query"), str | None)
        and isinstance(value.get("operationName"), str | None)
        and isinstance(value.get("variables"), dict | None)
        and isinstance(value.get("extensions"), dict | None)
    )


def _prefers_graphql_response(accept: str) -> bool:
    """Only a client that names the new media type gets it; `*/*` keeps `application/json`."""
    if GRAPHQL_RESPONSE not in accept.lower():
        return False
    wanted = quality(accept, GRAPHQL_RESPONSE)
    return wanted > 0 and wanted >= quality(accept, "application/json")


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


def create_app(settings: Settings) -> Starlette:
    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with open_backend(settings) as backend:
            app.state.backend = backend
            yield

    return Starlette(
        routes=[
            Route("/graphql", cors(settings, GraphQLEndpoint(build_schema(settings), settings))),
            Route("/healthz", healthz),
            graphiql.graphiql_static,
        ],
        lifespan=lifespan,
    )
