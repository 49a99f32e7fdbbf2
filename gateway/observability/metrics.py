"""Every Prometheus metric of the gateway, and the counters of the request at hand.

The metrics are defined here and nowhere else; the code that counts calls one function of this
module per event, and each also counts the event in the current request's `RequestStats` (a
context variable the HTTP middleware sets, gateway/observability/observe.py), which its log line
reports.

Several worker processes (`gateway serve --workers N`) count in prometheus-client's
multiprocess mode: the parent makes a directory for the workers' counter files and names it in
`PROMETHEUS_MULTIPROC_DIR` before they start (`multiprocess_directory`), and `/metrics`, which
any worker may answer, sums every worker's files. A worker that dies and is replaced keeps its
counts in the sum: counters never go down.

Metric names (the help texts below say what each counts):

- `gateway_requests_total{operation, outcome}`
- `gateway_request_duration_seconds{operation}` (histogram)
- `gateway_refusals_total{limit}`
- `gateway_upstream_requests_total{resource, kind, status}`
- `gateway_upstream_request_duration_seconds{resource, kind}` (histogram)
- `gateway_cache_lookups_total{layer, result}`
- `gateway_dataloader_batch_size{loader}` (histogram)
- `gateway_sql_statements_total{statement, outcome}`
- `gateway_sql_statement_duration_seconds{statement}` (histogram)
- `gateway_execution_total{path}`
- `gateway_cache_bytes{cache}` and `gateway_cache_bound_bytes{cache}` (gauges, read as they are
  scraped; one process's: not shown with worker processes)
- `gateway_event_loop_lateness_seconds`, `gateway_event_loop_busy_seconds` (histograms)
- `gateway_gc_pause_seconds{generation}` (histogram)
- `gateway_gc_frozen_objects` (gauge)
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import tempfile
import weakref
from bisect import bisect_left
from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol, cast

from graphql import GraphQLError
from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.multiprocess import MultiProcessCollector
from strawberry.types import ExecutionResult

from gateway.errors import (
    BATCH_TOO_LARGE,
    INTROSPECTION_DISABLED,
    INTROSPECTION_REPEATED,
    PERSISTED_DOCUMENT_ID_REQUIRED,
    PERSISTED_DOCUMENT_NOT_FOUND,
    QUERY_TOO_COMPLEX,
    QUERY_TOO_COSTLY,
    QUERY_TOO_DEEP,
    RATE_LIMITED,
    REQUEST_TIMEOUT,
    REQUEST_TOO_LARGE,
    TOO_MANY_ALIASES,
    TOO_MANY_SELECTIONS,
    TOO_MANY_TOKENS,
    classify,
)

MULTIPROC_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"

# The limit each refusal code stands for (`gateway_refusals_total{limit}`). A refusal before any
# operation runs (these, and a body that does not arrive in time) has the outcome `refused`; an
# operation that outlives the request's time is counted under its own name as REQUEST_TIMEOUT.
LIMITS = {
    QUERY_TOO_DEEP: "depth",
    QUERY_TOO_COSTLY: "cost",
    TOO_MANY_ALIASES: "aliases",
    TOO_MANY_TOKENS: "tokens",
    TOO_MANY_SELECTIONS: "selections",
    QUERY_TOO_COMPLEX: "complexity",
    INTROSPECTION_DISABLED: "introspection",
    INTROSPECTION_REPEATED: "introspection",
    REQUEST_TOO_LARGE: "body_size",
    BATCH_TOO_LARGE: "batch",
    REQUEST_TIMEOUT: "timeout",
    PERSISTED_DOCUMENT_NOT_FOUND: "trusted_documents",
    PERSISTED_DOCUMENT_ID_REQUIRED: "trusted_documents",
    RATE_LIMITED: "rate",
}

# Operation names come from clients: each process labels at most this many distinct ones, the
# others as "other", so that a client cannot grow the metrics without bound.
MAX_OPERATION_NAMES = 200
MAX_NAME_LENGTH = 100

# Seconds: from a cached answer (well under a millisecond) to the request time limit.
_LATENCY = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)

# No `_created` series: counters start at zero with the process.
disable_created_metrics()  # type: ignore[no-untyped-call]

REQUESTS = Counter(
    "gateway_requests",
    "GraphQL operations answered, by operation name and outcome: ok, refused (by a query"
    " limit, or the request by its size), bad_request (refused by the HTTP layer), or the code"
    " of the first error; a request cut before its answer counts once, operation unknown, as"
    " CLIENT_CLOSED or SHUTTING_DOWN",
    ["operation", "outcome"],
)
REQUEST_SECONDS = Histogram(
    "gateway_request_duration_seconds",
    "Time to answer one GraphQL operation (a cached answer included)",
    ["operation"],
    buckets=_LATENCY,
)
REFUSALS = Counter(
    "gateway_refusals",
    "Operations and requests refused by a limit: depth, cost, aliases, tokens, introspection,"
    " body_size, batch, timeout, trusted_documents, rate",
    ["limit"],
)
UPSTREAM_REQUESTS = Counter(
    "gateway_upstream_requests",
    "HTTP requests sent to the APIv4 (each attempt), by resource (packages, grids, categories,"
    " search, root), kind (list or detail) and HTTP status (or timeout, error, too_large,"
    " cancelled when no usable answer came)",
    ["resource", "kind", "status"],
)
UPSTREAM_SECONDS = Histogram(
    "gateway_upstream_request_duration_seconds",
    "Time of one APIv4 request, to the end of its body",
    ["resource", "kind"],
    buckets=_LATENCY,
)
CACHE_LOOKUPS = Counter(
    "gateway_cache_lookups",
    "Cache lookups by layer (upstream: a resource in the process's cache, catalogue: the"
    " catalogue snapshot, response: a whole answer; redis: the cache shared by processes) and"
    " result (hit, miss)",
    ["layer", "result"],
)
BATCH_SIZE = Histogram(
    "gateway_dataloader_batch_size",
    "Keys in one dataloader batch, by loader",
    ["loader"],
    buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000),
)
SQL_STATEMENTS = Counter(
    "gateway_sql_statements",
    "SQL statements run by the database backend, by kind (by_id, by_slug, relation, count,"
    " list, search) and outcome (ok, error)",
    ["statement", "outcome"],
)
SQL_SECONDS = Histogram(
    "gateway_sql_statement_duration_seconds",
    "Time of one SQL statement, rows fetched included",
    ["statement"],
    buckets=_LATENCY,
)
EXECUTIONS = Counter(
    "gateway_execution",
    "GraphQL operations executed, by the path that answered: plan (the compiled plan of the"
    " execution engine) or graphql (graphql-core's executor, for what plans do not cover)",
    ["path"],
)
# Seconds: the event loop's stalls (gateway/observability/stalls.py), from a tick's usual lateness
# (well under a millisecond) to the worst the loop has been seen to stall.
_STALLS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)
GC_PAUSES = Histogram(
    "gateway_gc_pause_seconds",
    "CPU time of one garbage collection, by the oldest generation it collected (0, 1, 2):"
    " no Python code runs in the process meanwhile",
    ["generation"],
    buckets=_STALLS,
)


class _Stalls(NamedTuple):
    lateness: Histogram
    busy: Histogram
    frozen: Gauge


@functools.cache
def _stalls() -> _Stalls:
    """The metrics without labels of gateway/observability/stalls.py, made once it runs, not at
    import: in multiprocess mode one without labels opens its file at once, in every process
    importing this module (the documents' child too, which may start as the parent removes the
    files)."""
    return _Stalls(
        Histogram(
            "gateway_event_loop_lateness_seconds",
            "How late the event loop ran a tick due every 10 ms: what a request arriving then"
            " waited",
            buckets=_STALLS,
        ),
        Histogram(
            "gateway_event_loop_busy_seconds",
            "CPU the event loop's thread spent between two ticks (10 ms apart and their"
            " lateness): the gateway's own part of the lateness",
            buckets=_STALLS,
        ),
        Gauge(
            "gateway_gc_frozen_objects",
            "Objects out of the garbage collector's sight (gc.freeze): at start-up and after each"
            " renewal of the catalogue snapshot; it must not grow with time",
            multiprocess_mode="livesum",
        ),
    )


class Bounded(Protocol):
    """A cache bounded in bytes: what it holds now, by its own weights, and its bound."""

    @property
    def size(self) -> int: ...

    @property
    def max_bytes(self) -> int: ...


class _Caches:
    """What this process's caches hold and may hold, read at each scrape: a cache still
    filling is memory still to come (bench/load.py warms up until none grows)."""

    def __init__(self) -> None:
        # By name, the latest of that name (an app made again, in tests, replaces the last).
        self._caches: dict[str, weakref.ref[Bounded]] = {}

    def watch(self, name: str, cache: Bounded) -> None:
        self._caches[name] = weakref.ref(cache)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        held = GaugeMetricFamily(
            "gateway_cache_bytes",
            "What a cache of this process holds, in bytes by its own weights: responses,"
            " persisted (APQ documents), documents (parsed), readings (documents read, by"
            " text), plans (the engine's), resources (the upstream's), kept (the database's"
            " answers)",
            labels=["cache"],
        )
        bound = GaugeMetricFamily(
            "gateway_cache_bound_bytes", "The bound of a cache, in bytes", labels=["cache"]
        )
        for name, ref in sorted(self._caches.items()):
            cache = ref()
            if cache is not None:
                held.add_metric([name], cache.size)
                bound.add_metric([name], cache.max_bytes)
        yield held
        yield bound


_CACHES = _Caches()
REGISTRY.register(_CACHES)


def watch_cache(name: str, cache: Bounded) -> None:
    """Report `cache` as `gateway_cache_bytes{cache=name}` for as long as it lives."""
    _CACHES.watch(name, cache)


# -- the current request -------------------------------------------------------------------


@dataclass(slots=True, eq=False)
class RequestStats:
    """What one HTTP request cost, counted as it happens: its log line reports it.

    Work shared between requests (one upstream fetch that several wait for) is counted for the
    request that started it.
    """

    request_id: str
    operations: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # distinct codes, in order of appearance
    upstream_requests: int = 0
    sql_statements: int = 0
    batches: int = 0
    cache_hits: int = 0
    cache_misses: int = 0


current: ContextVar[RequestStats | None] = ContextVar("gateway_request_stats", default=None)


# -- recording -----------------------------------------------------------------------------

# Each metric's children by label values, as `labels()` would find them, without its lock. Label
# values are bounded (operation names too, by `operation_label`), and so is this.
_children: dict[tuple[MetricWrapperBase, tuple[str, ...]], Any] = {}


def _child(metric: MetricWrapperBase, *labels: str) -> Any:
    child = _children.get((metric, labels))
    if child is None:
        child = metric.labels(*labels)
        if isinstance(metric, Histogram):
            child = _Observed(cast(Histogram, child))
        _children[metric, labels] = child
    return child


class _Observed:
    """A histogram's child, observed as `Histogram.observe` observes (no exemplar): its sum,
    and the first bucket whose bound is not below the amount, found by bisection. A request
    observes several (its duration, its batches, its statements): prometheus-client's
    `observe`, which checks the child each time and walks the bounds in turn, cost more than
    the rest of the request's metrics."""

    __slots__ = ("_bounds", "_buckets", "_sum")

    def __init__(self, child: Histogram) -> None:
        self._bounds: list[float] = child._upper_bounds
        self._buckets: list[Any] = child._buckets
        self._sum: Any = child._sum

    def observe(self, amount: float) -> None:
        self._sum.inc(amount)
        self._buckets[bisect_left(self._bounds, amount)].inc(1)


