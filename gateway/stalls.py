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
caches full (parsed documents, plans, the catalogue snapshot) some 90,000 with their bounds of 8
and 4 MiB (document_cache.py, engine/engine.py), 150 to 180 ms of CPU in one go under
bench.load's attacks (240,000 and 250 ms at 32 and 16 MiB), every few seconds under load. What
lives long is frozen out of its sight (`gc.freeze`): at start-up, and by `collect_all` at each
renewal of the catalogue snapshot, which brings every frozen object back in sight for one full
collection, then freezes what lives: the new snapshot, the caches. A frozen object nothing holds
any more is still freed at once by its reference count, unless it is in a reference cycle (a
catalogue snapshot and a parsed document are in none, gateway/measure.py; a request in flight,
an engine plan may be): such a cycle waits for the next renewal's collection. Freezing after
every full collection instead would hide the cycles of every request in flight then: measured, a
million objects in a minute.
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


class _Collections:
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
    """Every object the process holds now out of the garbage collector's sight (see above)."""
    gc.freeze()
    metrics.frozen(gc.get_freeze_count())


def collect_all() -> None:
    """One full collection of every object, the frozen ones too, then what lives frozen again:
    the cycles frozen at the last one and dead since are freed (a pause as long as a full
    collection was before, once per renewal)."""
    gc.unfreeze()
    gc.collect()
    freeze()


@contextlib.asynccontextmanager
async def watched(tick: float = TICK) -> AsyncIterator[None]:
    """The loop watched and the collections timed for as long as the block runs."""
    collections = _Collections()
    gc.callbacks.append(collections)
    watch = asyncio.create_task(_watch(tick))
    try:
        yield
    finally:
        watch.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watch
        gc.callbacks.remove(collections)
