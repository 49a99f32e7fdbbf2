"""A relation's rows in one statement: each parent's members numbered, counted and keyed.

`SqlBackend` pages every window of a batch at once: for each shape of window (its filter,
order and cursors) `Relation.ranked` numbers the members of the parents asking in that shape,
with the totals and the cursors' positions, and carries each row's order key in columns that a
`UNION ALL` of shapes can share.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

from sqlalchemy import (
    CTE,
    BigInteger,
    ColumnElement,
    DateTime,
    FromClause,
    Integer,
    Row,
    Select,
    Text,
    case,
    cast,
    func,
    literal,
    null,
    select,
    type_coerce,
)
from sqlalchemy.types import TypeEngine

from gateway.loaders.records import Slice
from gateway.loaders.sql.sort_keys import Key, Plan, beyond
from gateway.loaders.sql.tables import UTCDateTime

# A relation's rows carry their order's key, in columns a UNION ALL of shapes can share: its
# first two terms, each in the column of its kind (the others null).
_KEY_KINDS: dict[str, TypeEngine[Any]] = {
    "int": BigInteger(),
    "text": Text(),
    "time": UTCDateTime(),
}
KEY_TERMS = 2


def kind_of(key: Key) -> str:
    """Which key column a term's values go in."""
    if isinstance(key.value.type, Integer):
        return "int"
    return "time" if isinstance(key.value.type, DateTime | UTCDateTime) else "text"


def key_of(row: Row[Any], kinds: Sequence[str]) -> tuple[Any, ...]:
    """A relation row's key, read back from the columns of its kinds."""
    return tuple(getattr(row, f"key_{term}_{kind}") for term, kind in enumerate(kinds))


def _count_of(condition: ColumnElement[bool] | None, partition: ColumnElement[int]) -> Any:
    """How many of a parent's rows meet `condition` (all of them without one)."""
    if condition is None:
        return func.count().over(partition_by=partition)
    return func.sum(case((condition, 1), else_=0)).over(partition_by=partition)


class Relation(NamedTuple):
    """A relation's narrow rows: which parent each belongs to, and which member it pages."""

    members: FromClause
    parent: ColumnElement[int]
    member: ColumnElement[int]

    def ranked(self, plan: Plan, shape: int, slice: Slice, wanted: CTE) -> Select[Any]:
        """The members of the parents `wanted` asks for in this shape, numbered and counted,
        with their keys and where the shape's cursors fall (`lower`, `upper`)."""
        asked = select(wanted.c.parent).where(wanted.c.shape == shape)
        past = None if slice.after is None else beyond(plan.keys, slice.after, later=True)
        short = None if slice.before is None else beyond(plan.keys, slice.before, later=False)
        total = _count_of(None, self.parent)
        lower = literal(0, BigInteger) if past is None else total - _count_of(past, self.parent)
        keys: list[ColumnElement[Any]] = []
        for term in range(KEY_TERMS):
            key = plan.keys[term] if term < len(plan.keys) else None
            for kind, type_ in _KEY_KINDS.items():
                value: ColumnElement[Any]
                if key is not None and kind_of(key) == kind:
                    value = type_coerce(key.value, type_)  # no CAST: SQLite's would convert
                else:
                    value = cast(null(), type_)  # typed, for PostgreSQL's UNION
                keys.append(value.label(f"key_{term}_{kind}"))
        return plan.apply(
            select(
                self.parent.label("parent"),
                self.member.label("member"),
                func.row_number()
                .over(partition_by=self.parent, order_by=plan.order_by())
                .label("position"),
                total.label("total"),
                lower.label("lower"),
                _count_of(short, self.parent).label("upper"),
                *keys,
                literal(shape, BigInteger).label("shape"),
            )
            .select_from(self.members)
            .where(self.parent.in_(asked))
        )
