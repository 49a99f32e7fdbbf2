"""Watching the gateway work: each request's id, span and log line; each upstream request, SQL
statement and dataloader batch counted (gateway/observability/metrics.py) and traced
(gateway/observability/tracing.py).

`Observed` wraps the app: it takes the request's id from `X-Request-ID` (printable ASCII, at
most 128 characters; otherwise, or without one, a new one), returns it in the response's
`X-Request-ID` and hands it to the upstream in the REST backend's requests; it keeps the
request's counters (`metrics.RequestStats`) in a context variable while the request runs, and
then logs one line: text for people, or JSON (`--log-format json`). Health checks and metric
scrapes are not logged.
"""

from __future__ import annotations

import copy
import logging
import random
import re
import time
from collections.abc import Callable, Coroutine
from contextlib import AbstractContextManager
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self, TypeVar

import httpx
import orjson
from starlette.types import Message, Receive, Scope, Send

from gateway.errors import UpstreamError
from gateway.middleware import HttpMiddleware
from gateway.observability import metrics, tracing

if TYPE_CHECKING:
    from opentelemetry.trace import Span

ACCESS = logging.getLogger("gateway.access")

REQUEST_ID_HEADER = "x-request-id"
_REQUEST_ID_NAME = REQUEST_ID_HEADER.encode()
_REQUEST_ID = re.compile(rb"[!-~]{1,128}")  # visible ASCII: no spaces, no control characters

# Probes and scrapes come every few seconds: they would drown the log.
QUIET_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})


def request_id(headers: list[tuple[bytes, bytes]]) -> str:
    """The client's `X-Request-ID` if it is a sane one, else a new one."""
    for name, value in headers:
        if name == _REQUEST_ID_NAME:
            if _REQUEST_ID.fullmatch(value):
                return value.decode("ascii")
            break
    return f"{random.getrandbits(128):032x}"


class Observed(HttpMiddleware):
    """ASGI middleware: the request's id, counters, span and log line."""

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        stats = metrics.RequestStats(request_id(scope["headers"]))
        header = (_REQUEST_ID_NAME, stats.request_id.encode())
        status = 500  # unless a response starts

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message = {**message, "headers": [*message.get("headers", ()), header]}
            await send(message)

        token = metrics.current.set(stats)
        path: str = scope["path"]
        try:
            if not tracing.enabled():
                await self.app(scope, receive, sending)
            else:
                await self._traced(scope, receive, sending, stats, lambda: status)
        finally:
            metrics.current.reset(token)
            if path not in QUIET_PATHS and ACCESS.isEnabledFor(logging.INFO):
                _log(scope, stats, status, time.perf_counter() - started)

    async def _traced(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        stats: metrics.RequestStats,
        status: Callable[[], int],
    ) -> None:
        method, path = scope["method"], scope["path"]
        headers = {
            name.decode("latin-1"): value.decode("latin-1") for name, value in scope["headers"]
        }
        attributes = {
            "http.request.method": method,
            "url.path": path,
            "gateway.request_id": stats.request_id,
        }
        name = f"{method} {path}" if path == "/graphql" else method
        with tracing.server_span(name, headers, attributes) as span:
            try:
                await self.app(scope, receive, send)
            finally:
                if span is not None:
                    span.set_attribute("http.response.status_code", status())
                    if stats.operations:
                        span.set_attribute("graphql.operation.name", stats.operations)
                    if stats.errors:
                        span.set_attribute("gateway.errors", stats.errors)


def _log(scope: Scope, stats: metrics.RequestStats, status: int, seconds: float) -> None:
    """The request's line (the caller checked the level): its record made as `ACCESS.info`
    would, but for looking up the caller's frame, which no line shows."""
    record = ACCESS.makeRecord(
        ACCESS.name,
        logging.INFO,
        __file__,
        _LOG_LINE,
        "%s %s %d",
        (scope["method"], scope["path"], status),
        None,
        extra={
            "access": {
                "request_id": stats.request_id,
                "method": scope["method"],
                "path": scope["path"],
                "status": status,
                "duration_ms": round(seconds * 1000, 3),
                "operations": stats.operations,
                "upstream_requests": stats.upstream_requests,
                "sql_statements": stats.sql_statements,
                "batches": stats.batches,
                "cache_hits": stats.cache_hits,
                "cache_misses": stats.cache_misses,
                "errors": stats.errors,
            }
        },
    )
    ACCESS.handle(record)


_LOG_LINE = _log.__code__.co_firstlineno


def outgoing_headers() -> dict[str, str] | None:
    """Headers for an upstream request: the current request's id, and with tracing its
    `traceparent`; None when there is nothing to add."""
    stats = metrics.current.get()
    if stats is None and not tracing.enabled():
        return None
    headers: dict[str, str] = {}
    if stats is not None:
        headers["X-Request-ID"] = stats.request_id
    tracing.inject(headers)
    return headers


# -- what the backends do ------------------------------------------------------------------


class _Measured:
    """A block counted and traced: its span, and how long it took, which `_measured` records
    as the block ends."""

    __slots__ = ("_entered", "_span", "_started")

    def __init__(self, span: AbstractContextManager[Span | None]) -> None:
        self._span = span

    def __enter__(self) -> Self:
        self._entered = self._span.__enter__()
        self._started = time.perf_counter()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool | None:
        self._measured(error, time.perf_counter() - self._started)
        return self._span.__exit__(kind, error, traceback)

    def _measured(self, error: BaseException | None, seconds: float) -> None:
        raise NotImplementedError


