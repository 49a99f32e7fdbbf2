"""Reading a document once, a long one in the documents' process: the refusal comes back as the
limits would have raised it here, and the process is there when it can be, the thread when not."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from gateway.compose import query_limits, schema_for
from gateway.config import Settings
from gateway.documents.limits import document_errors
from gateway.documents.offload import out_of_process
from gateway.documents.reading import Readings
from gateway.errors import format_error
from gateway.internals import graphql_schema
from gateway.observability.metrics import MULTIPROC_VARIABLE
from gateway.validating import Validation, read_valid
from tests.waiting import documents_process_id

LIMITS = query_limits(Settings())
GRAPHQL = graphql_schema(schema_for(Settings()))
PADDING = "\n" * 50 + " " * 3_000  # the errors' locations move with it
SCHEMAS = "{ " + " ".join(f"s{i}: __schema {{ queryType {{ name }} }}" for i in range(2)) + " }"
DEEP = "fragment F0 on Query { __typename }\n" + "\n".join(
    f"fragment F{i} on Query {{ ...F{i - 1} categories {{ ...F{i - 1} }} }}" for i in range(1, 120)
)
WIDE = "fragment W0 on Query { __typename }\n" + "\n".join(
    f"fragment W{i} on Query {{ a: categories {{ ...W{i - 1} }} b: categories {{ ...W{i - 1} }} }}"
    for i in range(1, 20)
)


@pytest.mark.parametrize(
    "text",
    [
        "{ categories { totalCount " + "\n" * 10 + "(",
        "{ " + "a " * 5_001 + "}",
        "{ " + "categories { totalCount } " * 1_249 + "}",
        SCHEMAS,
        "{ categories { } }",
        "query { ...F119 }\n" + DEEP,
        "query { ...W19 }\n" + WIDE,
        "{ a " * 300 + "}" * 300,
    ],
    ids=[
        "syntax",
        "tokens",
        "selections",
        "introspection",
        "empty",
        "spread-deep",
        "spread-wide",
        "nested",
    ],
)
@pytest.mark.parametrize("padded", [False, True], ids=["as-is", "padded"])
async def test_a_refusal_is_the_limits_own_error(text: str, padded: bool) -> None:
    """Read in the documents' process (or on their thread while it starts), a refused
    document's error is the one the limits raise on the spot: its message, code and locations."""
    if padded:
        text = PADDING + text
    reading = await Readings(LIMITS.max_tokens, LIMITS.max_selections).get(text)
    assert reading.refusal is not None and reading.normal is None
    [expected] = document_errors(GRAPHQL, LIMITS, text)
    assert format_error(reading.refusal.error(text)) == format_error(expected)


async def test_a_document_within_the_limits_has_one_normal_form_however_it_is_written() -> None:
    readings = Readings(LIMITS.max_tokens, LIMITS.max_selections)
    query = "query Q { categories { totalCount } }"
    short = await readings.get(query)
    long = await readings.get(PADDING + query.replace(" ", " ,\n# a comment\n "))
    assert short.refusal is None and short.normal is not None
    assert long == short
    assert short.normal.queries == frozenset({"Q"}) and short.normal.operations == 1
    assert readings.known(query) is short and len(readings) == 2


@pytest.mark.parametrize(
    "text",
    [
        "{ categories { totalCount } }",
        "{ nope }",
        "query($unused: Int) { categories { totalCount } }",
        "{ " + " ".join(f"a{i}: categories {{ totalCount }}" for i in range(31)) + " }",
        "{ "
        + "packages(first: 1) { nodes { grids(first: 1) { nodes { " * 3
        + "title"
        + "}}}}" * 3
        + "}",
        '{ a: search(query: "x") { title } a: categories { totalCount } }',
    ],
    ids=["valid", "unknown-field", "unused-variable", "aliases", "depth", "unmergeable"],
)
async def test_the_documents_process_validates_as_a_request_does(text: str) -> None:
    """A document valid there needs no validation here: it is valid here too, and only then."""
    await documents_process_id()
    readings = Readings(
        LIMITS.max_tokens,
        LIMITS.max_selections,
        reader=read_valid,
        reader_args=(Validation(LIMITS, False),),
    )
    reading = await readings.get(text)
    assert reading.refusal is None
    assert reading.valid == (document_errors(GRAPHQL, LIMITS, text) == [])
    assert reading.valid == (text == "{ categories { totalCount } }")


async def test_what_the_process_runs_comes_back_raised_as_it_was() -> None:
    with pytest.raises(ValueError, match="invalid literal"):
        await out_of_process(int, "not a number")


async def test_the_documents_process_is_started_again_when_it_dies() -> None:
    """While it is not there (starting, or dead), its calls run on the documents' thread."""
    child = await documents_process_id()
    os.kill(child, signal.SIGKILL)
    assert await out_of_process(os.getpid) == os.getpid()  # the thread's; a new process starts
    again = await documents_process_id()
    assert again not in (child, os.getpid())


async def test_the_documents_process_keeps_no_metrics_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under several workers the child is not one of them: it makes no files in their metrics
    directory, which the server removes at shutdown, maybe while the child is still starting."""
    monkeypatch.setenv(MULTIPROC_VARIABLE, str(tmp_path))
    os.kill(await documents_process_id(), signal.SIGKILL)  # the next one starts in this environment
    await documents_process_id()
    assert await out_of_process(os.getenv, MULTIPROC_VARIABLE) is None
    assert list(tmp_path.iterdir()) == []
