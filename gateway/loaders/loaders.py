"""Per-request dataloaders over a backend.

Built fresh for every request (aiodataloader binds to the running loop and caches for the
request's lifetime). Each loader turns one query level's keys into one backend batch, and
every record a batch returns primes the loaders that could be asked for it next: by id and
by slug, whichever way it was reached.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

from aiodataloader import DataLoader

from gateway.loaders.backend import Backend
from gateway.loaders.records import Category, Grid, Package, Page

Record = TypeVar("Record", Category, Grid, Package)


class Loaders:
    """The dataloaders of one request, all over one backend."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.category = DataLoader[int, Category | None](self._categories)
        self.category_by_slug = DataLoader[str, Category | None](self._categories_by_slug)
        self.grid = DataLoader[int, Grid | None](self._grids)
        self.grid_by_slug = DataLoader[str, Grid | None](self._grids_by_slug)
        self.package = DataLoader[int, Package | None](self._packages)
        self.package_by_slug = DataLoader[str, Package | None](self._packages_by_slug)
        self.package_ids_of_grid = DataLoader[int, Sequence[int]](backend.package_ids_of_grids)
        self.grid_ids_of_package = DataLoader[int, Sequence[int]](backend.grid_ids_of_packages)
        self.package_ids_of_category = DataLoader[int, Sequence[int]](
            backend.package_ids_of_categories
        )

    # Each batch function primes the other way of reaching the same records.

    async def _categories(self, ids: list[int]) -> list[Category | None]:
        return self._prime_categories(await self.backend.categories(ids))

    async def _categories_by_slug(self, slugs: list[str]) -> list[Category | None]:
        return self._prime_categories(await self.backend.categories_by_slug(slugs))

    async def _grids(self, ids: list[int]) -> list[Grid | None]:
        return self._prime_grids(await self.backend.grids(ids))

    async def _grids_by_slug(self, slugs: list[str]) -> list[Grid | None]:
        return self._prime_grids(await self.backend.grids_by_slug(slugs))

    async def _packages(self, ids: list[int]) -> list[Package | None]:
        return self._prime_packages(await self.backend.packages(ids))

    async def _packages_by_slug(self, slugs: list[str]) -> list[Package | None]:
        return self._prime_packages(await self.backend.packages_by_slug(slugs))

    def _prime_categories(self, records: list[Category | None]) -> list[Category | None]:
        for record in records:
            if record is not None:
                self.category.prime(record.id, record)
                self.category_by_slug.prime(record.slug, record)
        return records

    def _prime_grids(self, records: list[Grid | None]) -> list[Grid | None]:
        for record in records:
            if record is not None:
                self.grid.prime(record.id, record)
                self.grid_by_slug.prime(record.slug, record)
        return records

    def _prime_packages(self, records: list[Package | None]) -> list[Package | None]:
        for record in records:
            if record is not None:
                self.package.prime(record.id, record)
                self.package_by_slug.prime(record.slug, record)
        return records

    # Whole-list windows: a list page holds full records, which prime the id loaders.

    async def list_categories(self, offset: int, limit: int) -> Page[Category]:
        page = await self.backend.list_categories(offset, limit)
        self._prime_categories(list(page.items))
        return page

    async def list_grids(self, offset: int, limit: int) -> Page[Grid]:
        page = await self.backend.list_grids(offset, limit)
        self._prime_grids(list(page.items))
        return page

    async def list_packages(self, offset: int, limit: int) -> Page[Package]:
        page = await self.backend.list_packages(offset, limit)
        self._prime_packages(list(page.items))
        return page
