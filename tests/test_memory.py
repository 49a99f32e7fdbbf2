"""The memory snapshots a traced `gateway serve` writes on SIGUSR2 (gateway/memory.py)."""

from __future__ import annotations

import os
import signal
import time
import tracemalloc
from pathlib import Path

import httpx
import pytest

from gateway.memory import snapshot_path
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
