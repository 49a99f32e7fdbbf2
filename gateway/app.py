"""The ASGI app: `/graphql` (POST, GET, GraphiQL), `/healthz`, `/readyz` and `/metrics`.

It opens the backend for the process's lifetime and builds each request's context (the
dataloaders), once per HTTP request: the operations of a batch share one set of loaders, so what
one fetched serves the others. The view reads the request's body (gateway/http/request_limits.py),
answers a single operation by POST or GET itself, the rest through Strawberry's view, and hands
each operation to gateway/operations.py (automatic persisted queries, the response cache, the
compiled plans, the deadline, its metrics and span); before any runs, an operation that names a
trusted document gets its text (gateway/documents/trusted_documents.py). In front of it stand the
clients' rate limits (gateway/http/rate_limit.py). Every request goes through `observe.Observed`
(its id, counters, span and log line). The view and the operations share what they learn of a
request through one `RequestState`.

With worker.py and cli.py, it is where the settings are read: every layer below gets the plain
values it needs.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
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

from gateway.backends import BackendFactory, open_backend
from gateway.caching import persisted, response_cache
from gateway.caching.persisted import PersistedQueries
from gateway.caching.response_cache import (
    MemoryStore,
    ResponseCache,
    Store,
    effective_ttl,
    namespace,
)
from gateway.caching.shared_cache import SharedCache, SharedStore
from gateway.compose import schema_for, trusted_documents_for
from gateway.config import Settings, answer_settings, cors_origins
from gateway.documents.trusted_documents import TrustedDocuments, reloaded_on_sighup
from gateway.engine.engine import Engine
from gateway.errors import (
    BadRequest,
    BatchTooLarge,
    PersistedQueryRefused,
    RequestRefused,
    is_request_error,
    response_body,
)
from gateway.http import endpoints, graphiql, head, hits, request_limits, request_params
from gateway.http.cors import cors
from gateway.http.front import GRAPHQL_PATH, Front
from gateway.http.http_cache import Answer, answer, cache_headers
from gateway.http.interrupt import Interruptible
from gateway.http.negotiation import GRAPHQL_RESPONSE, prefers_graphql_response
from gateway.http.rate_limit import RateLimit, RateLimited, charge_more
from gateway.loaders.loaders import Loaders
from gateway.observability import metrics, observe, stalls, tracing
from gateway.operations import CachedResult, Operations, RequestState, current
from gateway.schema import GatewaySchema
from gateway.schema.context import Context
from gateway.tasks import taken

# What `/graphql` answers (HEAD as the GET: gateway/http/head.py), for a 405's `Allow` (RFC 9110).
ALLOWED_METHODS = "GET, HEAD, POST"


class _Encoded(dict[str, Any]):
    """A response body already encoded (`encode_json` writes `body` as it is)."""

    def __init__(self, body: bytes) -> None:
        super().__init__()
        self.body = body


def _fields(scope: Scope) -> dict[bytes, bytes]:
    """The request's header fields by name, the first of each name as Starlette's `Headers`
    gives it."""
    return dict(reversed(scope["headers"]))


def _prefers_graphql_response(fields: dict[bytes, bytes]) -> bool:
    return prefers_graphql_response(fields.get(b"accept", b"").decode("latin-1"))


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
        self.documents = documents
        self.responses = responses  # None: answers are not cached
        self.max_body_bytes = max_body_bytes
        self.max_batch = max_batch
        self.request_timeout = request_timeout
        self.operations = Operations(engine, persisted, responses, request_timeout)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        if scope["method"] == "HEAD":
            scope, send = head.as_get(scope, send)
        # The request's deadline starts now and covers its body.
        state = RequestState(deadline=asyncio.get_running_loop().time() + self.request_timeout)
        token = current.set(state)
        try:
            response = await self._respond(scope, receive, state)
        finally:
            # However the request ended (answered, timed out, cancelled by its client hanging
            # up), nothing it started is waited for any more; and the fetches it started, which
            # may outlive it, hold its state in their context, but not its backend any more.
            backend, state.backend = state.backend, None
            if backend is not None:
                backend.close()
            current.reset(token)
        await response(scope, receive, send)

    async def _respond(self, scope: Scope, receive: Receive, state: RequestState) -> ASGIApp:
        """The answer: a single operation's, else Strawberry's view's, or the refusal of the
        whole request (a body or batch over its limit, or a request Strawberry's view refuses,
        is answered with a GraphQL error and its own status, whatever the media type)."""
        fields = _fields(scope)
        try:
            body = await request_limits.read_body(
                scope, receive, self.max_body_bytes, state.deadline
            )
            single = await self._single(scope, receive, body, fields, state)
            if single is not None:
                return single
            request = Request(scope, request_limits.replayed(body, receive))
            response = await self.run(request)
        except HTTPException as refusal:  # Strawberry's view's own
            response = self._refused(request_params.bad_request(refusal))
        except RequestRefused as refusal:
            response = self._refused(refusal)
        return self._negotiated(scope["method"], fields, response, state)

    def _refused(self, refusal: RequestRefused) -> Response:
        """A refused request's answer, counted: a wrong request, or one over a limit."""
        if isinstance(refusal, BadRequest | PersistedQueryRefused):  # no limit: it is wrong
            metrics.bad_request(refusal.status)
        else:
            metrics.refused(refusal.code)
        body = self.encode_json(refusal.body)
        headers = {"allow": ALLOWED_METHODS} if refusal.status == 405 else None
        return Response(body, refusal.status, headers, media_type="application/json")

    def _negotiated(
        self, method: str, fields: dict[bytes, bytes], response: Response, state: RequestState
    ) -> Response:
        """GraphQL-over-HTTP: a client that accepts `application/graphql-response+json` gets
        it, and with it a 400 for a request error (with `application/json`, 200); then HTTP
        caching."""
        if not isinstance(response, Response) or response.media_type != "application/json":
            return response
        if _prefers_graphql_response(fields):
            response.headers["content-type"] = GRAPHQL_RESPONSE
            # A batch is answered with a list, at 200, whatever its operations' errors.
            if state.request_error and response.body[:1] != b"[":
                response.status_code = 400
        if_none_match = fields.get(b"if-none-match", b"").decode("latin-1")
        return cache_headers(method, if_none_match, response, state.answers)

    async def _single(
        self,
        scope: Scope,
        receive: Receive,
        body: bytes,
        fields: dict[bytes, bytes],
        state: RequestState,
    ) -> Answer | None:
        """A single operation, by POST (JSON) or GET, answered as Strawberry's view would, with
        less of its generality: it is most requests. None for anything else (a batch, another
        media type, GraphiQL, a member of the wrong type), which Strawberry's view answers.

        (The view streams nothing here: its protocols are WebSocket ones only.)
        """
        method: str = scope["method"]
        request: Request | None = None  # Starlette's, made only when needed
        data: object = None
        named: Mapping[str, str] | bytes = body
        if method == "POST":
            media_type = fields.get(b"content-type", b"").partition(b";")[0]
            if media_type.strip().lower() != b"application/json":
                return None
            try:
                data = orjson.loads(body)
            except orjson.JSONDecodeError:
                return None
        elif method == "GET":
            request = Request(scope, request_limits.replayed(body, receive))
            if self.should_render_graphql_ide(request):
                return None
            named = request.query_params
            data = request_params.operation_from_query(named)
        operation = request_params.plain_operation(data)
        if operation is None:
            return None
        operation = self.documents.resolve(operation, named)
        content_type = GRAPHQL_RESPONSE if _prefers_graphql_response(fields) else "application/json"
        if_none_match = fields.get(b"if-none-match", b"").decode("latin-1")
        hit = hits.from_cache(self.responses, operation, method, content_type, if_none_match)
        if hit is not None:  # a cached answer at hand needs none of what follows
            return hit
        context = self._context(scope["app"])

        async def strawberry(data: GraphQLRequestData) -> ExecutionResult:
            http = request or Request(scope, request_limits.replayed(body, receive))
            adapter = self.request_adapter_class(http)
            sub_response = await self.get_sub_response(http)
            return await GraphQL.execute_single(
                self, http, adapter, sub_response, context, None, data
            )

        result = await self.operations.answer(operation, context, strawberry)
        encoded = self.encode_json(self._body(result, state))
        if content_type == GRAPHQL_RESPONSE and state.request_error:
            return answer(method, if_none_match, encoded, content_type, None, 400)
        return answer(method, if_none_match, encoded, content_type, state.answers[0])

    def _context(self, app: Starlette) -> Context:
        """A request's context: its backend and loaders, which a batch's operations share."""
        backend: BackendFactory = app.state.backend
        context = Context(loaders=Loaders(backend()))
        current.get().backend = context.loaders.backend
        return context

    async def get_context(self, request: Request | WebSocket, response: Any) -> Context:
        """Called once per HTTP request: a batch's operations all get this context."""
        return self._context(request.app)

    async def process_result(
        self, request: Request, result: ExecutionResult
    ) -> GraphQLHTTPResponse:
        return self._body(result, current.get())

    def _body(self, result: ExecutionResult, state: RequestState) -> GraphQLHTTPResponse:
        """An operation's response body, noting in `state` its cached answer, if any, and
        whether it was a request error."""
        if isinstance(result, CachedResult):
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

    async def parse_http_body(
        self, request: AsyncHTTPRequestAdapter
    ) -> GraphQLRequestData | list[GraphQLRequestData]:
        """Strawberry's reading of the request, and a batch over `max_batch` refused with a code
        of its own (BATCH_TOO_LARGE, not BAD_REQUEST)."""
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
        """Each operation of a request Strawberry's view answers (a batch's, each in a task of
        its own: cancelled with the request, the task is let go of its cancellation)."""
        task = asyncio.current_task()
        if task is not None:
            task.add_done_callback(taken)

        async def strawberry(data: GraphQLRequestData) -> ExecutionResult:
            return await GraphQL.execute_single(
                self, request, request_adapter, sub_response, context, root_value, data
            )

        return await self.operations.answer(request_data, context, strawberry)

    def parse_json(self, data: str | bytes) -> object:
        """A POST body, its operations' parameters checked (gateway/http/request_params.py)."""
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

    def store(name: str, max_bytes: int) -> Store:
        # With `--cache`, in this process's memory and in Redis for every other process too.
        local = MemoryStore(max_bytes, clock=clock)
        metrics.watch_cache(name, local)
        return local if shared is None else SharedStore(local, shared)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if settings.otel:
            tracing.start()
        if shared is not None:
            await shared.start()  # never fails: without Redis, each process serves on its own
        try:
            async with (
                stalls.watched(),
                open_backend(
                    settings, keep_warm=settings.warm_catalogue, shared=shared, clock=clock
                ) as backend,
            ):
                # `backend` makes each request's backend; `opened` answers `/readyz`.
                app.state.backend = app.state.opened = backend
                with reloaded_on_sighup(documents), stalls.collected_less_often():
                    # What start-up made (modules, the schema, the catalogue) lives as long as
                    # the process: the garbage collector need not scan it again at each collection.
                    stalls.freeze()
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
    metrics.watch_cache("plans", engine)
    metrics.watch_cache("documents", schema.documents)
    metrics.watch_cache("readings", schema.readings)
    documents = trusted_documents_for(settings, schema)
    upstream_ttl = None if settings.upstream is None else settings.cache_ttl
    ttl = effective_ttl(settings.response_cache_ttl, upstream_ttl)
    responses = None
    if ttl > 0:
        responses = ResponseCache(
            store("responses", response_cache.MAX_BYTES),
            ttl=ttl,
            namespace=namespace(schema.as_str(), answer_settings(settings)),
            readings=schema.readings,
        )
    endpoint = GraphQLEndpoint(
        schema,
        engine=engine,
        persisted=PersistedQueries(
            store("persisted", persisted.MAX_BYTES), max_tokens=settings.max_tokens
        ),
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
