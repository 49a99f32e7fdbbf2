"""The records every backend returns and the schema reads.

One record type per resource, shared by the REST and the database backend, so that
`gateway/schema/` never sees where data came from. Relations are ids, never URLs.
Datetimes are always timezone-aware: a naive upstream value is read as the site's own
time zone, which is what the Django Packages service renders.
"""

from __future__ import annotations

from datetime import datetime
from typing import Generic, NamedTuple, TypeVar, overload
from zoneinfo import ZoneInfo

import msgspec

SITE_TIMEZONE = ZoneInfo("America/New_York")


@overload
def in_site_time(value: datetime) -> datetime: ...
@overload
def in_site_time(value: None) -> None: ...
def in_site_time(value: datetime | None) -> datetime | None:
    """An aware datetime (or None) shown in the site's zone, as the REST layer renders it."""
    return None if value is None else value.astimezone(SITE_TIMEZONE)


def site_time(value: datetime) -> datetime:
    """Give a naive datetime the site's time zone; keep an aware one as it is."""
    return value if value.tzinfo is not None else value.replace(tzinfo=SITE_TIMEZONE)


class Category(msgspec.Struct, frozen=True, gc=False):
    id: int
    title: str
    slug: str
    description: str
    title_plural: str
    show_pypi: bool
    created: datetime
    modified: datetime


class Grid(msgspec.Struct, frozen=True, gc=False):
    id: int
    title: str
    slug: str
    description: str
    is_locked: bool
    header: bool
    created: datetime
    modified: datetime


class Package(msgspec.Struct, frozen=True, gc=False):
    id: int
    title: str
    slug: str
    category_id: int
    last_updated: datetime | None
    last_fetched: datetime | None
    repo_url: str
    pypi_version: str | None
    created: datetime
    modified: datetime
    repo_forks: int
    repo_description: str
    pypi_url: str
    documentation_url: str | None
    repo_watchers: int
    commits_over_52: tuple[int, ...]
    participants: tuple[str, ...]


class SearchHit(msgspec.Struct, frozen=True, gc=False):
    item_type: str  # "package" or "grid", as the upstream spells it
    title: str
    slug: str
    description: str
    category: str
    weight: int
    repo_watchers: int
    repo_forks: int
    pypi_downloads: int
    usage: int
    participants: tuple[str, ...]
    last_committed: datetime | None
    last_released: datetime | None
    absolute_url: str
    created: datetime
    modified: datetime


R = TypeVar("R")


class Window(NamedTuple):
    """A window of one parent's related records: `limit` of them from `offset` on."""

    parent: int
    offset: int
    limit: int


class Page(msgspec.Struct, Generic[R], frozen=True, gc=False):
    """One window of a list: the records in it and the size of the whole list."""

    items: list[R]
    total: int


def split_participants(text: str) -> tuple[str, ...]:
    """Participants are stored as one comma-separated string; empty parts are dropped."""
    return tuple(part for part in (p.strip() for p in text.split(",")) if part)
