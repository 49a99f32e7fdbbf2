"""What each record's description (records.py) implies for the APIv4 and the tables.

`fields_of` reads a record class once into its `Spec`s, in the record's order; the REST wire
format (rest/wire.py), the row mapping (`from_columns`, for sql/backend.py and sql/search.py),
the mirror (`columns_of`, for sql/mirror.py) and the tests' fake APIv4 build what they need from
these instead of naming the fields again.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, NamedTuple, TypeVar, get_args, get_type_hints

import msgspec
import orjson

from gateway.loaders.records import Field, Form, in_site_time, split_participants

R = TypeVar("R", bound=msgspec.Struct)

Convert = Callable[[Any], Any]


class Spec(NamedTuple):
    """One field of a record, resolved: its name, type and where it lives elsewhere."""

    name: str
    type: Any  # the annotation without its `Field`
    rest: str
    column: str | None  # None: no column of the entity's own table holds it
    rest_form: Form | None
    column_form: Form | None
    link: str
    is_time: bool


@functools.cache
def fields_of(record: type[msgspec.Struct]) -> tuple[Spec, ...]:
    """The record's fields as its annotations describe them."""
    hints = get_type_hints(record, include_extras=True)
    specs = []
    for name in record.__struct_fields__:
        hint = hints[name]
        extras = getattr(hint, "__metadata__", ())
        described = next((extra for extra in extras if isinstance(extra, Field)), Field())
        kind = hint.__origin__ if extras else hint
        specs.append(
            Spec(
                name=name,
                type=kind,
                rest=described.rest or name,
                column=(described.column or name) if described.stored else None,
                rest_form=described.rest_form,
                column_form=described.column_form,
                link=described.link,
                is_time=datetime in (kind, *get_args(kind)),
            )
        )
    return tuple(specs)


def _json_tuple(value: Any) -> tuple[Any, ...]:
    """A JSON list, or text encoding one: maybe twice (JSON text stored in a JSON column)."""
    while isinstance(value, str):
        value = orjson.loads(value)
    return tuple(value)


def utc_text(value: str | None) -> datetime | None:
    """A timestamp as SQLite's driver hands it over: text, naive UTC (offset, if any, kept)."""
    if value is None:
        return None
    read = datetime.fromisoformat(value)
    return read if read.tzinfo is not None else read.replace(tzinfo=UTC)


def _site_text(value: str | None) -> datetime | None:
    return in_site_time(utc_text(value))


def _from_column(spec: Spec, sqlite: bool) -> Convert | None:
    if spec.is_time:
        return _site_text if sqlite else in_site_time
    if sqlite and spec.type is bool:
        return bool  # SQLite keeps 0 and 1
    if spec.column_form is Form.COMMAS:
        return split_participants
    if spec.column_form is Form.JSON:
        return _json_tuple
    return None


def from_columns(record: type[R], *, sqlite: bool = False) -> Callable[[Sequence[Any]], R]:
    """The record of a row whose first values are the record's fields in its order, read as
    the columns hold them (UTC datetimes, comma-separated names, JSON lists or their text);
    with `sqlite`, as SQLite's driver hands them over (datetimes as text, booleans as 0 and 1).

    Only the fields that need it are converted: relation batches map thousands of rows.
    """
    specs = fields_of(record)
    size = len(specs)
    fixes = tuple((i, fix) for i, spec in enumerate(specs) if (fix := _from_column(spec, sqlite)))

    def build(row: Sequence[Any]) -> R:
        values = list(row[:size])
        for index, fix in fixes:
            values[index] = fix(values[index])
        return record(*values)

    return build


def _to_column(spec: Spec, value: Any) -> Any:
    if spec.is_time and value is not None:
        return value.astimezone(UTC)
    if spec.column_form is Form.COMMAS:
        return ",".join(value)
    return value


def columns_of(item: msgspec.Struct) -> dict[str, Any]:
    """The stored fields of a record by column name, shaped as the columns hold them: UTC
    datetimes (which, unlike the site's zone, have no ambiguous hour that compares unequal
    to the same instant read back), comma-separated names."""
    return {
        spec.column: _to_column(spec, getattr(item, spec.name))
        for spec in fields_of(type(item))
        if spec.column is not None
    }
