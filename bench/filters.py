"""Filters: five filtered and ordered queries on each backend, over the full-scale catalogue.

    python -m bench.filters [--runs 200]

The questions people ask Django Packages that the APIv4 cannot answer in one request, on the
full-scale demo catalogue (`generate()`): on the embedded-style SQLite catalogue (the file
`gateway serve` builds on first use) and on the REST backend over the fake APIv4 on loopback.
Each query runs in-process, as `gateway query` runs it (a request's loaders over the backend,
no HTTP and no response cache), and the script prints, per backend and query:

- cold: the first run on a freshly opened backend (a new engine; an empty REST cache, so the
  catalogue snapshot is fetched), its time and what it cost: SQL statements or upstream
  requests;
- warm: p50 and p95 over `--runs` runs after `--warmup` unmeasured ones, and what one warm run
  costs (a filtered, ordered first page: at most two statements, no upstream request).

Figures, not a test: nothing here fails on them.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractAsyncContextManager, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.pool import Pool

from gateway.backends import BackendFactory, open_backend
from gateway.compose import schema_for
from gateway.config import Settings
from gateway.demo.dataset import NOW, generate
from gateway.demo.embedded import open_embedded
from gateway.errors import response_body
from gateway.loaders.loaders import Loaders
from gateway.loaders.sql.rows import Dataset
from gateway.schema.context import Context
from tests.fake_upstream import serve_upstream

SCHEMA = schema_for(Settings())

PACKAGE_PAGE = "totalCount nodes { title repoWatchers lastUpdated pypiVersion }"


@dataclass(frozen=True)
class Query:
    """One question: its GraphQL document and variables, and how many items its page skips
    (by an `after` cursor read before measuring)."""

    name: str
    document: str
    variables: dict[str, Any]
    skip: int = 0


def queries(dataset: Dataset) -> list[Query]:
    """The five questions, with slugs taken from the dataset."""
    admin, cms = _overlapping_grids(dataset, "admin-interface", "cms")
    sizes = _members(dataset)
    largest = max(dataset.grids, key=lambda grid: (sizes[grid.id], -grid.id)).slug
    this_year = datetime(NOW.year, 1, 1, tzinfo=UTC).isoformat()
    top = "query($f: PackageFilter, $o: PackageOrder) {"
    top += " packages(first: 20, filter: $f, orderBy: $o) { " + PACKAGE_PAGE + " } }"
    in_grid = "query($slug: String!, $f: PackageFilter, $o: PackageOrder) { grid(slug: $slug) {"
    in_grid += " title packages(first: 20, filter: $f, orderBy: $o) { " + PACKAGE_PAGE + " } } }"
    in_category = "query($slug: String!, $f: PackageFilter, $o: PackageOrder, $first: Int = 20,"
    in_category += " $after: String) { category(slug: $slug) { title packages(first: $first,"
    in_category += " after: $after, filter: $f, orderBy: $o) { pageInfo { endCursor } "
    in_category += PACKAGE_PAGE + " } } }"
    largest_grids = "query($g: GridOrder, $o: PackageOrder) { grids(first: 20, orderBy: $g) {"
    largest_grids += " totalCount nodes { title packageCount"
    largest_grids += " packages(first: 5, orderBy: $o) { nodes { title repoWatchers } } } } }"
    most_watched = {"field": "REPO_WATCHERS", "direction": "DESC"}
    return [
        Query(
            "the most-starred REST framework packages updated this year",
            top,
            {"f": {"query": "rest framework", "updatedAfter": this_year}, "o": most_watched},
        ),
        Query(
            f"packages in both the {admin} and the {cms} grids, by title",
            top,
            {"f": {"grids": [admin, cms]}, "o": {"field": "TITLE"}},
        ),
        Query(
            f"released packages of the {largest} grid mentioning django, by last commit",
            in_grid,
            {
                "slug": largest,
                "f": {"hasPypiRelease": True, "query": "django"},
                "o": {"field": "LAST_UPDATED", "direction": "DESC"},
            },
        ),
        Query(
            "frameworks with 50 watchers or more, newest first, third page",
            in_category,
            {
                "slug": "frameworks",
                "f": {"minWatchers": 50},
                "o": {"field": "CREATED", "direction": "DESC"},
            },
            skip=40,
        ),
        Query(
            "the largest grids, each with its five most-watched packages",
            largest_grids,
            {"g": {"field": "PACKAGE_COUNT", "direction": "DESC"}, "o": most_watched},
        ),
    ]


def _members(dataset: Dataset) -> dict[int, int]:
    sizes = {grid.id: 0 for grid in dataset.grids}
    for row in dataset.grid_packages:
        sizes[row.grid_id] += 1
    return sizes


def _overlapping_grids(dataset: Dataset, first: str, second: str) -> tuple[str, str]:
    """The grids whose slugs start with `first` and `second` that share the most packages."""
    members: dict[int, set[int]] = {grid.id: set() for grid in dataset.grids}
    for row in dataset.grid_packages:
        members[row.grid_id].add(row.package_id)
    ones = [grid for grid in dataset.grids if grid.slug.startswith(first)]
    others = [grid for grid in dataset.grids if grid.slug.startswith(second)]
    a, b = max(
        ((a, b) for a in ones for b in others),
        key=lambda pair: (len(members[pair[0].id] & members[pair[1].id]), -pair[0].id, -pair[1].id),
    )
    return a.slug, b.slug


@dataclass
class Measured:
    """One query on one backend."""

    rows: int
    total: int
    cold_seconds: float
    cold_cost: int
    warm_cost: int
    p50: float
    p95: float


class Counter:
    """SQL statements SQLite runs for any engine of this process, while counting: as its
    trace callback tells them (the backend reads on the driver, past SQLAlchemy's events), on
    each connection opened meanwhile."""

    def __init__(self) -> None:
        self.sent = 0

    def read(self) -> int:
        return self.sent

    def _traced(self, statement: str) -> None:
        # Not the connection's set-up, nor what FTS5 tables run for themselves: nested in a
        # statement ("-- ..."), or on their shadow tables ('main'.'searchv3_fts_config').
        if not statement.startswith(("-- ", "PRAGMA")) and "'main'." not in statement:
            self.sent += 1

    @contextmanager
    def counting(self) -> Iterator[None]:
        def connected(dbapi_connection: Any, *args: Any) -> None:
            dbapi_connection.run_async(lambda driver: driver.set_trace_callback(self._traced))

        event.listen(Pool, "connect", connected)
        try:
            yield
        finally:
            event.remove(Pool, "connect", connected)


async def execute(factory: BackendFactory, query: Query) -> dict[str, Any]:
    """The query's data, as one request gets it; any error stops the benchmark."""
    context = Context(loaders=Loaders(factory()))
    result = await SCHEMA.execute(
        query.document, variable_values=query.variables, context_value=context
    )
    if result.errors or result.data is None:
        raise RuntimeError(f"{query.name}: {response_body(result).get('errors')}")
    return result.data


def _connection(data: dict[str, Any]) -> dict[str, Any]:
    """The query's one connection: its root field's value, or that value's `packages`."""
    (value,) = data.values()
    connection: dict[str, Any] = value if "nodes" in value else value["packages"]
    return connection


async def with_cursor(factory: BackendFactory, query: Query) -> Query:
    """The query with `after` set to the cursor ending its first `skip` items."""
    if not query.skip:
        return query
    data = await execute(
        factory, Query(query.name, query.document, {**query.variables, "first": query.skip})
    )
    cursor = _connection(data)["pageInfo"]["endCursor"]
    return Query(query.name, query.document, {**query.variables, "after": cursor})


Cost = Callable[[], int]
Opener = Callable[[], AbstractAsyncContextManager[BackendFactory]]


async def measure(open_fresh: Opener, cost: Cost, query: Query, runs: int, warmup: int) -> Measured:
    """The query's first run on a freshly opened backend, then its warm runs there."""
    async with open_fresh() as factory:
        query = await with_cursor(factory, query)
    async with open_fresh() as factory:
        before = cost()
        started = time.perf_counter()
        data = await execute(factory, query)
        cold_seconds = time.perf_counter() - started
        cold_cost = cost() - before
        for _ in range(warmup):
            await execute(factory, query)
        before = cost()
        await execute(factory, query)
        warm_cost = cost() - before
        seconds = []
        for _ in range(runs):
            started = time.perf_counter()
            await execute(factory, query)
            seconds.append(time.perf_counter() - started)
    seconds.sort()
    connection = _connection(data)
    return Measured(
        rows=len(connection["nodes"]),
        total=connection["totalCount"],
        cold_seconds=cold_seconds,
        cold_cost=cold_cost,
        warm_cost=warm_cost,
        p50=_percentile(seconds, 0.50),
        p95=_percentile(seconds, 0.95),
    )


def _percentile(sorted_seconds: list[float], share: float) -> float:
    index = min(len(sorted_seconds) - 1, round(share * (len(sorted_seconds) - 1)))
    return sorted_seconds[index]


def report(title: str, results: list[tuple[Query, Measured]]) -> str:
    header = ("query", "rows/total", "cold ms", "cold cost", "p50 ms", "p95 ms", "warm cost")
    rows = [
        (
            query.name,
            f"{m.rows}/{m.total}",
            f"{m.cold_seconds * 1000:.1f}",
            str(m.cold_cost),
            f"{m.p50 * 1000:.2f}",
            f"{m.p95 * 1000:.2f}",
            str(m.warm_cost),
        )
        for query, m in results
    ]
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]

    def line(cells: tuple[str, ...]) -> str:
        first, *rest = cells
        return "  ".join(
            [first.ljust(widths[0]), *(c.rjust(w) for c, w in zip(rest, widths[1:], strict=True))]
        )

    return "\n".join([title, line(header), *map(line, rows)])


