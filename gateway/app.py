"""The ASGI app: `/graphql` (POST, GET, GraphiQL), `/healthz`, `/readyz` and `/metrics`.

It opens the backend for the process's lifetime and builds each request's context (the
dataloaders), once per HTTP request: the operations of a batch share one set of loaders, so what
one fetched serves the others. Around each operation it resolves automatic persisted queries
(gateway/persisted.py) and keeps whole answers in the response cache (gateway/response_cache.py).
Every request goes through `observe.Observed` (its id, counters, span and log line); each
operation is counted by name and outcome (gateway/metrics.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, cast

import orjson
from cross_web import HTTPException
from graphql import GraphQLError
from starlette.applications import Starlette
from starlette.datastructures import QueryParams
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL
from strawberry.http import GraphQLHTTPResponse, GraphQLRequestData, GraphQLRequestProtocol
from strawberry.types import ExecutionResult
from strawberry.types.unset import UNSET

from gateway import graphiql, limits, metrics, observe, persisted, response_cache, tracing
from gateway.config import Settings
from gateway.cors import cors
from gateway.engine.engine import Engine
from gateway.errors import BATCH_TOO_LARGE, GatewayError, is_request_error, response_body
from gateway.loaders.factory import BackendFactory, OpenBackend, open_backend
from gateway.loaders.loaders import Loaders
from gateway.negotiation import quality
from gateway.response_cache import Cached, MemoryStore, ResponseCache
from gateway.schema import GatewaySchema, build_schema
from gateway.schema.context import Context
from gateway.shared_cache import SharedCache, SharedStore

GRAPHQL_RESPONSE = "application/graphql-response+json"


class _CachedResult(ExecutionResult):
    """An operation answered by the response cache: its body is already encoded."""

    def __init__(self, cached: Cached) -> None:
        super().__init__(data=None, errors=None)
        self.cached = cached


class _Encoded(dict[str, Any]):
    """A response body already encoded (`encode_json` writes `body` as it is)."""

    def __init__(self, body: bytes) -> None:
        super().__init__()
        self.body = body


class GraphQLEndpoint(GraphQL[Context, None]):
    """Strawberry's GraphQL-over-HTTP view with our context, errors, JSON, GraphiQL and limits."""

    def __init__(
        self,
        schema: GatewaySchema,
        settings: Settings,
        engine: Engine,
        shared: SharedCache | None = None,
    ) -> None:
        super().__init__(schema)
        self.settings = settings
        self.engine = engine

        def store(max_bytes: int) -> response_cache.Store:
            # With `--cache`, in this process's memory and in Redis for every other process too.
            local = MemoryStore(max_bytes)
            return local if shared is None else SharedStore(local, shared)

        self.persisted = persisted.PersistedQueries(store(persisted.MAX_BYTES))
        ttl = response_cache.effective_ttl(settings)
        self.responses = (
            ResponseCache(
                store(response_cache.MAX_BYTES),
                ttl=ttl,
                namespace=response_cache.namespace(schema.as_str(), settings),
                max_tokens=settings.max_tokens,
            )
            if ttl > 0
            else None
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            receive = limits.limit_body(receive, self.settings.max_body_bytes)
        await super().__call__(scope, receive, send)

    async def get_context(self, request: Request | WebSocket, response: Any) -> Context:
        """Called once per HTTP request: a batch's operations all get this context."""
        backend: BackendFactory = request.app.state.backend
        context = Context(loaders=Loaders(backend()))
        request.state.backend = context.loaders.backend
        return context

    async def process_result(
        self, request: Request, result: ExecutionResult
    ) -> GraphQLHTTPResponse:
        stale: bool = request.state.backend.stale
        if isinstance(result, _CachedResult):
            request.state.request_error = False
            request.state.answers.append(result.cached)
            if not stale:
                return cast(GraphQLHTTPResponse, _Encoded(result.cached.body))
            # Another operation of the batch was served stale: the body says so for all.
            body: dict[str, Any] = orjson.loads(result.cached.body)
            body["extensions"] = {**body.get("extensions", {}), "stale": True}
            return cast(GraphQLHTTPResponse, body)
        request.state.request_error = is_request_error(result) and not persisted.is_not_found(
            result
        )
        request.state.answers.append(None)
        return response_body(result, stale=stale)

    async def run(self, request: Any, context: Any = UNSET, root_value: Any = UNSET) -> Any:
        """GraphQL-over-HTTP: a client that accepts `application/graphql-response+json`
        gets it, and with it a 400 for a request error (with `application/json`, 200).

        The request's deadline starts now and covers its body; a body or batch over its limit
        is answered with a GraphQL error and its own status, whatever the media type.
        """
        deadline = asyncio.get_running_loop().time() + self.settings.request_timeout
        request.state.deadline = deadline
        request.state.answers = []  # per operation, its cached answer or None
        try:
            await limits.read_body(request, self.settings.max_body_bytes, deadline)
            response = await self._single(request) or await super().run(
                request, context, root_value
            )
        except HTTPException as refusal:  # Strawberry's own: answered in plain text
            metrics.bad_request(refusal.status_code)
            raise
        except limits.HTTPRefusal as refusal:
            if isinstance(refusal, persisted.Refused):  # no limit: an APQ extension it cannot use
                metrics.bad_request(refusal.status)
            else:
                metrics.refused(refusal.code)
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
        if isinstance(response, Response) and response.media_type == "application/json":
            return _cache_headers(request, response)
        return response

    async def _single(self, request: Request) -> Response | None:
        """A single operation, by POST (JSON) or GET, answered as Strawberry's view would, with
        less of its generality: it is most requests. None for anything else (a batch, another
        media type, GraphiQL, a member of the wrong type), which Strawberry's view answers.

        (The view streams nothing here: its protocols are WebSocket ones only.)
        """
        data: object = None
        if request.method == "POST":
            media_type = request.headers.get("content-type", "").partition(";")[0]
            if media_type.strip().lower() != "application/json":
                return None
            with contextlib.suppress(orjson.JSONDecodeError):
                data = orjson.loads(await request.body())
        elif request.method == "GET" and not self.should_render_graphql_ide(request):
            data = _query_parameters(request.query_params)
        if not isinstance(data, dict):
            return None
        query, variables = data.get("query"), data.get("variables")
        operation_name, extensions = data.get("operationName"), data.get("extensions")
        if not (
            isinstance(query, str | None)
            and isinstance(variables, dict | None)
            and isinstance(operation_name, str | None)
            and isinstance(extensions, dict | None)
        ) or (query is None and extensions is None):
            return None
        context = await self.get_context(request, None)
        result = await self.execute_single(
            request,
            self.request_adapter_class(request),
            await self.get_sub_response(request),
            context,
            None,
            GraphQLRequestData(query, variables, operation_name, extensions),
        )
        body = await self.process_result(request, result)
        return Response(self.encode_json(body), media_type="application/json")

    async def execute_single(
        self,
        request: Request,
        request_adapter: Any,
        sub_response: Response,
        context: Context,
        root_value: None,
        request_data: GraphQLRequestData,
    ) -> ExecutionResult:
        """Each operation, alone or in a batch, ends by the request's deadline.

        An APQ hash is replaced by its document first; a query's answer may then come from the
        response cache, or be computed once for all the requests asking for it at that moment.
        """
        execute_single = super().execute_single
        started = time.perf_counter()
        name: object = request_data.operation_name

        async def answer() -> ExecutionResult:
            nonlocal name
            try:
                lookup = await self.persisted.resolve(request_data.query, request_data.extensions)
            except GatewayError as error:
                return ExecutionResult(
                    data=None, errors=[GraphQLError(error.message, extensions=error.extensions)]
                )
            name = metrics.operation_name(request_data.operation_name, lookup.query)
            data = dataclasses.replace(request_data, query=lookup.query)

            async def execute() -> ExecutionResult:
                # A document validated before runs by its plan, without Strawberry's pipeline.
                planned = await self.engine.execute_known(
                    data.query, data.operation_name, data.variables, context
                )
                if planned is not None:
                    return ExecutionResult(data=planned.data, errors=planned.errors)
                return await execute_single(
                    request=request,
                    request_adapter=request_adapter,
                    sub_response=sub_response,
                    context=context,
                    root_value=root_value,
                    request_data=data,
                )

            key: str | None = None
            if self.responses is not None and lookup.query is not None:
                key = self.responses.key(lookup.query, data.variables, data.operation_name)
            if key is None:
                result = await execute()
            else:
                result = await self._cached(request, key, execute)
            # Ran here, by another request, or cached: the hash has been checked either way.
            if lookup.remember is not None and not is_request_error(result):
                await self.persisted.remember(lookup)
            return result

        deadline: float = request.state.deadline
        with tracing.span("graphql operation") as span:
            result = await limits.in_time(answer(), deadline, self.settings.request_timeout)
            label = metrics.operation_label(name, ran=not is_request_error(result))
            if span is not None:
                span.update_name(f"graphql {label}")
                span.set_attribute("graphql.operation.name", label)
        metrics.operation(label, result, time.perf_counter() - started)
        return result

    async def _cached(
        self, request: Request, key: str, execute: Callable[[], Awaitable[ExecutionResult]]
    ) -> ExecutionResult:
        """The answer at `key` in the response cache, or `execute`'s, cached if it succeeded."""
        assert self.responses is not None
        computed = False  # else another request computed it, or it was cached

        async def compute() -> tuple[ExecutionResult, bytes | None]:
            nonlocal computed
            computed = True
            result = await execute()
            # Whether some of the data was stale is known by the time an operation ends; in a
            # batch, another operation's stale data keeps this one out of the cache too.
            complete = not result.errors and result.data is not None
            if not complete or request.state.backend.stale:
                return result, None
            return result, self.encode_json(response_body(result))

        answer = await self.responses.fetch(key, compute)
        metrics.cache_lookup("response", hit=not computed)
        return _CachedResult(answer) if isinstance(answer, Cached) else answer

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
        if isinstance(data, _Encoded):
            return data.body
        if isinstance(data, list) and any(isinstance(item, _Encoded) for item in data):
            return b"[" + b",".join(map(self.encode_json, data)) + b"]"
        return orjson.dumps(data)

    def should_render_graphql_ide(self, request: Any) -> bool:
        # An APQ GET carries `extensions` instead of `query`: it is for the API, not the page.
        return "extensions" not in request.query_params and graphiql.wants_graphiql(request)

    async def render_graphql_ide(self, request: Request) -> Response:
        return graphiql.graphiql_page(request.url.path)


def _query_parameters(params: QueryParams) -> dict[str, object] | None:
    """A GET's operation, its `variables` and `extensions` decoded; None if either is not an
    object in JSON (Strawberry's view refuses that)."""
    data: dict[str, object] = dict(params)
    for name in ("variables", "extensions"):
        text = params.get(name)
        if text:
            try:
                data[name] = orjson.loads(text)
            except orjson.JSONDecodeError:
                return None
    return data


def _is_operation(value: object) -> bool:
    """An operation of a batch, with the members Strawberry checks in a single request's body."""
    return (
        isinstance(value, dict)
        and isinstance(value.get("query"), str | None)
        and isinstance(value.get("operationName"), str | None)
        and isinstance(value.get("variables"), dict | None)
        and isinstance(value.get("extensions"), dict | None)
    )


def _cache_headers(request: Request, response: Response) -> Response:
    """HTTP caching for a GET: a cached answer is public for the rest of its time, has an ETag,
    and a matching `If-None-Match` gets a 304; any other answer is not to be stored. Over POST,
    a cached answer has its ETag only."""
    answers: list[Cached | None] = request.state.answers
    single = response.status_code == 200 and len(answers) == 1 and response.body[:1] != b"["
    cached = answers[0] if single else None
    if cached is not None:
        response.headers["etag"] = cached.etag
    if request.method != "GET":
        return response
    if cached is None:
        response.headers["cache-control"] = "no-store"
        return response
    headers = {
        "etag": cached.etag,
        "cache-control": f"public, max-age={response_cache.max_age(cached)}",
        "vary": "Accept",
    }
    if response_cache.matches(request.headers.get("if-none-match", ""), cached.etag):
        return Response(status_code=304, headers=headers)
    response.headers.update(headers)
    return response


def _prefers_graphql_response(accept: str) -> bool:
    """Only a client that names the new media type gets it; `*/*` keeps `application/json`."""
    if GRAPHQL_RESPONSE not in accept.lower():
        return False
    wanted = quality(accept, GRAPHQL_RESPONSE)
    return wanted > 0 and wanted >= quality(accept, "application/json")


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    """200 when the backend answers (and what else it checked); 503 with the reason if not."""
    backend: OpenBackend = request.app.state.opened
    ready, checks, reason = await backend.ready()
    if ready:
        return JSONResponse({"status": "ready", "checks": checks})
    body = {"status": "unavailable", "reason": reason, "checks": checks}
    return JSONResponse(body, status_code=503)


async def metrics_endpoint(request: Request) -> Response:
    """Prometheus's text format (or OpenMetrics, if asked for): every worker's counts."""
    body, media_type = metrics.exposition(request.headers.get("accept", ""))
    return Response(body, headers={"content-type": media_type})


def create_app(settings: Settings) -> Starlette:
    # `--cache`: the Redis every process shares; `app.state.shared_cache` (None without it) tells
    # its state: `available`, `health()`, `await check()`.
    shared = SharedCache.from_settings(settings)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if settings.otel:
            tracing.start()
        if shared is not None:
            await shared.start()  # never fails: without Redis, each process serves on its own
        try:
            async with open_backend(
                settings, keep_warm=settings.warm_catalogue, shared=shared
            ) as backend:
                # `backend` makes each request's backend; `opened` answers `/readyz`.
                app.state.backend = app.state.opened = backend
                # What start-up made (modules, the schema, the catalogue) lives as long as the
                # process: the garbage collector need not scan it again at each collection.
                gc.freeze()
                try:
                    yield
                finally:
                    gc.unfreeze()
        finally:
            if shared is not None:
                await shared.aclose()
            if settings.otel:
                tracing.stop()

    # Operations run by their compiled plans where these cover them (gateway/engine/).
    engine = Engine(settings.max_cost)
    endpoint = GraphQLEndpoint(build_schema(settings, [engine]), settings, engine, shared)
    app = Starlette(
        routes=[
            Route("/graphql", cors(settings, endpoint)),
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            Route("/metrics", metrics_endpoint),
            graphiql.graphiql_static,
        ],
        middleware=[Middleware(observe.Observed)],
        lifespan=lifespan,
    )
    app.state.shared_cache = shared
    return app
