"""The ASGI app: `/graphql` (POST, GET, GraphiQL), `/healthz`, `/readyz` and `/metrics`.

It opens the backend for the process's lifetime and builds each request's context (the
dataloaders), once per HTTP request: the operations of a batch share one set of loaders, so what
one fetched serves the others. Around each operation it resolves automatic persisted queries
(gateway/persisted.py) and keeps whole answers in the response cache (gateway/response_cache.py);
before any runs, an operation that names a trusted document gets its text
(gateway/trusted_documents.py). In front of it stand the clients' rate limits
(gateway/rate_limit.py). Every request goes through `observe.Observed` (its id, counters, span and
log line); each operation is counted by name and outcome (gateway/metrics.py). The view's hooks
share what they learn of a request through one `RequestState`.

With worker.py and cli.py, it is where the settings are read: every layer below gets the plain
values it needs.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, cast

import orjson
from cross_web import AsyncHTTPRequestAdapter, HTTPException
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL
from strawberry.http import GraphQLHTTPResponse, GraphQLRequestData
from strawberry.http.types import QueryParams
from strawberry.types import ExecutionResult
from strawberry.types.execution import SubscriptionExecutionResult
from strawberry.types.unset import UNSET

from gateway import (
    endpoints,
    graphiql,
    head,
    hits,
    metrics,
    observe,
    persisted,
    request_limits,
    request_params,
    response_cache,
    tracing,
)
from gateway.backends import BackendFactory, open_backend
from gateway.compose import schema_for, trusted_documents_for
from gateway.config import Settings, answer_settings, cors_origins
from gateway.cors import cors
from gateway.engine.engine import Engine
from gateway.errors import (
    BatchTooLarge,
    PersistedQueryNotFound,
    PersistedQueryRefused,
    RequestRefused,
    is_request_error,
    located,
    response_body,
)
from gateway.front import GRAPHQL_PATH, Front
from gateway.http_cache import cache_headers
from gateway.interrupt import Interruptible
from gateway.loaders.backend import Backend
from gateway.loaders.loaders import Loaders
from gateway.negotiation import GRAPHQL_RESPONSE, prefers_graphql_response
from gateway.persisted import PersistedQueries
from gateway.rate_limit import RateLimit, RateLimited, charge_more
from gateway.response_cache import (
    Cached,
    MemoryStore,
    ResponseCache,
    Store,
    effective_ttl,
    namespace,
)
from gateway.schema import GatewaySchema
from gateway.schema.context import Context
from gateway.shared_cache import SharedCache, SharedStore
from gateway.trusted_documents import TrustedDocuments, reloaded_on_sighup


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


@dataclass(slots=True, eq=False)
class RequestState:
    """What the view's hooks learn about one HTTP request and hand each other: made by `run`
    before any of them is called, and `current` while it runs."""

    deadline: float  # the event loop's time by which every operation ends
    backend: Backend | None = None  # the request's, once `get_context` has made it
    answers: list[Cached | None] = field(default_factory=list)  # each operation's cached answer
    request_error: bool = False  # the last operation processed never ran (a refused request)

    @property
    def stale(self) -> bool:
        """Whether any data so far was a stale copy, served while the source failed."""
        return self.backend is not None and self.backend.stale


current: ContextVar[RequestState] = ContextVar("gateway_request_state")


class GraphQLEndpoint(GraphQL[Context, None]):
    """Strawberry's GraphQL-over-HTTP view with our context, errors, JSON, GraphiQL and limits."""

    def __init__(
        self,
        schema: GatewaySchema,
        *,
        engine: Engine,
        persisted: PersistedQueries,
        documents: TrustedDocuments,
        responses: ResponseCache | None,
        max_body_bytes: int,
        max_batch: int,
        request_timeout: float,
    ) -> None:
        super().__init__(schema)
        self.engine = engine  # answers what its compiled plans cover (gateway/engine/)
        self.persisted = persisted
        self.documents = documents
        self.responses = responses  # None: answers are not cached
        self.max_body_bytes = max_body_bytes
        self.max_batch = max_batch
        self.request_timeout = request_timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            receive = request_limits.limit_body(receive, self.max_body_bytes)
            if scope["method"] == "HEAD":
                scope, send = head.as_get(scope, send)
        await super().__call__(scope, receive, send)

    async def get_context(self, request: Request | WebSocket, response: Any) -> Context:
        """Called once per HTTP request: a batch's operations all get this context."""
        backend: BackendFactory = request.app.state.backend
        context = Context(loaders=Loaders(backend()))
        current.get().backend = context.loaders.backend
        return context

    async def process_result(
        self, request: Request, result: ExecutionResult
    ) -> GraphQLHTTPResponse:
        state = current.get()
        if isinstance(result, _CachedResult):
            state.request_error = False
            state.answers.append(result.cached)
            if not state.stale:
                return cast(GraphQLHTTPResponse, _Encoded(result.cached.body))
            # Another operation of the batch was served stale: the body says so for all.
            body: dict[str, Any] = orjson.loads(result.cached.body)
            body["extensions"] = {**body.get("extensions", {}), "stale": True}
            return cast(GraphQLHTTPResponse, body)
        state.request_error = is_request_error(result) and not persisted.is_not_found(result)
        state.answers.append(None)
        return response_body(result, stale=state.stale)

    async def run(self, request: Any, context: Any = UNSET, root_value: Any = UNSET) -> Any:
        """GraphQL-over-HTTP: a client that accepts `application/graphql-response+json`
        gets it, and with it a 400 for a request error (with `application/json`, 200).

        The request's deadline starts now and covers its body; a body or batch over its limit
        is answered with a GraphQL error and its own status, whatever the media type.
        """
        state = RequestState(deadline=asyncio.get_running_loop().time() + self.request_timeout)
        token = current.set(state)
        try:
            response = await self._respond(request, context, root_value, state)
        finally:
            # However the request ended (answered, timed out, cancelled by its client hanging
            # up), nothing it started is waited for any more.
            if state.backend is not None:
                state.backend.close()
            current.reset(token)
        if (
            isinstance(response, Response)
            and response.media_type == "application/json"
            and prefers_graphql_response(request.headers.get("accept", ""))
        ):
            response.headers["content-type"] = GRAPHQL_RESPONSE
            # A batch is answered with a list, at 200, whatever its operations' errors.
            if state.request_error and response.body[:1] != b"[":
                response.status_code = 400
        if isinstance(response, Response) and response.media_type == "application/json":
            return cache_headers(request, response, state.answers)
        return response

    async def _single(self, request: Request) -> Response | hits.Answer | None:
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
            data = request_params.operation_from_query(request.query_params)
        operation = request_params.plain_operation(data)
        if operation is None:
            return None
        named = request.query_params if request.method == "GET" else await request.body()
        operation = self.documents.resolve(operation, named)
        hit = hits.from_cache(self.responses, operation, request.method, request.headers)
        if hit is not None:  # a cached answer at hand needs none of what follows
            return hit
        context = await self.get_context(request, None)
        result = await self.execute_single(
            request,
            self.request_adapter_class(request),
            await self.get_sub_response(request),
            context,
            None,
            operation,
        )
        body = await self.process_result(request, result)
        return Response(self.encode_json(body), media_type="application/json")

    async def _respond(
        self, request: Request, context: Any, root_value: Any, state: RequestState
    ) -> Any:
        """Strawberry's response, or the JSON answer to a request refused as a whole."""
        try:
            await request_limits.read_body(request, self.max_body_bytes, state.deadline)
            return await self._single(request) or await super().run(request, context, root_value)
        except HTTPException as refusal:  # Strawberry's own: answered in plain text
            metrics.bad_request(refusal.status_code)
            raise request_params.quoted_short(refusal) from None
        except RequestRefused as refusal:
            if isinstance(refusal, PersistedQueryRefused):  # no limit: the request is wrong
                metrics.bad_request(refusal.status)
            else:
                metrics.refused(refusal.code)
            body = self.encode_json(refusal.body)
            return Response(body, refusal.status, media_type="application/json")

    async def parse_http_body(
        self, request: AsyncHTTPRequestAdapter
    ) -> GraphQLRequestData | list[GraphQLRequestData]:
        """Strawberry's reading of the request, and a batch over `max_batch` refused with a code
        (Strawberry's own refusal is plain text)."""
        data = await super().parse_http_body(request)
        if isinstance(data, list) and len(data) > self.max_batch:
            raise BatchTooLarge(f"A batch may hold {self.max_batch} operations, not {len(data)}")
        return data

    async def execute_operation(
        self,
        request: Request,
        request_adapter: Any,
        request_data: GraphQLRequestData | list[GraphQLRequestData],
        context: Context,
        root_value: None,
        sub_response: Response,
    ) -> ExecutionResult | list[ExecutionResult] | SubscriptionExecutionResult:
        """The request's operations, as parsed: a batch's others are charged to the client's
        rate budget (the first was on arrival), then each gets its trusted document, if it
        names one (`documentId`, which Strawberry does not read, or an APQ hash)."""
        if isinstance(request_data, list):
            await charge_more(request.scope, len(request_data) - 1)
        named = request.query_params if request.method == "GET" else await request.body()
        return await super().execute_operation(
            request=request,
            request_adapter=request_adapter,
            request_data=self.documents.resolve(request_data, named),
            context=context,
            root_value=root_value,
            sub_response=sub_response,
        )

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
            except PersistedQueryNotFound as error:
                return ExecutionResult(data=None, errors=[located(error)])
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
                key = await self.responses.key(lookup.query, data.variables, data.operation_name)
            if key is None:
                result = await execute()
            else:
                result = await self._cached(key, execute)
            # Ran here, by another request, or cached: the hash has been checked either way.
            if lookup.remember is not None and not is_request_error(result):
                await self.persisted.remember(lookup)
            return result

        deadline = current.get().deadline
        with tracing.span("graphql operation") as span:
            result = await request_limits.in_time(answer(), deadline, self.request_timeout)
            label = metrics.operation_label(name, ran=not is_request_error(result))
            if span is not None:
                span.update_name(f"graphql {label}")
                span.set_attribute("graphql.operation.name", label)
        metrics.operation(label, result, time.perf_counter() - started)
        return result

    async def _cached(
        self, key: str, execute: Callable[[], Awaitable[ExecutionResult]]
    ) -> ExecutionResult:
        """The answer at `key` in the response cache, or `execute`'s, cached if it succeeded."""
        assert self.responses is not None
        computed = False  # else another request computed it, or it was cached
        state = current.get()

        async def compute() -> tuple[ExecutionResult, bytes | None]:
            nonlocal computed
            computed = True
            result = await execute()
            # Whether some of the data was stale is known by the time an operation ends; in a
            # batch, another operation's stale data keeps this one out of the cache too.
            complete = not result.errors and result.data is not None
            if not complete or state.stale:
                return result, None
            return result, self.encode_json(response_body(result))

        answer = await self.responses.fetch(key, compute)
        metrics.cache_lookup("response", hit=not computed)
        return _CachedResult(answer) if isinstance(answer, Cached) else answer

    def parse_json(self, data: str | bytes) -> object:
        """A POST body, its operations' parameters checked (gateway/request_params.py)."""
        return request_params.from_body(data)

    def parse_query_params(self, params: QueryParams) -> dict[str, object]:
        return request_params.from_query_string(params)

    def encode_json(self, data: object) -> bytes:
        if isinstance(data, _Encoded):
            return data.body
        if isinstance(data, list) and any(isinstance(item, _Encoded) for item in data):
            return b"[" + b",".join(map(self.encode_json, data)) + b"]"
        return orjson.dumps(data)

    def should_render_graphql_ide(self, request: Any) -> bool:
        # An APQ GET carries `extensions` instead of `query`, a trusted document's `documentId`:
        # it is for the API, not the page.
        params = request.query_params
        api = "extensions" in params or "documentId" in params
        return not api and graphiql.wants_graphiql(request)

    async def render_graphql_ide(self, request: Request) -> Response:
        return graphiql.graphiql_page(request.url.path)


