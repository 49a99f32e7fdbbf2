"""The event loop's stalls, measured from inside: how late it comes back, and why.

A `/healthz` probe that takes 300 ms may be the machine's doing (other processes on the cores)
or the gateway's (one callback holding the loop, a garbage collection). A tick every `TICK`
seconds tells them apart: how late the loop ran it (`gateway_event_loop_lateness_seconds`) and
how much CPU the loop's thread spent from the tick before (`gateway_event_loop_busy_seconds`:
the gateway's own work; lateness beyond it is time the thread waited, for a core or for the
interpreter's lock). Each garbage collection is timed, by generation
(`gateway_gc_pause_seconds`, in CPU time): while one runs, no Python code runs anywhere in the
process.

A full collection scans every object the process holds that the collector can see, all at
once. What lives long is frozen out of its sight (`gc.freeze`): at start-up, and at each renewal
of the catalogue snapshot (`freeze_what_lives`: a full collection of what is in sight, the
frozen objects left out, then the new snapshot and what the caches took in since frozen too). A
frozen object nothing holds any more is still freed at once by its reference count, unless it
is in a reference cycle: no request leaves one (tests/test_cycles.py: not its frames, errors,
plans or upstream responses), a catalogue snapshot and a parsed document are in none
(measure.py). The full collections, the renewal's too, then scan only what came in since the
last renewal (the caches' turnover, some 50,000 to 100,000 objects under bench.load's attacks,
70 ms of CPU each, the renewal's 71 and 87) and find next to nothing to free (29 of 31 nothing
in a 5,000-request run; the other two, just after start-up, 2,730 and 4,977 objects). While
requests left cycles (failed upstream budgets' tracebacks, cancelled tasks, httpx responses,
evicted plans), each freed 15,000 to 60,000 objects, 140 ms each, and a renewal brought every
frozen object back in sight for one full collection of them all: 160-265 ms. A collection of
the young generations alone before the freeze would pause for a few milliseconds, but freeze
the garbage of the oldest for good (its finalizers never run).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

from gateway.observability import metrics

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


# How much the frozen objects may grow over their count after the last collection of them all
# before a renewal collects them all again (see `freeze_what_lives`).
FROZEN_GROWTH = 0.25
_frozen_after_all = 0  # frozen objects after the last collection of them all; 0: none yet


def freeze_what_lives() -> None:
    """A full collection of what is in sight (the frozen objects left out), then what lives
    frozen: at a renewal of the snapshot, the new one and what the caches took in since. No
    garbage is frozen: frozen, it would never be freed, nor its finalizers run.

    A cycle in flight at the freeze is frozen with it: no request of the gateway's leaves one,
    but graphql-core's executor and validation make some of their own, and one frozen that dies
    would never be freed. So once the frozen objects have grown by `FROZEN_GROWTH` since the
    last collection of them all (and at the first renewal), the renewal brings them all back in
    sight for one (a longer pause, some 250 ms at bench.load's bounds): what such cycles keep is
    bounded, and a process whose frozen objects hold steady pays for it once."""
    global _frozen_after_all
    everything = gc.get_freeze_count() > _frozen_after_all * (1 + FROZEN_GROWTH)
    if everything:
        gc.unfreeze()
    gc.collect()
    freeze()
    if everything:
        _frozen_after_all = gc.get_freeze_count()


# Objects the collector tracks, allocated less those freed, between two collections of the
# youngest generation (CPython's default: 700). At the default a request's objects still in
# flight are found alive by collection after collection and promoted until the oldest generation
# is due, a full collection of all in sight: bench.load saw 4,500 young, 410 middle and 40 full
# collections (45 to 50 ms of CPU each) in a run, the loop's own CPU over 50 ms between two ticks
# 20 times. At 10,000 most of a request's objects die before a collection finds them: 134, 12
# and 2 (11 to 61 ms), over 50 ms 11 times.
YOUNG_THRESHOLD = 10_000


@contextlib.contextmanager
def collected_less_often(young: int = YOUNG_THRESHOLD) -> Iterator[None]:
    """The youngest generation collected once per `young` allocations while the block runs."""
    before = gc.get_threshold()
    gc.set_threshold(young, *before[1:])
    try:
        yield
    finally:
        gc.set_threshold(*before)


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
