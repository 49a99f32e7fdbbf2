"""One thread for the work on documents that is too long for the event loop.

A document at the token limit takes tens of milliseconds to parse, and its validation may take
as long again: on the event loop, every other request would wait meanwhile. On a thread, the loop
gets its turn every few milliseconds (the interpreter's switch interval). One thread, of its own:
only one thread runs Python at a time anyway, so more would not go faster, but would make the loop
wait longer for its turn; the work of a request that ended first (timed out, its client gone) is
dropped if it has not started; and the loop's default executor stays free for what else uses it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")

_THREAD = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gateway-documents")


async def off_the_loop(function: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """`function(*args, **kwargs)`, run on the documents' thread."""
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(_THREAD, lambda: function(*args, **kwargs))