async def run(args: argparse.Namespace) -> int:
    dataset = generate()
    chosen = queries(dataset)
    print(
        f"dataset: generate(): {len(dataset.packages):,} packages, {len(dataset.grids):,} grids,"
        f" {len(dataset.categories)} categories; {args.runs} warm runs per query after"
        f" {args.warmup} unmeasured"
    )
    counter = Counter()
    with tempfile.TemporaryDirectory(prefix="bench-filters-") as directory:
        started = time.perf_counter()
        url = await open_embedded(Path(directory) / "catalogue.sqlite3")
        print(f"embedded SQLite catalogue written in {time.perf_counter() - started:.1f} s")
        sqlite = Settings(database=url)
        with counter.counting():
            results = [
                (
                    query,
                    await measure(
                        lambda: open_backend(sqlite), counter.read, query, args.runs, args.warmup
                    ),
                )
                for query in chosen
            ]
        print()
        print(report("SQLite (embedded catalogue); cost in SQL statements:", results))

    with serve_upstream(dataset) as upstream:
        rest = Settings(upstream=upstream.base_url)
        results = [
            (
                query,
                await measure(
                    lambda: open_backend(rest),
                    lambda: upstream.count,
                    query,
                    args.runs,
                    args.warmup,
                ),
            )
            for query in chosen
        ]
        print()
        print(
            report(
                "REST (fake APIv4 on loopback); cost in upstream requests, cold including the"
                " catalogue snapshot:",
                results,
            )
        )
    return 0


def main() -> None:
    summary = __doc__.partition("\n")[0]
    parser = argparse.ArgumentParser(prog="python -m bench.filters", description=summary)
    parser.add_argument("--runs", type=int, default=200, help="measured warm runs per query")
    parser.add_argument("--warmup", type=int, default=10, help="unmeasured warm runs first")
    args = parser.parse_args()
    if args.runs <= 0 or args.warmup < 0:
        parser.error("runs must be positive, warmup not negative")
    sys.exit(asyncio.run(run(args)))


if __name__ == "__main__":
    main()
