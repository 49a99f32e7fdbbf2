"""The REST backend's catalogue snapshot: its in-memory filters and orders, and its cost.

The unit tests build a `Catalogue` from records made here, each aimed at one rule of
records.py (title key, ties, nulls, instants, strict bounds, slugs); the others run gateways
against the fake APIv4 and count what the snapshot costs it, cold and warm.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import itertools
import json
import logging
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

import httpx
import msgspec
import pytest

from gateway.demo.dataset import generate
from gateway.errors import UpstreamError
from gateway.loaders.records import (
    Category,
    Grid,
    Order,
    Package,
    PackageFilter,
    Page,
    Slice,
    Window,
    words_of,
)
from gateway.loaders.rest.breaker import Breaker
from gateway.loaders.rest.cache import ResourceCache
from gateway.loaders.rest.client import Upstream as UpstreamClient
from gateway.loaders.rest.fetcher import Fetcher
from gateway.loaders.rest.memo import Memo
from gateway.loaders.rest.snapshot import Catalogue, Lists
from gateway.loaders.rest.turns import PER_TURN, in_chunks, in_turns
from gateway.loaders.rest.warm import keep_catalogue_warm
from gateway.loaders.rest.wire import (
    GridJSON,
    ListJSON,
    PackageJSON,
    _link_ids,
    _readable,
    decode,
    id_from_url,
    snapshot_in_steps,
)
from gateway.loaders.sql.rows import Dataset, PackageRow
from tests.expected import LIST_REQUESTS, grid_ids_of_package, package_ids_of_grid
from tests.fake_upstream import FakeUpstream, serve_upstream
from tests.test_resilience import codes, gateway
from tests.waiting import Clock

T = TypeVar("T")
T0 = datetime(2024, 1, 1, tzinfo=UTC)
ALL = 1_000


def package(
    id: int,
    title: str = "",
    *,
    slug: str = "",
    description: str = "",
    category: int = 1,
    updated: datetime | None = None,
    version: str | None = None,
    watchers: int = 0,
    created: datetime = T0,
) -> Package:
    return Package(
        id=id,
        title=title or f"package {id}",
        slug=slug or f"p{id}",
        category_id=category,
        last_updated=updated,
        last_fetched=None,
        repo_url=f"https://example.com/{id}",
        pypi_version=version,
        created=created,
        modified=T0,
        repo_forks=0,
        repo_description=description,
        pypi_url="",
        documentation_url=None,
        repo_watchers=watchers,
        commits_over_52=(),
        participants=(),
    )


def grid(id: int, slug: str, title: str = "") -> Grid:
    return Grid(id, title or slug, slug, "", False, False, T0, T0)


def category(id: int, slug: str, title: str = "") -> Category:
    return Category(id, title or slug, slug, "", slug + "s", True, T0, T0)


def catalogue(
    packages: list[Package],
    members: dict[int, list[int]] | None = None,
    grids: list[Grid] | None = None,
    categories: list[Category] | None = None,
) -> Catalogue:
    """A catalogue whose grids list `members` (grid id → package ids, in that order)."""
    members = members or {}
    grids_of: dict[int, list[int]] = {}
    for grid_id, package_ids in members.items():
        for id in package_ids:
            grids_of.setdefault(id, []).append(grid_id)
    return Catalogue(
        Lists(
            categories or [category(1, "apps")],
            grids or [grid(id, f"g{id}") for id in members],
            packages,
            packages_of_grid=members,
            grids_of_package=grids_of,
        )
    )


def ids(page: Page[Any]) -> list[int]:
    return [record.id for record in page.items]


def listed(
    snapshot: Catalogue, filter: PackageFilter | None = None, order: Order | None = None
) -> list[int]:
    return ids(snapshot.list_packages(Slice(ALL), filter, order))


# -- orders ---------------------------------------------------------------------------


def test_title_is_the_lower_cased_title_by_code_point_then_id_either_way() -> None:
    snapshot = catalogue(
        [package(1, "b"), package(2, "B"), package(3, "a"), package(4, "É"), package(5, "z")]
    )
    assert listed(snapshot, order=Order("title")) == [3, 1, 2, 5, 4]  # "é" after "z"
    assert listed(snapshot, order=Order("title", descending=True)) == [4, 5, 2, 1, 3]


def test_nulls_come_last_either_way_by_id_in_the_order_direction() -> None:
    early, late = T0, T0 + timedelta(days=1)
    snapshot = catalogue(
        [
            package(1, updated=None),
            package(2, updated=late),
            package(3, updated=None),
            package(4, updated=early),
            package(5, updated=late),
        ]
    )
    assert listed(snapshot, order=Order("last_updated")) == [4, 2, 5, 1, 3]
    assert listed(snapshot, order=Order("last_updated", True)) == [5, 2, 4, 3, 1]
    # The same within a subset, where the order is a sort of its members.
    only = PackageFilter(min_watchers=0)
    assert listed(snapshot, only, Order("last_updated", True)) == [5, 2, 4, 3, 1]


def test_datetimes_order_as_instants_even_in_the_hour_dst_repeats() -> None:
    new_york = ZoneInfo("America/New_York")
    first = datetime(2024, 11, 3, 1, 45, tzinfo=new_york)  # EDT, 05:45 UTC
    second = datetime(2024, 11, 3, 1, 15, tzinfo=new_york, fold=1)  # EST, 06:15 UTC
    snapshot = catalogue([package(1, updated=second), package(2, updated=first)])
    assert listed(snapshot, order=Order("last_updated")) == [2, 1]
    assert listed(snapshot, PackageFilter(updated_after=first)) == [1]


def test_without_an_order_a_list_is_newest_id_first_and_offset_limit_cut_it() -> None:
    snapshot = catalogue([package(id) for id in (3, 9, 1, 7)])
    assert listed(snapshot) == [9, 7, 3, 1]
    assert ids(snapshot.list_packages(Slice(2, after=(1, 1)), None, Order("id"))) == [3, 7]
    past = snapshot.list_packages(Slice(5, after=(1,)), None, None)
    assert (past.items, past.total) == ((), 4)
    empty = snapshot.list_packages(Slice(0), PackageFilter(min_watchers=0), None)
    assert (empty.items, empty.total) == ((), 4)


def test_grids_and_categories_order_by_package_count_title_and_id() -> None:
    snapshot = catalogue(
        [package(id, category=1 if id < 4 else 2) for id in range(1, 6)],
        members={10: [1, 2], 11: [3], 12: [4, 5], 13: [99]},  # 99: no such package
        grids=[grid(10, "b"), grid(11, "a"), grid(12, "C"), grid(13, "d")],
        categories=[category(1, "apps", "App"), category(2, "frameworks", "Framework")],
    )
    count = Order("package_count")
    assert ids(snapshot.list_grids(Slice(ALL), count)) == [13, 11, 10, 12]
    assert ids(snapshot.list_grids(Slice(ALL), Order("package_count", True))) == [12, 10, 11, 13]
    assert ids(snapshot.list_grids(Slice(ALL), Order("title"))) == [11, 10, 12, 13]
    assert ids(snapshot.list_categories(Slice(ALL), count)) == [2, 1]
    assert ids(snapshot.list_categories(Slice(ALL), Order("id", True))) == [2, 1]
    assert snapshot.packages_of_grid(Window(13, Slice(0))).total == 0


# -- filters --------------------------------------------------------------------------


def test_each_condition_alone() -> None:
    before, at, after = T0 - timedelta(seconds=1), T0, T0 + timedelta(seconds=1)
    snapshot = catalogue(
        [
            package(1, "Django-Admin Tools", description="Ünïcode ÀDMIN"),
            package(2, "other", slug="django-rest", version="1.0", watchers=10, updated=before),
            package(3, "third", description="rest\nadmin", version="", watchers=9, updated=at),
            package(4, "fourth", watchers=11, updated=after),
        ]
    )
    assert listed(snapshot, PackageFilter(words=words_of("ADMIN"))) == [3, 1]
    assert listed(snapshot, PackageFilter(words=words_of("django admin"))) == [1]
    assert listed(snapshot, PackageFilter(words=words_of("ünïcode àdmin"))) == [1]
    assert listed(snapshot, PackageFilter(words=words_of("rest admin"))) == [3]
    assert listed(snapshot, PackageFilter(words=words_of("ngo-re"))) == [2]  # within the slug
    assert listed(snapshot, PackageFilter(has_pypi_release=True)) == [3, 2]  # "" is a version
    assert listed(snapshot, PackageFilter(has_pypi_release=False)) == [4, 1]
    assert listed(snapshot, PackageFilter(min_watchers=10)) == [4, 2]
    assert listed(snapshot, PackageFilter(updated_after=at)) == [4]
    assert listed(snapshot, PackageFilter(updated_before=at)) == [2]
    assert listed(snapshot, PackageFilter(updated_after=before, updated_before=after)) == [3]


def test_slugs_category_pools_its_namesakes_and_grids_must_all_match() -> None:
    snapshot = catalogue(
        [package(id, category=1 + id % 3) for id in range(1, 7)],
        members={10: [1, 2, 3, 4], 11: [3, 4, 5], 12: []},
        grids=[grid(10, "a"), grid(11, "b"), grid(12, "empty")],
        categories=[category(1, "apps"), category(2, "others"), category(3, "apps")],
    )
    assert listed(snapshot, PackageFilter(category="apps")) == [6, 5, 3, 2]
    assert listed(snapshot, PackageFilter(category="others")) == [4, 1]
    assert listed(snapshot, PackageFilter(category="nope")) == []
    assert listed(snapshot, PackageFilter(grids=("a", "b"))) == [4, 3]
    assert listed(snapshot, PackageFilter(grids=("a", "nope"))) == []
    assert listed(snapshot, PackageFilter(grids=("empty",))) == []
    assert listed(snapshot, PackageFilter(category="apps", grids=("b",))) == [5, 3]


def test_relations_keep_their_own_order_unless_ordered() -> None:
    snapshot = catalogue(
        [package(1, "b", watchers=5), package(2, "a", watchers=7), package(3, "c", watchers=5)],
        members={10: [3, 1, 2], 11: [1]},
    )
    rich = PackageFilter(min_watchers=5)
    assert ids(snapshot.packages_of_grid(Window(10, Slice(ALL), rich))) == [3, 1, 2]
    by_watchers = Order("repo_watchers", True)
    assert ids(snapshot.packages_of_grid(Window(10, Slice(2), rich, by_watchers))) == [2, 3]
    assert snapshot.packages_of_grid(Window(10, Slice(2), rich, by_watchers)).total == 3
    assert ids(snapshot.packages_of_category(Window(1, Slice(ALL)))) == [3, 2, 1]
    assert ids(snapshot.grids_of_package(Window(1, Slice(ALL)))) == [10, 11]
    assert ids(snapshot.grids_of_package(Window(1, Slice(ALL), order=Order("id", True)))) == [
        11,
        10,
    ]
    assert snapshot.packages_of_grid(Window(99, Slice(ALL), rich)) == Page((), 0)


# -- against the fake APIv4 -----------------------------------------------------------


def test_kept_pages_leave_the_collectors_sight_on_their_way_to_the_old_generation() -> None:
    """A full collection scans every tracked object (gateway/observability/stalls.py), and a
    snapshot keeps thousands of pages. Each is kept under exact tuples of atomic values and holds
    tuples of untracked records and keys: the collector untracks them, a level of nesting a pass, so
    that by the end of the first full collection it sees nothing of them."""
    snapshot = catalogue(
        [package(id, f"t{id}", watchers=id % 7) for id in range(1, 101)],
        members={grid: list(range(grid, 101, 5)) for grid in range(1, 6)},
    )
    by_title = Order("title", True)
    snapshot.list_packages(Slice(1), None, by_title)  # the order's ranking, kept as long
    gc.collect()
    gc.disable()  # the passes below are the first each page sees
    try:
        seen = len(gc.get_objects())
        for n in range(1, 41):
            snapshot.packages_of_grid(Window(n % 5 + 1, Slice(n)))
            snapshot.grids_of_package(Window(n, Slice(n)))
            snapshot.list_packages(Slice(n, after=(f"t{n}", n)), None, by_title)
        for generation in (0, 1, 2):
            gc.collect(generation)
        grown = len(gc.get_objects()) - seen
    finally:
        gc.enable()
    assert grown <= 2  # of 120 pages, each about 5 tracked objects kept as they came


def test_relation_links_give_ascii_ids_only() -> None:
    """Remembered or not, a link whose last segment is no ASCII number is malformed."""
    assert id_from_url("https://elsewhere.example/api/v4/grids/218/?format=api") == 218
    for _ in range(2):
        with pytest.raises(UpstreamError, match="malformed"):
            id_from_url("https://djangopackages.org/api/v4/grids/²/")


FILTERED = """query($q: String!) {
    packages(first: 5, filter: {query: $q, hasPypiRelease: true},
             orderBy: {field: REPO_WATCHERS, direction: DESC}) {
        totalCount
        nodes { databaseId category { slug } gridCount grids(first: 3) { nodes { slug } } }
    }
}"""


WARM = """{
    categories(orderBy: {field: PACKAGE_COUNT, direction: DESC}) { nodes { slug packageCount } }
    grid(slug: "healt-checkers") {
        packageCount
        packages(first: 5, filter: {minWatchers: 10}, orderBy: {field: TITLE}) {
            totalCount
            nodes { slug category { slug } grids(orderBy: {field: TITLE}) { totalCount } }
        }
    }
}"""


async def _snapshot_of(upstream: FakeUpstream) -> Catalogue:
    client = UpstreamClient(upstream.base_url)
    try:
        return await Fetcher(client, ResourceCache(ttl=60, stale=0)).snapshot()
    finally:
        await client.aclose()


@pytest.mark.parametrize(
    "field", ["title", "repo_watchers", "repo_forks", "last_updated", "created", "modified", "id"]
)
async def test_every_package_order_over_the_dataset(upstream: FakeUpstream, field: str) -> None:
    snapshot = await _snapshot_of(upstream)
    rows = upstream.dataset.packages

    def value(row: PackageRow) -> Any:
        if field == "title":
            return row.title.lower()
        if field == "last_updated":
            return row.last_commit_date
        return getattr(row, field)

    valued = sorted((row for row in rows if value(row) is not None), key=lambda r: (value(r), r.id))
    valueless = sorted(row.id for row in rows if value(row) is None)
    ascending = [row.id for row in valued]
    assert listed(snapshot, order=Order(field)) == ascending + valueless
    assert listed(snapshot, order=Order(field, True)) == ascending[::-1] + valueless[::-1]


async def test_memberships_follow_the_dataset(upstream: FakeUpstream) -> None:
    snapshot, dataset = await _snapshot_of(upstream), upstream.dataset
    for grid_row in dataset.grids:
        assert ids(
            snapshot.packages_of_grid(Window(grid_row.id, Slice(ALL)))
        ) == package_ids_of_grid(dataset, grid_row.id)
    for package_row in dataset.packages[:50]:
        assert ids(snapshot.grids_of_package(Window(package_row.id, Slice(ALL)))) == (
            grid_ids_of_package(dataset, package_row.id)
        )


def _filtered(dataset: Dataset, term: str) -> tuple[int, list[int]]:
    """What FILTERED answers: the total and the first five ids, computed from the rows."""
    released = {version.id for version in dataset.versions}
    kept = [
        row
        for row in dataset.packages
        if row.latest_version_id in released
        and term in "\n".join((row.title, row.slug, row.repo_description)).lower()
    ]
    kept.sort(key=lambda row: (row.repo_watchers, row.id), reverse=True)
    return len(kept), [row.id for row in kept[:5]]


async def test_a_filtered_ordered_page_costs_the_lists_cold_and_nothing_warm(
    upstream: FakeUpstream,
) -> None:
    async with gateway(upstream) as ask:
        cold = await ask(FILTERED, q="django")
        assert "errors" not in cold
        assert sorted(upstream.requests) == LIST_REQUESTS  # nested fields read primed details
        total, first = _filtered(upstream.dataset, "django")
        packages = cold["data"]["packages"]
        assert (packages["totalCount"], [n["databaseId"] for n in packages["nodes"]]) == (
            total,
            first,
        )
        upstream.reset()
        warm = await ask(WARM)
        assert "errors" not in warm, warm["errors"]
        assert await ask(FILTERED, q="rest") != cold
        assert upstream.count == 0


async def test_counts_cost_no_member_fetches(upstream: FakeUpstream) -> None:
    dataset = upstream.dataset
    row = dataset.packages[0]
    async with gateway(upstream) as ask:
        grids = await ask("{ grids(first: 100) { nodes { databaseId packageCount } } }")
        assert upstream.requests == ["/api/v4/grids/?limit=100&offset=0"]
        assert {n["databaseId"]: n["packageCount"] for n in grids["data"]["grids"]["nodes"]} == {
            g.id: len(package_ids_of_grid(dataset, g.id)) for g in dataset.grids
        }
        upstream.reset()
        one = await ask("{ package(id: %d) { gridCount } }" % row.id)
        assert one["data"]["package"]["gridCount"] == len(grid_ids_of_package(dataset, row.id))
        assert upstream.requests == [f"/api/v4/packages/{row.id}/"]
        upstream.reset()
        categories = await ask("{ categories { nodes { databaseId packageCount } } }")
        assert {
            n["databaseId"]: n["packageCount"] for n in categories["data"]["categories"]["nodes"]
        } == Counter(p.category_id for p in dataset.packages)
        assert upstream.requests[0] == "/api/v4/categories/?limit=20&offset=0"
        assert sorted(upstream.requests[1:]) == LIST_REQUESTS


async def test_concurrent_cold_queries_share_one_snapshot(upstream: FakeUpstream) -> None:
    upstream.latency = 0.05  # so that they really are in flight together
    async with gateway(upstream) as ask:
        bodies = await asyncio.gather(*(ask(FILTERED, q=q) for q in ("django", "a", "rest") * 4))
    assert all("errors" not in body for body in bodies)
    assert sorted(upstream.requests) == LIST_REQUESTS


async def test_the_snapshot_refreshes_after_the_ttl_and_is_served_stale_in_an_outage(
    upstream: FakeUpstream,
) -> None:
    clock = Clock()
    async with gateway(upstream, cache_ttl=0.3, clock=clock) as ask:
        first = await ask(FILTERED, q="django")
        clock.advance(0.4)
        assert await ask(FILTERED, q="django") == first
        assert sorted(upstream.requests) == sorted(LIST_REQUESTS * 2)
        clock.advance(0.4)
        upstream.outage = "503"
        assert await ask(FILTERED, q="django") == {**first, "extensions": {"stale": True}}


async def test_a_failing_list_fails_only_the_fields_that_need_the_snapshot(
    upstream: FakeUpstream,
) -> None:
    upstream.faults["/api/v4/grids/"] = "500"
    async with gateway(upstream) as ask:
        body = await ask(
            "{ l: packages(first: 2) { totalCount }"
            " c: category(id: 1) { packages { totalCount } } }"
        )
    assert codes(body) == ["UPSTREAM_ERROR"] and body["errors"][0]["path"] == ["c", "packages"]
    assert body["data"] == {"l": {"totalCount": len(upstream.dataset.packages)}, "c": None}


async def test_a_warm_gateway_fetches_the_lists_at_start_and_a_fan_out_costs_nothing(
    upstream: FakeUpstream,
) -> None:
    dataset = upstream.dataset
    grid = max(dataset.grids, key=lambda row: len(package_ids_of_grid(dataset, row.id)))
    async with gateway(upstream, warm_catalogue=True) as ask:
        # The gateway serves once its first snapshot is in: fetched at start-up.
        assert sorted(upstream.requests) == LIST_REQUESTS
        body = await ask(
            "query($slug: String!) { grid(slug: $slug) { packages(first: 100) { nodes {"
            " category { slug } grids(first: 10) { nodes { slug } } } } } }",
            slug=grid.slug,
        )
        page = await ask("{ packages(first: 5) { totalCount nodes { databaseId } } }")
    assert "errors" not in body
    assert len(body["data"]["grid"]["packages"]["nodes"]) == min(
        100, len(package_ids_of_grid(dataset, grid.id))
    )
    # A plain list page reads as the upstream's would: newest id first, all counted.
    newest = sorted((row.id for row in dataset.packages), reverse=True)[:5]
    assert page["data"]["packages"] == {
        "totalCount": len(dataset.packages),
        "nodes": [{"databaseId": id} for id in newest],
    }
    assert sorted(upstream.requests) == LIST_REQUESTS


@contextmanager
def _logged(text: str) -> Iterator[asyncio.Event]:
    """An event set once the gateway logs a message with `text` (on the test's own loop).

    The probe that closes the circuit is sent by the keeper's task, not the test's: it lands
    while the clock waits for no one.
    """
    logged = asyncio.Event()

    class Handler(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if text in record.getMessage():
                logged.set()

    handler = Handler()
    logging.getLogger("gateway").addHandler(handler)
    try:
        yield logged
    finally:
        logging.getLogger("gateway").removeHandler(handler)


async def test_the_snapshot_is_refreshed_before_it_expires_and_an_outage_is_survived(
    upstream: FakeUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    breaker = Breaker(cool_down=0.05, clock=clock)
    client = UpstreamClient(upstream.base_url, timeout=2.0, retries=0, breaker=breaker)
    cache = ResourceCache(ttl=0.2, stale=60.0, clock=clock)
    keeper = asyncio.create_task(
        keep_catalogue_warm(client, cache, min_interval=0.05, sleep=clock.sleep)
    )
    try:
        await clock.run(0.5)  # 0.18 s apart: about three refreshes
        refreshes = upstream.requests.count("/api/v4/packages/?limit=100000&offset=0")
        assert 2 <= refreshes <= 4
        assert cache.holds("catalogue")
        upstream.outage = "503"
        await clock.run(0.3)
        assert "could not refresh the catalogue snapshot" in caplog.text
        assert not keeper.done()  # it goes on, and the cache still has its (stale) copy
        upstream.outage = None
        upstream.reset()
        with _logged("circuit breaker closed") as closed:
            await clock.run(0.25)  # past the cool-down: an attempt probes the upstream...
            await asyncio.wait_for(closed.wait(), 10)  # ...whose answer closes the circuit
        await clock.run(0.05)
        assert "/api/v4/packages/?limit=100000&offset=0" in upstream.requests
    finally:
        keeper.cancel()
        await asyncio.gather(keeper, return_exceptions=True)
        await client.aclose()


async def test_each_attempt_to_refresh_gives_memory_back_the_failed_ones_too(
    upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While the upstream fails, requests answered from stale copies take memory and free it,
    which the C allocator keeps: each attempt hands it back, not only a renewal."""
    given_back: list[bool] = []

    async def give_back() -> None:
        given_back.append(cache.fresh_for("catalogue") > 0)

    monkeypatch.setattr("gateway.loaders.rest.warm.give_back", give_back)
    clock = Clock()
    breaker = Breaker(cool_down=0.05, clock=clock)
    client = UpstreamClient(upstream.base_url, timeout=2.0, retries=0, breaker=breaker)
    cache = ResourceCache(ttl=0.2, stale=60.0, clock=clock)
    upstream.outage = "503"
    keeper = asyncio.create_task(
        keep_catalogue_warm(client, cache, min_interval=0.05, sleep=clock.sleep)
    )
    try:
        await clock.run(0.3)
        assert len(given_back) >= 3 and not any(given_back)  # failed, each given back
        upstream.outage = None
        with _logged("circuit breaker closed") as closed:
            await clock.run(0.25)  # past the cool-down: an attempt probes the upstream...
            await asyncio.wait_for(closed.wait(), 10)  # ...whose answer closes the circuit
        await clock.run(0.05)
        assert given_back[-1]  # renewed: given back too
    finally:
        keeper.cancel()
        await asyncio.gather(keeper, return_exceptions=True)
        await client.aclose()
        gc.unfreeze()


async def test_a_refresh_after_an_outage_renews_the_snapshot_at_its_first_attempt(
    upstream: FakeUpstream,
) -> None:
    """With the breaker open, a refresh's first list is the half-open probe, and the other two
    follow once its answer has closed the circuit: sent beside it, they were refused, and the
    snapshot stayed stale until the next attempt, `MIN_REFRESH_INTERVAL` later."""
    clock = Clock()
    breaker = Breaker(threshold=3, cool_down=1.0, clock=clock)
    client = UpstreamClient(upstream.base_url, timeout=2.0, retries=0, breaker=breaker)
    cache = ResourceCache(ttl=0.2, stale=60.0, clock=clock)
    try:
        await Fetcher(client, cache).refresh_snapshot()
        upstream.outage = "503"
        for _ in range(3):  # three failures in a row, one at a time: open
            with pytest.raises(UpstreamError):
                await client.get("categories/")
        assert not breaker.closed()
        upstream.reset()  # the upstream is back
        clock.advance(1.0)  # cooled down, and the snapshot stale
        assert not cache.holds("catalogue")
        await Fetcher(client, cache).refresh_snapshot()
        assert cache.holds("catalogue") and breaker.closed()
        assert sorted(upstream.requests) == LIST_REQUESTS
        assert upstream.requests[0] == "/api/v4/categories/?limit=100000&offset=0"  # alone
    finally:
        await client.aclose()


async def test_a_renewed_snapshot_is_out_of_the_collectors_sight_and_the_old_one_freed(
    upstream: FakeUpstream,
) -> None:
    """A full collection scans what the collector sees: the snapshot, renewed every
    `cache_ttl`, would be scanned by each one (gateway/observability/stalls.py). Frozen as it comes,
    it is not seen; and the snapshot it replaced, frozen before, is freed all the same."""
    clock = Clock()
    client = UpstreamClient(upstream.base_url, timeout=2.0, retries=0)
    cache = ResourceCache(ttl=0.2, stale=60.0, clock=clock)
    keeper = asyncio.create_task(
        keep_catalogue_warm(client, cache, min_interval=0.05, sleep=clock.sleep)
    )
    primed = f"packages/{upstream.dataset.packages[0].id}/"
    frozen = []
    try:
        for _ in range(3):
            await clock.run(0.18)  # a refresh each time (and one at the start)
            detail = cache.fresh(primed)  # a package the snapshot's list primed
            assert detail is not None and gc.is_tracked(detail[0])
            assert not any(seen is detail[0] for seen in gc.get_objects())
            frozen.append(gc.get_freeze_count())
    finally:
        keeper.cancel()
        await asyncio.gather(keeper, return_exceptions=True)
        await client.aclose()
        gc.unfreeze()
    assert upstream.requests.count("/api/v4/packages/?limit=100000&offset=0") == 4
    entries = len(cache)  # each a tracked object, primed from the snapshot's lists
    assert abs(frozen[2] - frozen[1]) < entries / 10  # the old ones gone


async def test_a_refresh_lets_the_loop_run_between_chunks_of_records() -> None:
    """A full-scale refresh decodes, primes, converts and indexes thousands of records; in one
    step, every request would wait for all of it. A task beside it gets its turn between any
    two chunks: the cache never takes more than a chunk of details from each list between two
    of its turns, and the snapshot is built over many of them once every detail is primed."""
    dataset = generate(scale=1.0)
    cache = ResourceCache(ttl=60, stale=0)
    seen: list[tuple[int, bool]] = []  # at each turn: the cache's entries, the snapshot there
    with serve_upstream(dataset) as upstream:
        client = UpstreamClient(upstream.base_url)
        try:
            refreshing = asyncio.ensure_future(Fetcher(client, cache).refresh_snapshot())
            while not refreshing.done():
                seen.append((len(cache), cache.holds("catalogue")))
                await asyncio.sleep(0)
            snapshot = await refreshing
        finally:
            await client.aclose()
    assert len(snapshot.list_packages(Slice(ALL), None, None).items) == ALL
    grown = [later - earlier for (earlier, _), (later, _) in itertools.pairwise(seen)]
    assert max(grown) <= 3 * 2 * PER_TURN  # each list primes a record by id and by slug
    primed = len(cache) - 1  # all but the snapshot
    building = [held for entries, held in seen if entries == primed]
    assert building.count(False) >= len(dataset.packages) // PER_TURN


async def test_a_renewal_keeps_the_objects_of_what_did_not_change(upstream: FakeUpstream) -> None:
    """Between two renewals little changes: what did not keeps the objects it had, the decoded
    JSON primed by id and by slug and the snapshot's records (a long-lived set that stays where
    it is, not copied anew among a request's short-lived objects); what did is read anew."""
    dataset = upstream.dataset
    changed = dataset.packages[3]
    cache = ResourceCache(ttl=60, stale=0)
    client = UpstreamClient(upstream.base_url)
    try:
        first = await Fetcher(client, cache).refresh_snapshot()
        primed = {row.id: cache.fresh(f"packages/{row.id}/") for row in dataset.packages}
        watched = dataclasses.replace(changed, repo_watchers=changed.repo_watchers + 1)
        upstream.dataset = dataclasses.replace(
            dataset, packages=tuple(watched if p.id == changed.id else p for p in dataset.packages)
        )
        second = await Fetcher(client, cache).refresh_snapshot()
    finally:
        await client.aclose()
    assert second is not first
    for row in dataset.packages:
        kept = cache.fresh(f"packages/{row.id}/")
        by_slug = cache.fresh(f"packages/{row.slug}/")
        assert kept is not None and by_slug is not None and kept[0] is by_slug[0]
        was = primed[row.id]
        assert was is not None
        if row.id == changed.id:
            before, after = first.package(row.id), second.package(row.id)
            assert kept[0] is not was[0] and before is not None
            assert after == msgspec.structs.replace(before, repo_watchers=watched.repo_watchers)
        else:
            assert kept[0] is was[0]
            assert second.package(row.id) is first.package(row.id)
    assert dataset.grids  # none changed: a package's watchers are not in its grids' JSON
    assert all(second.grid(row.id) is first.grid(row.id) for row in dataset.grids)


async def test_a_renewal_reads_a_malformed_link_as_ever_and_keeps_the_rest(
    upstream: FakeUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    """A malformed relation link leaves out that link, a malformed record link the record, at
    every renewal (logged each time); a request's memo still fails on them; the others' records
    are the last snapshot's."""

    def listed(resource: str, kind: type[T]) -> list[T]:
        body = httpx.get(f"{upstream.base_url}{resource}", params={"limit": ALL}, timeout=30)
        return [decode(raw, kind, resource) for raw in decode(body.content, ListJSON, "").results]

    grids, packages = listed("grids/", GridJSON), listed("packages/", PackageJSON)
    at = next(i for i, p in enumerate(packages) if p.grids)
    odd_grid, odd_category = packages[at], packages[-1]
    assert at != len(packages) - 1
    links = [*odd_grid.grids[:-1], "https://djangopackages.org/api/v4/grids/x/"]
    packages[at] = msgspec.structs.replace(odd_grid, grids=links)
    packages[-1] = msgspec.structs.replace(odd_category, category="/api/v4/categories/one/")
    snapshots = [await in_turns(snapshot_in_steps([], grids, packages)) for _ in range(2)]
    for snapshot in snapshots:
        assert snapshot.package(odd_category.id) is None
        related = snapshot.grids_of_package(Window(odd_grid.id, Slice(ALL)))
        assert related.total == len(odd_grid.grids) - 1
    assert caplog.text.count("catalogue snapshot: left out") == 4  # a link, a record, twice
    for raw in (packages[at], packages[-1]):
        with pytest.raises(UpstreamError, match="malformed"):
            Memo().remember_package(raw)
    first, second = snapshots
    others = [p.id for p in packages if p.id not in (odd_grid.id, odd_category.id)]
    assert others and all(second.package(id) is first.package(id) for id in others)


def test_a_chunk_or_less_of_work_costs_no_turn() -> None:
    """Work in chunks yields between two, not after the last: a request's own list pages, a
    chunk or less, are read in one step as before."""
    done: list[int] = []
    assert list(in_chunks(range(PER_TURN), done.extend)) == []
    assert list(in_chunks(range(2 * PER_TURN + 1), done.extend)) == [None, None]
    assert done == [*range(PER_TURN), *range(2 * PER_TURN + 1)]


# -- the snapshot beside the request's own reads ---------------------------------------------


def test_a_malformed_link_leaves_out_only_itself(caplog: pytest.LogCaptureFixture) -> None:
    base = "https://djangopackages.org/api/v4/grids/"
    assert _link_ids([f"{base}12/", f"{base}twelve/", f"{base}7/?format=api"]) == [12, 7]

    def convert(raw: str) -> int:
        return id_from_url(raw)

    assert _readable(convert, [f"{base}3/", f"{base}x/"]) == [3]
    assert caplog.text.count("catalogue snapshot: left out") == 2


async def test_a_category_by_slug_costs_nothing_on_a_warm_snapshot(
    upstream: FakeUpstream,
) -> None:
    category = upstream.dataset.categories[0]
    async with gateway(upstream, warm_catalogue=True) as ask:
        assert sorted(upstream.requests) == LIST_REQUESTS  # the snapshot, fetched at start-up
        upstream.reset()
        body = await ask('{ category(slug: "%s") { databaseId } }' % category.slug)
    assert body["data"]["category"] == {"databaseId": category.id}
    assert upstream.requests == []


async def test_a_lookup_does_not_wait_for_a_snapshot_on_its_way(upstream: FakeUpstream) -> None:
    row = upstream.dataset.packages[3]
    upstream.fail("/api/v4/grids/", "hang", times=1)  # the snapshot's grid list never comes
    async with gateway(upstream, upstream_timeout=2.0, request_timeout=3.0) as ask:
        snapshot = asyncio.ensure_future(ask(FILTERED, q="django"))
        asked = await asyncio.to_thread(
            upstream.wait_until,
            lambda: any(path.startswith("/api/v4/grids/") for path in upstream.requests),
        )
        assert asked, "the snapshot never asked for the grids"
        started = asyncio.get_running_loop().time()
        body = await ask("{ package(id: %d) { title } }" % row.id)
        took = asyncio.get_running_loop().time() - started
        await snapshot
    assert body["data"]["package"] == {"title": row.title}
    assert took < 1.0  # a GET of its own, not the snapshot's upstream timeout


async def test_one_answer_shows_a_record_one_way(upstream: FakeUpstream) -> None:
    """A package read by its detail before the snapshot came is shown as read, in the pages
    the snapshot answers later in the same request, even if the upstream changed it since."""
    dataset = upstream.dataset
    row = dataset.packages[5]
    async with gateway(upstream) as ask:
        first = await ask("{ package(id: %d) { title } }" % row.id)  # its detail, cached
        assert first["data"]["package"] == {"title": row.title}
        renamed = dataclasses.replace(row, title="Renamed since")
        upstream.dataset = dataclasses.replace(
            dataset, packages=tuple(renamed if p.id == row.id else p for p in dataset.packages)
        )
        body = await ask(
            "{ package(id: %d) { title } category(id: %d) {"
            " packages(first: 100, filter: {query: %s}) { nodes { databaseId title } } } }"
            % (row.id, row.category_id, json.dumps(row.slug))
        )
    assert "errors" not in body
    nested = {n["databaseId"]: n["title"] for n in body["data"]["category"]["packages"]["nodes"]}
    assert nested[row.id] == body["data"]["package"]["title"] == row.title
