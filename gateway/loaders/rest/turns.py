"""Work too long for one step of the event loop, done in turns: other tasks run between two.

A refresh of the catalogue snapshot decodes, primes, converts and indexes thousands of records:
in one step, every request would wait for it (some 60 ms for the package list at the real
site's scale, 40 more for the snapshot). Such work is written as a generator, `Steps`, that
yields between two chunks of it (`PER_TURN` records at most, a few milliseconds); `in_turns`
runs it on the loop, which runs its other ready tasks at each yield, and a plain loop over it
(`Catalogue`'s constructor) does it all at once. What yields stays pure: only `in_turns` awaits.

On the loop rather than on a thread: while a thread runs Python, each of the loop's system calls
costs it up to a switch interval (5 ms) to get the interpreter's lock back, so that a busy loop
crawls (the GIL's convoy effect, gateway/documents/offload.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Generator, Sequence
from typing import TypeAlias, TypeVar

T = TypeVar("T")

# Records a chunk of work handles at most: a package costs some 8 µs to decode and prime, 3 µs
# to convert with its links, so a chunk stays within a few milliseconds.
PER_TURN = 500

# Work that yields where the loop may run other tasks, and returns its result.
Steps: TypeAlias = Generator[None, None, T]


def in_chunks(items: Sequence[T], work: Callable[[Sequence[T]], object]) -> Steps[None]:
    """`work` on `items`, `PER_TURN` of them at a time, yielding between two chunks (not
    after the last: a short list costs no turn)."""
    for start in range(0, len(items), PER_TURN):
        if start:
            yield
        work(items[start : start + PER_TURN])


async def in_turns(steps: Steps[T]) -> T:
    """What `steps` returns, the loop running its other ready tasks at each of its yields."""
    while True:
        try:
            next(steps)
        except StopIteration as done:
            result: T = done.value
            return result
        await asyncio.sleep(0)
