"""`/metrics`: known traffic, against the fake APIv4 or a database, shows the expected counts.

The metrics are process-wide, so each test reads what they gained while it ran; gateways are
served with `warm_catalogue=False`, so that no background fetch counts.
"""

from __future__ import annotations

import gc
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry, Histogram

from gateway.documents import document_cache
from gateway.observability import metrics
from tests.databases import Database, sqlite_database
from tests.fake_upstream import FakeUpstream
from tests.observing import Metrics, parse, post, scrape, served, value
from tests.waiting import STARTED, Output, frozen, wait_until

# The shared fixtures pytest finds by name in this module.
__all__ = ["sqlite_database"]

PAGE = "query Page { packages(first: 3) { nodes { slug category { slug } } } }"
SLUGS = "query Slugs { packages(first: 3) { nodes { slug } } }"
ORDERED = "query Ordered { packages(first: 2, orderBy: {field: TITLE}) { nodes { slug } } }"
DESCENDING = (
    "query Descending { packages(first: 2, orderBy: {field: TITLE, direction: DESC})"
    " { nodes { slug } } }"
)
PACKAGE = "query Package($id: Int!) { package(id: $id) { slug } }"
GRID = "query Grid($id: Int!) { grid(id: $id) { slug } }"


def first_categories(upstream: FakeUpstream, count: int) -> set[int]:
    """The categories of the upstream's first `count` packages (newest id first)."""
    rows = sorted(upstream.dataset.packages, key=lambda row: row.id, reverse=True)[:count]
    return {row.category_id for row in rows}


def test_operations_upstream_requests_and_caches_are_counted(upstream: FakeUpstream) -> None:
    categories = len(first_categories(upstream, 3))
    with served(upstream=upstream.base_url, warm_catalogue=False) as client:
        seen = Metrics(client)
        for _ in range(2):
            assert "errors" not in post(client, PAGE)
        assert "errors" not in post(client, SLUGS)
        seen.read()

    assert upstream.count == 1 + categories  # the list page, then each category once
    assert seen.gained("gateway_requests_total", operation="Page", outcome="ok") == 2
    assert seen.gained("gateway_requests_total", operation="Slugs", outcome="ok") == 1
    assert seen.gained("gateway_request_duration_seconds_count", operation="Page") == 2
    assert seen.gained("gateway_request_duration_seconds_sum", operation="Page") > 0

    upstream_requests = "gateway_upstream_requests_total"
    assert seen.gained(upstream_requests, resource="packages", kind="list", status="200") == 1
    assert (
        seen.gained(upstream_requests, resource="categories", kind="detail", status="200")
        == categories
    )
    duration = "gateway_upstream_request_duration_seconds_count"
    assert seen.gained(duration, resource="categories", kind="detail") == categories

    # The second Page is a whole answer from the response cache; Slugs is not, but the list
    # page it reads is in the upstream cache.
    lookups = "gateway_cache_lookups_total"
    assert seen.gained(lookups, layer="response", result="miss") == 2
    assert seen.gained(lookups, layer="response", result="hit") == 1
    assert seen.gained(lookups, layer="upstream", result="miss") == 1 + categories
    assert seen.gained(lookups, layer="upstream", result="hit") == 1

    # One batch of the category loader, holding every category of the page.
    assert seen.gained("gateway_dataloader_batch_size_count", loader="category") == 1
    assert seen.gained("gateway_dataloader_batch_size_sum", loader="category") == categories


def test_the_catalogue_snapshot_is_a_cache_layer_of_its_own(upstream: FakeUpstream) -> None:
    with served(upstream=upstream.base_url, warm_catalogue=False) as client:
        seen = Metrics(client)
        assert "errors" not in post(client, ORDERED)
        assert "errors" not in post(client, DESCENDING)
        seen.read()
    lookups = "gateway_cache_lookups_total"
    assert seen.gained(lookups, layer="catalogue", result="miss") == 1
    assert seen.gained(lookups, layer="catalogue", result="hit") == 1
    for resource in ("categories", "grids", "packages"):  # the three whole lists, once
        assert (
            seen.gained(
                "gateway_upstream_requests_total", resource=resource, kind="list", status="200"
            )
            == 1
        )


