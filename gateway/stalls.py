"""The event loop's stalls, measured from inside: how late it comes back, and why.

A `/healthz` probe that takes 300 ms may be the machine's doing (other processes on the cores)
or the gateway's (one callback holding the loop, a garbage collection). A tick every `TICK`
seconds tells them apart: how late the loop ran it (`gateway_event_loop_lateness_seconds`) and
how much CPU the loop's thread spent from the tick before (`gateway_event_loop_busy_seconds`:
the gateway's own work; lateness beyond it is time the thread waited, for a core or for the
interpreter's lock). Each garbage collection is timed, by generation
(`gateway_gc_pause_seconds`, in CPU time): while one runs, no Python code runs anywhere in the
process.

A full collection scans every object the process holds that the collector can see: with the
caches full (parsed documents, the catalogue snapshot, plans) some 200,000, hundreds of
milliseconds in one go. What lives long is put out of its sight by `freeze`, at start-up and
after each renewal of the catalogue snapshot: a frozen object that nothing holds any more is
still freed at once, by its reference count, as long as it is in no reference cycle (the
snapshot is in none, nor a parsed document, gateway/measure.py), so only the objects made since
the last freeze are scanned.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
from collections.abc import AsyncIterator
from typing import Any

from gateway import metrics

TICK = 0.01  # seconds between two ticks of the loop's watch


async def _watch(tick: float) -> None:
    loop = asyncio.get_running_loop()
    cpu = time.thread_time()
    while True:
        due = loop.time() + tick
        await asyncio.sleep(tick)
        now_cpu = time.thread_time()
        metrics.loop_tick(late=max(0.0, loop.time() - due), busy=now_cpu - cpu)
        cpu = now_cpu


class _CollectionTimer:
    """A `gc.callbacks` entry timing each collection, in CPU time of the thread that ran it
    (on a busy machine its wall time is mostly other processes' turns)."""

    def __init__(self) -> None:
        self.started = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self.started = time.thread_time()
        else:
            metrics.gc_pause(info["generation"], time.thread_time() - self.started)


def freeze() -> None:
    """Every object the process holds now out of the garbage collector's sight (see above),
    once the young generations' garbage is collected (a frozen cycle would never be)."""
    gc.collect(1)
    gc.freeze()
    metrics.frozen(gc.get_freeze_count())


@contextlib.asynccontextmanager
async def watched(tick: float = TICK) -> AsyncIterator[None]:
    """The loop watched and the collections timed for as long as the block runs."""
    timer = _CollectionTimer()
    gc.callbacks.append(timer)
    watch = asyncio.create_task(_watch(tick))
    try:
        yield
    finally:
        watch.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watch
        gc.callbacks.remove(timer)
