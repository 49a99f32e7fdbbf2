"""`gateway serve` as a real process on a free loopback port, for tests of the command itself.

The environment's GATEWAY_ settings are left out, so the process serves what its flags say, and
XDG_DATA_HOME points at `data_home`: without a backend flag it builds and serves its embedded
catalogue there, never in the user's data directory.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.waiting import LISTENING, Output

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Served:
    """A `gateway serve` process listening: its origin, process id and log, read as it comes."""

    origin: str
    pid: int
    log: Output


@contextmanager
def served_gateway(data_home: Path, *args: str) -> Iterator[Served]:
    """A `gateway serve` process started with `args`, listening."""
    port = free_port()
    command = [sys.executable, "-m", "gateway", "serve", "--port", str(port)]
    command += ["--log-level", "info", *args]
    env = {name: value for name, value in os.environ.items() if not name.startswith("GATEWAY_")}
    env["XDG_DATA_HOME"] = str(data_home)
    process = subprocess.Popen(
        command, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    log = Output(process.stderr)
    origin = f"http://127.0.0.1:{port}"
    try:
        log.wait_for(LISTENING, timeout=120)  # the first start builds the embedded catalogue
        assert httpx.get(f"{origin}/healthz", timeout=5).status_code == 200
        yield Served(origin, process.pid, log)
    finally:
        process.kill()
        process.wait(timeout=15)
        log.close()


@contextmanager
def gateway_serve(data_home: Path, *args: str) -> Iterator[str]:
    """A `gateway serve` process started with `args`, listening; yields its origin."""
    with served_gateway(data_home, *args) as served:
        yield served.origin
