"""A relation's windows in one statement: each parent's slice of members, counted and keyed.

`SqlBackend` pages every window of a batch at once. For each shape of window (its filter, order,
cursors and direction) `Relation.sliced` reads, per window of that shape, the parent's counts
(the total, and where the cursors fall) and its slice of members in the window's order, at most
the shape's size of them: each window's own rows, found through the relation's indexes, never
every member of every parent numbered and cut. Each row carries its order's key in columns that
a `UNION ALL` of shapes can share.

PostgreSQL reads a window's slice with a LATERAL subquery. SQLite has no LATERAL: a correlated
subquery gathers the slice into a JSON array per window (its rows in the slice's order, which
SQLite's aggregate keeps), and `json_each` turns it back into rows, numbered by their place.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from operator import itemgetter
from typing import Any, NamedTuple

from sqlalchemy import (
    CTE,
    BigInteger,
    BindParameter,
    ColumnElement,
    DateTime,
    FromClause,
    Integer,
    Select,
    Text,
    cast,
    func,
    literal,
    null,
    select,
    true,
    type_coerce,
)
from sqlalchemy.types import TypeEngine

from gateway.loaders.entities import utc_text
from gateway.loaders.sql.sort_keys import Key, Plan, beyond
from gateway.loaders.sql.tables import UTCDateTime

# A relation's rows carry their order's key, in columns a UNION ALL of shapes can share: each
# term in the column of its kind, typed, as many columns as the shapes of a batch need.
_KEY_KINDS: dict[str, TypeEngine[Any]] = {
    "int": BigInteger(),
    "text": Text(),
    "time": UTCDateTime(),
}

# A key column: the term of the key it holds, and its kind.
KeyColumn = tuple[int, str]


def kind_of(key: Key) -> str:
    """Which key column a term's values go in."""
    if isinstance(key.value.type, Integer):
        return "int"
    return "time" if isinstance(key.value.type, DateTime | UTCDateTime) else "text"


def key_columns(plans: Sequence[Plan]) -> list[KeyColumn]:
    """The key columns the rows of these plans' shapes share: a column per term and kind that
    one of them has (a row's only, for a batch of one shape)."""
    kinds = list(_KEY_KINDS)
    used = {(term, kind_of(key)) for plan in plans for term, key in enumerate(plan.keys)}
    return sorted(used, key=lambda column: (column[0], kinds.index(column[1])))


def key_reader(
    positions: Sequence[int], kinds: Sequence[str], sqlite: bool
) -> Callable[[Sequence[Any]], tuple[Any, ...]]:
    """How to read an order's key from a row's columns at `positions`, of the terms' `kinds`
    (on SQLite a timestamp comes as text); read for every row of a page."""
    texts = [term for term, kind in enumerate(kinds) if sqlite and kind == "time"]
    if not texts:
        if len(positions) == 1:
            (position,) = positions
            return lambda row: (row[position],)
        return itemgetter(*positions)

    def read(row: Sequence[Any]) -> tuple[Any, ...]:
        key = [row[position] for position in positions]
        for term in texts:
            key[term] = utc_text(key[term])
        return tuple(key)

    return read


def _key_columns(
    plan: Plan, terms: Sequence[ColumnElement[Any]], columns: Sequence[KeyColumn]
) -> list[ColumnElement[Any]]:
    """The plan's key `terms` in the shared key `columns`, typed, the others null."""
    values: list[ColumnElement[Any]] = []
    for term, kind in columns:
        type_ = _KEY_KINDS[kind]
        value: ColumnElement[Any]
        if term < len(plan.keys) and kind_of(plan.keys[term]) == kind:
            value = type_coerce(terms[term], type_)  # no CAST: SQLite's would convert
        else:
            value = cast(null(), type_)  # typed, for PostgreSQL's UNION
        values.append(value.label(f"key_{term}_{kind}"))
    return values


