"""Hostile clients against `gateway serve` over loopback: what one connection may hold, a client
hanging up mid-upload, and what every answer says of its body.

The servers here have short bounds, so that each attack is over in a second or two: they wait
`IDLE_TIMEOUT` for a request's head and take `MAX_HEADER_BYTES` of it. Each attack runs over a
raw socket where HTTP clients would not send what it sends.
"""

from __future__ import annotations

import asyncio
import re
import select
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
import uvicorn
import uvloop
from starlette.types import Receive, Scope, Send
from uvicorn.server import ServerState

from gateway.errors import CLIENT_CLOSED, INTERNAL_SERVER_ERROR
from gateway.http.connection_limits import HeadBoundedProtocol
from tests.observing import parse, value
from tests.serving import Served, served_gateway
from tests.test_app import bad_request
from tests.waiting import wait_until

IDLE_TIMEOUT = 1.0  # seconds a connection may wait for a request's head, and take over it
MAX_HEADER_BYTES = 4096
# Seconds within which the server must have closed a connection it should close: the idle
# timeout, and room for a loaded machine. Without the bounds, the connection stays open.
BOUND = 10.0
MAX_BYTES = 100_000  # the default largest request body


@pytest.fixture(scope="module")
def served(embedded_data_home: Path) -> Iterator[Served]:
    flags = ["--idle-timeout", str(IDLE_TIMEOUT), "--max-header-bytes", str(MAX_HEADER_BYTES)]
    with served_gateway(embedded_data_home, *flags) as served:
        yield served


def connect(origin: str) -> socket.socket:
    url = urlsplit(origin)
    assert url.hostname is not None and url.port is not None
    return socket.create_connection((url.hostname, url.port), timeout=BOUND)


