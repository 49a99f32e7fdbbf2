"""Copy a Django Packages APIv4 into a SQLite or PostgreSQL database: `gateway mirror`.

The whole catalogue is read and checked before anything is written, and then written in one
transaction: an upstream that fails, or a mirror that is interrupted, leaves the previous copy
complete and readable. The API shows less than the tables hold; what it does not show gets a
neutral value (no download counts, one version per package, search weights of 0).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple, Protocol, TextIO, TypeVar
from urllib.parse import urlsplit

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine
from tqdm import tqdm  # type: ignore[import-untyped]

from gateway.errors import ConfigError, MirrorError, UpstreamError
from gateway.loaders.entities import columns_of
from gateway.loaders.records import Category, Grid, Package
from gateway.loaders.rest.client import Upstream
from gateway.loaders.rest.wire import (
    CategoryJSON,
    GridJSON,
    ListJSON,
    PackageJSON,
    decode,
    id_from_url,
    to_category,
    to_grid,
    to_package,
)
from gateway.loaders.sql.engine import create_engine
from gateway.loaders.sql.rows import (
    Dataset,
    GridPackageRow,
    PackageRow,
    SearchRow,
    VersionRow,
    grid_search_row,
    package_search_row,
)
from gateway.loaders.sql.writer import WriteSummary, write_dataset

__all__ = [
    "Catalogue",
    "MirrorSummary",
    "Progress",
    "build_catalogue",
    "mirror",
    "mirror_to",
    "progress_to",
]

PAGE_SIZE = 1000
# A package's memberships get ids package_id * stride + position: the position keeps the
# order of its `grids` list, and the ids of one package's rows survive changes to the others.
MIN_STRIDE = 1000

Progress = Callable[[str, int, int], None]
"""Told (resource, items read, items in all) after each page."""


class _Identified(Protocol):
    id: int


Item = TypeVar("Item", bound=_Identified)
Stored = TypeVar("Stored", Category, Grid)


class Catalogue(NamedTuple):
    """The upstream's catalogue as table rows, and how far its two views of membership differ."""

    dataset: Dataset
    inconsistent: int  # memberships listed by the package or by the grid only: kept
    dropped: int  # links to a grid or package missing from the lists: left out


@dataclass(frozen=True, slots=True)
class MirrorSummary:
    changes: WriteSummary
    memberships: int
    inconsistent: int
    dropped: int
    elapsed: float

    def report(self) -> str:
        """A table of changes per database table, then the membership checks and the time."""
        lines = [f"{'table':<20} {'inserted':>9} {'updated':>9} {'deleted':>9}"]
        for name, change in self.changes.tables.items():
            lines.append(f"{name:<20} {change.inserted:>9} {change.updated:>9} {change.deleted:>9}")
        lines.append(
            f"memberships: {self.memberships} ({self.inconsistent} listed on one side only, "
            f"{self.dropped} links to missing rows dropped)"
        )
        lines.append(f"elapsed: {self.elapsed:.1f} s")
        return "\n".join(lines) + "\n"


async def mirror_to(
    source: str, target: str, *, concurrency: int = 4, progress: Progress | None = None
) -> MirrorSummary:
    """Mirror the APIv4 at `source` into the database URL `target`; failures are `MirrorError`s."""
    parts = urlsplit(source)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"the source must be an http:// or https:// APIv4 URL, got {source!r}")
    if concurrency < 1:
        raise ConfigError("the concurrency must be at least 1")
    engine = create_engine(target)
    try:
        if engine.dialect.name != "sqlite":  # fail before the download; SQLite would make a file
            async with engine.connect():
                pass
        return await mirror(source, engine, concurrency=concurrency, progress=progress)
    except UpstreamError as exc:
        raise MirrorError(
            _one_line(f"upstream: {exc.message} ({exc.detail}); nothing was written")
        ) from exc
    except (SQLAlchemyError, OSError) as exc:
        first = str(exc).strip().partition("\n")[0] or type(exc).__name__
        raise MirrorError(f"database: {first}; nothing was written") from exc
    finally:
        await engine.dispose()


