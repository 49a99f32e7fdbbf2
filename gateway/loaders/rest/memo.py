"""What one request has read: each record by id and by slug, and each relation's ids."""

from __future__ import annotations

import functools
import weakref
from collections.abc import Callable
from typing import Any, TypeVar

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

R = TypeVar("R", Grid, Package)
J = TypeVar("J", GridJSON, PackageJSON)

# Each record made from the upstream's JSON, with its relation's ids, by the JSON it was made
# from (by `id`), for as long as that JSON lives: the resource cache hands every request the same
# decoded JSON while it holds it, and a lookup costs less than making the record and parsing its
# links again. An entry goes with its JSON (a weak reference's callback): what is made is bounded
# by what the cache keeps, which is bounded in bytes, and holds no JSON the cache let go of.
_MADE: dict[int, tuple[weakref.ref[Any], Any, tuple[int, ...]]] = {}


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
        record, members = _made(raw, to_grid, raw.packages)
        _remember(record, members, self.grids, self.grid_ids, self.packages_of_grid)
        return record

    def remember_package(self, raw: PackageJSON) -> Package:
        self.read = True
        record, members = _made(raw, to_package, raw.grids)
        _remember(record, members, self.packages, self.package_ids, self.grids_of_package)
        return record


def _made(raw: J, make: Callable[[J], R], links: list[str]) -> tuple[R, tuple[int, ...]]:
    """The record of `raw`, and the ids of its relation's `links`: made once per JSON."""
    key = id(raw)
    found = _MADE.get(key)
    if found is not None and found[0]() is raw:
        return found[1], found[2]
    made: tuple[R, tuple[int, ...]] = (make(raw), tuple(id_from_url(url) for url in links))
    _MADE[key] = (weakref.ref(raw, functools.partial(_forget, key)), *made)
    return made


def _forget(key: int, gone: weakref.ref[Any]) -> None:
    """The JSON of `key` is gone: so is what was made of it (unless the entry is a newer one's)."""
    found = _MADE.get(key)
    if found is not None and found[0] is gone:
        del _MADE[key]


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
