"""graphql-http's GraphQL-over-HTTP audit (`auditServer`, all its checks) against `gateway serve`.

The npm packages are pinned by tests/audit/package-lock.json and installed here with `npm ci`
when missing. Without node and npm the test skips, except under CI, where it fails.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.serving import gateway_serve

AUDIT = Path(__file__).resolve().parent / "audit"


def _missing(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def audit_installed() -> Path:
    """tests/audit with its node_modules, installed from the lock file when missing."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        _missing("graphql-http's audit needs node and npm on PATH")
    if not (AUDIT / "node_modules" / "graphql-http").is_dir():
        installed = subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund"],
            cwd=AUDIT,
            capture_output=True,
            text=True,
            timeout=300,
        )
        if installed.returncode != 0:
            _missing(f"`npm ci` in {AUDIT} failed: {installed.stderr.strip()[-500:]}")
    return AUDIT


@pytest.fixture(scope="module")
def served(embedded_data_home: Path) -> Iterator[str]:
    with gateway_serve(embedded_data_home) as origin:
        yield origin


def test_every_check_of_the_graphql_over_http_audit_passes(
    audit_installed: Path, served: str
) -> None:
    run = subprocess.run(
        ["node", "audit.mjs", f"{served}/graphql"],
        cwd=audit_installed,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    results = [json.loads(line) for line in run.stdout.splitlines()]
    failed = [result for result in results if result["status"] != "ok"]
    assert failed == []
    assert len(results) == 61  # graphql-http 1.23.1's checks, MUST, SHOULD and MAY alike