for _layer in ("upstream", "catalogue", "response", "redis"):  # exposed from the start, at 0
    for _result in ("hit", "miss"):
        _child(CACHE_LOOKUPS, _layer, _result)
for _path in ("plan", "graphql"):
    _child(EXECUTIONS, _path)


def cache_lookup(layer: str, hit: bool) -> None:
    """One lookup in a cache layer: upstream, catalogue, response or redis."""
    _child(CACHE_LOOKUPS, layer, "hit" if hit else "miss").inc()
    stats = current.get()
    if stats is not None:
        if hit:
            stats.cache_hits += 1
        else:
            stats.cache_misses += 1


def operation(name: str, result: ExecutionResult, seconds: float) -> None:
    """One GraphQL operation answered (`name` from `operation_label`)."""
    codes = error_codes(result.errors) if result.errors else []
    refused = [LIMITS[code] for code in codes if code in LIMITS]
    for limit in refused:
        _child(REFUSALS, limit).inc()
    if not codes:
        outcome = "ok"
    elif refused and refused[0] != "timeout":
        outcome = "refused"
    else:
        outcome = codes[0]
    _child(REQUESTS, name, outcome).inc()
    _child(REQUEST_SECONDS, name).observe(seconds)
    stats = current.get()
    if stats is not None:
        stats.operations.append(name)
        if codes:
            _note_errors(stats, codes)


