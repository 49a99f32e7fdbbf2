"""The records every backend returns and the schema reads, each the one description of its entity.

One record type per resource, shared by the REST and the database backend, so that
`gateway/schema/` never sees where data came from. Relations are ids, never URLs.
Datetimes are always timezone-aware: a naive upstream value is read as the site's own
time zone, which is what the Django Packages service renders.

A field whose APIv4 key or table column differs from its name, or whose value is shaped
otherwise there, says so with a `Field` in its annotation; `entities.py` reads these, and the
APIv4's decoding, the row mapping, the mirror and the tests' fake APIv4 all follow from them.
Adding a field to an entity is one line here, its column in `sql/tables.py` and its GraphQL
field in `gateway/schema/types.py`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from enum import Enum
from typing import Annotated, Generic, Literal, NamedTuple, TypeVar, overload
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


class Form(Enum):
    """How a value is shaped in the APIv4's JSON or in a table column, where not as here."""

    COMMAS = "commas"  # a tuple of names here, one comma-separated text there
    JSON = "json"  # a tuple here, a JSON list in the column (text on some databases)


class Field(NamedTuple):
    """Where a record's field lives in the APIv4 and in the tables, when not under its name.

    `column` None with `stored` False: no column of the entity's own table holds the value
    (a package's `pypi_version` is its latest version's number; a hit's `absolute_url` is
    made from its type and slug). A `link` names the resource whose id the field holds: the
    APIv4 shows the URL of that record instead.
    """

    rest: str | None = None
    column: str | None = None
    stored: bool = True
    rest_form: Form | None = None
    column_form: Form | None = None
    link: str = ""


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
    category_id: Annotated[int, Field(rest="category", link="categories")]
    last_updated: Annotated[datetime | None, Field(column="last_commit_date")]
    last_fetched: datetime | None
    repo_url: str
    pypi_version: Annotated[str | None, Field(stored=False)]
    created: datetime
    modified: datetime
    repo_forks: int
    repo_description: str
    pypi_url: str
    documentation_url: str | None
    repo_watchers: int
    commits_over_52: Annotated[
        tuple[int, ...], Field(column="commits_over_52w", column_form=Form.JSON)
    ]
    participants: Annotated[tuple[str, ...], Field(column_form=Form.COMMAS)]


class SearchHit(msgspec.Struct, frozen=True, gc=False):
    item_type: Literal["package", "grid"]  # as the upstream spells it
    title: str
    slug: str
    description: str
    category: str
    weight: int
    repo_watchers: int
    repo_forks: int
    pypi_downloads: int
    usage: int
    participants: Annotated[tuple[str, ...], Field(rest_form=Form.COMMAS, column_form=Form.COMMAS)]
    last_committed: datetime | None
    last_released: datetime | None
    absolute_url: Annotated[str, Field(stored=False)]
    created: datetime
    modified: datetime


R = TypeVar("R")


class PackageFilter(NamedTuple):
    """Which packages a list keeps: every condition that is set must hold.

    Both backends agree to the row: `category` is a category slug; `grids` are grid slugs
    the package must all be in; `words` (lower-cased with `str.lower`) must each appear in
    `text_key(title, slug, description)`; `has_pypi_release` compares `pypi_version` with
    None; `updated_after`/`updated_before` are strict bounds on `last_updated`, which a
    package without one never meets; `min_watchers` is inclusive.
    """

    category: str | None = None
    grids: tuple[str, ...] = ()
    words: tuple[str, ...] = ()
    has_pypi_release: bool | None = None
    updated_after: datetime | None = None
    updated_before: datetime | None = None
    min_watchers: int | None = None


class Order(NamedTuple):
    """An order of a list: `field` one of the record's order fields, then id the same way.

    Package fields: title, repo_watchers, repo_forks, last_updated, created, modified, id;
    grid and category fields: title, package_count, id. `title` orders by `title_key`
    (code-point order of the lower-cased title); a null (`last_updated`) sorts last in both
    directions, among the nulls by id in the order's direction.
    """

    field: str
    descending: bool = False


# One value of an order's key: a title key, a number, an instant, or None (no last commit).
KeyValue = int | str | datetime | None
# Where a record stands in a list's order: its order field's value, then its id (or the
# key of the list's own order); a cursor carries it.
Key = tuple[KeyValue, ...]


class Slice(NamedTuple):
    """Which part of a list a page holds: the records strictly after `after` and strictly
    before `before` (keys in the list's order; None: from the start, to the end), the first
    `limit` of them, or the last `limit` of them when `backward`."""

    limit: int
    after: Key | None = None
    before: Key | None = None
    backward: bool = False


class Window(NamedTuple):
    """A slice of one parent's related records.

    With a `filter` (packages only) the relation keeps the packages that pass it; with an
    `order` it is sorted by that order instead of the relation's own.
    """

    parent: int
    slice: Slice
    filter: PackageFilter | None = None
    order: Order | None = None


def title_key(title: str) -> str:
    """What `title` orders by: the lower-cased title, compared by code point."""
    return title.lower()


def text_key(title: str, slug: str, description: str) -> str:
    """The text a filter's words are looked for in: no word holds the separating newline."""
    return "\n".join((title.lower(), slug.lower(), description.lower()))


def words_of(query: str) -> tuple[str, ...]:
    """A filter's `query` as the lower-cased words that must all appear, each once."""
    return tuple(dict.fromkeys(query.lower().split()))


class Page(msgspec.Struct, Generic[R], frozen=True, gc=False):
    """One slice of a list: its records with their keys, the size of the whole list, and
    where the slice's cursors fall in it: `lower` records come at or before `after`, and
    `upper` strictly before `before` (the records between them are positions `lower` to
    `upper`, counted from 0), from which the connection tells whether more pages exist.

    A page the REST snapshot keeps holds tuples: of untracked records and keys, they leave
    the collector's sight at its passes, as lists never do."""

    items: Sequence[R]
    total: int
    keys: Sequence[Key] = ()
    lower: int = 0
    upper: int = 0


def split_participants(text: str) -> tuple[str, ...]:
    """Participants are stored as one comma-separated string; empty parts are dropped."""
    return tuple(part for part in (p.strip() for p in text.split(",")) if part)