async def mirror(
    source: str, engine: AsyncEngine, *, concurrency: int = 4, progress: Progress | None = None
) -> MirrorSummary:
    """Read the whole catalogue from `source`, then make the database's rows match it."""
    started = time.perf_counter()
    upstream = Upstream(source, timeout=60.0)
    try:
        categories = await _read(upstream, "categories", CategoryJSON, concurrency, progress)
        grids = await _read(upstream, "grids", GridJSON, concurrency, progress)
        packages = await _read(upstream, "packages", PackageJSON, concurrency, progress)
    finally:
        await upstream.aclose()
    catalogue = build_catalogue(categories, grids, packages, datetime.now(UTC))
    changes = await write_dataset(engine, catalogue.dataset)
    return MirrorSummary(
        changes=changes,
        memberships=len(catalogue.dataset.grid_packages),
        inconsistent=catalogue.inconsistent,
        dropped=catalogue.dropped,
        elapsed=time.perf_counter() - started,
    )


async def _read(
    upstream: Upstream,
    resource: str,
    kind: type[Item],
    concurrency: int,
    progress: Progress | None,
) -> list[Item]:
    """A whole list: the first page tells the count, the others are read `concurrency` at once."""
    path = f"{resource}/"
    first, count = await _page(upstream, path, kind, 0)
    items = {item.id: item for item in first}
    done = len(first)
    if progress:
        progress(resource, done, count)
    semaphore = asyncio.Semaphore(concurrency)

    async def fetch(offset: int) -> tuple[list[Item], int]:
        async with semaphore:
            return await _page(upstream, path, kind, offset)

    tasks = [asyncio.ensure_future(fetch(offset)) for offset in range(PAGE_SIZE, count, PAGE_SIZE)]
    try:
        for next_page in asyncio.as_completed(tasks):
            page, again = await next_page
            if again != count:
                raise _changed(path, f"count {count}, then {again}")
            items.update((item.id, item) for item in page)
            done += len(page)
            if progress:
                progress(resource, done, count)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    if len(items) != count:
        raise _changed(path, f"count {count}, but {len(items)} distinct items")
    return list(items.values())


async def _page(
    upstream: Upstream, path: str, kind: type[Item], offset: int
) -> tuple[list[Item], int]:
    body = await upstream.get(path, {"limit": PAGE_SIZE, "offset": offset})
    if body is None:
        raise UpstreamError("The upstream API has no such list", f"GET {path}: 404")
    page = decode(body, ListJSON, path)
    return [decode(raw, kind, path) for raw in page.results], page.count


def _changed(path: str, detail: str) -> UpstreamError:
    return UpstreamError(
        "The upstream's lists changed while they were read; run the mirror again",
        f"{path}: {detail}",
    )


def build_catalogue(
    categories: Sequence[CategoryJSON],
    grids: Sequence[GridJSON],
    packages: Sequence[PackageJSON],
    now: datetime,
) -> Catalogue:
    """The table rows the API implies; `now` stamps the search rows, as an index build does."""
    category_records = sorted((_in_utc(to_category(raw)) for raw in categories), key=_id)
    listed_grids = sorted(((_in_utc(to_grid(raw)), raw.packages) for raw in grids), key=_first_id)
    listed_packages = sorted(((to_package(raw), raw.grids) for raw in packages), key=_first_id)
    category_titles = {category.id: category.title for category in category_records}
    for item, _ in listed_packages:
        if item.category_id not in category_titles:
            raise UpstreamError(
                "The upstream API lists a package in a category it does not list",
                f"package {item.id}: category {item.category_id}",
            )
    memberships, inconsistent, dropped = _memberships(listed_grids, listed_packages)
    package_rows = tuple(_package(item) for item, _ in listed_packages)
    grid_rows = tuple(item for item, _ in listed_grids)
    dataset = Dataset(
        categories=tuple(category_records),
        packages=package_rows,
        versions=tuple(
            VersionRow(item.id, item.id, item.pypi_version, item.modified.astimezone(UTC))
            for item, _ in listed_packages
            if item.pypi_version is not None
        ),
        grids=grid_rows,
        grid_packages=memberships,
        search_rows=_search_rows(package_rows, grid_rows, category_titles, now),
    )
    return Catalogue(dataset, inconsistent, dropped)


