"""Relay connections over offset windows.

A cursor is an opaque position in a list; `first`/`after` become one offset and limit,
which a backend answers with one window of the list, never by walking pages. A list asked
for with a filter or an order has a shape (a fingerprint of both): its cursors carry it, and
a cursor of another shape is refused rather than read as a position in a different list.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Generic, TypeVar

import strawberry
from strawberry.relay.utils import from_base64, to_base64

from gateway.errors import BadUserInput
from gateway.limits import MAX_FIRST

DEFAULT_FIRST = 20
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


def window(first: int | None, after: str | None, shape: str = "") -> tuple[int, int]:
    """Validate `first`/`after` and turn them into (offset, limit); `after` may be unset."""
    limit = DEFAULT_FIRST if first is None else first
    if limit < 0:
        raise BadUserInput("`first` may not be negative")
    if limit > MAX_FIRST:
        raise BadUserInput(f"`first` may not exceed {MAX_FIRST}, got {limit}")
    offset = 0 if after is None or after is strawberry.UNSET else offset_of(after, shape) + 1
    return offset, limit


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


def connection(
    nodes: Sequence[T], offset: int, limit: int, total: int, shape: str = ""
) -> Connection[T]:
    """The connection for `nodes`, the window of `limit` items at `offset` in `total`."""
    edges = [Edge(cursor=cursor_of(offset + i, shape), node=node) for i, node in enumerate(nodes)]
    return Connection(
        edges=edges,
        nodes=list(nodes),
        page_info=PageInfo(
            has_next_page=offset + limit < total,
            has_previous_page=offset > 0,
            start_cursor=edges[0].cursor if edges else None,
            end_cursor=edges[-1].cursor if edges else None,
        ),
        total_count=total,
    )
