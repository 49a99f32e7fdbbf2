"""Relay connections over keyset cursors.

A cursor names an edge by where it stands in its list's order: the values of the order's key
for that edge (the ordered field, then the id; without an order, the list's own order's key)
and the list's shape (a fingerprint of its filter and order). A page is the records strictly
between `after` and `before`, the first `first` or the last `last` of them, so a record added
or removed between two page requests neither skips nor repeats another, in either direction.
A cursor of another shape is refused rather than read as a place in a different list.

`page_slice` turns the arguments into the `Slice` a backend answers (the engine and the
resolvers share it), and `connection` the backend's `Page` into the connection, with
`pageInfo` as the Relay cursor connections specification computes it.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Generic, NamedTuple, TypeVar

import strawberry
from strawberry.relay.utils import to_base64

from gateway.documents.cost import DEFAULT_FIRST, MAX_FIRST
from gateway.errors import BadUserInput
from gateway.loaders.records import Key, KeyValue, Order, Page, Slice

MAX_CURSOR = 2_000  # characters: a title key and a few numbers, base64-encoded
_CURSOR_PREFIX = "keyset"
_BIGINT_MAX = 2**63 - 1

T = TypeVar("T")

# What each value of a key may be: the layout a list's cursors must have.
KeyType = tuple[type, ...]
Layout = tuple[KeyType, ...]
_INT: KeyType = (int,)
_TEXT: KeyType = (str,)
_TIME: KeyType = (datetime,)
BY_ID: Layout = (_INT,)  # newest id first: categories, grids, packages, a category's packages
BY_TITLE: Layout = (_TEXT, _INT)  # a grid's packages: title, then id
BY_MEMBERSHIP: Layout = (_INT,)  # a package's grids: the membership's place
_FIELD_TYPES: dict[str, KeyType] = {
    "title": _TEXT,
    "repo_watchers": _INT,
    "repo_forks": _INT,
    "last_updated": (datetime, type(None)),
    "created": _TIME,
    "modified": _TIME,
    "id": _INT,
    "package_count": _INT,
}


def layout_of(order: Order | None, default: Layout) -> Layout:
    """The key a list's cursors carry: the order's field then the id, or the list's own."""
    return default if order is None else (_FIELD_TYPES[order.field], _INT)


def shape_of(*arguments: object) -> str:
    """The fingerprint of a list's filter and order; "" for the list as the upstream has it."""
    if all(argument is None for argument in arguments):
        return ""
    return hashlib.blake2b(repr(arguments).encode(), digest_size=6).hexdigest()


def _encoded(value: KeyValue) -> Any:
    return {"at": value.astimezone(UTC).isoformat()} if isinstance(value, datetime) else value


def _decoded(value: Any) -> Any:
    """A key value as it was encoded; an instant must name its offset."""
    if isinstance(value, dict) and set(value) == {"at"} and isinstance(value["at"], str):
        instant = datetime.fromisoformat(value["at"])
        if instant.tzinfo is None:
            raise ValueError("a naive instant")
        return instant.astimezone(UTC)
    return value


def cursor_of(key: Key, shape: str = "") -> str:
    return to_base64(
        _CURSOR_PREFIX, json.dumps([shape, *map(_encoded, key)], separators=(",", ":"))
    )


def _fits(value: Any, allowed: KeyType) -> bool:
    """Whether a decoded value is of a type the layout allows, and one a database can take."""
    if isinstance(value, bool) or not isinstance(value, allowed):
        return False
    if isinstance(value, int):
        return -_BIGINT_MAX <= value <= _BIGINT_MAX
    return not isinstance(value, str) or "\x00" not in value


def key_of(cursor: str | None, name: str, shape: str, layout: Layout) -> Key | None:
    """The key a cursor stands for; anything we did not issue for this list is bad input."""
    if cursor is None or cursor is strawberry.UNSET:
        return None
    invalid = BadUserInput(f"`{name}` is not a valid cursor: {shown(cursor)}")
    if len(cursor) > MAX_CURSOR:
        raise invalid
    try:
        prefix, value = from_base64(cursor)
        decoded = json.loads(value) if prefix == _CURSOR_PREFIX else None
        if not isinstance(decoded, list) or not decoded or not isinstance(decoded[0], str):
            raise invalid
        cursor_shape, *values = decoded
        key = tuple(map(_decoded, values))
    except ValueError:  # bad base64, JSON, instant, or an integer of thousands of digits
        raise invalid from None
    if cursor_shape != shape:
        raise BadUserInput(
            f"`{name}` is a cursor of a list with another filter or order: {shown(cursor)}"
        )
    if len(key) != len(layout) or not all(map(_fits, key, layout)):
        raise invalid
    return key


