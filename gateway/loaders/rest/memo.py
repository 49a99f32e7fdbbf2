"""What one request has read: each record by id and by slug, and each relation's ids."""

from __future__ import annotations

from gateway.loaders.records import Category, Grid, Package
from gateway.loaders.rest.wire import (
    CategoryJSON,
    GridJSON,
    PackageJSON,
    id_from_url,
    to_category,
    to_grid,
    to_package,
)


class Memo:
    """The records one request has read, so that it shows each one way and reads it once.

    None stands for a record the upstream does not have. A grid's package ids and a
    package's grid ids are kept in the relation's own order, as their links came.
    """

    def __init__(self) -> None:
        self.categories: dict[int, Category | None] = {}
        self.grids: dict[int, Grid | None] = {}
        self.packages: dict[int, Package | None] = {}
        self.grid_ids: dict[str, int | None] = {}  # by slug
        self.package_ids: dict[str, int | None] = {}  # by slug
        self.packages_of_grid: dict[int, tuple[int, ...]] = {}
        self.grids_of_package: dict[int, tuple[int, ...]] = {}

    def remember_category(self, raw: CategoryJSON) -> Category:
        record = to_category(raw)
        self.categories[record.id] = record
        return record

    def remember_grid(self, raw: GridJSON) -> Grid:
        record = to_grid(raw)
        self.grids[record.id] = record
        self.grid_ids[record.slug] = record.id
        self.packages_of_grid[record.id] = tuple(id_from_url(url) for url in raw.packages)
        return record

    def remember_package(self, raw: PackageJSON) -> Package:
        record = to_package(raw)
        self.packages[record.id] = record
        self.package_ids[record.slug] = record.id
        self.grids_of_package[record.id] = tuple(id_from_url(url) for url in raw.grids)
        return record
