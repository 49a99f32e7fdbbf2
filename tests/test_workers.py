"""`gateway serve --workers N`: N real processes answering on one port, all with the settings the
parent resolved (flags, environment and TOML file), the backend checked once before any starts.

Which worker answers a connection is the kernel's choice; to see each one answer on its own,
the test freezes the other (SIGSTOP) for the few requests it sends, then thaws it.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import socket
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.config import Settings
from gateway.errors import ConfigError
from gateway.worker import SETTINGS_VARIABLE, hand_down, settings_from_environment
from tests.fake_upstream import FakeUpstream
from tests.waiting import STARTED, Output, frozen

pytestmark = pytest.mark.skipif(
    not Path("/proc/self/task").is_dir(), reason="reads the process tree from Linux's /proc"
)

DEEP = "{ packages(first: 1) { nodes { category { packages(first: 1) { nodes { slug } } } } } }"
INTROSPECTION = "{ __schema { queryType { name } } }"
COUNT = "{ categories { totalCount } }"


def _env(**gateway: str) -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if not name.startswith("GATEWAY_")}
    return {**env, **gateway}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _workers(parent: int) -> list[int]:
    """The parent's worker processes (uvicorn starts them with multiprocessing's spawn)."""
    children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
    return [
        int(child)
        for child in children
        if b"spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes()
    ]


def _post(origin: str, query: str) -> Any:
    # A new connection each time: whichever worker is running accepts it.
    response = httpx.post(f"{origin}/graphql", json={"query": query}, timeout=5)
    return response.json()


def _codes(body: Any) -> list[str]:
    return [error["extensions"]["code"] for error in body.get("errors", [])]


def test_two_workers_answer_on_one_port_with_the_same_settings(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    # One setting from each source: the file (depth, workers), the environment, a flag.
    (tmp_path / "gateway.toml").write_text(
        "max_depth = 3\nworkers = 2\nwarm_catalogue = false\nmax_header_bytes = 2000\n"
    )
    port = _free_port()
    command = [sys.executable, "-m", "gateway", "serve", "--port", str(port)]
    command += ["--upstream", upstream.base_url, "--log-level", "info"]
    process = subprocess.Popen(
        command,
        env=_env(GATEWAY_INTROSPECTION="false"),
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    log = Output(process.stderr)
    origin = f"http://127.0.0.1:{port}"
    try:
        log.wait_for(STARTED, count=2)
        workers = _workers(process.pid)
        assert len(workers) == 2, workers
        first, second = workers

        answered_by = []
        for stopped, running in [(first, second), (second, first)]:
            with frozen(stopped):
                assert _post(origin, COUNT) == {
                    "data": {"categories": {"totalCount": len(upstream.dataset.categories)}}
                }
                assert _codes(_post(origin, DEEP)) == ["QUERY_TOO_DEEP"]
                assert set(_codes(_post(origin, INTROSPECTION))) == {"INTROSPECTION_DISABLED"}
                # What one connection may hold is each worker's too (server_options).
                too_large = httpx.get(f"{origin}/healthz", headers={"X-Big": "a" * 2000})
                assert too_large.status_code == 431
                assert too_large.headers["x-content-type-options"] == "nosniff"
                answered_by.append(running)
        assert sorted(answered_by) == sorted(workers)
        # Each worker has a cache of its own: the same categories page, fetched once by each.
        [(target, times)] = Counter(upstream.requests).items()
        assert "categories" in target
        assert times == 2
        assert _workers(process.pid) == workers  # none was restarted meanwhile
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()
    text = log.text
    assert text.count("Application shutdown complete") == 2, text
    assert "Traceback" not in text
    # Like a single process, the parent ends as killed by SIGTERM, after its workers.
    assert process.returncode == -signal.SIGTERM
    for worker in workers:
        assert not Path(f"/proc/{worker}").exists()


def test_a_backend_that_cannot_serve_stops_start_up_before_any_worker(tmp_path: Path) -> None:
    missing = tmp_path / "missing.sqlite3"
    command = [sys.executable, "-m", "gateway", "serve", "--workers", "2"]
    command += ["--port", str(_free_port()), "--database", f"sqlite:///{missing}"]
    run = subprocess.run(
        command,
        capture_output=True,
        encoding="utf-8",
        env=_env(),
        cwd=tmp_path,
        timeout=30,
        check=False,
    )
    assert run.returncode == 2
    [line] = run.stderr.splitlines()  # not a line from any worker
    assert line.startswith("gateway: error: ")
    assert str(missing) in line


def test_the_settings_handed_down_are_the_parents(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings(
        upstream="https://user:pw@example.org/api/v4/",
        cache_ttl=1.5,
        introspection=False,
        workers=3,
        federation=True,
    )
    environ: dict[str, str] = {}
    hand_down(settings, environ)
    monkeypatch.setenv(SETTINGS_VARIABLE, environ[SETTINGS_VARIABLE])
    monkeypatch.setenv("GATEWAY_CACHE_TTL", "99")  # the worker does not read it again
    assert settings_from_environment() == settings
    assert dataclasses.asdict(settings_from_environment()) == dataclasses.asdict(settings)


@pytest.mark.parametrize("raw", [None, "not json", "[]", '{"port": "80"}'])
def test_a_worker_without_good_settings_refuses_to_start(
    monkeypatch: pytest.MonkeyPatch, raw: str | None
) -> None:
    if raw is None:
        monkeypatch.delenv(SETTINGS_VARIABLE, raising=False)
    else:
        monkeypatch.setenv(SETTINGS_VARIABLE, raw)
    with pytest.raises(ConfigError, match=SETTINGS_VARIABLE):
        settings_from_environment()
