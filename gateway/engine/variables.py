"""An operation's variables coerced at hand where each is a plain scalar given its own type.

graphql-core's `get_variable_values` walks every variable's definition and type anew for each
request. The variables a client usually sends are built-in scalars (String, ID, Int, Boolean,
maybe non-null, without a default value) given as a value of the scalar's own Python type,
which graphql-core coerces to that very value: `Coercion` checks just that, and makes the same
`VariableValues` (its sources too). Anything else (a missing non-null variable, one with a
default, a value of another type, a list, an input object, an unknown type) is graphql-core's
to coerce, or to refuse with its own errors.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any, NamedTuple

from graphql import (
    GraphQLBoolean,
    GraphQLError,
    GraphQLID,
    GraphQLInt,
    GraphQLNonNull,
    GraphQLSchema,
    VariableDefinitionNode,
)
from graphql.execution import VariableValues
from graphql.pyutils import Undefined
from graphql.type import GraphQLString

from gateway.internals import VariableSignature, variable_signature, variable_values

_MIN_INT, _MAX_INT = -(2**31), 2**31 - 1

# Whether a value of a built-in scalar is one graphql-core coerces to itself.
_ITSELF: dict[object, Callable[[Any], bool]] = {
    GraphQLString: lambda value: type(value) is str,
    GraphQLID: lambda value: type(value) is str,
    GraphQLBoolean: lambda value: type(value) is bool,
    GraphQLInt: lambda value: type(value) is int and _MIN_INT <= value <= _MAX_INT,
}


class _Variable(NamedTuple):
    name: str
    signature: VariableSignature
    itself: Callable[[Any], bool]
    required: bool  # non-null


class Coercion:
    """The variables of one operation, coerced at hand where they can be."""

    __slots__ = ("_variables",)

    def __init__(self, variables: tuple[_Variable, ...]) -> None:
        self._variables = variables

    def __call__(self, inputs: dict[str, Any]) -> VariableValues | None:
        """The variables coerced as graphql-core would; None where it is graphql-core's to
        coerce them (or refuse them)."""
        given: list[tuple[VariableSignature, Any]] = []
        coerced: dict[str, Any] = {}
        for name, signature, itself, required in self._variables:
            value = inputs.get(name, Undefined)
            if value is Undefined:
                if required:
                    return None
            elif itself(value) or (value is None and not required):
                coerced[name] = value
            else:
                return None
            given.append((signature, value))
        return variable_values(given, coerced)


def coercion(
    schema: GraphQLSchema, definitions: Collection[VariableDefinitionNode]
) -> Coercion | None:
    """How to coerce an operation's variables at hand; None where none can be: one of them
    is not a built-in scalar, or has a default value."""
    variables = []
    for definition in definitions:
        signature = variable_signature(schema, definition)
        if isinstance(signature, GraphQLError) or signature.default is not None:
            return None
        type_ = signature.type
        required = isinstance(type_, GraphQLNonNull)
        itself = _ITSELF.get(type_.of_type if isinstance(type_, GraphQLNonNull) else type_)
        if itself is None:
            return None
        variables.append(_Variable(signature.name, signature, itself, required))
    return Coercion(tuple(variables))
