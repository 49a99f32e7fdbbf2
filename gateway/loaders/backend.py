"""The one interface both backends implement.

Every method answers a whole batch: the dataloaders call it once per tick with all the
keys a query level asked for, and the answer is aligned with the keys (None where a
record does not exist). A relation is asked for in windows (a parent and a `Slice`: cursors'
keys and a size, forward or backward), so that a database pages it in SQL; the answer holds
the slice's records with their keys, the total, and where the cursors fall in the list.

Filters and orders (`PackageFilter`, `Order` in records.py) come with a window or a list
page; without them a list keeps the upstream's order (id descending) and a relation its own.
The total is the size of the filtered list.

A backend may also answer some batches at once, from what it holds without I/O (`at_hand`):
the per-request loaders then need no future, no queue and no turn of the event loop for them.
A plan's run awaits `ready` once before its first level, so that waiting for what `at_hand`
needs costs one await, not a first level queued.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from gateway.loaders import records
from gateway.loaders.records import Order, PackageFilter, Page, Slice, Window


class Backend(Protocol):
    @property
    def stale(self) -> bool:
        """Whether any answer so far was a stale copy, served while the source failed."""
        ...

    def close(self) -> None:
        """The request is over (answered, timed out, or its client gone): stop its work."""
        ...

    async def categories(self, ids: Sequence[int]) -> list[records.Category | None]: ...

    async def categories_by_slug(self, slugs: Sequence[str]) -> list[records.Category | None]: ...

    async def grids(self, ids: Sequence[int]) -> list[records.Grid | None]: ...

    async def grids_by_slug(self, slugs: Sequence[str]) -> list[records.Grid | None]: ...

    async def packages(self, ids: Sequence[int]) -> list[records.Package | None]: ...

    async def packages_by_slug(self, slugs: Sequence[str]) -> list[records.Package | None]: ...

    async def packages_of_grids(self, windows: Sequence[Window]) -> list[Page[records.Package]]:
        """A window of each grid's packages, by package title, then id (unless ordered)."""
        ...

    async def grids_of_packages(self, windows: Sequence[Window]) -> list[Page[records.Grid]]:
        """A window of each package's grids, in membership-row order (unless ordered)."""
        ...

    async def packages_of_categories(
        self, windows: Sequence[Window]
    ) -> list[Page[records.Package]]:
        """A window of each category's packages, newest id first (unless ordered)."""
        ...

    async def list_categories(
        self, slice: Slice, order: Order | None = None
    ) -> Page[records.Category]: ...

    async def list_grids(self, slice: Slice, order: Order | None = None) -> Page[records.Grid]: ...

    async def list_packages(
        self, slice: Slice, filter: PackageFilter | None = None, order: Order | None = None
    ) -> Page[records.Package]: ...

    async def search(self, query: str) -> list[records.SearchHit]: ...

    def at_hand(self) -> AtHand | None:
        """What the backend can answer now without I/O; None when it can answer nothing so."""
        ...

    async def ready(self) -> None:
        """Wait for what `at_hand` needs before a request's first batch (the database's change
        stamp, on PostgreSQL a round trip), so that its levels are answered at hand from the
        first; nothing where that needs no waiting."""
        ...


class AtHand(Protocol):
    """The batches a backend answers now, without I/O: each as the `Backend`'s method of the
    same name would, or None where any of its keys would need I/O (then nothing is answered,
    and the batch goes to the `Backend` whole)."""

    def categories(self, ids: Sequence[int]) -> list[records.Category | None] | None: ...

    def categories_by_slug(self, slugs: Sequence[str]) -> list[records.Category | None] | None: ...

    def grids(self, ids: Sequence[int]) -> list[records.Grid | None] | None: ...

    def grids_by_slug(self, slugs: Sequence[str]) -> list[records.Grid | None] | None: ...

    def packages(self, ids: Sequence[int]) -> list[records.Package | None] | None: ...

    def packages_by_slug(self, slugs: Sequence[str]) -> list[records.Package | None] | None: ...

    def packages_of_grids(
        self, windows: Sequence[Window]
    ) -> list[Page[records.Package]] | None: ...

    def grids_of_packages(self, windows: Sequence[Window]) -> list[Page[records.Grid]] | None: ...

    def packages_of_categories(
        self, windows: Sequence[Window]
    ) -> list[Page[records.Package]] | None: ...

    def list_categories(
        self, slice: Slice, order: Order | None = None
    ) -> Page[records.Category] | None: ...

    def list_grids(self, slice: Slice, order: Order | None = None) -> Page[records.Grid] | None: ...

    def list_packages(
        self, slice: Slice, filter: PackageFilter | None = None, order: Order | None = None
    ) -> Page[records.Package] | None: ...
