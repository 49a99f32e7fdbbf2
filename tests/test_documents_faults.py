"""Each step of a new document's first request made to fail as a loaded or starved machine
could make it fail (issue 15, point 12): the documents' process (gateway/documents/offload.py) not
starting, its pipe breaking, it dying mid-call, or failing the call; the threads that
do and wait for that work not starting. The request still gets its data, through the documents'
thread (or the loop), never an INTERNAL_SERVER_ERROR; and a failure that escapes an operation
anyway is answered as a coded error, not a bare 500.
"""

from __future__ import annotations

import errno
import os
import pickle
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from multiprocessing.connection import Connection
from typing import Any

import pytest

from gateway.caching.response_cache import ResponseCache
from gateway.documents import offload
from gateway.documents.offload import out_of_process
from gateway.errors import INTERNAL_SERVER_ERROR
from tests.fake_upstream import FakeUpstream
from tests.test_resilience import PACKAGE, codes, expected_package, gateway
from tests.waiting import documents_process_id


class _NoThread:
    """An executor whose thread cannot start, as `threading.Thread.start` fails past the
    system's limit of threads."""

    def submit(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("can't start new thread")


class _Faulty:
    """The documents' process's pipe, from this side, failing as `fault` says."""

    def __init__(self, connection: Connection, fault: str) -> None:
        self.connection = connection
        self.fault = fault

    def send(self, message: Any) -> None:
        if self.fault == "pipe-broken":
            raise BrokenPipeError(errno.EPIPE, "Broken pipe")
        self.connection.send(message)
        if self.fault == "dies-mid-call":
            process = offload._CHILD._process
            assert process is not None
            os.kill(process.pid, signal.SIGKILL)

    def poll(self, timeout: float | None = 0.0) -> bool:
        return self.connection.poll(timeout)

    def recv(self) -> Any:
        answer = self.connection.recv()
        if self.fault == "answer-unreadable":
            raise pickle.UnpicklingError("pickle data was truncated")
        if self.fault == "call-fails-there":
            return False, MemoryError()
        return answer

    def close(self) -> None:
        self.connection.close()


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.fixture
def new_document() -> Iterator[Callable[[str], str]]:
    """The test's query, made a document no gateway of this process has read yet."""
    yield lambda name: f"{PACKAGE} # {name} {time.monotonic_ns()}"


async def _first_request_answers(
    upstream: FakeUpstream, document: str, **settings: Any
) -> dict[str, Any]:
    row = upstream.dataset.packages[0]
    async with gateway(upstream, **settings) as ask:
        body = await ask(document, id=row.id)
        assert body == {"data": {"package": expected_package(upstream.dataset, row.id)}}
        assert await ask(document + " ", id=row.id) == body  # and the next new one
    return body


@pytest.mark.parametrize("executor", ["_WAITER", "_THREAD"])
@pytest.mark.parametrize("response_cache_ttl", [60.0, 0.0], ids=["response-cache", "none"])
async def test_no_thread_to_start(
    upstream: FakeUpstream,
    new_document: Callable[[str], str],
    monkeypatch: pytest.MonkeyPatch,
    executor: str,
    response_cache_ttl: float,
) -> None:
    """The thread that waits for the documents' process, or the documents' thread, cannot
    start: the call runs on the other, or on the loop."""
    monkeypatch.setattr(offload, executor, _NoThread())
    await _first_request_answers(
        upstream, new_document(executor), response_cache_ttl=response_cache_ttl
    )


def _failing_start(monkeypatch: pytest.MonkeyPatch, error: Exception) -> None:
    """From now on, the documents' process fails to start with `error`."""
    offload._CHILD._stop()

    def fail(*args: Any, **kwargs: Any) -> Any:
        raise error

    monkeypatch.setattr(subprocess, "Popen", fail)


@pytest.mark.parametrize(
    "error", [OSError(errno.EAGAIN, "Resource temporarily unavailable"), MemoryError()]
)
async def test_the_documents_process_cannot_start(
    upstream: FakeUpstream,
    new_document: Callable[[str], str],
    monkeypatch: pytest.MonkeyPatch,
    error: Exception,
) -> None:
    """fork or exec fails: the documents' thread reads the document."""
    _failing_start(monkeypatch, error)
    await _first_request_answers(upstream, new_document(type(error).__name__))


async def test_a_failed_start_leaves_no_pipe_open(monkeypatch: pytest.MonkeyPatch) -> None:
    _failing_start(monkeypatch, OSError(errno.EAGAIN, "Resource temporarily unavailable"))
    # The first stops whatever child an earlier test left running, and its pipe with it.
    assert await out_of_process(os.getpid) == os.getpid()
    before = _fds()
    for _ in range(5):
        assert await out_of_process(os.getpid) == os.getpid()
    assert _fds() == before


@pytest.mark.parametrize(
    "fault", ["pipe-broken", "dies-mid-call", "answer-unreadable", "call-fails-there"]
)
async def test_the_documents_process_fails_a_call(
    upstream: FakeUpstream,
    new_document: Callable[[str], str],
    monkeypatch: pytest.MonkeyPatch,
    fault: str,
) -> None:
    await documents_process_id()
    child = offload._CHILD
    assert child._connection is not None
    monkeypatch.setattr(child, "_connection", _Faulty(child._connection, fault))
    await _first_request_answers(upstream, new_document(fault))


async def test_a_failure_before_the_pipeline_is_a_coded_error(
    upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What escapes an operation where Strawberry's pipeline does not catch it (here, the
    response cache's key) is answered as the pipeline answers it: INTERNAL_SERVER_ERROR, no
    path, the traceback logged; not a bare 500."""

    async def fail(*args: Any) -> str:
        raise RuntimeError("a bug")

    monkeypatch.setattr(ResponseCache, "key", fail)
    async with gateway(upstream) as ask:
        body = await ask(PACKAGE, id=upstream.dataset.packages[0].id)
    assert body.get("data") is None and codes(body) == [INTERNAL_SERVER_ERROR]
    assert "path" not in body["errors"][0]
