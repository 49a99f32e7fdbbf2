"""Leaf values: a record's scalars as graphql-core would complete them, without its machinery.

A value of the type the field expects (a `str` for String, an `int` within 32 bits for Int, …)
is taken as it is, a `datetime` formatted as the DateTime scalar formats it; anything else goes
through the type's own `coerce_output_value`, so that a surprising value converts, or fails,
exactly as on graphql-core's path.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
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

from gateway.schema.scalars import serialize_datetime

# The completed value of a leaf field, from what the record holds; raises as graphql-core does.
Complete = Callable[[Any], Any]

_MIN_INT, _MAX_INT = -(2**31), 2**31 - 1
_NATIVE: dict[str, type] = {
    GraphQLString.name: str,
    GraphQLID.name: str,
    GraphQLInt.name: int,
    GraphQLBoolean.name: bool,
}


# DateTime texts by value, at most MAX_ISOFORMATS (then all forgotten at once): about a
# hundred bytes each.
MAX_ISOFORMATS = 32_768
_ISOFORMATS: dict[tuple[datetime, Any, int], str] = {}


# The tuples found complete as they are for a list of each native type, by id: a tuple
# cannot change, and a catalogue's records show the same ones again and again. Each is held,
# so that its id names no other while it is here; at most MAX_CHECKED a type (then all are
# forgotten at once).
MAX_CHECKED = 16_384
_CHECKED: dict[type | None, dict[int, tuple[Any, ...]]] = {t: {} for t in (str, int, bool)}


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
    leaves). Each completes a value in one call where it can: a value of the type the field
    expects, and None."""
    nullable = type_.of_type if isinstance(type_, GraphQLNonNull) else type_
    required = nullable is not type_
    if isinstance(nullable, GraphQLList):
        item = nullable.of_type
        if not isinstance(item, GraphQLNonNull) or not is_leaf_type(item.of_type):
            return None
        return Completion(None, _listed(item.of_type, field, required))
    if not is_leaf_type(nullable):
        return None
    native = _NATIVE.get(nullable.name) if isinstance(nullable, GraphQLScalarType) else None
    native = None if native is int else native  # an int must also fit in 32 bits
    return Completion(native, _leaf(nullable, field, required))


def non_null_message(field: str) -> str:
    return f"Cannot return null for non-nullable field {field}."


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


def _leaf(type_: GraphQLLeafType, field: str, required: bool) -> Complete:
    """A leaf's completion: an Int in range, or a DateTime, at once; anything else (None
    too) as graphql-core completes it."""
    slow = _coerced(type_)
    message = non_null_message(field)

    def other(value: Any) -> Any:
        if value is None:
            if required:
                raise TypeError(message)
            return None
        return slow(value)

    if type_.name == GraphQLInt.name:
        return lambda value: (
            value if type(value) is int and _MIN_INT <= value <= _MAX_INT else other(value)
        )
    if type_.coerce_output_value is serialize_datetime:
        return lambda value: _isoformat(value) if type(value) is datetime else other(value)
    return other


def _isoformat(value: datetime) -> str:
    """`value.isoformat()`, kept by value: the same instants come again and again (the
    catalogue's records), and formatting one costs more than a dict lookup. The key holds what
    makes the text besides the value's equality: the zone object and the fold (which pick the
    offset of an hour a zone repeats)."""
    key = (value, value.tzinfo, value.fold)
    text = _ISOFORMATS.get(key)
    if text is None:
        if len(_ISOFORMATS) >= MAX_ISOFORMATS:
            _ISOFORMATS.clear()
        text = _ISOFORMATS[key] = value.isoformat()
    return text


def _in_range(items: list[int]) -> bool:
    return not items or (min(items) >= _MIN_INT and max(items) <= _MAX_INT)


def _listed(item: GraphQLLeafType, field: str, required: bool) -> Complete:
    """A list of non-null leaves: checked whole when every item is of the native type."""
    leaf = _leaf(item, field, True)
    native = _NATIVE.get(item.name) if isinstance(item, GraphQLScalarType) else None
    natives = frozenset({native})
    message = non_null_message(field)
    expected = f"Expected Iterable, but did not find one for field '{field}'."
    checked = _CHECKED.get(native, {})  # (a type of no native is never checked whole)

    def complete(values: Any) -> list[Any] | None:
        if native is not None and (type(values) is list or type(values) is tuple):
            if checked.get(id(values)) is values:
                return list(values)
            items = list(values)
            if set(map(type, items)) <= natives and (native is not int or _in_range(items)):
                if type(values) is tuple:
                    if len(checked) >= MAX_CHECKED:
                        checked.clear()
                    checked[id(values)] = values
                return items
        if values is None:
            if required:
                raise TypeError(message)
            return None
        if not is_iterable(values):
            raise GraphQLError(expected)
        completed = []
        for index, value in enumerate(values):
            try:
                completed.append(
                    value if type(value) is native and native is not int else leaf(value)
                )
            except Exception as error:
                raise ItemError(index, error) from None
        return completed

    return complete
