"""Relay connections over offset windows.

A cursor is an opaque position in a list; `first`/`after` become one offset and limit,
which a backend answers with one window of the list, never by walking pages. A list asked
for with a filter or an order has a shape (a fingerprint of both): its cursors carry it, and
a cursor of another shape is refused rather than read as a position in a different list.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Generic, NamedTuple, TypeVar

import strawberry
from strawberry.relay.utils import from_base64, to_base64

from gateway.errors import BadUserInput

DEFAULT_FIRST = 20
MAX_FIRST = 100
_CURSOR_PREFIX = "arrayconnection"

T = TypeVar("T")


def shape_of(*arguments: object) -> str:
    """The fingerprint of a list's filter and order; "" for the list as the upstream has it."""
    if all(argument is None for argument in arguments):
        return ""
    return hashlib.blake2b(repr(arguments).encode(), digest_size=6).hexdigest()


def cursor_of(offset: int, shape: str = "") -> str:
    return to_base64(_CURSOR_PREFIX, f"{offset}:{shape}" if shape else offset)


def offset_of(cursor: str, shape: str = "") -> int:
    """The position a cursor stands for; anything we did not issue for this shape is bad input."""
    try:
        prefix, value = from_base64(cursor)
    except ValueError:
        raise BadUserInput(f"`after` is not a valid cursor: {shown(cursor)}") from None
    position, _, cursor_shape = value.partition(":")
    if prefix != _CURSOR_PREFIX or not is_number(position):
        raise BadUserInput(f"`after` is not a valid cursor: {shown(cursor)}")
    if cursor_shape != shape:
        raise BadUserInput(
            f"`after` is a cursor of a list with another filter or order: {shown(cursor)}"
        )
    return int(position)


def is_number(text: str) -> bool:
    """ASCII digits that fit a bigint: `str.isdigit` alone also takes "²" and 5,000 digits."""
    return text.isascii() and text.isdigit() and len(text) <= 18


def shown(value: str) -> str:
    """A client's value quoted back in an error, cut short: errors are not an echo service."""
    return repr(value) if len(value) <= 80 else repr(value[:80]) + "…"


class Paging(NamedTuple):
    """Where a connection's page lies in its list (`limit` items from `offset`), and the
    list's shape, which its cursors carry."""

    offset: int
    limit: int
    shape: str = ""

    def cursor(self, index: int) -> str:
        """The cursor of the page's item at `index`."""
        return cursor_of(self.offset + index, self.shape)

    def has_next_page(self, total: int) -> bool:
        return self.offset + self.limit < total

    @property
    def has_previous_page(self) -> bool:
        return self.offset > 0


def paging(first: int | None, after: str | None, *shape: object) -> Paging:
    """Validate `first`/`after` of a list with this filter and order (`shape`) and place its
    page; `after` may be unset."""
    limit = DEFAULT_FIRST if first is None else first
    if limit < 0:
        raise BadUserInput("`first` may not be negative")
    if limit > MAX_FIRST:
        raise BadUserInput(f"`first` may not exceed {MAX_FIRST}, got {limit}")
    cursor_shape = shape_of(*shape)
    if after is None or after is strawberry.UNSET:
        return Paging(0, limit, cursor_shape)
    return Paging(offset_of(after, cursor_shape) + 1, limit, cursor_shape)


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


def connection(nodes: Sequence[T], page: Paging, total: int) -> Connection[T]:
    """The connection for `nodes`, the page `page` places in a list of `total` items."""
    edges = [Edge(cursor=page.cursor(i), node=node) for i, node in enumerate(nodes)]
    return Connection(
        edges=edges,
        nodes=list(nodes),
        page_info=PageInfo(
            has_next_page=page.has_next_page(total),
            has_previous_page=page.has_previous_page,
            start_cursor=edges[0].cursor if edges else None,
            end_cursor=edges[-1].cursor if edges else None,
        ),
        total_count=total,
    )
