"""Variables coerced at hand (gateway/engine/variables.py), and arguments given as variables
(gateway/engine/plan.py, run.py): the same as graphql-core's, or left to graphql-core."""

from __future__ import annotations

from typing import Any

import pytest
from graphql import (
    GraphQLError,
    OperationDefinitionNode,
    get_argument_values,
    get_variable_values,
    parse,
)
from graphql.execution import VariableValues
from hypothesis import given
from hypothesis import strategies as st

from gateway.compose import schema_for
from gateway.config import Settings
from gateway.engine.fields import fields_of
from gateway.engine.plan import compile_plan
from gateway.engine.run import _Run
from gateway.engine.variables import Coercion, coercion
from gateway.internals import graphql_schema
from gateway.loaders.loaders import Loaders

SCHEMA = graphql_schema(schema_for(Settings()))
SCALARS = "query($s: String!, $t: String, $i: ID, $n: Int!, $m: Int, $b: Boolean!) {"
VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**33), max_value=2**33),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=3),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=1), st.integers(), max_size=1),
)
NAMES = ("s", "t", "i", "n", "m", "b")


def _coercion(document: str) -> tuple[OperationDefinitionNode, Coercion | None]:
    [operation] = parse(document + " __typename }").definitions
    assert isinstance(operation, OperationDefinitionNode)
    return operation, coercion(SCHEMA, operation.variable_definitions or ())


def _graphql_cores(operation: OperationDefinitionNode, inputs: dict[str, Any]) -> object:
    return get_variable_values(SCHEMA, operation.variable_definitions or (), inputs)


def _plain(values: object) -> object:
    """Variable values as plain data (graphql-core makes its wrapping types anew each time, and
    they compare by identity): what they coerced, and the source of each, in order."""
    if not isinstance(values, VariableValues):
        return values
    sources = [
        (name, str(source.signature.type), source.signature.default, source.value)
        for name, source in values.sources.items()
    ]
    return sources, list(values.coerced.items())


@given(st.dictionaries(st.sampled_from(NAMES), VALUES))
def test_plain_scalars_coerce_as_graphql_core_coerces_them(inputs: dict[str, Any]) -> None:
    """Where the values are the scalars' own, the very values and sources graphql-core makes;
    anything else (a wrong type, a number out of range, a missing non-null) is left to it."""
    operation, at_hand = _coercion(SCALARS)
    assert at_hand is not None
    coerced = at_hand(inputs)
    if coerced is not None:
        assert _plain(coerced) == _plain(_graphql_cores(operation, inputs))


@pytest.mark.parametrize(
    ("inputs", "at_hand"),
    [
        ({"s": "x", "n": 1, "b": True}, True),
        ({"s": "x", "t": None, "i": "7", "n": -(2**31), "m": 2**31 - 1, "b": False}, True),
        ({"s": "x", "n": 1, "b": True, "other": object()}, True),  # not a variable: ignored
        ({"s": "x", "n": 1}, False),  # a non-null missing
        ({"s": None, "n": 1, "b": True}, False),  # a non-null given null
        ({"s": "x", "n": 2**31, "b": True}, False),  # out of Int's range
        ({"s": "x", "n": True, "b": True}, False),  # a bool is no Int
        ({"s": "x", "n": 1, "b": True, "i": 7}, False),  # an ID given a number
        ({"s": "x", "n": 1.0, "b": True}, False),  # an Int given a float
    ],
)
def test_what_is_coerced_at_hand(inputs: dict[str, Any], at_hand: bool) -> None:
    operation, coerce = _coercion(SCALARS)
    assert coerce is not None
    coerced = coerce(inputs)
    assert (coerced is not None) is at_hand
    if coerced is not None:
        assert _plain(coerced) == _plain(_graphql_cores(operation, inputs))


@pytest.mark.parametrize(
    "document",
    [
        'query($s: String = "x") {',  # a default value
        "query($ids: [ID!]!) {",
        "query($filter: PackageFilter) {",
        "query($order: PackageOrder!) {",
        "query($s: String!, $f: Float) {",  # a type the schema lacks
    ],
)
def test_other_variables_are_graphql_cores(document: str) -> None:
    assert _coercion(document)[1] is None


def test_no_variables_coerce_to_none_of_them() -> None:
    operation, coerce = _coercion("query {")
    assert coerce is not None
    assert _plain(coerce({"x": 1})) == _plain(_graphql_cores(operation, {"x": 1}))


ARGUMENTS = """query($slug: String, $first: Int, $after: String, $q: String!, $id: ID!) {
    package(slug: $slug) { grids(first: $first, after: $after) { totalCount } }
    packages(first: 3, after: $after) { totalCount }
    grids(first: $first, orderBy: {field: TITLE}) { totalCount }
    search(query: $q) { title }
    node(id: $id) { id }
}"""


@given(
    st.fixed_dictionaries(
        {},
        optional={
            "slug": st.one_of(st.none(), st.text(max_size=2)),
            "first": st.one_of(st.none(), st.integers(min_value=-2, max_value=200)),
            "after": st.one_of(st.none(), st.text(max_size=2)),
            "q": st.one_of(st.none(), st.text(max_size=2)),
            "id": st.one_of(st.none(), st.text(max_size=2)),
        },
    )
)
def test_arguments_given_as_variables_are_graphql_cores(inputs: dict[str, Any]) -> None:
    """A plan's arguments for a run, some given as variables, some not, some left out (their
    defaults): those graphql-core coerces, or its error."""
    schema = schema_for(Settings())
    document = parse(ARGUMENTS)
    [operation] = document.definitions
    assert isinstance(operation, OperationDefinitionNode)
    plan = compile_plan(SCHEMA, fields_of(schema), document, operation, frozenset())
    assert plan is not None
    variables = get_variable_values(SCHEMA, operation.variable_definitions or (), inputs)
    if not isinstance(variables, VariableValues):
        return
    run = _Run(variables, Loaders(None))  # type: ignore[arg-type]  # no loader is asked
    loaded = [*plan.root.loaded, *plan.root.loaded[0].selections["Package"].loaded]
    assert loaded[0].variables  # what is at stake: some arguments given as variables
    for field in loaded:
        try:
            expected: object = get_argument_values(field.definition, field.nodes[0], variables)
        except GraphQLError as error:
            expected = error.message
        try:
            found: object = run.arguments(field)
        except GraphQLError as error:
            found = error.message
        assert found == expected
