"""Leaf values: a record's scalars as graphql-core would complete them, without its machinery.

A value of the type the field expects (a `str` for String, an `int` within 32 bits for Int, …)
is taken as it is; anything else goes through the type's own `coerce_output_value`, so that
a surprising value converts, or fails, exactly as on graphql-core's path.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from graphql import (
    GraphQLBoolean,
    GraphQLError,
    GraphQLID,
    GraphQLInt,
    GraphQLLeafType,
    GraphQLList,
    GraphQLNonNull,
    GraphQLOutputType,
    GraphQLScalarType,
    GraphQLString,
    is_leaf_type,
)
from graphql.pyutils import Undefined, inspect, is_iterable

# The completed value of a leaf field, from what the record holds; raises as graphql-core does.
Complete = Callable[[Any], Any]

_MIN_INT, _MAX_INT = -(2**31), 2**31 - 1
_NATIVE: dict[str, type] = {
    GraphQLString.name: str,
    GraphQLID.name: str,
    GraphQLInt.name: int,
    GraphQLBoolean.name: bool,
}


class ItemError(Exception):
    """An item of a list could not be completed: the error is located at the item."""

    def __init__(self, index: int, error: Exception) -> None:
        super().__init__(index, error)
        self.index = index
        self.error = error


class Completion(NamedTuple):
    """How a leaf field completes: a value of exactly type `native` is complete as it is
    (checked where it is read, for speed); `complete` completes any other value, None too."""

    native: type | None
    complete: Complete


def completion(type_: GraphQLOutputType, field: str) -> Completion | None:
    """How to complete a leaf field of `type_` (`field` is "Parent.name", for messages);
    None for a type the engine leaves to graphql-core (a list of lists, a list of nullable
    leaves)."""
    nullable = type_.of_type if isinstance(type_, GraphQLNonNull) else type_
    native = None
    if isinstance(nullable, GraphQLList):
        item = nullable.of_type
        if not isinstance(item, GraphQLNonNull) or not is_leaf_type(item.of_type):
            return None
        inner = _listed(item.of_type, field)
    elif is_leaf_type(nullable):
        inner = _leaf(nullable)
        native = _NATIVE.get(nullable.name) if isinstance(nullable, GraphQLScalarType) else None
        native = None if native is int else native  # an int must also fit in 32 bits
    else:
        return None
    if nullable is type_:
        return Completion(native, lambda value: None if value is None else inner(value))
    return Completion(native, _required(inner, field))


def non_null_message(field: str) -> str:
    return f"Cannot return null for non-nullable field {field}."


def _required(inner: Complete, field: str) -> Complete:
    message = non_null_message(field)

    def complete(value: Any) -> Any:
        if value is None:
            raise TypeError(message)
        return inner(value)

    return complete


def _coerced(type_: GraphQLLeafType) -> Complete:
    """graphql-core's own completion of a leaf value (`complete_leaf_value`)."""

    coerce = type_.coerce_output_value

    def complete(value: Any) -> Any:
        coerced = coerce(value)
        if coerced is Undefined or coerced is None:
            raise TypeError(
                f"Expected `{inspect(type_)}.coerce_output_value({inspect(value)})` to return"
                f" non-nullable value, returned: {inspect(coerced)}"
            )
        return coerced

    return complete


def _leaf(type_: GraphQLLeafType) -> Complete:
    slow = _coerced(type_)
    if type_.name == GraphQLInt.name:
        return lambda value: (
            value if type(value) is int and _MIN_INT <= value <= _MAX_INT else slow(value)
        )
    return slow


def _in_range(items: list[int]) -> bool:
    return not items or (min(items) >= _MIN_INT and max(items) <= _MAX_INT)


def _listed(item: GraphQLLeafType, field: str) -> Complete:
    """A list of non-null leaves: checked whole when every item is of the native type."""
    leaf = _leaf(item)
    native = _NATIVE.get(item.name) if isinstance(item, GraphQLScalarType) else None
    message = non_null_message(field)
    expected = f"Expected Iterable, but did not find one for field '{field}'."

    def complete(values: Any) -> list[Any]:
        if native is not None and type(values) in (list, tuple):
            items = list(values)
            if set(map(type, items)) <= {native} and (native is not int or _in_range(items)):
                return items
        if not is_iterable(values):
            raise GraphQLError(expected)
        completed = []
        for index, value in enumerate(values):
            try:
                if value is None:
                    raise TypeError(message)
                completed.append(
                    value if type(value) is native and native is not int else leaf(value)
                )
            except Exception as error:
                raise ItemError(index, error) from None
        return completed

    return complete