def _id(item: Category | Grid | Package) -> int:
    return item.id


def _first_id(listed: tuple[Grid | Package, list[str]]) -> int:
    return listed[0].id


def _in_utc(item: Stored) -> Stored:
    """A category or grid as its table holds it (its fields are its columns), in UTC."""
    return type(item)(**columns_of(item))


def _package(item: Package) -> PackageRow:
    return PackageRow(
        **columns_of(item),
        pypi_downloads=0,
        # The package's one version shares its id, so it keeps it from one mirror to the next.
        latest_version_id=None if item.pypi_version is None else item.id,
    )


def _memberships(
    grids: Sequence[tuple[Grid, list[str]]], packages: Sequence[tuple[Package, list[str]]]
) -> tuple[tuple[GridPackageRow, ...], int, int]:
    """Rows whose ids, within each package, follow its `grids` list, then the links only grids make.

    A membership is listed twice, by the package and by the grid. One listed on one side only
    is kept and counted; a link to a grid or package that the lists do not hold is dropped.
    """
    grid_created = {grid.id: grid.created for grid, _ in grids}
    package_created = {package.id: package.created.astimezone(UTC) for package, _ in packages}
    dropped = 0
    by_grids: dict[int, set[int]] = {}
    for grid, package_links in grids:
        for url in package_links:
            package_id = id_from_url(url)
            if package_id in package_created:
                by_grids.setdefault(package_id, set()).add(grid.id)
            else:
                dropped += 1
    links: dict[int, list[int]] = {}
    inconsistent = 0
    for package, grid_links in packages:
        own: list[int] = []
        for url in grid_links:
            grid_id = id_from_url(url)
            if grid_id not in grid_created:
                dropped += 1
            elif grid_id not in own:
                own.append(grid_id)
        listed = by_grids.get(package.id, set())
        only_grids = sorted(listed.difference(own))
        inconsistent += len(only_grids) + len(set(own) - listed)
        links[package.id] = own + only_grids
    longest = max(map(len, links.values()), default=0)
    stride = max(MIN_STRIDE, 10 ** len(str(longest)))
    rows = []
    for package_id, grid_ids in links.items():
        for position, grid_id in enumerate(grid_ids):
            joined = max(grid_created[grid_id], package_created[package_id])
            rows.append(
                GridPackageRow(package_id * stride + position, grid_id, package_id, joined, joined)
            )
    return tuple(rows), inconsistent, dropped


def _search_rows(
    packages: Sequence[PackageRow],
    grids: Sequence[Grid],
    category_titles: dict[int, str],
    now: datetime,
) -> tuple[SearchRow, ...]:
    """Packages then grids, as the site's index build writes them, with the API's values."""
    rows = [
        package_search_row(
            row_id,
            package,
            category_titles[package.category_id],
            weight=0,
            usage=0,
            score=0,
            last_released=None,
            built=(now, now),
        )
        for row_id, package in enumerate(packages, start=1)
    ]
    rows += (
        grid_search_row(row_id, grid, weight=0, built=(now, now))
        for row_id, grid in enumerate(grids, start=len(rows) + 1)
    )
    return tuple(rows)


@contextmanager
def progress_to(stream: TextIO) -> Iterator[Progress]:
    """A bar per resource on a terminal; elsewhere a plain line per page, as logs want."""
    if not stream.isatty():

        def line(resource: str, done: int, total: int) -> None:
            print(f"{resource} {done}/{total}", file=stream, flush=True)

        yield line
        return
    bars: dict[str, Any] = {}

    def bar(resource: str, done: int, total: int) -> None:
        if resource not in bars:  # from the first page on: its count gives the total
            bars[resource] = tqdm(
                total=total, initial=done, desc=resource, unit=" items", file=stream
            )
        bars[resource].update(done - bars[resource].n)
        if done >= total:
            bars[resource].close()

    try:
        yield bar
    finally:
        for each in bars.values():
            each.close()


def _one_line(text: str) -> str:
    return " ".join(text.split())