class Relation(NamedTuple):
    """A relation's narrow rows: which parent each belongs to, and which member it pages.

    `own` is the relation's own table where `members` joins the members' to order or filter
    them: what counts read when nothing filters (each of its rows has its member, by a
    foreign key), without a lookup of each member.
    """

    members: FromClause
    parent: ColumnElement[int]
    member: ColumnElement[int]
    own: FromClause | None = None

    @property
    def counted(self) -> FromClause:
        """What a count of all the members reads."""
        return self.members if self.own is None else self.own

    def sliced(
        self,
        plan: Plan,
        shape: int,
        after: tuple[bool, ...] | None,
        before: tuple[bool, ...] | None,
        backward: bool,
        size: BindParameter[int],
        wanted: CTE,
        postgresql: bool,
        cursors: tuple[str, str],
        columns: Sequence[KeyColumn],
        bounded: bool,
    ) -> Select[Any]:
        """Each window of this shape (`wanted`): its `slot`, the parent's `total`, with
        `bounded` where the cursors fall (`lower`, `upper`), and its slice, a row per member
        (`member`, `position` in the slice's order, the key `columns`); a window with an
        empty slice is one row whose member is null. `after` and `before` say which terms of
        the cursors' keys are null (`sort_keys.beyond`); `cursors` name the parameters of
        their others.
        """
        past = None if after is None else beyond(plan.keys, after, True, cursors[0])
        short = None if before is None else beyond(plan.keys, before, False, cursors[1])
        between = [condition for condition in (past, short) if condition is not None]
        counted = plan.apply if between else plan.filtered

        def count(condition: ColumnElement[bool] | None) -> ColumnElement[int]:
            everyone = not between and not plan.where
            query = select(func.count()).select_from(self.counted if everyone else self.members)
            kept = counted(query).where(self.parent == wanted.c.parent)
            if condition is not None:
                kept = kept.where(condition)
            return kept.scalar_subquery()

        order = plan.order_by(reverse=backward)
        terms = [key.value.label(f"term_{index}") for index, key in enumerate(plan.keys)]

        def slice_of(parent: ColumnElement[int]) -> Select[Any]:
            """The parent's members in the window, in its order."""
            members = select(self.member.label("member"), *terms).select_from(self.members)
            return (
                plan.apply(members)
                .where(self.parent == parent, *between)
                .order_by(*order)
                .limit(size)
            )

        counted_columns = [count(None).label("total")]
        if past is not None:
            counted_columns.append(count(past).label("past"))
        if short is not None:
            counted_columns.append(count(short).label("short"))
        windows = select(wanted.c.slot, wanted.c.parent, *counted_columns)
        place: ColumnElement[int]
        member: ColumnElement[Any]
        keys: list[ColumnElement[Any]]
        if postgresql:
            counts = windows.cte(f"counts_{shape}").prefix_with("MATERIALIZED")
            rows: FromClause = (
                slice_of(counts.c.parent)
                .add_columns(func.row_number().over(order_by=order).label("place"))
                .lateral("slice")
            )
            place, member = rows.c.place, rows.c.member
            keys = [rows.c[term.name] for term in terms]
        else:
            inner = slice_of(wanted.c.parent).correlate(wanted).subquery("slice")
            # The aggregate reads the slice as its ORDER BY and LIMIT leave it: in order.
            gathered = select(func.json_group_array(func.json_array(*inner.c))).scalar_subquery()
            counts = windows.add_columns(gathered.label("members")).cte(f"counts_{shape}")
            counts = counts.prefix_with("MATERIALIZED")  # each window's subqueries run once
            rows = func.json_each(counts.c.members).table_valued("key", "value")
            place = rows.c.key + 1
            member = func.json_extract(rows.c.value, "$[0]")
            keys = [func.json_extract(rows.c.value, f"$[{1 + n}]") for n in range(len(terms))]
        total = counts.c.total
        bounds: list[ColumnElement[Any]] = []
        if bounded:
            lower = literal(0, BigInteger) if past is None else total - counts.c.past
            upper = total if short is None else counts.c.short
            bounds = [lower.label("lower"), upper.label("upper")]
        return select(
            counts.c.slot,
            total,
            *bounds,
            member.label("member"),
            (-place if backward else place).label("position"),
            *_key_columns(plan, keys, columns),
        ).select_from(counts.outerjoin(rows, true()))
