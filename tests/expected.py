"""What the API must answer, computed straight from a dataset's table rows.

The fake upstream renders the same rows as REST; computing the GraphQL answer here,
independently of both, is what makes the contract tests able to fail.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from gateway.loaders.sql.rows import Dataset, PackageRow


def when(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


def package_fields(dataset: Dataset, row: PackageRow) -> dict[str, Any]:
    """The package's scalar fields as GraphQL serves them (datetimes as instants)."""
    versions = {version.id: version.number for version in dataset.versions}
    return {
        "databaseId": row.id,
        "title": row.title,
        "slug": row.slug,
        "lastUpdated": row.last_commit_date,
        "lastFetched": row.last_fetched,
        "repoUrl": row.repo_url,
        "pypiVersion": versions.get(row.latest_version_id)
        if row.latest_version_id is not None
        else None,
        "created": row.created,
        "modified": row.modified,
        "repoForks": row.repo_forks,
        "repoDescription": row.repo_description,
        "pypiUrl": row.pypi_url,
        "documentationUrl": row.documentation_url,
        "repoWatchers": row.repo_watchers,
        "commitsOver52": list(row.commits_over_52w),
        "participants": [p.strip() for p in row.participants.split(",") if p.strip()],
    }


# The catalogue snapshot's requests: each whole list in one page.
LIST_REQUESTS = sorted(
    f"/api/v4/{resource}/?limit=100000&offset=0" for resource in ("categories", "grids", "packages")
)

PACKAGE_DATETIMES = ("lastUpdated", "lastFetched", "created", "modified")


def parse_datetimes(fields: dict[str, Any], names: tuple[str, ...]) -> dict[str, Any]:
    return {key: when(value) if key in names else value for key, value in fields.items()}


def grid_ids_of_package(dataset: Dataset, package_id: int) -> list[int]:
    """A package's grids in membership-row order."""
    rows = sorted(
        (row for row in dataset.grid_packages if row.package_id == package_id),
        key=lambda row: row.id,
    )
    return [row.grid_id for row in rows]


def package_ids_of_grid(dataset: Dataset, grid_id: int) -> list[int]:
    """A grid's packages by title in byte (C collation) order, then id."""
    packages = {row.id: row for row in dataset.packages}
    members = [packages[row.package_id] for row in dataset.grid_packages if row.grid_id == grid_id]
    members.sort(key=lambda row: (row.title.encode(), row.id))
    return [row.id for row in members]


def package_ids_of_category(dataset: Dataset, category_id: int) -> list[int]:
    return sorted(
        (row.id for row in dataset.packages if row.category_id == category_id), reverse=True
    )
