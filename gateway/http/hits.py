"""A response-cache hit, answered before anything a hit does not need.

A busy gateway is mostly asked again what it has answered: the same document, variables and
operation name. Such a request needs no backend, no dataloaders, no deadline for its operation and
none of Strawberry's view. The HTTP view (gateway/app.py) hands each single operation here once its
body is read and its trusted document found; what this process's memory does not hold goes on to
the view's whole path, which also asks the Redis that processes share, runs APQ and traces. A hit
says the same either way: its body, media type, ETag, Cache-Control, Vary and 304, and its metrics
(the log line and the request id are the middleware's, gateway/observability/observe.py).
"""

from __future__ import annotations

import time

from strawberry.http import GraphQLRequestData
from strawberry.types import ExecutionResult

from gateway.caching.response_cache import ResponseCache
from gateway.http.http_cache import Answer, answer
from gateway.observability import metrics, tracing

_ANSWERED = ExecutionResult(data=None, errors=None)  # what the metrics count of a hit: no errors


def from_cache(
    responses: ResponseCache | None,
    operation: GraphQLRequestData,
    method: str,
    content_type: str,
    if_none_match: str,
) -> Answer | None:
    """The answer to `operation`, as `content_type`, if this process holds it in memory; None
    for anything else (no response cache, a document not read before, a miss here, an APQ
    extension, a request traced), which the view's whole path answers."""
    if (
        responses is None
        or operation.query is None
        or "persistedQuery" in (operation.extensions or {})
        or tracing.enabled()
    ):
        return None
    started = time.perf_counter()
    key = responses.key_at_hand(operation.query, operation.variables, operation.operation_name)
    cached = None if key is None else responses.at_hand(key)
    if cached is None:
        return None
    metrics.cache_lookup("response", hit=True)
    hit = answer(method, if_none_match, cached.body, content_type, cached)
    name = metrics.operation_name(operation.operation_name, operation.query)
    metrics.operation(metrics.operation_label(name), _ANSWERED, time.perf_counter() - started)
    return hit
