"""The APIv4's JSON: its structs, how a body is decoded, its records, and the snapshot."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Literal, TypeVar
from urllib.parse import urlsplit

import msgspec

from gateway.errors import UpstreamError
from gateway.loaders.records import (
    Category,
    Grid,
    Package,
    SearchHit,
    site_time,
    split_participants,
)
from gateway.loaders.rest.snapshot import Catalogue

logger = logging.getLogger("gateway")

T = TypeVar("T")
K = TypeVar("K")
R = TypeVar("R", bound=msgspec.Struct)


class CategoryJSON(msgspec.Struct):
    id: int
    title: str
    slug: str
    description: str
    title_plural: str
    show_pypi: bool
    created: datetime
    modified: datetime


class GridJSON(msgspec.Struct):
    id: int
    title: str
    slug: str
    description: str
    is_locked: bool
    packages: list[str]
    header: bool
    created: datetime
    modified: datetime


class PackageJSON(msgspec.Struct):
    category: str
    grids: list[str]
    id: int
    title: str
    slug: str
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
    commits_over_52: list[int]
    participants: list[str]


class SearchJSON(msgspec.Struct):
    description: str
    title: str
    created: datetime
    modified: datetime
    weight: int
    item_type: Literal["package", "grid"]
    slug: str
    category: str
    absolute_url: str
    repo_watchers: int
    repo_forks: int
    pypi_downloads: int
    usage: int
    participants: str
    last_committed: datetime | None
    last_released: datetime | None


class ListJSON(msgspec.Struct):
    count: int
    results: list[msgspec.Raw]


@functools.lru_cache(maxsize=2**13)
def id_from_url(url: str) -> int:
    """The id at the end of a relation URL's path, whatever its host or query string.

    Remembered for the few thousand links a catalogue has: each grid's link recurs in every
    package it lists, and a snapshot's refresh parses them all again.
    """
    last = urlsplit(url).path.rstrip("/").rpartition("/")[2]
    if not (last.isascii() and last.isdigit()):
        raise UpstreamError("The upstream API returned a malformed relation link", f"link {url!r}")
    return int(last)


def to_category(raw: CategoryJSON) -> Category:
    return _record(Category, raw)


def to_grid(raw: GridJSON) -> Grid:
    return _record(Grid, raw)


def to_package(raw: PackageJSON) -> Package:
    # Written out, unlike the others: a snapshot converts every package (5,400 at the real
    # site's scale) at each refresh, and `_record`'s copy by field name takes twice as long.
    return Package(
        id=raw.id,
        title=raw.title,
        slug=raw.slug,
        category_id=id_from_url(raw.category),
        last_updated=_maybe_time(raw.last_updated),
        last_fetched=_maybe_time(raw.last_fetched),
        repo_url=raw.repo_url,
        pypi_version=raw.pypi_version,
        created=site_time(raw.created),
        modified=site_time(raw.modified),
        repo_forks=raw.repo_forks,
        repo_description=raw.repo_description,
        pypi_url=raw.pypi_url,
        documentation_url=raw.documentation_url,
        repo_watchers=raw.repo_watchers,
        commits_over_52=tuple(raw.commits_over_52),
        participants=tuple(raw.participants),
    )


def to_search_hit(raw: SearchJSON) -> SearchHit:
    return _record(SearchHit, raw, participants=split_participants(raw.participants))


def _record(kind: type[R], raw: msgspec.Struct, **given: object) -> R:
    """The record of `raw`'s fields of the same names, but those `given`, its datetimes in
    the site's zone (the APIv4's documentation shows them naive)."""
    values = {name: getattr(raw, name) for name in kind.__struct_fields__ if name not in given}
    for name, value in values.items():
        if isinstance(value, datetime):
            values[name] = site_time(value)
    return kind(**values, **given)


def _maybe_time(value: datetime | None) -> datetime | None:
    return None if value is None else site_time(value)


def decode(body: bytes | msgspec.Raw, kind: type[T], path: str) -> T:
    """Decode and validate an upstream body; a body of the wrong shape is an upstream error."""
    try:
        return msgspec.json.decode(body, type=kind)
    except msgspec.ValidationError as exc:
        raise UpstreamError(
            "The upstream API returned data of an unexpected shape", f"{path}: {exc}"
        ) from exc
    except msgspec.DecodeError as exc:
        raise UpstreamError(
            "The upstream API returned a body that is not valid JSON", f"{path}: {exc}"
        ) from exc


def snapshot_of(
    categories: Sequence[CategoryJSON], grids: Sequence[GridJSON], packages: Sequence[PackageJSON]
) -> Catalogue:
    """The catalogue snapshot of the three whole lists."""
    return Catalogue(
        _readable(to_category, categories),
        _readable(to_grid, grids),
        _readable(to_package, packages),
        packages_of_grid={raw.id: _link_ids(raw.packages) for raw in grids},
        grids_of_package={raw.id: _link_ids(raw.grids) for raw in packages},
    )


def _readable(convert: Callable[[K], T], raws: Iterable[K], what: str = "a record") -> list[T]:
    """What `convert` makes of each of `raws`, leaving out (and logging) any with a malformed
    link: one odd package must not cost every filter, order and category its snapshot."""
    converted = []
    for raw in raws:
        try:
            converted.append(convert(raw))
        except UpstreamError as exc:
            logger.warning("catalogue snapshot: left out %s: %s (%s)", what, exc, exc.detail)
    return converted


def _link_ids(urls: Iterable[str]) -> list[int]:
    """The ids of a relation's links, leaving out any malformed one (logged)."""
    return _readable(id_from_url, urls, "a link")
