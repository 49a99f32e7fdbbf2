"""The one interface both backends implement.

Every method answers a whole batch: the dataloaders call it once per tick with all the
keys a query level asked for, and the answer is aligned with the keys (None where a
record does not exist). A relation is asked for in windows (parent, offset, limit), so
that a database pages it in SQL; the answer holds the window's records and the total.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from gateway.loaders.records import Category, Grid, Package, Page, SearchHit, Window


class Backend(Protocol):
    stale: bool
    """Whether any answer so far was a stale copy, served while the source failed."""

    async def categories(self, ids: Sequence[int]) -> list[Category | None]: ...

    async def categories_by_slug(self, slugs: Sequence[str]) -> list[Category | None]: ...

    async def grids(self, ids: Sequence[int]) -> list[Grid | None]: ...

    async def grids_by_slug(self, slugs: Sequence[str]) -> list[Grid | None]: ...

    async def packages(self, ids: Sequence[int]) -> list[Package | None]: ...

    async def packages_by_slug(self, slugs: Sequence[str]) -> list[Package | None]: ...

    async def packages_of_grids(self, windows: Sequence[Window]) -> list[Page[Package]]:
        """A window of each grid's packages, ordered by package title, then id."""
        ...

    async def grids_of_packages(self, windows: Sequence[Window]) -> list[Page[Grid]]:
        """A window of each package's grids, in the order of the membership rows."""
        ...

    async def packages_of_categories(self, windows: Sequence[Window]) -> list[Page[Package]]:
        """A window of each category's packages, newest id first."""
        ...

    async def list_categories(self, offset: int, limit: int) -> Page[Category]: ...

    async def list_grids(self, offset: int, limit: int) -> Page[Grid]: ...

    async def list_packages(self, offset: int, limit: int) -> Page[Package]: ...

    async def search(self, query: str) -> list[SearchHit]: ...
