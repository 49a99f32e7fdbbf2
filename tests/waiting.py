"""Waiting on what happens, not on the clock.

`Clock` stands in for the monotonic clock (and the sleep) of the code under test: time moves
when the test says, at once and exactly, whatever the machine's load. `Output` reads a process's
output as it comes, so that a test waits for the line that says a thing happened. `wait_until`
polls, for the few states that nothing announces (a process stopped by a signal).
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from gateway.documents.offload import out_of_process

# What uvicorn logs (at info) once its socket listens, and each worker once its app started.
LISTENING = "Uvicorn running on"
STARTED = "Application startup complete"


class Clock:
    """A monotonic clock that moves only when the test moves it.

    Handed to the code under test as its `clock`, it makes a TTL pass or a cool-down end with
    `advance`. Code that also sleeps on it (one task at a time) sleeps until `run` moves time
    past its alarm.
    """

    def __init__(self) -> None:
        self.now = 0.0
        self._alarm: tuple[float, asyncio.Future[None]] | None = None
        self._asleep = asyncio.Event()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    async def sleep(self, seconds: float) -> None:
        """Sleep on this clock: until `run` moves it `seconds` on."""
        assert self._alarm is None, "one task at a time sleeps on a test clock"
        woken = asyncio.get_running_loop().create_future()
        self._alarm = (self.now + seconds, woken)
        self._asleep.set()
        await woken

    async def run(self, seconds: float, timeout: float = 10.0) -> None:
        """Move the clock `seconds` on, waking the sleeper each time its alarm comes and waiting
        for it to sleep again (its work between two sleeps is real: requests, say)."""
        end = self.now + seconds
        while True:
            await asyncio.wait_for(self._asleep.wait(), timeout)
            assert self._alarm is not None
            at, woken = self._alarm
            if at > end:
                break
            self.now, self._alarm = at, None
            self._asleep.clear()
            woken.set_result(None)
        self.now = end


class Output:
    """A process's output (text), read line by line on a thread of its own as it comes."""

    def __init__(self, stream: IO[str] | None) -> None:
        assert stream is not None, "the process's output must be a pipe"
        self._lines: list[str] = []
        self._ended = False
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._reader.start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            with self._changed:
                self._lines.append(line)
                self._changed.notify_all()
        with self._changed:
            self._ended = True
            self._changed.notify_all()

    @property
    def text(self) -> str:
        with self._changed:
            return "".join(self._lines)

    @property
    def lines(self) -> list[str]:
        with self._changed:
            return list(self._lines)

    def wait_for(self, text: str, count: int = 1, timeout: float = 30.0) -> None:
        """Until `text` has come `count` times; fails at once if the output ends first."""
        with self._changed:
            self._changed.wait_for(
                lambda: self._ended or "".join(self._lines).count(text) >= count, timeout
            )
        output = self.text
        assert output.count(text) >= count, f"never came {count} times: {text!r}\n{output}"

    def close(self, timeout: float = 15.0) -> None:
        """Wait for the output's end (every process writing it has exited)."""
        self._reader.join(timeout)


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    """Poll `condition` until it holds: only for what no event, log line or counter tells."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.01)


@contextmanager
def frozen(pid: int) -> Iterator[None]:
    """The process stopped (SIGSTOP) for the block, then let go on; Linux's /proc tells when it
    has stopped, and nothing announces it: polled."""
    os.kill(pid, signal.SIGSTOP)
    try:
        stat = Path(f"/proc/{pid}/stat")
        wait_until(lambda: stat.read_text().rpartition(")")[2].split()[0] == "T", "not stopped", 2)
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


async def documents_process_id() -> int:
    """The documents' process's id (gateway/documents/offload.py), once it is there to take
    calls."""
    deadline = time.monotonic() + 60
    while (pid := await out_of_process(os.getpid)) == os.getpid():
        assert time.monotonic() < deadline, "the documents' process did not start"
        await asyncio.sleep(0.05)
    return pid