def test_refusals_are_counted_by_limit(upstream: FakeUpstream) -> None:
    limits: dict[str, Any] = {
        "max_depth": 3,
        "max_cost": 50,
        "max_aliases": 2,
        "max_tokens": 200,
        "max_body_bytes": 5_000,
        "max_batch": 2,
        "introspection": False,
        "request_timeout": 0.5,
    }
    refused = {
        "depth": "{ packages { nodes { category { packages { nodes { slug } } } } } }",
        "cost": "{ packages(first: 100) { nodes { slug } } }",
        "aliases": "{ a: __typename b: __typename c: __typename }",
        "tokens": "{ %s }" % " ".join(["__typename"] * 250),
        "introspection": "{ __schema { queryType { name } } }",
    }
    with served(upstream=upstream.base_url, warm_catalogue=False, **limits) as client:
        seen = Metrics(client)
        for query in refused.values():
            client.post("/graphql", json={"query": query})
        assert client.post("/graphql", content=b"{" * 6_000).status_code == 413
        batch = [{"query": "{ __typename }"}] * 3
        assert client.post("/graphql", json=batch).status_code == 400
        assert client.post("/graphql", content=b"not json").status_code == 400
        upstream.latency = 1.0
        body = post(client, "query Slow { categories { totalCount } }")
        assert body["errors"][0]["extensions"]["code"] == "REQUEST_TIMEOUT"
        seen.read()

    for limit in [*refused, "body_size", "batch", "timeout"]:
        assert seen.gained("gateway_refusals_total", limit=limit) == 1, limit
    requests = "gateway_requests_total"
    assert seen.gained(requests, operation="anonymous", outcome="refused") == len(refused)
    assert seen.gained(requests, operation="unknown", outcome="refused") == 2
    assert seen.gained(requests, operation="unknown", outcome="bad_request") == 1
    assert seen.gained(requests, operation="Slow", outcome="REQUEST_TIMEOUT") == 1


def test_upstream_failures_are_counted_by_status(upstream: FakeUpstream) -> None:
    package, grid = upstream.dataset.packages[0], upstream.dataset.grids[0]
    with served(upstream=upstream.base_url, warm_catalogue=False, upstream_timeout=0.3) as client:
        seen = Metrics(client)
        upstream.fail("/api/v4/packages/", "500", 1)
        body = post(client, PACKAGE, variables={"id": package.id})
        assert body["errors"][0]["extensions"]["code"] == "UPSTREAM_ERROR"
        upstream.fail("/api/v4/grids/", "hang", 1)
        body = post(client, GRID, variables={"id": grid.id})
        assert body["errors"][0]["extensions"]["code"] == "UPSTREAM_ERROR"
        seen.read()
    upstream_requests = "gateway_upstream_requests_total"
    assert seen.gained(upstream_requests, resource="packages", kind="detail", status="500") == 1
    assert seen.gained(upstream_requests, resource="grids", kind="detail", status="timeout") == 1
    requests = "gateway_requests_total"
    assert seen.gained(requests, operation="Package", outcome="UPSTREAM_ERROR") == 1
    # A failed lookup fetched: a miss.
    assert seen.gained("gateway_cache_lookups_total", layer="upstream", result="miss") == 2


def test_sql_statements_are_counted_by_kind(sqlite_database: Database) -> None:
    with served(database=f"sqlite:///{sqlite_database.path}") as client:
        seen = Metrics(client)
        assert "errors" not in post(
            client, "query Sql { packages(first: 3) { nodes { slug category { title } } } }"
        )
        seen.read()
    statements = "gateway_sql_statements_total"
    assert seen.gained(statements, statement="list", outcome="ok") == 1
    assert seen.gained(statements, statement="by_id", outcome="ok") == 1
    assert seen.gained("gateway_sql_statement_duration_seconds_count", statement="list") == 1
    assert seen.gained("gateway_dataloader_batch_size_count", loader="category") == 1
    assert (
        seen.gained(
            "gateway_upstream_requests_total", resource="packages", kind="list", status="200"
        )
        == 0
    )


def test_operation_names_are_read_and_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    name = metrics.operation_name
    assert name(None, "query One { a }") == "One"
    assert name(None, "# a comment\n ,mutation\n# another\n Two($x: Int) { a }") == "Two"
    assert name("Given", "query One { a } query Given { b }") == "Given"
    assert name(None, "{ search(query: x) }") is None
    assert name(None, "query($id: Int!) { a }") is None
    assert name(None, "queryOne { a }") is None
    assert name(None, "#" * 100_000) is None  # no backtracking: this returns at once

    monkeypatch.setattr(metrics, "_names", set())
    monkeypatch.setattr(metrics, "MAX_OPERATION_NAMES", 2)
    label = metrics.operation_label
    # Refused operations take no slot: made-up names cannot push the real ones out.
    assert [label("Made", ran=False), label("Up", ran=False)] == ["unknown", "unknown"]
    assert [label("A"), label("B"), label("C"), label("A")] == ["A", "B", "other", "A"]
    assert label("A", ran=False) == "A"  # a name already known keeps its label
    assert label(None) == "anonymous"
    assert label("not a name") == "invalid"
    assert label("x" * 101) == "invalid"
    assert label(42) == label(["A"]) == "invalid"
    assert name(42, "query One { a }") == 42


def test_every_metric_family_is_exposed() -> None:
    with served() as client:
        text = client.get("/metrics").text
    for family in [
        "gateway_requests_total",
        "gateway_request_duration_seconds",
        "gateway_refusals_total",
        "gateway_upstream_requests_total",
        "gateway_upstream_request_duration_seconds",
        "gateway_cache_lookups_total",
        "gateway_dataloader_batch_size",
        "gateway_sql_statements_total",
        "gateway_sql_statement_duration_seconds",
        "gateway_event_loop_lateness_seconds",
        "gateway_event_loop_busy_seconds",
        "gateway_gc_pause_seconds",
        "gateway_gc_frozen_objects",
    ]:
        assert f"# TYPE {family} " in text, family
    samples = parse(text)
    assert value(samples, "gateway_cache_lookups_total", layer="redis", result="hit") >= 0


