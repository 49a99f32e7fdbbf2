"""Optional OpenTelemetry spans: the request, each GraphQL operation, each dataloader batch, each
upstream request and each SQL statement.

Off unless `--otel` (GATEWAY_OTEL, `otel = true`) is set, which needs the OpenTelemetry
packages (`pip install 'djangopackages-gateway[otel]'`). Off, `span` hands back one shared
do-nothing context manager: no OpenTelemetry import, no allocation. On, each process exports its
spans over OTLP/HTTP in batches, where the standard variables say (`OTEL_EXPORTER_OTLP_ENDPOINT`,
by default http://localhost:4318; `OTEL_SERVICE_NAME`, by default djangopackages-gateway;
`OTEL_TRACES_SAMPLER`; `OTEL_TRACES_EXPORTER=console` prints them instead). The W3C
`traceparent` of an incoming request is the parent of its span, and the upstream requests carry
their own on.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, MutableMapping
from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Span, Tracer

SERVICE_NAME = "djangopackages-gateway"
INSTALL = "pip install 'djangopackages-gateway[otel]'"

_OFF: AbstractContextManager[None] = nullcontext()
_tracer: Tracer | None = None
_provider: TracerProvider | None = None


def available() -> bool:
    """Whether the OpenTelemetry SDK and its OTLP exporter can be imported."""
    try:
        import opentelemetry.exporter.otlp.proto.http.trace_exporter
        import opentelemetry.sdk.trace  # noqa: F401
    except ImportError:
        return False
    return True


def enabled() -> bool:
    return _tracer is not None


def use(provider: Any) -> None:
    """Trace with `provider` (an SDK `TracerProvider`; None turns tracing off)."""
    global _tracer
    _tracer = None if provider is None else provider.get_tracer("gateway")


def start() -> None:
    """Trace this process: a provider exporting where the OTEL_* variables say."""
    global _provider
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        ConsoleSpanExporter,
        SpanExporter,
    )

    service = os.environ.get("OTEL_SERVICE_NAME") or SERVICE_NAME
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    exporter: SpanExporter
    if os.environ.get("OTEL_TRACES_EXPORTER", "").strip() == "console":
        exporter = ConsoleSpanExporter(out=sys.stdout)
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter()
    provider.add_span_processor(BatchSpanProcessor(exporter))
    _provider = provider
    use(provider)


def stop() -> None:
    """Stop tracing; the spans not exported yet are sent first."""
    global _provider
    provider, _provider = _provider, None
    use(None)
    if provider is not None:
        provider.shutdown()


def span(
    name: str, attributes: Mapping[str, Any] | None = None, *, client: bool = False
) -> AbstractContextManager[Span | None]:
    """A span around the block, a child of the current one: the span, or None when off."""
    if _tracer is None:
        return _OFF
    from opentelemetry.trace import SpanKind

    kind = SpanKind.CLIENT if client else SpanKind.INTERNAL
    return _tracer.start_as_current_span(name, kind=kind, attributes=attributes)


def server_span(
    name: str, headers: Mapping[str, str], attributes: Mapping[str, Any]
) -> AbstractContextManager[Span | None]:
    """The span of an incoming request, the child of its `traceparent` if it has one."""
    if _tracer is None:
        return _OFF
    from opentelemetry import propagate
    from opentelemetry.trace import SpanKind

    parent = propagate.extract(headers)
    return _tracer.start_as_current_span(
        name, context=parent, kind=SpanKind.SERVER, attributes=attributes
    )


def inject(headers: MutableMapping[str, str]) -> None:
    """Add the current span's `traceparent` to outgoing request headers (when on)."""
    if _tracer is None:
        return
    from opentelemetry import propagate

    propagate.inject(headers)
