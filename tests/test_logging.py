"""One log line per request, and the request id: taken from `X-Request-ID` or made, returned in
the response and sent on to the upstream."""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.observability.observe import JsonFormatter, TextFormatter, logging_config
from tests.fake_upstream import FakeUpstream
from tests.observing import served
from tests.waiting import LISTENING, Output

ROOT = Path(__file__).resolve().parent.parent

PAGE = "query Page { packages(first: 2) { nodes { slug category { slug } } } }"
GENERATED = re.compile(r"[0-9a-f]{32}")


def test_a_request_id_goes_to_the_upstream_and_back(upstream: FakeUpstream) -> None:
    with served(upstream=upstream.base_url, warm_catalogue=False) as client:
        response = client.post(
            "/graphql", json={"query": PAGE}, headers={"X-Request-ID": "trace-42/abc:1"}
        )
        assert response.status_code == 200
        assert response.headers["x-request-id"] == "trace-42/abc:1"
        assert upstream.count > 1
        assert {logged.headers.get("x-request-id") for logged in upstream.log} == {"trace-42/abc:1"}


@pytest.mark.parametrize(
    "given", [None, "", "has spaces", "x" * 129, "tab\there", "caf\u00e9".encode()]
)
def test_a_missing_or_unfit_request_id_is_replaced(
    upstream: FakeUpstream, given: str | bytes | None
) -> None:
    headers: dict[bytes, bytes] = {}
    if given is not None:
        headers[b"X-Request-ID"] = given if isinstance(given, bytes) else given.encode()
    with served(upstream=upstream.base_url, warm_catalogue=False) as client:
        response = client.post("/graphql", json={"query": PAGE}, headers=headers)
        made = response.headers["x-request-id"]
        assert GENERATED.fullmatch(made)
        assert {logged.headers.get("x-request-id") for logged in upstream.log} == {made}
        again = client.get("/healthz", headers=headers).headers["x-request-id"]
        assert GENERATED.fullmatch(again) and again != made


def _access(record: logging.LogRecord) -> dict[str, Any]:
    """The fields of an access line, which the gateway hands its log record (`extra`)."""
    fields: dict[str, Any] = vars(record)["access"]
    return fields


