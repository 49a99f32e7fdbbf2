"""A document read and validated in the documents' process, as this process's requests would
validate it (reading.py says why there).

It builds the schema, which reads its own documents through reading.py: so this module sits
above both, and the schema's builder (compose.py) hands `read_valid` to the readings.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

from graphql import DocumentNode, GraphQLError

from gateway.documents.limits import QueryLimits, validated, validation_rules
from gateway.documents.reading import Reading, parse_and_read
from gateway.internals import graphql_schema
from gateway.schema import build_schema


@dataclass(frozen=True, slots=True)
class Validation:
    """What validates a document as a schema's requests do, such as pickle carries: the
    schema's query limits, and whether it is a federation subgraph."""

    limits: QueryLimits
    federation: bool


def read_valid(text: str, max_tokens: int, max_selections: int, validation: Validation) -> Reading:
    """`text` read (reading.py's `read`), and if it passes, validated under `validation`."""
    document, reading = parse_and_read(text, max_tokens, max_selections)
    if document is None or _validator(validation)(document):
        return reading
    return Reading(None, reading.normal, valid=True)


@functools.cache
def _validator(validation: Validation) -> Callable[[DocumentNode], list[GraphQLError]]:
    """What finds a document's validation errors under `validation`: its schema and rules
    built once, in the documents' process."""
    schema = graphql_schema(build_schema(validation.limits, federation=validation.federation))
    rules = validation_rules(validation.limits)
    return lambda document: validated(schema, document, rules)