def execution(path: str) -> None:
    """One operation executed, by its plan (`plan`) or by graphql-core (`graphql`)."""
    _child(EXECUTIONS, path).inc()


def refused(code: str) -> None:
    """A whole request refused before any operation (its body, its batch, its time)."""
    _child(REFUSALS, LIMITS.get(code, code)).inc()
    _child(REQUESTS, "unknown", "refused").inc()
    stats = current.get()
    if stats is not None:
        _note_errors(stats, [code])


def bad_request(status: int) -> None:
    """A request the HTTP layer refused with a 4xx of its own (not JSON, no query, ...)."""
    _child(REQUESTS, "unknown", "bad_request").inc()
    stats = current.get()
    if stats is not None:
        _note_errors(stats, [f"HTTP_{status}"])


def interrupted(code: str) -> None:
    """A request cut before its answer: its client hung up (`CLIENT_CLOSED`, status 499) or the
    server's shutdown came (`SHUTTING_DOWN`). Counted once, whatever it held, as the outcome of
    an operation `unknown`; its log line says so too."""
    _child(REQUESTS, "unknown", code).inc()
    stats = current.get()
    if stats is not None:
        _note_errors(stats, [code])


def upstream_request(path: str, status: str, seconds: float) -> None:
    """One attempt at an APIv4 GET of `path` (relative to the API root), and how it ended."""
    resource, kind = upstream_resource(path)
    _child(UPSTREAM_REQUESTS, resource, kind, status).inc()
    _child(UPSTREAM_SECONDS, resource, kind).observe(seconds)
    stats = current.get()
    if stats is not None:
        stats.upstream_requests += 1