def test_one_line_per_request_with_what_it_cost(
    upstream: FakeUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gateway.access")
    with served(upstream=upstream.base_url, warm_catalogue=False) as client:
        client.post("/graphql", json={"query": PAGE}, headers={"X-Request-ID": "first"})
        client.post("/graphql", json={"query": PAGE}, headers={"X-Request-ID": "second"})
        upstream.fail("/api/v4/grids/", "500", 1)
        client.post(
            "/graphql",
            json={"query": "query Grids { grids(first: 1) { nodes { slug } } }"},
            headers={"X-Request-ID": "third"},
        )
        asked = upstream.count
        client.get("/healthz")
        client.get("/readyz")
        client.get("/metrics")
    lines = [record for record in caplog.records if record.name == "gateway.access"]
    assert [_access(line)["request_id"] for line in lines] == ["first", "second", "third"]
    first, second, third = (_access(line) for line in lines)
    assert first["operations"] == ["Page"]
    assert (first["method"], first["path"], first["status"]) == ("POST", "/graphql", 200)
    assert first["duration_ms"] > 0
    assert first["upstream_requests"] == asked - 1 > 1  # all but the grids page
    assert (first["cache_hits"], first["cache_misses"]) == (0, first["upstream_requests"] + 1)
    assert first["errors"] == []
    # The same query again: its whole answer from the response cache.
    assert (second["upstream_requests"], second["cache_hits"], second["cache_misses"]) == (0, 1, 0)
    assert third["errors"] == ["UPSTREAM_ERROR"]
    assert third["operations"] == ["Grids"]


def _record(**access: Any) -> logging.LogRecord:
    record = logging.LogRecord("gateway.access", logging.INFO, __file__, 1, "%s", ("x",), None)
    record.access = {
        "request_id": "abc",
        "method": "POST",
        "path": "/graphql",
        "status": 200,
        "duration_ms": 12.345,
        "operations": ["Page"],
        "upstream_requests": 3,
        "sql_statements": 0,
        "batches": 2,
        "cache_hits": 1,
        "cache_misses": 3,
        "errors": [],
        **access,
    }
    return record


def test_the_json_line_has_every_field() -> None:
    line = json.loads(JsonFormatter().format(_record(errors=["UPSTREAM_ERROR"])))
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", line.pop("time"))
    assert line == {
        "level": "info",
        "logger": "gateway.access",
        "message": "x",
        "request_id": "abc",
        "method": "POST",
        "path": "/graphql",
        "status": 200,
        "duration_ms": 12.345,
        "operations": ["Page"],
        "upstream_requests": 3,
        "sql_statements": 0,
        "batches": 2,
        "cache_hits": 1,
        "cache_misses": 3,
        "errors": ["UPSTREAM_ERROR"],
    }


def test_the_text_line_reads_as_a_sentence() -> None:
    line = TextFormatter().format(_record())
    assert line.endswith(
        " INFO    POST /graphql 200 12.3 ms operation=Page upstream=3 sql=0 hits=1 misses=3"
        " errors=- request_id=abc"
    )
    other = logging.LogRecord(
        "gateway", logging.WARNING, __file__, 1, "breaker %s", ("open",), None
    )
    assert TextFormatter().format(other).endswith(" WARNING breaker open")


def test_the_logging_configuration_routes_the_gateway_loggers() -> None:
    text = logging_config("text", "warning")
    assert text["loggers"]["gateway"] == {
        "handlers": ["gateway"],
        "level": "WARNING",
        "propagate": False,
    }
    assert text["formatters"]["gateway"] == {"()": "gateway.observability.observe.TextFormatter"}
    assert text["handlers"]["default"]["formatter"] == "default"  # uvicorn's, as it was
    as_json = logging_config("json", "info")
    assert {handler["formatter"] for handler in as_json["handlers"].values()} == {"gateway"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _serve(upstream: FakeUpstream, *args: str) -> tuple[list[str], str]:
    """`gateway serve` with `args` answering one query: its log lines and the request's id."""
    port = _free_port()
    command = [sys.executable, "-m", "gateway", "serve", "--port", str(port)]
    command += ["--upstream", upstream.base_url, "--no-warm-catalogue", *args]
    env = {name: value for name, value in os.environ.items() if not name.startswith("GATEWAY_")}
    process = subprocess.Popen(
        command, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    log = Output(process.stderr)
    origin = f"http://127.0.0.1:{port}"
    try:
        log.wait_for(LISTENING)
        assert httpx.get(f"{origin}/healthz", timeout=5).status_code == 200
        response = httpx.post(f"{origin}/graphql", json={"query": PAGE}, timeout=10)
        assert response.status_code == 200
    finally:
        process.terminate()
        process.wait(timeout=15)
        log.close()
    return log.lines, response.headers["x-request-id"]


def test_serve_logs_json_lines(upstream: FakeUpstream) -> None:
    lines, request_id = _serve(upstream, "--log-format", "json")
    parsed = [json.loads(line) for line in lines]  # every line, uvicorn's too
    [access] = [line for line in parsed if line["logger"] == "gateway.access"]
    assert access["request_id"] == request_id
    assert access["operations"] == ["Page"]
    assert access["status"] == 200
    assert access["upstream_requests"] > 0
    assert any("Application startup complete" in line["message"] for line in parsed)


def test_serve_logs_readable_lines_by_default(upstream: FakeUpstream) -> None:
    lines, request_id = _serve(upstream)
    [access] = [line for line in lines if f"request_id={request_id}" in line]
    assert " INFO    POST /graphql 200 " in access
    assert "operation=Page" in access
    assert not any('"POST /graphql HTTP/1.1" 200' in line for line in lines)  # uvicorn's is off


def test_an_unknown_log_format_stops_start_up() -> None:
    command = [sys.executable, "-m", "gateway", "serve", "--log-format", "xml"]
    run = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
    assert run.returncode == 2
    assert run.stderr == (
        "gateway: error: --log-format: log format must be one of text, json, got 'xml'\n"
    )
