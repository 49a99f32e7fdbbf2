"""A debugging aid for memory: what the process holds, in snapshots to compare.

With `PYTHONTRACEMALLOC` set (Python's own variable: it starts tracemalloc at start-up, keeping
that many frames of each allocation's traceback), `gateway serve` writes a snapshot of what it
holds each time it gets SIGUSR2, to `snapshot_path(pid, n)`; `python -m bench.load --tracemalloc`
compares them. Without the variable nothing is installed, and no request ever sees it.
"""

from __future__ import annotations

import itertools
import os
import signal
import tempfile
import tracemalloc
from pathlib import Path
from types import FrameType


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
