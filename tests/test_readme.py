"""The README's configuration table names every setting the gateway has."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from gateway.config import Settings, env_name, flag_name

README = Path(__file__).resolve().parent.parent / "README.md"


def test_every_setting_is_in_the_configuration_table() -> None:
    rows = [line for line in README.read_text().splitlines() if line.startswith("| `--")]
    for field in dataclasses.fields(Settings):
        row = next((row for row in rows if f"`{flag_name(field.name)}`" in row), None)
        assert row is not None, f"README lacks {flag_name(field.name)}"
        assert f"`{env_name(field.name)}`" in row
