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
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.fake_upstream import FakeUpstream

ROOT = Path(__file__).resolve().parent.parent

LATENCY = 2.0  # seconds the fake APIv4 takes to answer: the query in flight at SIGTERM

QUERY = {"query": "{ categories { totalCount } }"}


@dataclass
class Gateway:
    """A `gateway serve` process and the lines of its log so far."""

    process: subprocess.Popen[str]
    origin: str
    log: list[str] = field(default_factory=list)
    shutting_down: threading.Event = field(default_factory=threading.Event)

    def read_log(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.log.append(line)
            if "Shutting down" in line:  # logged as uvicorn closes its listening socket
                self.shutting_down.set()


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
    served = Gateway(process, f"http://127.0.0.1:{port}")
    reader = threading.Thread(target=served.read_log, daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 15
        while True:
            assert process.poll() is None, "".join(served.log)
            assert time.monotonic() < deadline, "the gateway never answered /healthz"
            try:
                if httpx.get(f"{served.origin}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.05)
        yield served
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=15)
        reader.join(timeout=5)


def _post_in_background(pool: ThreadPoolExecutor, origin: str) -> Future[httpx.Response]:
    return pool.submit(httpx.post, f"{origin}/graphql", json=QUERY, timeout=30)


def _wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 10
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.01)


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
        _wait_for(lambda: upstream.in_flight > 0, "the query never reached the upstream")
        terminated = time.monotonic()
        served.process.send_signal(signal.SIGTERM)

        assert served.shutting_down.wait(timeout=5), "".join(served.log)
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{served.origin}/healthz", timeout=2)

        response = slow.result(timeout=15)
        assert response.status_code == 200
        count = len(upstream.dataset.categories)
        assert response.json() == {"data": {"categories": {"totalCount": count}}}

        served.process.wait(timeout=shutdown_timeout + 5)
        elapsed = time.monotonic() - terminated
    log = "".join(served.log)
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
        _wait_for(lambda: upstream.in_flight > 0, "the query never reached the upstream")
        terminated = time.monotonic()
        served.process.send_signal(signal.SIGTERM)
        served.process.wait(timeout=shutdown_timeout + 5)
        elapsed = time.monotonic() - terminated
        # uvicorn cancels it and answers what it answers for any failed request: a bare 500.
        assert slow.result(timeout=5).status_code == 500
    log = "".join(served.log)
    # The bound, plus uvicorn's polling (0.1 s steps), closing the backend and exiting.
    assert elapsed < shutdown_timeout + 2.0, log
    assert served.process.returncode == -signal.SIGTERM
    assert "timeout graceful shutdown exceeded" in log
    assert "Application shutdown complete" in log
    # The hanging upstream request ends as its connection closes with the gateway.
    _wait_for(lambda: upstream.in_flight == 0, "the upstream request never ended")
