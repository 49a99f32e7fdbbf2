"""The database backend's answers, kept across requests while the database is unchanged.

One store per database (process-wide, made by `backends.open_backend`) holds what batches
answered, key by key: a record by id or slug (or that there is none), a relation's window, a
list's page. Everything in it was read under one change stamp (engine.py's `change_stamp`: on
SQLite `PRAGMA data_version` with the connection's own `total_changes`, on PostgreSQL the
current snapshot), which a request reads once, before its first statement. A request whose
stamp differs drops the store and starts it again under its own; answers are kept only under
the stamp the store has, and read only by a request that read that same stamp. So an answer is
served only while nothing was committed between the reading of the stamp it was kept under and
the reading of the request's: it is what the database would answer now (README "Backends" has
the exact guarantee).

The store is bounded: each answer weighs its encoded size (msgpack) and a fixed overhead, and
the oldest answers go first once the weights pass the budget.
"""

from __future__ import annotations

import functools
from collections.abc import Hashable, Sequence
from typing import Any

import msgspec
from cachetools import FIFOCache

from gateway.loaders.records import (
    Category,
    Grid,
    Order,
    Package,
    PackageFilter,
    Page,
    Slice,
    Window,
)

__all__ = ["Kept", "KeptAnswers"]

# A list page's key: its slice, filter and order.
ListKey = tuple[Slice, PackageFilter | None, Order | None]
# What an answer weighs besides its encoding: its key, its entry in the dict.
_ENTRY = 200

_encode = msgspec.msgpack.Encoder().encode


def _store(budget: int) -> FIFOCache[tuple[str, Hashable], tuple[Any, int]]:
    """Answers with their weights, the oldest out first once they weigh more than `budget`."""
    return FIFOCache(budget, getsizeof=lambda kept: kept[1])


class Kept:
    """The answers kept under one change stamp, by batch method and key."""

    def __init__(self, budget: int) -> None:
        self.budget = budget  # bytes of encoded answers, at most (`kept_answers_bytes`)
        self.stamp: Hashable | None = None
        self._answers = _store(budget)

    def __len__(self) -> int:
        return len(self._answers)

    @property
    def size(self) -> int:
        """The weights of what is kept."""
        return int(self._answers.currsize)

    @property
    def max_bytes(self) -> int:
        return self.budget

    def stamped(self, stamp: Hashable) -> None:
        """A request read `stamp`: if the store was kept under another, it is dropped."""
        if stamp != self.stamp:
            self._answers = _store(self.budget)
            self.stamp = stamp

    def answers(self, stamp: Hashable, method: str, keys: Sequence[Hashable]) -> list[Any] | None:
        """What `method` answered for each of `keys` under `stamp`, or None unless all are kept."""
        if stamp != self.stamp:
            return None
        kept = self._answers
        try:
            return [kept[method, key][0] for key in keys]
        except KeyError:
            return None

    def keep(
        self, stamp: Hashable, method: str, keys: Sequence[Hashable], answers: Sequence[Any]
    ) -> None:
        """Keep what a statement read after `stamp` was read, unless the store moved on to
        another stamp meanwhile (its answers might be older than that stamp)."""
        if stamp != self.stamp:
            return
        kept = self._answers
        for key, answer in zip(keys, answers, strict=True):
            weight = len(_encode(answer)) + _ENTRY
            if weight <= self.budget:
                kept[method, key] = (answer, weight)


class KeptAnswers:
    """The batches a request answers from the store, under the stamp it read (its `AtHand`):
    each as `SqlBackend`'s method of the same name, or None unless every key is kept."""

    def __init__(self, kept: Kept, stamp: Hashable) -> None:
        self._answers = functools.partial(kept.answers, stamp)

    def categories(self, ids: Sequence[int]) -> list[Category | None] | None:
        return self._answers("categories", ids)

    def categories_by_slug(self, slugs: Sequence[str]) -> list[Category | None] | None:
        return self._answers("categories_by_slug", slugs)

    def grids(self, ids: Sequence[int]) -> list[Grid | None] | None:
        return self._answers("grids", ids)

    def grids_by_slug(self, slugs: Sequence[str]) -> list[Grid | None] | None:
        return self._answers("grids_by_slug", slugs)

    def packages(self, ids: Sequence[int]) -> list[Package | None] | None:
        return self._answers("packages", ids)

    def packages_by_slug(self, slugs: Sequence[str]) -> list[Package | None] | None:
        return self._answers("packages_by_slug", slugs)

    def packages_of_grids(self, windows: Sequence[Window]) -> list[Page[Package]] | None:
        return self._answers("packages_of_grids", windows)

    def grids_of_packages(self, windows: Sequence[Window]) -> list[Page[Grid]] | None:
        return self._answers("grids_of_packages", windows)

    def packages_of_categories(self, windows: Sequence[Window]) -> list[Page[Package]] | None:
        return self._answers("packages_of_categories", windows)

    def list_categories(self, slice: Slice, order: Order | None = None) -> Page[Category] | None:
        return self._page("list_categories", (slice, None, order))

    def list_grids(self, slice: Slice, order: Order | None = None) -> Page[Grid] | None:
        return self._page("list_grids", (slice, None, order))

    def list_packages(
        self, slice: Slice, filter: PackageFilter | None = None, order: Order | None = None
    ) -> Page[Package] | None:
        return self._page("list_packages", (slice, filter, order))

    def _page(self, method: str, key: ListKey) -> Page[Any] | None:
        found = self._answers(method, (key,))
        return None if found is None else found[0]
