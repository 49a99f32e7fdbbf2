"""The rows of the Django Packages tables, as the gateway writes them into a database it owns.

`write_dataset` makes a database's rows exactly a `Dataset`'s; the mirror builds one from an
APIv4, the demo catalogue generates one. Each field is the table column of the same name;
categories and grids are their records, whose fields are their columns.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from gateway.loaders.records import Category, Grid

__all__ = [
    "Dataset",
    "GridPackageRow",
    "PackageRow",
    "SearchRow",
    "VersionRow",
    "grid_search_row",
    "package_search_row",
]


@dataclass(frozen=True, slots=True)
class PackageRow:
    """A `package_package` row; `participants` is the raw comma-separated TEXT column."""

    id: int
    title: str
    slug: str
    category_id: int
    repo_description: str
    repo_url: str
    repo_watchers: int
    repo_forks: int
    pypi_url: str
    pypi_downloads: int
    participants: str
    last_fetched: datetime | None
    documentation_url: str | None
    commits_over_52w: tuple[int, ...]
    last_commit_date: datetime | None
    latest_version_id: int | None
    created: datetime
    modified: datetime


@dataclass(frozen=True, slots=True)
class VersionRow:
    """A `package_version` row."""

    id: int
    package_id: int
    number: str
    upload_time: datetime


@dataclass(frozen=True, slots=True)
class GridPackageRow:
    """A `grid_gridpackage` row: ids follow insertion order, which is what Package.grids shows."""

    id: int
    grid_id: int
    package_id: int
    created: datetime
    modified: datetime


@dataclass(frozen=True, slots=True)
class SearchRow:
    """A `searchv3_searchv3` row; title and description hold the raw text (shortcodes kept)."""

    id: int
    item_type: str
    title: str
    slug: str
    description: str
    category: str
    weight: int
    repo_watchers: int
    repo_forks: int
    pypi_downloads: int
    score: int
    usage: int
    participants: str
    last_committed: datetime | None
    last_released: datetime | None
    created: datetime
    modified: datetime


@dataclass(frozen=True, slots=True)
class Dataset:
    """The tables' rows, each tuple sorted by id."""

    categories: tuple[Category, ...]
    packages: tuple[PackageRow, ...]
    versions: tuple[VersionRow, ...]
    grids: tuple[Grid, ...]
    grid_packages: tuple[GridPackageRow, ...]
    search_rows: tuple[SearchRow, ...]


def package_search_row(
    id: int,
    package: PackageRow,
    category: str,
    *,
    weight: int,
    usage: int,
    score: int,
    last_released: datetime | None,
    built: tuple[datetime, datetime],
) -> SearchRow:
    """A package's row as the site's index build writes it: the package's own values, its
    category's title, and what only the index knows; `built` is (created, modified)."""
    created, modified = built
    return SearchRow(
        id=id,
        item_type="package",
        title=package.title,
        slug=package.slug,
        description=package.repo_description,
        category=category,
        weight=weight,
        repo_watchers=package.repo_watchers,
        repo_forks=package.repo_forks,
        pypi_downloads=package.pypi_downloads,
        score=score,
        usage=usage,
        participants=package.participants,
        last_committed=package.last_commit_date,
        last_released=last_released,
        created=created,
        modified=modified,
    )


def grid_search_row(
    id: int, grid: Grid, *, weight: int, built: tuple[datetime, datetime]
) -> SearchRow:
    """A grid's row as the site's index build writes it: no category, counts or dates."""
    created, modified = built
    return SearchRow(
        id=id,
        item_type="grid",
        title=grid.title,
        slug=grid.slug,
        description=grid.description,
        category="",
        weight=weight,
        repo_watchers=0,
        repo_forks=0,
        pypi_downloads=0,
        score=0,
        usage=0,
        participants="",
        last_committed=None,
        last_released=None,
        created=created,
        modified=modified,
    )
