"""What one request has read: each record by id and by slug, and each relation's ids."""

from __future__ import annotations

from typing import TypeVar

from gateway.loaders.records import Category, Grid, Package
from gateway.loaders.rest.wire import (
    CategoryJSON,
    GridJSON,
    PackageJSON,
    made_once,
    to_category,
    to_grid,
    to_package,
)

R = TypeVar("R", Grid, Package)


class Memo:
    """The records one request has read, so that it shows each one way and reads it once.

    None stands for a record the upstream does not have. A grid's package ids and a
    package's grid ids are kept in the relation's own order, as their links came. `read`
    tells whether any record came from the upstream's JSON rather than the catalogue snapshot
    (whose records are kept as they are, the snapshot's own).
    """

    def __init__(self) -> None:
        self.read = False
        self.categories: dict[int, Category | None] = {}
        self.grids: dict[int, Grid | None] = {}
        self.packages: dict[int, Package | None] = {}
        self.grid_ids: dict[str, int | None] = {}  # by slug
        self.package_ids: dict[str, int | None] = {}  # by slug
        self.packages_of_grid: dict[int, tuple[int, ...]] = {}
        self.grids_of_package: dict[int, tuple[int, ...]] = {}

    def remember_category(self, raw: CategoryJSON) -> Category:
        self.read = True
        record = to_category(raw)
        self.categories[record.id] = record
        return record

    def remember_grid(self, raw: GridJSON) -> Grid:
        self.read = True
        record, members = made_once(raw, to_grid, raw.packages)
        _remember(record, members, self.grids, self.grid_ids, self.packages_of_grid)
        return record

    def remember_package(self, raw: PackageJSON) -> Package:
        self.read = True
        record, members = made_once(raw, to_package, raw.grids)
        _remember(record, members, self.packages, self.package_ids, self.grids_of_package)
        return record


def _remember(
    record: R,
    members: tuple[int, ...],
    by_id: dict[int, R | None],
    ids_by_slug: dict[str, int | None],
    related: dict[int, tuple[int, ...]],
) -> None:
    """Remember a grid or a package by id and by slug, and the ids of its relation."""
    by_id[record.id] = record
    ids_by_slug[record.slug] = record.id
    related[record.id] = members