def test_histograms_count_as_prometheus_client_observes() -> None:
    """metrics.py observes its histograms by bisection: the same buckets and sum as
    prometheus-client's own `observe`, at the bounds, between them and beyond the last."""
    bounds = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)
    reference = Histogram("reference", "", ["loader"], buckets=bounds, registry=CollectorRegistry())
    sizes = [0, 1, 2, 3, 5, 7, 10, 499, 500, 501, 1000, 1001, 10**6]
    for size in sizes:
        metrics.batch("bisected", size)
        reference.labels("bisected").observe(size)

    def samples(histogram: Histogram, prefix: str) -> dict[tuple[str, str], float]:
        [family] = histogram.collect()
        return {
            (sample.name.removeprefix(prefix), sample.labels.get("le", "")): sample.value
            for sample in family.samples
            if sample.labels["loader"] == "bisected"
        }

    expected = samples(reference, "reference")
    assert expected[("_count", "")] == len(sizes)
    assert samples(metrics.BATCH_SIZE, "gateway_dataloader_batch_size") == expected


# -- several workers ---------------------------------------------------------------------------


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _workers(parent: int) -> list[int]:
    children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
    return [
        int(child)
        for child in children
        if b"spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes()
    ]


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="reads Linux's /proc")
def test_two_workers_metrics_are_summed(tmp_path: Path, upstream: FakeUpstream) -> None:
    port = _free_port()
    command = [sys.executable, "-m", "gateway", "serve", "--port", str(port), "--workers", "2"]
    command += ["--upstream", upstream.base_url, "--no-warm-catalogue"]
    env = {name: value for name, value in os.environ.items() if not name.startswith("GATEWAY_")}
    env.pop(metrics.MULTIPROC_VARIABLE, None)
    process = subprocess.Popen(
        command, env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    log = Output(process.stderr)
    origin = f"http://127.0.0.1:{port}"
    query = {"query": "query Count { categories { totalCount } }"}
    try:
        log.wait_for(STARTED, count=2)
        first, second = _workers(process.pid)
        directory = next(
            line.partition(b"=")[2].decode()
            for line in Path(f"/proc/{first}/environ").read_bytes().split(b"\0")
            if line.startswith(metrics.MULTIPROC_VARIABLE.encode() + b"=")
        )
        assert Path(directory).is_dir()
        # Each worker answers some: two by the second while the first is frozen, then three.
        for stopped, times in [(first, 2), (second, 3)]:
            with frozen(stopped):
                for _ in range(times):
                    response = httpx.post(f"{origin}/graphql", json=query, timeout=5)
                    assert response.status_code == 200, response.text
        # Either worker answers /metrics with both workers' counts.
        for stopped in (first, second):
            with frozen(stopped):
                text = httpx.get(f"{origin}/metrics", timeout=5).text
            samples = parse(text)
            assert value(samples, "gateway_requests_total", operation="Count", outcome="ok") == 5
            # Each worker fetched the categories page once: two upstream requests in all.
            assert (
                value(
                    samples,
                    "gateway_upstream_requests_total",
                    resource="categories",
                    kind="list",
                    status="200",
                )
                == 2
            )
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()
    assert process.returncode == -signal.SIGTERM, log.text
    assert not Path(directory).exists()  # the parent removed it


def test_the_caches_report_what_they_hold_against_their_bounds(upstream: FakeUpstream) -> None:
    with served(upstream=upstream.base_url, warm_catalogue=False) as client:
        before = scrape(client)
        assert "errors" not in post(client, PAGE)
        after = scrape(client)

    def held(samples: dict[Any, float], cache: str) -> float:
        return value(samples, "gateway_cache_bytes", cache=cache)

    # A new document, its plan, its reading, its answer and the upstream's resources: all kept.
    for cache in ("documents", "plans", "readings", "responses", "resources"):
        assert held(after, cache) > held(before, cache), cache
    bound = document_cache.MAX_BYTES
    assert value(after, "gateway_cache_bound_bytes", cache="documents") == bound
    assert value(after, "gateway_cache_bound_bytes", cache="resources") == 32 * 2**20


def test_the_loops_ticks_and_the_collections_are_counted() -> None:
    lateness = "gateway_event_loop_lateness_seconds_count"
    with served() as client:
        seen = Metrics(client)

        def ticked() -> bool:
            seen.read()
            busy = lateness.replace("lateness", "busy")
            return seen.gained(lateness) >= 3 and seen.gained(busy) >= 3

        wait_until(ticked, "the loop's watch ticks")
        gc.collect()  # in this process, where the gateway serves from a thread
        seen.read()
    assert seen.gained("gateway_gc_pause_seconds_count", generation="2") >= 1
    assert seen.gained("gateway_gc_pause_seconds_sum", generation="2") > 0
