"""Work too long for one step of the event loop, done in turns: other tasks run between two.

A refresh of the catalogue snapshot decodes, converts, caches and indexes thousands of records:
in one step, every request would wait for it (some 50 ms for the package list at the real
site's scale, tens more for the snapshot). Such work is written as a generator, `Steps`, that
yields between two chunks of it (`PER_TURN` records at most, a few milliseconds); `in_turns`
runs it on the loop, which runs its other ready tasks at each yield. Run through by `at_once`,
the same generator is the plain computation. What yields is pure, the yielding is done here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Generator, Sequence
from typing import TypeAlias, TypeVar

T = TypeVar("T")

# Records a chunk of work handles at most: a package costs some 10 µs to decode and prime,
# 2 µs to convert, so a chunk stays within a few milliseconds.
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


def at_once(steps: Steps[T]) -> T:
    """What `steps` returns, worked out without a pause."""
    while True:
        try:
            next(steps)
        except StopIteration as done:
            result: T = done.value
            return result