def loop_tick(late: float, busy: float) -> None:
    """A tick of the loop's watch: how late it ran, and the loop thread's CPU since the last."""
    stalls = _stalls()
    stalls.lateness.observe(late)
    stalls.busy.observe(busy)


def gc_pause(generation: int, seconds: float) -> None:
    _child(GC_PAUSES, str(generation)).observe(seconds)


def frozen(objects: int) -> None:
    _stalls().frozen.set(objects)


def batch(loader: str, size: int) -> None:
    _child(BATCH_SIZE, loader).observe(size)
    stats = current.get()
    if stats is not None:
        stats.batches += 1


def sql_statement(kind: str, ok: bool, seconds: float) -> None:
    _child(SQL_STATEMENTS, kind, "ok" if ok else "error").inc()
    _child(SQL_SECONDS, kind).observe(seconds)
    stats = current.get()
    if stats is not None:
        stats.sql_statements += 1


def _note_errors(stats: RequestStats, codes: list[str]) -> None:
    for code in codes:
        if code not in stats.errors:
            stats.errors.append(code)


def error_codes(errors: list[GraphQLError] | None) -> list[str]:
    """The errors' codes, as the client sees them, each once."""
    codes: list[str] = []
    for error in errors or ():
        code = (error.extensions or {}).get("code") or classify(error)
        if code not in codes:
            codes.append(str(code))
    return codes


