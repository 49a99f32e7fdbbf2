"""Every GraphQL example of the README, run against `gateway serve` on its default (the embedded
catalogue), answers without errors and finds data: no top-level field null, no list empty or
with a null item.

A block's trailing `# {…}` comment lines are its variables; an `_entities` example needs the
subgraph (`--federation`), on the same catalogue.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.serving import gateway_serve

README = Path(__file__).resolve().parent.parent / "README.md"


def _examples() -> list[tuple[str, dict[str, Any]]]:
    examples = []
    for block in re.findall(r"```graphql\n(.*?)```", README.read_text(), re.DOTALL):
        lines = block.splitlines()
        comments = [line.removeprefix("#") for line in lines if line.startswith("#")]
        document = "\n".join(line for line in lines if not line.startswith("#"))
        examples.append((document, json.loads(" ".join(comments)) if comments else {}))
    return examples


EXAMPLES = _examples()


def _empty_places(value: object, path: str = "") -> Iterator[str]:
    """Where an answer found nothing: its empty lists, and the null items of a list."""
    if isinstance(value, list):
        if not value or None in value:
            yield path
        for index, item in enumerate(value):
            yield from _empty_places(item, f"{path}[{index}]")
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _empty_places(item, f"{path}.{key}")


@pytest.fixture(scope="module")
def origins(embedded_data_home: Path) -> Iterator[dict[bool, str]]:
    """The default gateway's origin, and the subgraph's (`True`: with `--federation`)."""
    with (
        gateway_serve(embedded_data_home) as default,
        gateway_serve(embedded_data_home, "--federation") as subgraph,
    ):
        yield {False: default, True: subgraph}


def test_the_readme_has_examples() -> None:
    assert len(EXAMPLES) >= 5


@pytest.mark.parametrize(
    ("document", "variables"), EXAMPLES, ids=[f"example-{i}" for i in range(len(EXAMPLES))]
)
def test_a_readme_example_finds_data_on_the_default(
    origins: dict[bool, str], document: str, variables: dict[str, Any]
) -> None:
    origin = origins["_entities" in document]
    response = httpx.post(
        f"{origin}/graphql", json={"query": document, "variables": variables}, timeout=60
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert "errors" not in body, body["errors"]
    assert body["data"], body
    assert [name for name, value in body["data"].items() if value is None] == []
    assert list(_empty_places(body["data"])) == []
