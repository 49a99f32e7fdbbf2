"""gateway/observability/memory.py: the freed heap given back, and the memory snapshots a traced
`gateway serve` writes on SIGUSR2."""

from __future__ import annotations

import asyncio
import ctypes
import os
import signal
import time
import tracemalloc
from pathlib import Path

import httpx
import pytest

from gateway.observability.memory import give_back, snapshot_path
from tests.serving import served_gateway


def test_a_traced_server_writes_a_snapshot_of_what_it_holds_on_sigusr2(
    embedded_data_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYTHONTRACEMALLOC", "5")
    with served_gateway(embedded_data_home) as server:
        query = {"query": "{ categories { totalCount } }"}
        assert httpx.post(f"{server.origin}/graphql", json=query, timeout=30).status_code == 200
        os.kill(server.pid, signal.SIGUSR2)
        path = snapshot_path(server.pid, 1)
        deadline = time.monotonic() + 60
        while not path.exists():
            assert time.monotonic() < deadline, "no snapshot written"
            time.sleep(0.1)
        try:
            snapshot = tracemalloc.Snapshot.load(str(path))
        finally:
            path.unlink()
        assert httpx.get(f"{server.origin}/healthz", timeout=30).status_code == 200
    files = {stat.traceback[0].filename for stat in snapshot.statistics("filename")}
    assert any(name.endswith("/gateway/app.py") for name in files)


def resident_bytes() -> int:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(
    not hasattr(ctypes.CDLL(None), "malloc_trim"), reason="the C library is not glibc"
)
def test_the_heap_freed_under_a_block_still_held_goes_back_to_the_system() -> None:
    # 64 MiB in blocks of 4 KiB (malloc's, not Python's small-object allocator), one in 16
    # kept: the 60 MiB freed lie between blocks still held, which malloc keeps for reuse.
    size = 4096  # a name, not a literal: `b"x" * 4096` would be one constant, made once
    blocks = [b"x" * size for _ in range(16_384)]
    held = blocks[::16]
    del blocks
    before = resident_bytes()
    asyncio.run(give_back())
    assert before - resident_bytes() > 32 * 2**20
    assert len(held) == 1024