# -- labels --------------------------------------------------------------------------------

_RESOURCES = frozenset({"packages", "grids", "categories", "search"})


def upstream_resource(path: str) -> tuple[str, str]:
    """(resource, kind) for an APIv4 path: `packages/` is a list, `packages/12/` a detail."""
    head, _, rest = path.partition("/")
    if head in _RESOURCES:
        return head, "detail" if rest else "list"
    return ("root", "list") if path == "" else ("other", "detail")


_NAME = re.compile(r"[_A-Za-z][_0-9A-Za-z]*")
# A document's first operation: its type and name, after whitespace, commas and comments.
# (Possessive quantifiers: no backtracking, whatever the document.)
_FIRST_OPERATION = re.compile(
    r"(?:[\s,\ufeff]++|#[^\n\r]*+)*+(query|mutation|subscription)(?:[\s,\ufeff]++|#[^\n\r]*+)++"
    r"([_A-Za-z][_0-9A-Za-z]*+)"
)
_names: set[str] = set()


def operation_name(given: object, document: str | None) -> object:
    """The operation's name: the one the request gives, else that of the document's first
    operation (a document with several must name one). None for an anonymous operation."""
    if given:
        return given
    if not document:
        return None
    match = _FIRST_OPERATION.match(document)
    return match.group(2) if match else None


def operation_label(name: object, ran: bool = True) -> str:
    """The `operation` label for a name: bounded in length and in number of distinct values
    (whatever a request sends as its `operationName`). A name is taken in only from an
    operation that `ran` (parsed and validated): names made up by refused requests cannot use
    up the slots."""
    if name is None or name == "":
        return "anonymous"
    if not isinstance(name, str) or len(name) > MAX_NAME_LENGTH:
        return "invalid"
    if name in _names:
        return name
    if not ran:
        return "unknown"
    if not _NAME.fullmatch(name):
        return "invalid"
    if len(_names) >= MAX_OPERATION_NAMES:
        return "other"
    _names.add(name)
    return name


# -- exposition and worker processes -------------------------------------------------------


def exposition(accept: str) -> tuple[bytes, str]:
    """The metrics in the format `accept` asks for (Prometheus text by default), and its media
    type: this process's, or with worker processes, the sum of all of theirs."""
    registry: CollectorRegistry = REGISTRY
    if os.environ.get(MULTIPROC_VARIABLE):
        registry = CollectorRegistry()
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    encoder, media_type = choose_encoder(accept)
    return encoder(registry), media_type


@contextmanager
def multiprocess_directory(environ: MutableMapping[str, str]) -> Iterator[None]:
    """A fresh directory for the workers' metric files, named in `environ` while they run (the
    workers start after this and inherit it), and removed afterwards.

    One named in the environment already is the operator's, kept as it is.
    """
    if environ.get(MULTIPROC_VARIABLE):
        yield
        return
    path = tempfile.mkdtemp(prefix="gateway-metrics-")
    environ[MULTIPROC_VARIABLE] = path
    try:
        yield
    finally:
        environ.pop(MULTIPROC_VARIABLE, None)
        shutil.rmtree(path, ignore_errors=True)