def from_base64(value: str) -> tuple[str, str]:
    """The two parts of a global id or cursor, as Strawberry's `to_base64` writes them; a
    `ValueError` for any other text. (Strawberry's own `from_base64` drops what is not base64,
    so that `UGFja2FnZToy!!` would be read as `UGFja2FnZToy`.)"""
    raw = base64.b64decode(value, validate=True)
    if base64.b64encode(raw).decode() != value:  # the same bytes, written otherwise
        raise ValueError("not base64 as the gateway writes it")
    name, colon, rest = raw.decode().partition(":")
    if not colon:
        raise ValueError("no `:` between the two parts")
    return name, rest


def is_number(text: str) -> bool:
    """ASCII digits that fit a bigint: `str.isdigit` alone also takes "²" and 5,000 digits."""
    return text.isascii() and text.isdigit() and len(text) <= 18


def shown(value: str) -> str:
    """A client's value quoted back in an error, cut short: errors are not an echo service."""
    return repr(value) if len(value) <= 80 else repr(value[:80]) + "…"


def _given(value: T | None) -> T | None:
    return None if value is strawberry.UNSET else value


def page_slice(
    first: int | None,
    last: int | None,
    after: str | None,
    before: str | None,
    shape: str,
    layout: Layout,
) -> Slice:
    """Validate the paging arguments of a list whose cursors have `shape` and `layout`.

    `first` (20 when neither is given) pages forward, `last` backward; not both.
    """
    first, last = _given(first), _given(last)
    if first is not None and last is not None:
        raise BadUserInput("Pass at most one of `first` and `last`")
    name, size = ("last", last) if last is not None else ("first", first)
    if size is None:
        size = DEFAULT_FIRST
    if size < 0:
        raise BadUserInput(f"`{name}` may not be negative")
    if size > MAX_FIRST:
        raise BadUserInput(f"`{name}` may not exceed {MAX_FIRST}, got {size}")
    return Slice(
        size,
        key_of(after, "after", shape, layout),
        key_of(before, "before", shape, layout),
        backward=last is not None,
    )


class Paged(NamedTuple):
    """A connection's validated arguments: the slice its backend answers, and its cursors' shape."""

    slice: Slice
    shape: str


def paged(
    first: int | None,
    last: int | None,
    after: str | None,
    before: str | None,
    own_order: Layout,
    order: Order | None,
    *shape_arguments: object,
) -> Paged:
    """The slice and shape of a list whose own order's key is `own_order`, ordered by `order`
    (newest id first without one) and filtered and ordered as `shape_arguments` (its cursors'
    shape). The resolvers and the engine (gateway/engine/) both page through this."""
    shape = shape_of(*shape_arguments)
    return Paged(page_slice(first, last, after, before, shape, layout_of(order, own_order)), shape)


@strawberry.type(description="Information to aid in pagination.")
class PageInfo:
    has_next_page: bool
    has_previous_page: bool
    start_cursor: str | None
    end_cursor: str | None


@strawberry.type(description="An edge in a connection: a node and its cursor.")
class Edge(Generic[T]):
    cursor: str
    node: T


@strawberry.type(description="A window of a list, with the size of the whole list.")
class Connection(Generic[T]):
    edges: list[Edge[T]]
    nodes: list[T]
    page_info: PageInfo
    total_count: int


def travel(page: Page[Any], slice: Slice) -> tuple[bool, bool]:
    """Whether a backend's answer to `slice` has a next page, and a previous one.

    As the specification has it, the direction of travel is exact (whether more records lie
    between the cursors than the page holds) and the other direction says whether any record
    lies beyond the cursor the page started from (false without one).
    """
    more = page.upper - page.lower > slice.limit
    if slice.backward:
        return slice.before is not None and page.upper < page.total, more
    return more, slice.after is not None and page.lower > 0


def connection(page: Page[T], slice: Slice, shape: str = "") -> Connection[T]:
    """The connection for a backend's answer to `slice`."""
    items: Sequence[T] = page.items
    edges = [
        Edge(cursor=cursor_of(key, shape), node=item)
        for item, key in zip(items, page.keys, strict=True)
    ]
    has_next, has_previous = travel(page, slice)
    return Connection(
        edges=edges,
        nodes=list(items),
        page_info=PageInfo(
            has_next_page=has_next,
            has_previous_page=has_previous,
            start_cursor=edges[0].cursor if edges else None,
            end_cursor=edges[-1].cursor if edges else None,
        ),
        total_count=page.total,
    )
