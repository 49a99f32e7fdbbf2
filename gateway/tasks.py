"""What a task of the gateway's leaves behind once it is done: nothing but its result."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any


def taken(future: asyncio.Future[Any]) -> None:
    """A done callback: the future's failure, or its cancellation, taken as it ends.

    A failure nobody takes, asyncio logs (a traceback each): the callers of a shared fetch may
    all have given up on it. A cancelled task keeps its `CancelledError` (Python 3.11) until
    someone asks for it, and the error's traceback holds the frames its coroutine ran, which
    often hold the task itself: a cycle only the garbage collector would free. Taken, it goes.
    """
    with contextlib.suppress(asyncio.CancelledError):
        future.exception()
