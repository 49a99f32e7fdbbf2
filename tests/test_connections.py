"""Hostile clients against `gateway serve` over loopback: a client hanging up mid-upload.

Each attack runs over a raw socket where HTTP clients would not send what it sends.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from gateway.errors import CLIENT_CLOSED, INTERNAL_SERVER_ERROR
from tests.observing import parse, value
from tests.serving import Served, served_gateway

BOUND = 10.0  # seconds within which the server must have answered


@pytest.fixture(scope="module")
def served(embedded_data_home: Path) -> Iterator[Served]:
    with served_gateway(embedded_data_home) as served:
        yield served


def connect(origin: str) -> socket.socket:
    url = urlsplit(origin)
    assert url.hostname is not None and url.port is not None
    return socket.create_connection((url.hostname, url.port), timeout=BOUND)


# -- a client hanging up mid-upload ------------------------------------------------------------


@pytest.mark.parametrize("sent", [b"", b'{"query": "{ cat'], ids=["no-body", "some-body"])
def test_a_client_hanging_up_mid_upload_is_a_499_in_one_line(served: Served, sent: bytes) -> None:
    line = "POST /graphql 499 "
    seen = served.log.text.count(line)
    with connect(served.origin) as sock:
        sock.sendall(
            b"POST /graphql HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/json\r\n"
            b"Content-Length: 5000\r\n\r\n" + sent
        )
    served.log.wait_for(line, count=seen + 1)
    [logged] = [text for text in served.log.lines if line in text][seen:]
    assert f"errors={CLIENT_CLOSED} " in logged
    for text in ("Traceback", "ClientDisconnect", "Exception in ASGI application", " 500 "):
        assert text not in served.log.text
    samples = parse(httpx.get(f"{served.origin}/metrics").text)
    clients_closed = value(
        samples, "gateway_requests_total", operation="unknown", outcome=CLIENT_CLOSED
    )
    assert clients_closed == seen + 1
    outcomes = {dict(labels).get("outcome") for name, labels in samples}
    assert INTERNAL_SERVER_ERROR not in outcomes
