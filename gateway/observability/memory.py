"""Memory: what the C allocator keeps freed, given back; and a debugging aid, snapshots.

glibc's malloc keeps the memory freed inside its heaps for reuse: after a peak (two catalogue
snapshots while one is renewed) the process's RSS stays at the peak. `give_back` hands those
pages back to the system (`malloc_trim`); where the C library is not glibc it does nothing.

With `PYTHONTRACEMALLOC` set (Python's own variable: it starts tracemalloc at start-up, keeping
that many frames of each allocation's traceback), `gateway serve` writes a snapshot of what it
holds each time it gets SIGUSR2, to `snapshot_path(pid, n)`; `python -m bench.load --tracemalloc`
compares them. Without the variable nothing is installed, and no request ever sees it.
"""

from __future__ import annotations

import asyncio
import ctypes
import itertools
import os
import signal
import tempfile
import tracemalloc
from pathlib import Path
from types import FrameType


def _malloc_trim() -> ctypes._NamedFuncPointer | None:
    """glibc's `malloc_trim`, or None where the C library has none (musl, macOS)."""
    try:
        return ctypes.CDLL(None).malloc_trim
    except (AttributeError, OSError):
        return None


_TRIM = _malloc_trim()


async def give_back() -> None:
    """Give the memory the C allocator holds free back to the system, on a thread: trimming
    walks the heaps (a few milliseconds), and ctypes lets go of the interpreter's lock."""
    if _TRIM is not None:
        await asyncio.to_thread(_TRIM, 0)


def snapshot_path(pid: int, n: int) -> Path:
    """Where process `pid` writes its `n`th snapshot (from 1)."""
    return Path(tempfile.gettempdir()) / f"gateway-{pid}-{n}.tracemalloc"


def dump_snapshots_on_signal() -> None:
    """If tracemalloc traces this process, SIGUSR2 writes a snapshot (whole, once written)."""
    if not tracemalloc.is_tracing():
        return
    numbers = itertools.count(1)

    def dump(signum: int, frame: FrameType | None) -> None:
        path = snapshot_path(os.getpid(), next(numbers))
        partial = path.with_suffix(".partial")
        tracemalloc.take_snapshot().dump(str(partial))
        partial.rename(path)

    signal.signal(signal.SIGUSR2, dump)
