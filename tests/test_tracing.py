"""OpenTelemetry spans, caught by the SDK's in-memory exporter: the request, its operations, each
dataloader batch, each upstream request and each SQL statement, each the child of what caused
it; and the trace carried on to the upstream."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from gateway.observability import tracing
from tests.databases import Database, sqlite_database
from tests.fake_upstream import FakeUpstream
from tests.observing import post, served

# The shared fixtures pytest finds by name in this module.
__all__ = ["sqlite_database"]

PAGE = "query Page { packages(first: 2) { nodes { slug category { slug } } } }"


class Exporter(InMemorySpanExporter):
    """The SDK's in-memory exporter, telling when a request's own span has ended."""

    def __init__(self) -> None:
        super().__init__()
        self.request_ended = threading.Event()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        result = super().export(spans)
        if any(span.kind == SpanKind.SERVER for span in spans):
            self.request_ended.set()
        return result


@pytest.fixture
def exporter() -> Iterator[Exporter]:
    exporter = Exporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.use(provider)
    try:
        yield exporter
    finally:
        tracing.use(None)
        provider.shutdown()


def finished(exporter: Exporter) -> list[ReadableSpan]:
    """The spans, once the request's own has ended (after its response was sent)."""
    assert exporter.request_ended.wait(5), "the request's span never ended"
    return list(exporter.get_finished_spans())


def named(spans: list[ReadableSpan], name: str) -> list[ReadableSpan]:
    found = [span for span in spans if span.name == name]
    assert found, (name, [span.name for span in spans])
    return found


def parent_of(span: ReadableSpan, spans: list[ReadableSpan]) -> ReadableSpan:
    assert span.parent is not None, span.name
    [parent] = [other for other in spans if other.context.span_id == span.parent.span_id]
    return parent


def test_a_query_over_the_upstream(upstream: FakeUpstream, exporter: Exporter) -> None:
    with served(upstream=upstream.base_url, warm_catalogue=False) as client:
        assert "errors" not in post(client, PAGE)
        spans = finished(exporter)

    [request] = named(spans, "POST /graphql")
    assert request.kind == SpanKind.SERVER and request.parent is None
    assert request.attributes is not None
    assert request.attributes["http.response.status_code"] == 200
    assert request.attributes["gateway.request_id"]
    [operation] = named(spans, "graphql Page")
    assert parent_of(operation, spans) is request
    [page] = named(spans, "GET packages/")
    assert page.kind == SpanKind.CLIENT and parent_of(page, spans) is operation
    assert page.attributes is not None and page.attributes["http.response.status_code"] == 200
    [batch] = named(spans, "batch category")
    assert parent_of(batch, spans) is operation
    categories = named(spans, "GET categories/{key}/")
    assert all(parent_of(span, spans) is batch for span in categories)
    assert len(spans) == 4 + len(categories)
    assert {span.context.trace_id for span in spans} == {request.context.trace_id}

    # The upstream got the trace: each request carries its own span as the parent.
    sent = {logged.headers["traceparent"].rpartition("-")[0] for logged in upstream.log}
    assert sent == {
        f"00-{span.context.trace_id:032x}-{span.context.span_id:016x}"
        for span in [page, *categories]
    }


def test_a_query_over_a_database(sqlite_database: Database, exporter: Exporter) -> None:
    with served(database=f"sqlite:///{sqlite_database.path}") as client:
        query = "query Sql { packages(first: 2) { nodes { slug category { title } } } }"
        assert "errors" not in post(client, query)
        spans = finished(exporter)
    [operation] = named(spans, "graphql Sql")
    [listed] = named(spans, "SELECT list")
    assert parent_of(listed, spans) is operation
    assert listed.attributes is not None and listed.attributes["db.system.name"] == "sqlite"
    [batch] = named(spans, "batch category")
    [by_id] = named(spans, "SELECT by_id")
    assert parent_of(by_id, spans) is batch


def test_an_incoming_trace_is_continued(upstream: FakeUpstream, exporter: Exporter) -> None:
    trace_id, span_id = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    with served(upstream=upstream.base_url, warm_catalogue=False) as client:
        client.post(
            "/graphql",
            json={"query": "{ categories { totalCount } }"},
            headers={"traceparent": f"00-{trace_id}-{span_id}-01"},
        )
        spans = finished(exporter)
    [request] = named(spans, "POST /graphql")
    assert request.parent is not None and request.parent.span_id == int(span_id, 16)
    assert {span.context.trace_id for span in spans} == {int(trace_id, 16)}


def test_off_it_costs_a_shared_do_nothing_context() -> None:
    assert not tracing.enabled()
    assert tracing.span("a") is tracing.span("b", {"x": 1}, client=True)
    with tracing.span("a") as span:
        assert span is None
    headers: dict[str, str] = {}
    tracing.inject(headers)
    assert headers == {}


def test_otel_exports_from_the_servers_lifetime(
    upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "console")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "gateway-under-test")
    with served(upstream=upstream.base_url, warm_catalogue=False, otel=True) as client:
        assert tracing.enabled()
        post(client, "query Counted { categories { totalCount } }")
    assert not tracing.enabled()  # stopped with the server, its spans sent
    out = capsys.readouterr().out
    assert '"name": "graphql Counted"' in out
    assert '"service.name": "gateway-under-test"' in out


def test_otel_without_the_packages_stops_start_up(tmp_path: Path) -> None:
    # A stand-in `opentelemetry` that cannot be imported, ahead of the installed one.
    (tmp_path / "opentelemetry").mkdir()
    (tmp_path / "opentelemetry" / "__init__.py").write_text("raise ImportError('not here')\n")
    env = {name: value for name, value in os.environ.items() if not name.startswith("GATEWAY_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")]))
    command = [sys.executable, "-m", "gateway", "serve", "--otel"]
    run = subprocess.run(command, capture_output=True, text=True, env=env, timeout=30, check=False)
    assert run.returncode == 2
    assert run.stderr == (
        "gateway: error: --otel: OpenTelemetry is not installed:"
        " pip install 'djangopackages-gateway[otel]'\n"
    )
    env["PYTHONPATH"] = os.environ.get("PYTHONPATH", "")
    config = [sys.executable, "-m", "gateway", "config", "--otel"]
    run = subprocess.run(config, capture_output=True, text=True, env=env, timeout=30, check=False)
    assert run.returncode == 0, run.stderr
    assert "otel = true" in run.stdout
