"""Graceful shutdown: `gateway serve` as a real process, a slow upstream, and SIGTERM.

On SIGTERM the gateway stops listening at once, lets the requests in flight finish (for at most
`--shutdown-timeout` seconds), closes its backend and ends as killed by SIGTERM.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.fake_upstream import FakeUpstream
from tests.waiting import LISTENING, Output

ROOT = Path(__file__).resolve().parent.parent

LATENCY = 2.0  # seconds the fake APIv4 takes to answer: the query in flight at SIGTERM

QUERY = {"query": "{ categories { totalCount } }"}


@dataclass
class Gateway:
    """A `gateway serve` process and its log, read as it comes."""

    process: subprocess.Popen[str]
    origin: str
    log: Output


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def gateway(upstream: FakeUpstream, *args: str) -> Iterator[Gateway]:
    port = _free_port()
    command = [sys.executable, "-m", "gateway", "serve", "--port", str(port)]
    command += ["--upstream", upstream.base_url, "--log-level", "info", *args]
    command += ["--no-warm-catalogue"]  # the queries must reach the (slow) upstream
    env = {name: value for name, value in os.environ.items() if not name.startswith("GATEWAY_")}
    process = subprocess.Popen(
        command, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    served = Gateway(process, f"http://127.0.0.1:{port}", Output(process.stderr))
    try:
        served.log.wait_for(LISTENING)
        assert httpx.get(f"{served.origin}/healthz", timeout=5).status_code == 200
        yield served
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=15)
        served.log.close()


def _post_in_background(pool: ThreadPoolExecutor, origin: str) -> Future[httpx.Response]:
    return pool.submit(httpx.post, f"{origin}/graphql", json=QUERY, timeout=30)


def test_sigterm_lets_the_request_in_flight_finish_and_refuses_new_ones(
    upstream: FakeUpstream,
) -> None:
    upstream.latency = LATENCY
    shutdown_timeout = 5.0
    with (
        gateway(upstream, "--shutdown-timeout", str(shutdown_timeout)) as served,
        ThreadPoolExecutor(1) as pool,
    ):
        slow = _post_in_background(pool, served.origin)
        reached = upstream.wait_until(lambda: upstream.in_flight > 0)
        assert reached, "the query never reached the upstream"
        terminated = time.monotonic()
        served.process.send_signal(signal.SIGTERM)

        served.log.wait_for("Shutting down", timeout=5)  # as uvicorn closes its socket
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{served.origin}/healthz", timeout=2)

        response = slow.result(timeout=15)
        assert response.status_code == 200
        count = len(upstream.dataset.categories)
        assert response.json() == {"data": {"categories": {"totalCount": count}}}

        served.process.wait(timeout=shutdown_timeout + 5)
        elapsed = time.monotonic() - terminated
    log = served.log.text
    assert elapsed < shutdown_timeout, log
    # uvicorn re-raises the signal once shut down: a supervisor sees a SIGTERM'd process.
    assert served.process.returncode == -signal.SIGTERM
    assert "Application shutdown complete" in log
    assert "Traceback" not in log


def test_a_request_outlasting_the_shutdown_timeout_is_cut_at_the_bound(
    upstream: FakeUpstream,
) -> None:
    # The upstream never answers: the query would last the upstream timeout, 10 s.
    upstream.faults["/api/v4/categories/"] = "hang"
    shutdown_timeout = 1.0
    with (
        gateway(upstream, "--shutdown-timeout", str(shutdown_timeout)) as served,
        ThreadPoolExecutor(1) as pool,
    ):
        slow = _post_in_background(pool, served.origin)
        reached = upstream.wait_until(lambda: upstream.in_flight > 0)
        assert reached, "the query never reached the upstream"
        terminated = time.monotonic()
        served.process.send_signal(signal.SIGTERM)
        served.process.wait(timeout=shutdown_timeout + 5)
        elapsed = time.monotonic() - terminated
        # uvicorn cancels it: the client is told why, with a code.
        cut = slow.result(timeout=5)
        assert cut.status_code == 503
        assert [error["extensions"]["code"] for error in cut.json()["errors"]] == ["SHUTTING_DOWN"]
    log = served.log.text
    # One line for the request, and no traceback.
    assert "Traceback" not in log and "Exception in ASGI application" not in log
    assert len([line for line in log.splitlines() if "POST /graphql 503" in line]) == 1
    assert "errors=SHUTTING_DOWN" in log
    # The bound, plus uvicorn's polling (0.1 s steps), closing the backend and exiting.
    assert elapsed < shutdown_timeout + 2.0, log
    assert served.process.returncode == -signal.SIGTERM
    assert "timeout graceful shutdown exceeded" in log
    assert "Application shutdown complete" in log
    # The hanging upstream request ends as its connection closes with the gateway.
    ended = upstream.wait_until(lambda: upstream.in_flight == 0)
    assert ended, "the upstream request never ended"
