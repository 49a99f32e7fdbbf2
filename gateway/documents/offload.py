"""A thread, and a process, for the work on documents that is too long for the event loop.

A document at the token limit takes tens of milliseconds to parse, and its validation may take
as long again: on the event loop, every other request would wait meanwhile. On a thread, the loop
gets its turn every few milliseconds (the interpreter's switch interval). One thread, of its own:
only one thread runs Python at a time anyway, so more would not go faster, but would make the loop
wait longer for its turn; the work of a request that ended first (timed out, its client gone) is
dropped if it has not started; and the loop's default executor stays free for what else uses it.

A thread still shares the interpreter's lock with the loop, and the loop gives that lock up at
each of its system calls: while the thread runs Python, each of them costs the loop up to a
switch interval (5 ms) to get it back, so that a busy loop crawls (the GIL's convoy effect). What
needs no answer but a few values (reading.py: whether a document is refused, its normal form,
whether it is valid) is worked out in a process of its own instead, which shares nothing with
the loop: a child Python (`python -m gateway.documents.offload`) that runs one call at a time, sent
and answered as pickles over a pipe by a thread of this process that only waits for it. The child is
started when first needed, in a session of its own (a terminal's Ctrl-C is for the server), ends
when this process closes the pipe, and is started again if it dies. A call that comes while it
is not there to take it (the second or so it takes to start, or after it died) runs on the
documents' thread; so does one it fails (it could not start, the pipe broke, its answer did not
unpickle, or the call raised there), and that child is stopped if it is to blame.
Where the thread itself cannot start (the system's limit of threads), the loop runs the call.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import os
import subprocess
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.connection import Connection, Pipe
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from gateway.observability.metrics import MULTIPROC_VARIABLE

P = ParamSpec("P")
T = TypeVar("T")

logger = logging.getLogger("gateway")

_THREAD = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gateway-documents")
# Waits for the documents' process, one call at a time: a call queued is dropped if its request
# ends first, as on the documents' thread.
_WAITER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gateway-documents-process")


async def off_the_loop(function: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """`function(*args, **kwargs)`, run on the documents' thread."""
    loop = asyncio.get_running_loop()
    try:
        running = loop.run_in_executor(_THREAD, lambda: function(*args, **kwargs))
    except RuntimeError:  # the thread could not start (the system's limit of threads): here
        return function(*args, **kwargs)
    return await running


async def out_of_process(
    function: Callable[..., T], *args: Any, here: Callable[..., T] | None = None
) -> T:
    """`function(*args)`, run in the documents' process: `function` a module's, its arguments
    and its result such as pickle carries. While the process is not there, `here(*args)` (by
    default `function` itself) runs on the documents' thread instead: a function that would
    build something heavy once per process can leave that to the child."""
    loop = asyncio.get_running_loop()
    try:
        waiting = loop.run_in_executor(_WAITER, _CHILD.call, function, args)
    except RuntimeError:  # the waiting thread could not start
        return await off_the_loop(here or function, *args)
    try:
        result: T = await waiting
    except Unavailable:
        # Its failure's traceback holds this frame: holding no future, the frame makes no cycle.
        del waiting
        return await off_the_loop(here or function, *args)
    return result


class Unavailable(Exception):
    """The documents' process cannot take a call: it is starting, it died or could not start,
    or the call failed there."""


class _Child:
    """The documents' process, from the waiting thread's side."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # one call at a time, whoever calls
        self._process: subprocess.Popen[bytes] | None = None
        self._connection: Connection | None = None
        self._ready = False  # the child said it has imported what the calls need

    def call(self, function: Callable[..., T], args: tuple[Any, ...]) -> T:
        with self._lock:
            try:
                ready = self._is_ready(function.__module__)
                if ready:
                    assert self._connection is not None
                    self._connection.send((function, args))
                    ok, value = self._connection.recv()
            # Whatever went wrong (it could not start, the pipe closed, it died, its answer does
            # not unpickle), a child started again will do, and the thread meanwhile.
            except Exception as error:
                logger.warning("The documents' process is stopped: %r", error)
                self._stop()
                raise Unavailable from error
        if not ready:
            raise Unavailable
        if not ok:  # the same call on the thread says whether it fails here too
            logger.warning("The documents' process failed a call: %r", value)
            raise Unavailable from value
        result: T = value
        return result

    def _is_ready(self, module: str) -> bool:
        """Whether the child is there to take a call; started, if it is not running."""
        if self._process is None or self._process.poll() is not None:
            self._start(module)
        elif not self._ready and self._connection is not None and self._connection.poll():
            self._ready = self._connection.recv() == "ready"
        return self._ready

    def _start(self, module: str) -> None:
        """A new child, which imports `module` first, then says it is ready."""
        self._stop()
        ours, theirs = Pipe()
        self._connection = ours  # `_stop` closes it, whether the child starts or not
        # The package as this process imports it, wherever the child starts.
        root = str(Path(__file__).resolve().parents[2])
        path = os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))
        # The child counts nothing: named the workers' metrics directory, it would make files of
        # its own there as it imports, and fail with a traceback if the server removed the
        # directory at shutdown while it was still importing.
        environ = {name: value for name, value in os.environ.items() if name != MULTIPROC_VARIABLE}
        with theirs:  # the child's end: it has a copy once started
            self._process = subprocess.Popen(
                [sys.executable, "-m", "gateway.documents.offload", str(theirs.fileno()), module],
                stdin=subprocess.DEVNULL,
                pass_fds=[theirs.fileno()],
                start_new_session=True,
                env={**environ, "PYTHONPATH": path},
            )

    def _stop(self) -> None:
        self._ready = False
        if self._connection is not None:
            self._connection.close()
            self._connection = None
        if self._process is not None:
            self._process.kill()
            self._process.wait()
            self._process = None


_CHILD = _Child()


def _serve(connection: Connection, module: str) -> None:
    """The child's side: `module` imported, then each call received, run, and answered, until
    the pipe closes (the server ended, whenever that is: the child says nothing of it)."""
    importlib.import_module(module)
    with contextlib.suppress(EOFError, OSError):
        connection.send("ready")
        while True:
            function, args = connection.recv()
            try:
                answer = (True, function(*args))
            except Exception as error:
                answer = (False, error)
            connection.send(answer)


if __name__ == "__main__":
    _serve(Connection(int(sys.argv[1])), sys.argv[2])