def create_app(settings: Settings, *, clock: Callable[[], float] = time.monotonic) -> Starlette:
    # `--cache`: the Redis every process shares; `app.state.shared_cache` (None without it) tells
    # its state: `available`, `health()`, `await check()`. `clock` times the caches and the
    # circuit breaker: a test moves its own instead of waiting.
    shared = None if settings.cache is None else SharedCache(settings.cache)

    def store(max_bytes: int) -> Store:
        # With `--cache`, in this process's memory and in Redis for every other process too.
        local = MemoryStore(max_bytes, clock=clock)
        return local if shared is None else SharedStore(local, shared)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if settings.otel:
            tracing.start()
        if shared is not None:
            await shared.start()  # never fails: without Redis, each process serves on its own
        try:
            async with open_backend(
                settings, keep_warm=settings.warm_catalogue, shared=shared, clock=clock
            ) as backend:
                # `backend` makes each request's backend; `opened` answers `/readyz`.
                app.state.backend = app.state.opened = backend
                with reloaded_on_sighup(documents):
                    # What start-up made (modules, the schema, the catalogue) lives as long as
                    # the process: the garbage collector need not scan it again at each collection.
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
    schema = schema_for(settings, engine)
    documents = trusted_documents_for(settings, schema)
    upstream_ttl = None if settings.upstream is None else settings.cache_ttl
    ttl = effective_ttl(settings.response_cache_ttl, upstream_ttl)
    responses = None
    if ttl > 0:
        responses = ResponseCache(
            store(response_cache.MAX_BYTES),
            ttl=ttl,
            namespace=namespace(schema.as_str(), answer_settings(settings)),
            readings=schema.readings,
        )
    endpoint = GraphQLEndpoint(
        schema,
        engine=engine,
        persisted=PersistedQueries(store(persisted.MAX_BYTES), max_tokens=settings.max_tokens),
        documents=documents,
        responses=responses,
        max_body_bytes=settings.max_body_bytes,
        max_batch=settings.max_batch,
        request_timeout=settings.request_timeout,
    )
    graphql: ASGIApp = endpoint
    if settings.rate_limit > 0:
        # Each process its share of the budget while there is no Redis to share it through.
        limit = RateLimit(
            settings.rate_limit, processes=settings.workers, shared=shared, clock=clock
        )
        graphql = RateLimited(endpoint, limit, settings.rate_limit_key)
    graphql = cors(cors_origins(settings), graphql)
    app = Front(
        graphql=graphql,
        routes=[
            Route(GRAPHQL_PATH, graphql),
            Route("/healthz", endpoints.healthz),
            Route("/readyz", endpoints.readyz),
            Route("/metrics", endpoints.metrics),
            graphiql.graphiql_static,
        ],
        middleware=[Middleware(observe.Observed), Middleware(Interruptible)],
        lifespan=lifespan,
    )
    app.state.shared_cache = shared
    return app
