"""The ASGI app: `/graphql` (POST, GET, GraphiQL) and `/healthz`.

It opens the backend for the process's lifetime and builds each request's context (the
dataloaders) and nothing else.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL
from strawberry.http import GraphQLHTTPResponse
from strawberry.types import ExecutionResult
from strawberry.types.unset import UNSET

from gateway import graphiql
from gateway.config import Settings
from gateway.cors import cors
from gateway.errors import is_request_error, response_body
from gateway.loaders.factory import BackendFactory, mark_stale, open_backend
from gateway.loaders.loaders import Loaders
from gateway.negotiation import quality
from gateway.schema import schema
from gateway.schema.context import Context

GRAPHQL_RESPONSE = "application/graphql-response+json"


class GraphQLEndpoint(GraphQL[Context, None]):
    """Strawberry's GraphQL-over-HTTP view with our context, errors, JSON and GraphiQL."""

    async def get_context(self, request: Request | WebSocket, response: Any) -> Context:
        backend: BackendFactory = request.app.state.backend
        context = Context(loaders=Loaders(backend()))
        request.state.backend = context.loaders.backend
        return context

    async def process_result(
        self, request: Request, result: ExecutionResult
    ) -> GraphQLHTTPResponse:
        request.state.request_error = is_request_error(result)
        mark_stale(result, request.state.backend)
        return response_body(result)

    async def run(self, request: Any, context: Any = UNSET, root_value: Any = UNSET) -> Any:
        """GraphQL-over-HTTP: a client that accepts `application/graphql-response+json`
        gets it, and with it a 400 for a request error (with `application/json`, 200)."""
        response = await super().run(request, context, root_value)
        if (
            isinstance(response, Response)
            and response.media_type == "application/json"
            and _prefers_graphql_response(request.headers.get("accept", ""))
        ):
            response.headers["content-type"] = GRAPHQL_RESPONSE
            if getattr(request.state, "request_error", False):
                response.status_code = 400
        return response

    def decode_json(self, data: str | bytes) -> object:
        """Bodies and GET variables; Strawberry answers a JSONDecodeError with a 400.

        orjson stops deep nesting with one where `json` overflows into a 500, and a scalar
        (`null`, `3`) is refused here because Strawberry would call `.get` on it (a 500).
        """
        value = orjson.loads(data)
        if not isinstance(value, dict | list):
            raise json.JSONDecodeError("not a JSON object or array", "", 0)
        return value

    def encode_json(self, data: object) -> bytes:
        return orjson.dumps(data)

    def should_render_graphql_ide(self, request: Any) -> bool:
        return graphiql.wants_graphiql(request)

    async def render_graphql_ide(self, request: Request) -> Response:
        return graphiql.graphiql_page(request.url.path)


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
            Route("/graphql", cors(settings, GraphQLEndpoint(schema))),
            Route("/healthz", healthz),
            graphiql.graphiql_static,
        ],
        lifespan=lifespan,
    )