def read_to_end(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (within `BOUND`)."""
    sock.settimeout(BOUND)
    received = b""
    try:
        while chunk := sock.recv(65536):
            received += chunk
    except ConnectionResetError:  # closed with bytes of ours unread: what came before stays
        pass
    return received


def trickle(sock: socket.socket, data: bytes, pace: float = 0.1) -> bytes:
    """Send `data` a byte at a time, `pace` seconds apart, while the server says nothing: what
    it sent before it closed the connection. Fails if the server takes it all."""
    for byte in data:
        answered, _, _ = select.select([sock], [], [], pace)
        if answered:
            return read_to_end(sock)
        try:
            sock.sendall(bytes([byte]))
        except OSError:  # reset: the server closed the connection
            return read_to_end(sock)
    raise AssertionError(f"the server took all {len(data)} bytes, sent a byte at a time")


def head_of(response: bytes) -> tuple[int, dict[str, str]]:
    """A raw HTTP response's status and headers."""
    head = response.partition(b"\r\n\r\n")[0].decode("latin-1").split("\r\n")
    fields = (line.partition(":") for line in head[1:])
    return int(head[0].split()[1]), {name.lower(): value.strip() for name, _, value in fields}


def peak_rss_kib(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"^VmHWM:\s+(\d+) kB", status, re.MULTILINE)
    assert match is not None
    return int(match.group(1))


# -- connections that send nothing, or little -------------------------------------------------


def test_a_connection_that_never_sends_a_byte_is_closed(served: Served) -> None:
    with connect(served.origin) as sock:
        started = time.monotonic()
        assert read_to_end(sock) == b""
        assert IDLE_TIMEOUT / 2 < time.monotonic() - started < BOUND


def test_headers_sent_a_byte_at_a_time_are_cut_off_with_a_408(served: Served) -> None:
    head = b"GET /healthz HTTP/1.1\r\nHost: gateway\r\nX-Slow: " + b"a" * 200  # 25 s of it
    with connect(served.origin) as sock:
        started = time.monotonic()
        answer = trickle(sock, head)
    assert time.monotonic() - started < BOUND
    status, headers = head_of(answer)
    assert status == 408
    assert headers["connection"] == "close"
    assert headers["x-content-type-options"] == "nosniff"


def test_bytes_after_an_answer_do_not_keep_the_connection_open(served: Served) -> None:
    """The rest of a body nobody reads (/healthz does not) is no new request: the connection
    gets its idle time all the same, however the bytes keep coming."""
    with connect(served.origin) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: gateway\r\nContent-Length: 100000\r\n\r\n")
        answer = b""
        while not answer.endswith(b'{"status":"ok"}'):
            answer += sock.recv(65536)
        assert head_of(answer)[0] == 200
        started = time.monotonic()
        assert trickle(sock, b"x" * 250) == b""  # 25 s of it
    assert time.monotonic() - started < BOUND


@pytest.mark.parametrize(
    "new_loop", [uvloop.new_event_loop, asyncio.new_event_loop], ids=["uvloop", "asyncio"]
)
def test_a_request_come_while_the_loop_ran_late_is_answered(
    new_loop: Callable[[], asyncio.AbstractEventLoop],
) -> None:
    """The event loop busy as a keep-alive connection's idle time ends: a request the client
    sent meanwhile, the connection still open, is answered, not lost with the connection reset.

    The server runs here, its loop in a thread, so that the loop can be made late on cue: busy
    past the idle bound, it then runs a timer due just before the bound's, which lets the
    client send, and only then the bound's own timer, the request unread."""
    idle_timeout = 0.2
    send_now, sent = threading.Event(), threading.Event()

    def let_the_client_send() -> None:
        send_now.set()
        assert sent.wait(BOUND)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["path"] == "/first":
            loop = asyncio.get_running_loop()
            loop.call_later(idle_timeout - 0.05, time.sleep, 0.1)  # busy past the idle bound
            loop.call_later(idle_timeout - 0.01, let_the_client_send)
        headers = [(b"content-length", b"2")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"ok"})

    def answer(sock: socket.socket) -> bytes:
        received = b""
        while not received.endswith(b"ok") and (chunk := sock.recv(65536)):
            received += chunk
        return received

    # Typed as int, used as a float (call_later's delay), as `gateway serve` sets it.
    config = uvicorn.Config(app, timeout_keep_alive=idle_timeout, log_config=None)  # type: ignore[arg-type]
    config.load()
    state = ServerState()
    loop = new_loop()
    server = loop.run_until_complete(
        loop.create_server(
            lambda: HeadBoundedProtocol(config, state, {}, _loop=loop), "127.0.0.1", 0
        )
    )
    port = server.sockets[0].getsockname()[1]
    serving = threading.Thread(target=loop.run_forever)
    serving.start()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=BOUND) as sock:
            sock.sendall(b"GET /first HTTP/1.1\r\nHost: gateway\r\n\r\n")
            assert head_of(answer(sock))[0] == 200
            assert send_now.wait(BOUND)
            sock.sendall(b"GET /second HTTP/1.1\r\nHost: gateway\r\n\r\n")
            sent.set()
            assert head_of(answer(sock))[0] == 200
    finally:
        sent.set()

        async def stop() -> None:
            server.close()
            for connection in list(state.connections):
                connection.shutdown()
            await server.wait_closed()

        asyncio.run_coroutine_threadsafe(stop(), loop).result(BOUND)
        loop.call_soon_threadsafe(loop.stop)
        serving.join()
        loop.close()


# -- heads too large ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        b"X-Big: " + b"a" * 2 * MAX_HEADER_BYTES + b"\r\n",
        b"".join(b"X-Many-%d: %s\r\n" % (i, b"a" * 100) for i in range(60)),
    ],
    ids=["one-header", "many-headers"],
)
def test_a_head_over_the_limit_is_answered_431(served: Served, headers: bytes) -> None:
    with connect(served.origin) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: gateway\r\n" + headers + b"\r\n")
        status, fields = head_of(read_to_end(sock))
    assert status == 431
    assert fields["connection"] == "close"
    assert fields["x-content-type-options"] == "nosniff"


def test_a_head_just_within_the_limit_is_served(served: Served) -> None:
    response = httpx.get(
        f"{served.origin}/healthz", headers={"X-Big": "a" * (MAX_HEADER_BYTES - 500)}
    )
    assert response.status_code == 200


