"""Filter and order arguments, and their translation into the backends' terms.

A filter or order that asks for nothing (absent, null, or a filter with every field absent
or null) becomes None, so that the list keeps the upstream's order and its cursors their shape.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import Enum
from typing import Any, Generic, TypeVar

import strawberry

from gateway.errors import BadUserInput
from gateway.loaders import records

MAX_SLUG = 100
MAX_TEXT = 1_000
MAX_GRIDS = 20

T = TypeVar("T")
F = TypeVar("F", bound=Enum)


def given(value: T | None) -> T | None:
    """An argument or input field as a value or None: absent (UNSET) and null are alike."""
    return None if value is strawberry.UNSET else value


def checked_text(name: str, value: str, max_length: int) -> str:
    """A client's string that a backend can receive: not too long, and no NUL (which
    PostgreSQL cannot even store)."""
    if len(value) > max_length:
        raise BadUserInput(f"`{name}` may not be longer than {max_length} characters")
    if "\x00" in value:
        raise BadUserInput(f"`{name}` may not contain a NUL character")
    return value


@strawberry.enum(description="Ascending or descending.")
class OrderDirection(Enum):
    ASC = "asc"
    DESC = "desc"


# Every list orders by title the same way.
_TITLE = strawberry.enum_value("title", description="The lower-cased title, by code point.")


@strawberry.enum(description="What packages can be ordered by; ties go by id the same way.")
class PackageOrderField(Enum):
    TITLE = _TITLE
    REPO_WATCHERS = "repo_watchers"
    REPO_FORKS = "repo_forks"
    LAST_UPDATED = strawberry.enum_value(
        "last_updated", description="Date of the last commit; packages without one come last."
    )
    CREATED = "created"
    MODIFIED = "modified"
    ID = "id"


@strawberry.enum(description="What grids can be ordered by; ties go by id the same way.")
class GridOrderField(Enum):
    TITLE = _TITLE
    PACKAGE_COUNT = "package_count"
    ID = "id"


@strawberry.enum(description="What categories can be ordered by; ties go by id the same way.")
class CategoryOrderField(Enum):
    TITLE = _TITLE
    PACKAGE_COUNT = "package_count"
    ID = "id"


@strawberry.input(description="Keep the packages that meet every condition given.")
class PackageFilter:
    category: str | None = strawberry.field(
        default=strawberry.UNSET, description="A category slug."
    )
    grids: list[str] | None = strawberry.field(
        default=strawberry.UNSET, description="Grid slugs: the package is in all of them."
    )
    query: str | None = strawberry.field(
        default=strawberry.UNSET,
        description="Words that must all appear, case-insensitively, in the title, slug or"
        " description.",
    )
    has_pypi_release: bool | None = strawberry.field(
        default=strawberry.UNSET, description="Whether `pypiVersion` is set."
    )
    updated_after: datetime | None = strawberry.field(
        default=strawberry.UNSET, description="Last commit strictly after this instant."
    )
    updated_before: datetime | None = strawberry.field(
        default=strawberry.UNSET, description="Last commit strictly before this instant."
    )
    min_watchers: int | None = strawberry.field(
        default=strawberry.UNSET, description="At least this many repository watchers."
    )


@strawberry.input
class Ordered(Generic[F]):
    """An order of a list by one of its order fields: each list's input below names its own."""

    field: F
    direction: OrderDirection = OrderDirection.ASC


@strawberry.input(description="An order of packages.")
class PackageOrder(Ordered[PackageOrderField]):
    pass


@strawberry.input(description="An order of grids.")
class GridOrder(Ordered[GridOrderField]):
    pass


@strawberry.input(description="An order of categories.")
class CategoryOrder(Ordered[CategoryOrderField]):
    pass


def _instant(name: str, value: datetime | None) -> datetime | None:
    """The same instant however it was written, so that equal filters have equal cursors."""
    if value is None:
        return None
    try:
        return value.astimezone(UTC)
    except OverflowError:  # 9999-12-31T23:00:00-05:00 is past the end of the calendar in UTC
        raise BadUserInput(f"`{name}` is outside the years 1 to 9999 in UTC") from None


def package_filter(value: PackageFilter | None) -> records.PackageFilter | None:
    """The backends' filter for `value`, checked; None when it asks for nothing."""
    if given(value) is None:
        return None
    assert value is not None
    category = given(value.category)
    grids = tuple(dict.fromkeys(given(value.grids) or ()))
    if len(grids) > MAX_GRIDS:
        raise BadUserInput(f"`grids` may hold at most {MAX_GRIDS} slugs")
    for slug in grids:
        checked_text("grids", slug, MAX_SLUG)
    if category is not None:
        checked_text("category", category, MAX_SLUG)
    words = records.words_of(checked_text("query", given(value.query) or "", MAX_TEXT))
    result = records.PackageFilter(
        category=category,
        grids=tuple(sorted(grids)),
        words=words,
        has_pypi_release=given(value.has_pypi_release),
        updated_after=_instant("updatedAfter", given(value.updated_after)),
        updated_before=_instant("updatedBefore", given(value.updated_before)),
        min_watchers=given(value.min_watchers),
    )
    return None if result == records.PackageFilter() else result


def order(value: Ordered[Any] | None) -> records.Order | None:
    if given(value) is None:
        return None
    assert value is not None
    return records.Order(value.field.value, value.direction is OrderDirection.DESC)
