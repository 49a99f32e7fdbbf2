"""Each GraphQL operation of a request, answered.

The HTTP view (gateway/app.py) hands over each operation, a single one or each of a batch: its
APQ hash is replaced by its document (gateway/caching/persisted.py); a query's answer may then come
from the response cache (gateway/caching/response_cache.py), or be computed once for all the
requests asking for it at that moment; a document validated before runs by its compiled plan
(gateway/engine/), any other through Strawberry's pipeline. Every operation ends by its request's
deadline, and is counted (gateway/observability/metrics.py) and traced
(gateway/observability/tracing.py). The operations of a request share a `RequestState`, `current`
while the request runs.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass, field

import orjson
from cross_web import HTTPException
from strawberry.http import GraphQLRequestData
from strawberry.types import ExecutionResult

from gateway.caching.persisted import PersistedQueries
from gateway.caching.response_cache import Cached, ResponseCache
from gateway.engine.engine import Engine
from gateway.errors import (
    PersistedQueryNotFound,
    RequestRefused,
    is_request_error,
    located,
    response_body,
    unexpected_result,
)
from gateway.http import request_limits
from gateway.loaders.backend import Backend
from gateway.observability import metrics, tracing
from gateway.schema.context import Context

# Strawberry's pipeline for one operation: what the plans do not cover.
Pipeline = Callable[[GraphQLRequestData], Awaitable[ExecutionResult]]


@dataclass(slots=True, eq=False)
class RequestState:
    """What the view learns about one HTTP request and its operations hand each other: made
    before any operation, and `current` while the request runs."""

    deadline: float  # the event loop's time by which every operation ends
    backend: Backend | None = None  # the request's, once its context is made
    answers: list[Cached | None] = field(default_factory=list)  # each operation's cached answer
    request_error: bool = False  # the last operation processed never ran (a refused request)

    @property
    def stale(self) -> bool:
        """Whether any data so far was a stale copy, served while the source failed."""
        return self.backend is not None and self.backend.stale


current: ContextVar[RequestState] = ContextVar("gateway_request_state")


class CachedResult(ExecutionResult):
    """An operation answered by the response cache: its body is already encoded."""

    def __init__(self, cached: Cached) -> None:
        super().__init__(data=None, errors=None)
        self.cached = cached


class Operations:
    """How the operations of one schema are answered."""

    def __init__(
        self,
        engine: Engine,
        persisted: PersistedQueries,
        responses: ResponseCache | None,
        request_timeout: float,
    ) -> None:
        self.engine = engine
        self.persisted = persisted
        self.responses = responses  # None: answers are not cached
        self.request_timeout = request_timeout

    async def answer(
        self, request_data: GraphQLRequestData, context: Context, pipeline: Pipeline
    ) -> ExecutionResult:
        """The operation's result, by the request's deadline; `pipeline` runs what the plans
        do not cover."""
        started = time.perf_counter()
        name: object = request_data.operation_name

        async def answer() -> ExecutionResult:
            nonlocal name
            try:
                lookup = await self.persisted.resolve(request_data.query, request_data.extensions)
            except PersistedQueryNotFound as error:
                return ExecutionResult(data=None, errors=[located(error)])
            name = metrics.operation_name(request_data.operation_name, lookup.query)
            data = request_data
            if lookup.query is not data.query:
                data = dataclasses.replace(request_data, query=lookup.query)

            async def execute() -> ExecutionResult:
                planned = await self.engine.execute_known(
                    data.query, data.operation_name, data.variables, context
                )
                if planned is not None:
                    return ExecutionResult(data=planned.data, errors=planned.errors)
                return await pipeline(data)

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
            try:
                result = await request_limits.in_time(answer(), deadline, self.request_timeout)
            except (HTTPException, RequestRefused):  # the whole request refused: the view's
                raise
            except Exception as error:  # a bug: answered as Strawberry's pipeline answers one
                result = unexpected_result(error)
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
            return result, orjson.dumps(response_body(result))

        answer = await self.responses.fetch(key, compute)
        metrics.cache_lookup("response", hit=not computed)
        return CachedResult(answer) if isinstance(answer, Cached) else answer