def test_a_fifty_megabyte_header_is_refused_before_it_is_read(served: Served) -> None:
    total = 50_000_000
    peak = peak_rss_kib(served.pid)
    sent = 0
    with connect(served.origin) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: gateway\r\nX-Big: ")
        chunk = b"a" * 65536
        try:
            while sent < total:
                sock.sendall(chunk)
                sent += len(chunk)
        except OSError:  # reset: the server closed the connection
            pass
        answer = read_to_end(sock)
    assert sent < total
    assert head_of(answer)[0] == 431
    # Before the bounds, the header was read whole: 95 MB more at the peak.
    assert peak_rss_kib(served.pid) - peak < 20_000


# -- too many connections ----------------------------------------------------------------------


def test_a_request_past_the_connection_cap_is_answered_503(embedded_data_home: Path) -> None:
    cap = 3
    flags = ["--max-connections", str(cap), "--idle-timeout", "60"]
    with served_gateway(embedded_data_home, *flags) as served:
        held = [connect(served.origin) for _ in range(cap)]
        try:
            with connect(served.origin) as sock:
                sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: gateway\r\n\r\n")
                status, headers = head_of(read_to_end(sock))
            assert status == 503
            assert headers["x-content-type-options"] == "nosniff"
            held.pop().close()
            wait_until(
                lambda: httpx.get(f"{served.origin}/healthz").status_code == 200,
                "a connection closed does not make room for another",
            )
        finally:
            for sock in held:
                sock.close()


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


# -- what every answer says --------------------------------------------------------------------


def test_every_answer_says_nosniff(served: Served) -> None:
    """Every route, every status, the gateway's answers and uvicorn's own: a browser takes
    each body for what its Content-Type says, never for a page or a script it guessed."""
    graphql = f"{served.origin}/graphql"
    page = httpx.get(graphql, headers={"accept": "text/html"})
    assets = re.findall(r'(?:src|href)="(/graphiql/static/[^"]+)"', page.text)
    assert len(assets) >= 4
    responses = [
        page,
        *(httpx.get(f"{served.origin}{asset}") for asset in assets),
        httpx.get(f"{served.origin}/healthz"),
        httpx.get(f"{served.origin}/readyz"),
        httpx.get(f"{served.origin}/metrics"),
        httpx.post(graphql, json={"query": "{ __typename }"}),
        httpx.get(graphql, params={"query": "{ __typename }"}),
        httpx.head(graphql, params={"query": "{ __typename }"}),
        httpx.post(graphql, json={"query": "{"}),
        httpx.post(
            graphql,
            json={"query": "{"},
            headers={"accept": "application/graphql-response+json"},
        ),
        httpx.post(graphql, content=b"{", headers={"content-type": "application/json"}),
        httpx.post(graphql, content=b"x" * (MAX_BYTES + 1)),
        httpx.put(graphql, json={"query": "{ __typename }"}),
        httpx.get(f"{served.origin}/nowhere"),
        httpx.get(f"{served.origin}/graphiql/static/nothing.js"),
    ]
    statuses = {response.status_code for response in responses}
    assert statuses == {200, 400, 404, 405, 413}
    for response in responses:
        assert response.headers["x-content-type-options"] == "nosniff", response.request.url
    # uvicorn's own answer to what is not HTTP.
    with connect(served.origin) as sock:
        sock.sendall(b"NOT HTTP AT ALL\r\n\r\n")
        status, headers = head_of(read_to_end(sock))
    assert status == 400
    assert headers["x-content-type-options"] == "nosniff"


@pytest.mark.parametrize("batch", [False, True])
def test_an_unknown_operation_name_is_quoted_short(served: Served, batch: bool) -> None:
    name = "<script>alert(1)</script>" + "A" * 90_000
    operation = {"query": "query Known { __typename }", "operationName": name}
    response = httpx.post(f"{served.origin}/graphql", json=[operation] if batch else operation)
    reason = bad_request(response)
    assert response.headers["x-content-type-options"] == "nosniff"
    assert reason.startswith("Unknown operation named '<script>alert(1)</script>AAA")
    assert len(reason) < 200


def test_an_unknown_operation_name_by_get_is_quoted_short(served: Served) -> None:
    name = "B" * 2000
    params = {"query": "query Known { __typename }", "operationName": name}
    response = httpx.get(f"{served.origin}/graphql", params=params)
    assert bad_request(response) == f"Unknown operation named {'B' * 80!r}…."
    assert response.headers["x-content-type-options"] == "nosniff"