class UpstreamCall(_Measured):
    """One attempt at an APIv4 GET, counted and traced: `with UpstreamCall(path) as call:`,
    then `call.status = <HTTP status>` once it answered. How it failed, if it did, is read from
    the exception that leaves the block."""

    __slots__ = ("path", "status")

    def __init__(self, path: str) -> None:
        self.path = path
        self.status: int | None = None
        attributes = {"http.request.method": "GET", "url.path": path}
        super().__init__(tracing.span(f"GET {_route(path)}", attributes, client=True))

    def _measured(self, error: BaseException | None, seconds: float) -> None:
        if error is None:
            outcome = str(self.status)
        elif isinstance(error, TimeoutError | httpx.TimeoutException):
            outcome = "timeout"
        elif isinstance(error, httpx.HTTPError):
            outcome = "error"
        elif isinstance(error, UpstreamError):
            outcome = "too_large"  # it answered, with a body over the limit
        else:
            outcome = "cancelled"
        metrics.upstream_request(self.path, outcome, seconds)
        if self._entered is not None:
            self._entered.set_attribute("gateway.upstream.outcome", outcome)
            if self.status is not None:
                self._entered.set_attribute("http.response.status_code", self.status)


def _route(path: str) -> str:
    """`packages/{id}/` for `packages/12/`: a span name of few values."""
    resource, kind = metrics.upstream_resource(path)
    if resource in ("root", "other"):
        return "/"
    return f"{resource}/" if kind == "list" else f"{resource}/{{key}}/"


class SqlStatement(_Measured):
    """One SQL statement, counted and traced: `with SqlStatement(kind, dialect):`."""

    __slots__ = ("kind",)

    def __init__(self, kind: str, dialect: str) -> None:
        self.kind = kind
        super().__init__(
            tracing.span(
                f"SELECT {kind}",
                {
                    "db.system.name": dialect,
                    "db.operation.name": "SELECT",
                    "gateway.statement": kind,
                },
                client=True,
            )
        )

    def _measured(self, error: BaseException | None, seconds: float) -> None:
        metrics.sql_statement(self.kind, error is None, seconds)


K = TypeVar("K")
V = TypeVar("V")
BatchLoad = Callable[[list[K]], Coroutine[Any, Any, list[V]]]


def batch(loader: str) -> Callable[[BatchLoad[K, V]], BatchLoad[K, V]]:
    """Decorate a dataloader's batch function: its size counted, a span around it."""

    def decorate(load: BatchLoad[K, V]) -> BatchLoad[K, V]:
        # Loaders are made for each request: no `functools.wraps`, whose copying costs more
        # than the rest of this.
        async def batched(keys: list[K]) -> list[V]:
            metrics.batch(loader, len(keys))
            if not tracing.enabled():
                return await load(keys)
            with tracing.span(f"batch {loader}", {"gateway.batch.size": len(keys)}):
                return await load(keys)

        return batched

    return decorate


def batch_answered(loader: str, size: int) -> None:
    """A dataloader batch answered at once from what the backend had at hand: counted as
    `batch` counts one, and traced as a span of its own (with no work under it)."""
    metrics.batch(loader, size)
    if tracing.enabled():
        with tracing.span(f"batch {loader}", {"gateway.batch.size": size}):
            pass


# -- log lines -----------------------------------------------------------------------------


_second: tuple[int, str] = (-1, "")  # the last second formatted, as it was


def _time(record: logging.LogRecord) -> str:
    """`2025-01-02T03:04:05.678Z`: the record's time in UTC, to the millisecond."""
    global _second
    second, formatted = _second  # once: another thread may format a line too
    if second != int(record.created):
        second = int(record.created)
        formatted = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        _second = (second, formatted)
    return f"{formatted}.{int(record.msecs):03d}Z"


class TextFormatter(logging.Formatter):
    """`2025-01-02T03:04:05.678Z INFO    POST /graphql 200 12.3 ms operation=... ...`"""

    def format(self, record: logging.LogRecord) -> str:
        access = getattr(record, "access", None)
        message = _readable(access) if access is not None else record.getMessage()
        line = f"{_time(record)} {record.levelname:<7} {message}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def _readable(access: dict[str, Any]) -> str:
    operations = ",".join(access["operations"]) or "-"
    errors = ",".join(access["errors"]) or "-"
    return (
        f"{access['method']} {access['path']} {access['status']}"
        f" {access['duration_ms']:.1f} ms operation={operations}"
        f" upstream={access['upstream_requests']} sql={access['sql_statements']}"
        f" hits={access['cache_hits']} misses={access['cache_misses']}"
        f" errors={errors} request_id={access['request_id']}"
    )


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and a request's fields."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": _time(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        access = getattr(record, "access", None)
        if access is not None:
            line.update(access)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(line, default=str).decode()


def logging_config(log_format: str, log_level: str) -> dict[str, Any]:
    """uvicorn's logging configuration, with the gateway's loggers (request lines included) on
    standard error in `log_format`; in JSON, uvicorn's own lines too."""
    from uvicorn.config import LOGGING_CONFIG

    config: dict[str, Any] = copy.deepcopy(LOGGING_CONFIG)
    formatter = JsonFormatter if log_format == "json" else TextFormatter
    config["formatters"]["gateway"] = {"()": f"{__name__}.{formatter.__name__}"}
    config["handlers"]["gateway"] = {
        "class": "logging.StreamHandler",
        "formatter": "gateway",
        "stream": "ext://sys.stderr",
    }
    config["loggers"]["gateway"] = {
        "handlers": ["gateway"],
        "level": log_level.upper(),
        "propagate": False,
    }
    if log_format == "json":
        for handler in config["handlers"].values():
            handler["formatter"] = "gateway"
    return config
