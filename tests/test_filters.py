"""Filters, orders, counts and cursors on every backend, checked against a brute force.

One suite runs on three backends loaded with the same rows: REST (the fake APIv4 over real
HTTP), SQLite and PostgreSQL. Every answer is compared with what `Model` computes straight
from the dataset's rows, written here independently of the gateway: for every filter alone
and several combined (and seeded random ones), every order in both directions, paged to the
end with `after` cursors, on every list and relation that takes them; counts; cursors of
another filter or order and bad filters refused. A database without the gateway's key tables
(one it does not own) is held to the same answers where lower() can give them.

The rows are the small demo dataset, changed (`derive`) so that a wrong implementation
gives a wrong answer: titles whose `str.lower` is not ASCII lower-casing (Turkish dotted
İ, Greek final sigma, capital sharp s, the Kelvin sign, a titlecase digraph), titles equal
but for case, ties in every order field, packages without a last commit, two categories
sharing a slug, grids and categories with equal package counts, an empty grid, and text
full of LIKE wildcards and backslashes. `test_the_dataset_can_tell_right_from_wrong` keeps
it so.

On the full-scale dataset a filtered, ordered first page costs at most two SQL statements,
and nothing upstream on a warm REST snapshot; a cold snapshot is a handful of requests,
fetched once however many requests need it at the same time.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import re
import unicodedata
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.backends import open_backend
from gateway.compose import schema_for
from gateway.config import Settings
from gateway.demo.dataset import NOW, generate
from gateway.errors import response_body
from gateway.loaders.backend import Backend
from gateway.loaders.loaders import Loaders
from gateway.loaders.records import Category, Grid
from gateway.loaders.sql.backend import SqlBackend
from gateway.loaders.sql.engine import create_engine
from gateway.loaders.sql.features import SqlFeatures, inspect_database
from gateway.loaders.sql.rows import Dataset, GridPackageRow, PackageRow
from gateway.loaders.sql.writer import write_dataset
from gateway.schema.context import Context
from tests.databases import load, new_schema, postgres_engine, statements
from tests.expected import PACKAGE_DATETIMES, package_fields, parse_datetimes, when
from tests.fake_upstream import FakeUpstream, serve_upstream
from tests.waiting import Clock

SCHEMA = schema_for(Settings())
SITE = ZoneInfo("America/New_York")
BACKENDS = ("rest", "sqlite", "postgres")

Filter = dict[str, Any]
OrderArg = dict[str, str]

# -- the dataset ---------------------------------------------------------------------------

TIE_WATCHERS = 123
TIE_FORKS = 9
TIE_DATE = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)
TIE_CREATED = datetime(2015, 3, 1, 8, 30, 0, 250_000, tzinfo=UTC)
TIE_MODIFIED = datetime(2025, 12, 24, 18, 0, 0, 750_000, tzinfo=UTC)

# (title, slug, description): titles whose `str.lower` an ASCII-only, a character-by-character
# or a locale's lower-casing gets wrong, or which sort otherwise by bytes or without accents.
RENAMED = (
    ("İstanbul Tools", "turkish-capital-tools", "Helpers for the city on the Bosphorus."),
    ("Istio Mesh", "service-mesh", "Service mesh helpers, by title before the dotted I."),
    ("ΣΟΦΟΣ Admin", "greek-wise-admin", "An admin panel, ΣΟΦΟΣ edition."),
    ("ẞTRASSE Kit", "street-kit", "Street names, capital sharp s."),
    ("\u212aelvin Metrics", "absolute-zero-metrics", "Temperatures in K and °C."),
    ("Éclair Forms", "eclair-forms", "Pastry-grade form widgets."),
    ("éclair forms", "eclair-forms-lower", "The same title, lower-cased."),
    ("Ölçer", "olcer", "Ölçüm ara\u00e7lar\u0131: ÖLÇÜ ve BİRİM."),
    ("ǅango Kit", "digraph-kit", "A titlecase digraph leads the title."),
    ("WINDOWS Paths", "windows-paths", "Handles C:\\temp\\ paths and \\d+ patterns."),
    ("[Brackets] tools", "brackets-tools", "Sorts between Z and a in byte order."),
)

NEW_GRIDS = (  # (id, title, slug): ids leave gaps, like deleted rows
    (12, "django CMS plugins", "django-cms-plugins"),
    (15, "Ωmega helpers", "omega-helpers"),
    (20, "Empty shelf", "empty-shelf"),
)


def derive(base: Dataset) -> Dataset:
    """The small demo dataset with the quirks the filter and order tests need."""
    rng = random.Random(7)
    # It holds every quirk package of the generator.
    quirk_grid = next(grid for grid in base.grids if grid.slug == "quirks-edge-cases")
    in_quirk_grid = {row.package_id for row in base.grid_packages if row.grid_id == quirk_grid.id}
    plain = [row for row in base.packages if row.id not in in_quirk_grid]
    step = len(plain) // 24
    chosen = [plain[i * step] for i in range(24)]
    changed: dict[int, PackageRow] = {row.id: row for row in base.packages}

    def change(row: PackageRow, **fields: Any) -> None:
        changed[row.id] = dataclasses.replace(changed[row.id], **fields)

    for row, (title, slug, description) in zip(chosen, RENAMED, strict=False):
        change(row, title=title, slug=slug, repo_description=description)
    for row in chosen[0:5]:
        change(row, repo_watchers=TIE_WATCHERS)
    for row in chosen[3:7]:
        change(row, repo_forks=TIE_FORKS)
    for row in chosen[6:9]:
        change(row, last_commit_date=TIE_DATE)
    for row in (chosen[1], chosen[10], chosen[11]):
        change(row, last_commit_date=None)
    for row in chosen[12:14]:
        change(row, created=TIE_CREATED)
    for row in chosen[14:16]:
        change(row, modified=TIE_MODIFIED)

    # A second category with the slug "apps", as many packages as the smallest one.
    legacy = Category(
        id=7,
        title="apps (legacy)",
        slug="apps",
        description="Apps from before the split.",
        title_plural="Apps (legacy)",
        show_pypi=True,
        created=datetime(2019, 1, 2, 3, 4, 5, 600_000, tzinfo=UTC),
        modified=datetime(2021, 1, 2, 3, 4, 5, 600_000, tzinfo=UTC),
    )
    sizes = Counter(row.category_id for row in base.packages)
    smallest = min(sizes.values())
    apps = [row for row in changed.values() if row.category_id == 1]
    for row in apps[3 :: len(apps) // smallest][:smallest]:
        change(row, category_id=legacy.id)

    grids = list(base.grids)
    for id_, title, slug in NEW_GRIDS:
        created = datetime(2020, 1, 1, tzinfo=UTC) + timedelta(days=id_, microseconds=id_)
        grids.append(Grid(id_, title, slug, f"The {title} grid.", False, False, created, NOW))
    members = Counter(row.grid_id for row in base.grid_packages)
    ids = sorted(changed)
    pairs = [(12, id_) for id_ in rng.sample(ids, min(members.values()))]  # a tie in size
    pairs += [(15, id_) for id_ in rng.sample(ids, 12)]
    rng.shuffle(pairs)
    # Membership-row order is not grid id order: a package joins grid 12, then grid 1.
    joined_first = {row.package_id for row in base.grid_packages if row.grid_id == base.grids[0].id}
    late = next(id_ for grid_id, id_ in pairs if grid_id == 12 and id_ not in joined_first)
    pairs.append((base.grids[0].id, late))
    memberships = list(base.grid_packages)
    row_id = memberships[-1].id
    for grid_id, package_id in pairs:
        row_id += rng.randint(1, 3)
        memberships.append(GridPackageRow(row_id, grid_id, package_id, NOW, NOW))
    return dataclasses.replace(
        base,
        categories=(*base.categories, legacy),
        packages=tuple(changed[id_] for id_ in ids),
        grids=tuple(grids),
        grid_packages=tuple(memberships),
    )


DATA = derive(generate(scale=0.02))


# -- the brute force -----------------------------------------------------------------------


def instant(value: str | None) -> datetime | None:
    """A DateTime argument as the instant it names; a naive one is in the site's time zone."""
    if value is None:
        return None
    parsed = datetime.fromisoformat(value)
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=SITE)


def ordered(rows: Iterable[Any], key: Callable[[Any], Any], descending: bool) -> list[int]:
    """Ids by key, ties by id the same way; a None key last in either direction."""
    rows = list(rows)
    known = sorted(
        (row for row in rows if key(row) is not None),
        key=lambda row: (key(row), row.id),
        reverse=descending,
    )
    nulls = sorted((row for row in rows if key(row) is None), key=lambda row: row.id)
    if descending:
        nulls.reverse()
    return [row.id for row in known + nulls]


class Model:
    """What every list must answer, computed from the dataset's rows."""

    def __init__(self, data: Dataset) -> None:
        self.data = data
        self.package = {row.id: row for row in data.packages}
        self.grid = {row.id: row for row in data.grids}
        self.category = {row.id: row for row in data.categories}
        numbers = {row.id: row.number for row in data.versions}
        self.pypi = {
            row.id: None if row.latest_version_id is None else numbers[row.latest_version_id]
            for row in data.packages
        }
        self.members: dict[int, list[int]] = {row.id: [] for row in data.grids}
        self.grids_of: dict[int, list[int]] = {row.id: [] for row in data.packages}
        for membership in sorted(data.grid_packages, key=lambda row: row.id):
            self.members[membership.grid_id].append(membership.package_id)
            self.grids_of[membership.package_id].append(membership.grid_id)
        self.in_category: dict[int, list[int]] = {row.id: [] for row in data.categories}
        for row in data.packages:
            self.in_category[row.category_id].append(row.id)

    def passes(self, row: PackageRow, given: Filter | None) -> bool:
        given = given or {}
        category, grids = given.get("category"), given.get("grids") or ()
        if category is not None and self.category[row.category_id].slug != category:
            return False
        mine = {self.grid[grid_id].slug for grid_id in self.grids_of[row.id]}
        if not set(grids) <= mine:
            return False
        text = "\n".join((row.title.lower(), row.slug.lower(), row.repo_description.lower()))
        if any(word.lower() not in text for word in (given.get("query") or "").split()):
            return False
        has_release = given.get("hasPypiRelease")
        if has_release is not None and (self.pypi[row.id] is not None) != has_release:
            return False
        after, before = instant(given.get("updatedAfter")), instant(given.get("updatedBefore"))
        updated = row.last_commit_date
        if after is not None and (updated is None or not updated > after):
            return False
        if before is not None and (updated is None or not updated < before):
            return False
        least = given.get("minWatchers")
        return least is None or row.repo_watchers >= least

    def packages(
        self,
        given: Filter | None = None,
        order: OrderArg | None = None,
        among: Iterable[int] | None = None,
        default: Callable[[PackageRow], Any] = lambda row: -row.id,
    ) -> list[int]:
        """The ids a package list answers: `among` (all) filtered, ordered or by `default`."""
        ids = self.package if among is None else among
        rows = [self.package[id_] for id_ in ids if self.passes(self.package[id_], given)]
        if order is None:
            return [row.id for row in sorted(rows, key=default)]
        keys: dict[str, Callable[[PackageRow], Any]] = {
            "TITLE": lambda row: row.title.lower(),
            "REPO_WATCHERS": lambda row: row.repo_watchers,
            "REPO_FORKS": lambda row: row.repo_forks,
            "LAST_UPDATED": lambda row: row.last_commit_date,
            "CREATED": lambda row: row.created,
            "MODIFIED": lambda row: row.modified,
            "ID": lambda row: row.id,
        }
        return ordered(rows, keys[order["field"]], descending(order))

    def of_category(
        self, id_: int, given: Filter | None = None, order: OrderArg | None = None
    ) -> list[int]:
        return self.packages(given, order, self.in_category[id_])

    def of_grid(
        self, id_: int, given: Filter | None = None, order: OrderArg | None = None
    ) -> list[int]:
        by_title = self.package_title_bytes
        return self.packages(given, order, self.members[id_], by_title)

    @staticmethod
    def package_title_bytes(row: PackageRow) -> tuple[bytes, int]:
        return row.title.encode(), row.id

    def grids(self, order: OrderArg | None = None, among: Iterable[int] | None = None) -> list[int]:
        """Grid ids: all by id descending, or `among` in their own order, unless ordered."""
        ids = sorted(self.grid, reverse=True) if among is None else list(among)
        if order is None:
            return ids
        keys: dict[str, Callable[[Grid], Any]] = {
            "TITLE": lambda row: row.title.lower(),
            "PACKAGE_COUNT": lambda row: len(self.members[row.id]),
            "ID": lambda row: row.id,
        }
        return ordered((self.grid[id_] for id_ in ids), keys[order["field"]], descending(order))

    def grids_of_package(self, id_: int, order: OrderArg | None = None) -> list[int]:
        return self.grids(order, self.grids_of[id_])

    def categories(self, order: OrderArg | None = None) -> list[int]:
        if order is None:
            return sorted(self.category, reverse=True)
        keys: dict[str, Callable[[Category], Any]] = {
            "TITLE": lambda row: row.title.lower(),
            "PACKAGE_COUNT": lambda row: len(self.in_category[row.id]),
            "ID": lambda row: row.id,
        }
        return ordered(self.category.values(), keys[order["field"]], descending(order))


def descending(order: OrderArg) -> bool:
    return order.get("direction", "ASC") == "DESC"


MODEL = Model(DATA)

BUSIEST = max(MODEL.grids_of, key=lambda id_: (len(MODEL.grids_of[id_]), id_))
APPS = 1
QUIRKS = "quirks-edge-cases"
QUIRKS_ID = next(row.id for row in DATA.grids if row.slug == QUIRKS)
RELEASED: Filter = {"hasPypiRelease": True}
UNRELEASED: Filter = {"hasPypiRelease": False}
POPULAR: Filter = {"minWatchers": 10}


def _order(field: str, direction: str = "ASC") -> OrderArg:
    return {"field": field, "direction": direction}


# -- the backends --------------------------------------------------------------------------


@dataclass
class Gateway:
    """One backend, loaded with a dataset, and a way to run GraphQL against it."""

    name: str
    backend: Callable[[], Backend]
    engine: AsyncEngine | None = None
    features: SqlFeatures | None = None
    upstream: FakeUpstream | None = None

    async def run(self, document: str, **variables: Any) -> dict[str, Any]:
        """The response body, as a client would read it."""
        context = Context(Loaders(self.backend()))
        result = await SCHEMA.execute(document, variable_values=variables, context_value=context)
        return dict(response_body(result))

    async def data(self, document: str, **variables: Any) -> dict[str, Any]:
        body = await self.run(document, **variables)
        assert "errors" not in body, body["errors"]
        data: dict[str, Any] = body["data"]
        return data


@dataclass
class Loaded:
    """A dataset on all three backends, each opened when first asked for, closed together."""

    data: Dataset
    directory: Path
    stack: AsyncExitStack = dataclasses.field(default_factory=AsyncExitStack)
    opened: dict[str, Gateway] = dataclasses.field(default_factory=dict)

    async def gateway(self, name: str) -> Gateway:
        if name not in self.opened:
            opener = {"rest": self._rest, "sqlite": self._sqlite, "postgres": self._postgres}
            self.opened[name] = await opener[name]()
        return self.opened[name]

    async def _rest(self) -> Gateway:
        upstream = self.stack.enter_context(serve_upstream(self.data))
        settings = Settings(upstream=upstream.base_url)
        factory = await self.stack.enter_async_context(open_backend(settings))
        return Gateway("rest", factory, upstream=upstream)

    async def _sqlite(self) -> Gateway:
        engine = create_engine(f"sqlite:///{self.directory / 'filters.sqlite3'}")
        self.stack.push_async_callback(engine.dispose)
        return await self._loaded("sqlite", engine)

    async def _postgres(self) -> Gateway:
        engine = postgres_engine(await self.stack.enter_async_context(new_schema()))
        self.stack.push_async_callback(engine.dispose)
        return await self._loaded("postgres", engine)

    async def _loaded(self, name: str, engine: AsyncEngine) -> Gateway:
        await load(engine, self.data)
        features = await inspect_database(engine)
        return Gateway(name, lambda: SqlBackend(engine, features), engine, features)


@pytest.fixture(scope="module")
async def small(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Loaded]:
    loaded = Loaded(DATA, tmp_path_factory.mktemp("filters"))
    async with loaded.stack:
        yield loaded


@pytest.fixture(params=BACKENDS)
async def gateway(request: pytest.FixtureRequest, small: Loaded) -> Gateway:
    """Each backend in turn, loaded with `DATA`."""
    return await small.gateway(request.param)


def codes(body: dict[str, Any]) -> list[str]:
    return [error["extensions"]["code"] for error in body.get("errors", [])]


# -- every list, filtered and ordered ------------------------------------------------------

PAGE = "totalCount pageInfo { hasNextPage hasPreviousPage startCursor endCursor }"
PAGE += " edges { cursor node { databaseId } }"

LISTS = """query($filter: PackageFilter, $order: PackageOrder) {
  packages(first: 100, filter: $filter, orderBy: $order) { %s }
  categories { nodes { databaseId packages(first: 100, filter: $filter, orderBy: $order) { %s } } }
  grids(first: 100) { nodes { databaseId packages(first: 100, filter: $filter, orderBy: $order) {
    %s } } }
}""" % (PAGE, PAGE, PAGE)
MORE = (
    """query($filter: PackageFilter, $order: PackageOrder, $after: String) {
  packages(first: 100, after: $after, filter: $filter, orderBy: $order) { %s }
}"""
    % PAGE
)

AFTER = NOW.replace(year=NOW.year - 1, month=1, day=1, hour=0, minute=0, second=0)

# name: (filter, whether some but not all packages pass it)
FILTERS: dict[str, tuple[Filter | None, bool]] = {
    "null": (None, False),
    "all fields null": ({"category": None, "grids": None, "query": None}, False),
    "empty grids and query": ({"grids": [], "query": " \t "}, False),
    "category": ({"category": "frameworks"}, True),
    "category slug of two categories": ({"category": "apps"}, True),
    "category slug is case-sensitive": ({"category": "Apps"}, False),
    "unknown category": ({"category": "nope"}, False),
    "one grid": ({"grids": ["quirks-edge-cases"]}, True),
    "two grids": ({"grids": ["admin-interface", "quirks-edge-cases"]}, True),
    "a repeated grid": ({"grids": ["i18n", "i18n"]}, True),
    "an unknown grid": ({"grids": ["admin-interface", "nope"]}, False),
    "the empty grid": ({"grids": ["empty-shelf"]}, False),
    "query": ({"query": "django"}, True),
    "query words anywhere": ({"query": "COVERAGE lines 100%"}, True),
    "query by slug only": ({"query": "nihongo"}, True),
    "query by description only": ({"query": "bosphorus"}, True),
    "query with unicode spaces": ({"query": "\u3000Django\u00a0FOO\n"}, True),
    "query dotted capital I": ({"query": "İSTANBUL"}, True),
    "query dotless": ({"query": "istanbul"}, False),
    "query final sigma": ({"query": "σοφος"}, True),
    "query sigma": ({"query": "σοφοσ"}, False),
    "query upper greek": ({"query": "ΣΟΦΟΣ"}, True),
    "query sharp s": ({"query": "ßtrasse"}, True),
    "query kelvin sign": ({"query": "kelvin"}, True),
    "query digraph": ({"query": "ǆango"}, True),
    "query accented": ({"query": "ÉCLAIR"}, True),
    "query cyrillic": ({"query": "ДЖАНГО"}, True),
    "query emoji": ({"query": "🚀"}, True),
    "query underscore": ({"query": "_"}, True),
    "query percent": ({"query": "%"}, True),
    "query backslash": ({"query": "\\d+"}, True),
    "query quote": ({"query": "o'reilly's"}, True),
    "query glob star": ({"query": "*"}, True),
    "query glob class": ({"query": "[brackets]"}, True),
    "query across fields": ({"query": "lastzzz"}, False),
    "query of nothing": ({"query": "xyzzy-plugh"}, False),
    "has a release": ({"hasPypiRelease": True}, True),
    "has no release": ({"hasPypiRelease": False}, True),
    "updated after": ({"updatedAfter": TIE_DATE.isoformat()}, True),
    "updated after, other offset": (
        {"updatedAfter": TIE_DATE.astimezone(ZoneInfo("Asia/Kolkata")).isoformat()},
        True,
    ),
    "updated before": ({"updatedBefore": TIE_DATE.isoformat()}, True),
    "updated after, a microsecond before": (
        {"updatedAfter": (TIE_DATE - timedelta(microseconds=1)).isoformat()},
        True,
    ),
    "updated before, a microsecond after": (
        {"updatedBefore": (TIE_DATE + timedelta(microseconds=1)).isoformat()},
        True,
    ),
    "updated before, site time": ({"updatedBefore": "2016-06-01T12:00:00"}, True),
    "updated between": (
        {"updatedAfter": "2019-01-01T00:00:00+00:00", "updatedBefore": TIE_DATE.isoformat()},
        True,
    ),
    "min watchers": ({"minWatchers": TIE_WATCHERS}, True),
    "min watchers zero": ({"minWatchers": 0}, False),
    "min watchers negative": ({"minWatchers": -1}, False),
    "min watchers above all": ({"minWatchers": 10**9}, False),
}
COMBINED: dict[str, tuple[Filter | None, bool]] = {
    "category, release, watchers": (
        {"category": "apps", "hasPypiRelease": True, "minWatchers": 20},
        True,
    ),
    "grid, query, updated": (
        {"grids": ["quirks-edge-cases"], "query": "django", "updatedAfter": "2015-01-01T00:00Z"},
        True,
    ),
    "grids and no release": ({"grids": ["admin-interface"], "hasPypiRelease": False}, True),
    "query and updated before": ({"query": "e", "updatedBefore": AFTER.isoformat()}, True),
    "every field": (
        {
            "category": "apps",
            "grids": ["quirks-edge-cases"],
            "query": "o",
            "hasPypiRelease": True,
            "updatedAfter": "2012-01-01T00:00:00Z",
            "updatedBefore": NOW.isoformat(),
            "minWatchers": 2,
        },
        True,
    ),
}
PACKAGE_FIELDS = [
    "TITLE",
    "REPO_WATCHERS",
    "REPO_FORKS",
    "LAST_UPDATED",
    "CREATED",
    "MODIFIED",
    "ID",
]
ORDERS: dict[str, OrderArg] = {
    f"{field} {direction}": {"field": field, "direction": direction}
    for field in PACKAGE_FIELDS
    for direction in ("ASC", "DESC")
}
ORDERS["TITLE (default direction)"] = {"field": "TITLE"}

LIST_CASES: dict[str, tuple[Filter | None, OrderArg | None]] = {
    **{f"filter {name}": (given, None) for name, (given, _) in FILTERS.items()},
    **{f"filter {name}": (given, None) for name, (given, _) in COMBINED.items()},
    **{f"order {name}": (None, order) for name, order in ORDERS.items()},
    **{
        f"filtered, order {name}": (COMBINED["category, release, watchers"][0], order)
        for name, order in ORDERS.items()
    },
    **{
        f"{name}, order {order_name}": (given, ORDERS[order_name])
        for (name, (given, _)), order_name in zip(
            COMBINED.items(),
            ("LAST_UPDATED DESC", "TITLE ASC", "REPO_WATCHERS DESC", "LAST_UPDATED ASC", "ID DESC"),
            strict=True,
        )
    },
}


def check_page(connection: dict[str, Any], expected: list[int], what: str) -> None:
    """A first page of 100 against the whole expected list."""
    ids = [edge["node"]["databaseId"] for edge in connection["edges"]]
    assert ids == expected[:100], what
    assert connection["totalCount"] == len(expected), what
    assert connection["pageInfo"]["hasNextPage"] == (len(expected) > 100), what
    assert not connection["pageInfo"]["hasPreviousPage"], what


@pytest.mark.parametrize("case", LIST_CASES)
async def test_every_list_filtered_and_ordered(gateway: Gateway, case: str) -> None:
    given, order = LIST_CASES[case]
    data = await gateway.data(LISTS, filter=given, order=order)

    expected = MODEL.packages(given, order)
    connection = data["packages"]
    ids = [edge["node"]["databaseId"] for edge in connection["edges"]]
    check_page(connection, expected, "packages")
    while connection["pageInfo"]["hasNextPage"]:
        after = connection["pageInfo"]["endCursor"]
        connection = (await gateway.data(MORE, filter=given, order=order, after=after))["packages"]
        assert connection["totalCount"] == len(expected)
        ids += [edge["node"]["databaseId"] for edge in connection["edges"]]
    assert ids == expected

    categories = data["categories"]["nodes"]
    assert sorted(node["databaseId"] for node in categories) == sorted(MODEL.category)
    for node in categories:
        wanted = MODEL.of_category(node["databaseId"], given, order)
        check_page(node["packages"], wanted, f"category {node['databaseId']}")
    grids = data["grids"]["nodes"]
    assert sorted(node["databaseId"] for node in grids) == sorted(MODEL.grid)
    for node in grids:
        wanted = MODEL.of_grid(node["databaseId"], given, order)
        check_page(node["packages"], wanted, f"grid {node['databaseId']}")


FIELDS = """
    databaseId title slug lastUpdated lastFetched repoUrl pypiVersion created modified
    repoForks repoDescription pypiUrl documentationUrl repoWatchers commitsOver52 participants
    category { databaseId slug } gridCount
"""
GRID_FIELDS = "databaseId title slug description isLocked header created modified packageCount"
RECORDS = """query($filter: PackageFilter, $order: PackageOrder, $gorder: GridOrder,
    $corder: CategoryOrder) {
  packages(first: 100, filter: $filter, orderBy: $order) { nodes { %s } }
  grid(slug: "quirks-edge-cases") { packages(first: 100, filter: $filter, orderBy: $order) {
    nodes { %s } } }
  category(id: 7) { packages(first: 100, filter: $filter, orderBy: $order) { nodes { %s } } }
  grids(first: 100, orderBy: $gorder) { nodes { %s } }
  categories(orderBy: $corder) { nodes { databaseId title slug description titlePlural showPypi
    created modified packageCount } }
  empty: packages(first: 0, filter: $filter, orderBy: $order) { totalCount edges { cursor } }
}""" % (FIELDS, FIELDS, FIELDS, GRID_FIELDS)


@pytest.mark.parametrize(
    "order", [_order("TITLE"), _order("LAST_UPDATED", "DESC")], ids=["title", "last updated"]
)
async def test_filtered_and_ordered_records_are_whole(gateway: Gateway, order: OrderArg) -> None:
    """The records of a filtered, ordered page are the rows' own, every field of them."""
    given: Filter = {"query": "a", "minWatchers": 3}
    data = await gateway.data(
        RECORDS, filter=given, order=order, gorder=_order("PACKAGE_COUNT"), corder=_order("TITLE")
    )
    pages = (
        (data["packages"]["nodes"], MODEL.packages(given, order)),
        (data["grid"]["packages"]["nodes"], MODEL.of_grid(QUIRKS_ID, given, order)),
        (data["category"]["packages"]["nodes"], MODEL.of_category(7, given, order)),
    )
    for nodes, expected in pages:
        assert [node["databaseId"] for node in nodes] == expected[:100]
        for node in nodes:
            row = MODEL.package[node["databaseId"]]
            served = {
                key: value for key, value in node.items() if key not in ("category", "gridCount")
            }
            assert parse_datetimes(served, PACKAGE_DATETIMES) == package_fields(DATA, row)
            assert node["category"] == {
                "databaseId": row.category_id,
                "slug": MODEL.category[row.category_id].slug,
            }
            assert node["gridCount"] == len(MODEL.grids_of[row.id])
    assert [node["databaseId"] for node in data["grids"]["nodes"]] == MODEL.grids(
        _order("PACKAGE_COUNT")
    )
    for node in data["grids"]["nodes"]:
        grid = MODEL.grid[node["databaseId"]]
        assert (node["title"], node["slug"], node["description"]) == (
            grid.title,
            grid.slug,
            grid.description,
        )
        assert (node["isLocked"], node["header"]) == (grid.is_locked, grid.header)
        assert (when(node["created"]), when(node["modified"])) == (grid.created, grid.modified)
        assert node["packageCount"] == len(MODEL.members[grid.id])
    assert [node["databaseId"] for node in data["categories"]["nodes"]] == MODEL.categories(
        _order("TITLE")
    )
    for node in data["categories"]["nodes"]:
        category = MODEL.category[node["databaseId"]]
        assert (node["title"], node["slug"], node["titlePlural"]) == (
            category.title,
            category.slug,
            category.title_plural,
        )
        assert (node["description"], node["showPypi"]) == (category.description, category.show_pypi)
        assert (when(node["created"]), when(node["modified"])) == (
            category.created,
            category.modified,
        )
        assert node["packageCount"] == len(MODEL.in_category[category.id])
    assert data["empty"] == {"totalCount": len(MODEL.packages(given)), "edges": []}


# A database the gateway does not own has no key tables: lower() stands in for str.lower,
# which agrees with it on ASCII words and on orders by anything but the title.
WITHOUT_KEY_TABLES = (
    "filter query",
    "filter query words anywhere",
    "filter query underscore",
    "filter query percent",
    "filter query backslash",
    "filter query quote",
    "filter query across fields",
    "filter category slug of two categories",
    "filter two grids",
    "order LAST_UPDATED ASC",
    "order REPO_FORKS DESC",
    "filtered, order LAST_UPDATED DESC",
    "grids and no release, order REPO_WATCHERS DESC",
)


@pytest.mark.parametrize("case", WITHOUT_KEY_TABLES)
@pytest.mark.parametrize("name", ["sqlite", "postgres"])
async def test_a_database_without_key_tables(small: Loaded, name: str, case: str) -> None:
    loaded = await small.gateway(name)
    assert loaded.engine is not None and loaded.features is not None
    engine, features = loaded.engine, dataclasses.replace(loaded.features, sort_keys=False)
    gateway = Gateway(f"{name} without key tables", lambda: SqlBackend(engine, features))
    given, order = LIST_CASES[case]
    data = await gateway.data(LISTS, filter=given, order=order)
    check_page(data["packages"], MODEL.packages(given, order), "packages")
    for node in data["categories"]["nodes"]:
        wanted = MODEL.of_category(node["databaseId"], given, order)
        check_page(node["packages"], wanted, f"category {node['databaseId']}")
    for node in data["grids"]["nodes"]:
        wanted = MODEL.of_grid(node["databaseId"], given, order)
        check_page(node["packages"], wanted, f"grid {node['databaseId']}")


def test_the_filters_select_something() -> None:
    """A filter that keeps every package or none tells little: most keep some, not all."""
    every = len(DATA.packages)
    for name, (given, some) in {**FILTERS, **COMBINED}.items():
        size = len(MODEL.packages(given))
        assert (0 < size < every) == some, (name, size)
    # In the relations too: some grid and some category keep part of their packages.
    for name, (given, _) in COMBINED.items():
        for kept, everything in (
            *((MODEL.of_grid(id_, given), MODEL.members[id_]) for id_ in MODEL.grid),
            *((MODEL.of_category(id_, given), MODEL.in_category[id_]) for id_ in MODEL.category),
        ):
            if 0 < len(kept) < len(everything):
                break
        else:
            raise AssertionError(f"{name}: every relation keeps all or nothing")


GRID_ORDERS: dict[str, OrderArg | None] = {"none": None}
GRID_ORDERS |= {
    f"{field} {direction}": {"field": field, "direction": direction}
    for field in ("TITLE", "PACKAGE_COUNT", "ID")
    for direction in ("ASC", "DESC")
}

GRIDS_ORDERED = """query($order: GridOrder, $corder: CategoryOrder, $after: String) {
  grids(first: 100, orderBy: $order) { totalCount nodes { databaseId } }
  categories(orderBy: $corder) { totalCount nodes { databaseId } }
  packages(first: 100, after: $after) { pageInfo { hasNextPage endCursor } nodes {
    databaseId grids(first: 20, orderBy: $order) { totalCount nodes { databaseId } } } }
}"""


@pytest.mark.parametrize("name", GRID_ORDERS)
async def test_grids_and_categories_ordered(gateway: Gateway, name: str) -> None:
    order = GRID_ORDERS[name]
    after = None
    seen: set[int] = set()
    while True:
        data = await gateway.data(GRIDS_ORDERED, order=order, corder=order, after=after)
        assert [node["databaseId"] for node in data["grids"]["nodes"]] == MODEL.grids(order)
        assert data["grids"]["totalCount"] == len(MODEL.grid)
        assert [node["databaseId"] for node in data["categories"]["nodes"]] == MODEL.categories(
            order
        )
        assert data["categories"]["totalCount"] == len(MODEL.category)
        for node in data["packages"]["nodes"]:
            wanted = MODEL.grids_of_package(node["databaseId"], order)
            got = [grid["databaseId"] for grid in node["grids"]["nodes"]]
            assert (got, node["grids"]["totalCount"]) == (wanted, len(wanted)), node["databaseId"]
            seen.add(node["databaseId"])
        if not data["packages"]["pageInfo"]["hasNextPage"]:
            break
        after = data["packages"]["pageInfo"]["endCursor"]
    assert seen == set(MODEL.package)


COUNTS = """query($after: String) {
  categories { nodes { databaseId packageCount } }
  grids(first: 100) { nodes { databaseId packageCount } }
  packages(first: 100, after: $after) { pageInfo { hasNextPage endCursor }
    nodes { databaseId gridCount } }
  a: category(id: 7) { packageCount }
  g: grid(slug: "empty-shelf") { packageCount packages { totalCount } }
}"""


async def test_counts(gateway: Gateway) -> None:
    data = await gateway.data(COUNTS)
    assert {node["databaseId"]: node["packageCount"] for node in data["categories"]["nodes"]} == {
        id_: len(ids) for id_, ids in MODEL.in_category.items()
    }
    assert {node["databaseId"]: node["packageCount"] for node in data["grids"]["nodes"]} == {
        id_: len(ids) for id_, ids in MODEL.members.items()
    }
    assert data["a"] == {"packageCount": len(MODEL.in_category[7])}
    assert data["g"] == {"packageCount": 0, "packages": {"totalCount": 0}}
    grid_counts: dict[int, int] = {}
    while True:
        grid_counts |= {node["databaseId"]: node["gridCount"] for node in data["packages"]["nodes"]}
        if not data["packages"]["pageInfo"]["hasNextPage"]:
            break
        data = await gateway.data(COUNTS, after=data["packages"]["pageInfo"]["endCursor"])
    assert grid_counts == {id_: len(ids) for id_, ids in MODEL.grids_of.items()}


@pytest.mark.parametrize("name", ["sqlite", "postgres"])
async def test_counts_are_batched(small: Loaded, name: str) -> None:
    """One statement per level, whatever the number of parents: never one per parent."""
    gateway = await small.gateway(name)
    assert gateway.engine is not None
    async with statements(gateway.engine) as sent:
        await gateway.data(
            "{ grids(first: 100) { nodes { packageCount packages(first: 3) { totalCount"
            " nodes { gridCount grids(first: 2) { nodes { packageCount } } } } } } }"
        )
    # The grids; their package windows and counts; those packages' grid windows and counts;
    # those grids' counts: four levels, with a statement to spare.
    assert len(sent) <= 5, sent


# -- paging to the end ---------------------------------------------------------------------


@dataclass(frozen=True)
class Paged:
    """A connection paged with `first`/`after`: where it is, and what it must hold."""

    document: str
    path: tuple[str, ...]
    first: int
    expected: list[int]
    variables: dict[str, Any] = dataclasses.field(default_factory=dict)


TOP = (
    """query($first: Int, $after: String, $last: Int, $before: String, $filter: PackageFilter,
  $order: PackageOrder) {
  x: packages(first: $first, after: $after, last: $last, before: $before, filter: $filter,
    orderBy: $order) { %s } }"""
    % PAGE
)
IN_CATEGORY = (
    """query($id: Int!, $first: Int, $after: String, $last: Int, $before: String,
  $filter: PackageFilter, $order: PackageOrder) { category(id: $id) {
  x: packages(first: $first, after: $after, last: $last, before: $before, filter: $filter,
    orderBy: $order) { %s } } }"""
    % PAGE
)
IN_GRID = (
    """query($slug: String!, $first: Int, $after: String, $last: Int, $before: String,
  $filter: PackageFilter, $order: PackageOrder) { grid(slug: $slug) {
  x: packages(first: $first, after: $after, last: $last, before: $before, filter: $filter,
    orderBy: $order) { %s } } }"""
    % PAGE
)
GRIDS_OF = (
    """query($id: Int!, $first: Int, $after: String, $last: Int, $before: String,
  $order: GridOrder) { package(id: $id) {
  x: grids(first: $first, after: $after, last: $last, before: $before, orderBy: $order) {
    %s } } }"""
    % PAGE
)
GRID_LIST = (
    """query($first: Int, $after: String, $last: Int, $before: String, $order: GridOrder) {
  x: grids(first: $first, after: $after, last: $last, before: $before, orderBy: $order) {
    %s } }"""
    % PAGE
)
CATEGORY_LIST = (
    """query($first: Int, $after: String, $last: Int, $before: String,
  $order: CategoryOrder) {
  x: categories(first: $first, after: $after, last: $last, before: $before, orderBy: $order) {
    %s } }"""
    % PAGE
)

PAGED: dict[str, Paged] = {
    "packages": Paged(TOP, ("x",), 25, MODEL.packages()),
    "packages by title": Paged(
        TOP, ("x",), 9, MODEL.packages(None, _order("TITLE")), {"order": _order("TITLE")}
    ),
    "released packages by last update": Paged(
        TOP,
        ("x",),
        7,
        MODEL.packages(RELEASED, _order("LAST_UPDATED", "DESC")),
        {"filter": RELEASED, "order": _order("LAST_UPDATED", "DESC")},
    ),
    "packages matching, by watchers": Paged(
        TOP,
        ("x",),
        5,
        MODEL.packages({"query": "django"}, _order("REPO_WATCHERS")),
        {"filter": {"query": "django"}, "order": _order("REPO_WATCHERS")},
    ),
    "all packages by last update, nulls on the last pages": Paged(
        TOP,
        ("x",),
        8,
        MODEL.packages(None, _order("LAST_UPDATED")),
        {"filter": {"minWatchers": 0}, "order": _order("LAST_UPDATED")},
    ),
    "a category's packages": Paged(
        IN_CATEGORY, ("category", "x"), 10, MODEL.of_category(APPS), {"id": APPS}
    ),
    "a category's popular packages by last update": Paged(
        IN_CATEGORY,
        ("category", "x"),
        4,
        MODEL.of_category(APPS, POPULAR, _order("LAST_UPDATED")),
        {"id": APPS, "filter": POPULAR, "order": _order("LAST_UPDATED")},
    ),
    "a grid's packages": Paged(
        IN_GRID, ("grid", "x"), 6, MODEL.of_grid(QUIRKS_ID), {"slug": QUIRKS}
    ),
    "a grid's packages by title, descending": Paged(
        IN_GRID,
        ("grid", "x"),
        4,
        MODEL.of_grid(QUIRKS_ID, None, _order("TITLE", "DESC")),
        {"slug": QUIRKS, "order": _order("TITLE", "DESC")},
    ),
    "a grid's unreleased packages by forks": Paged(
        IN_GRID,
        ("grid", "x"),
        3,
        MODEL.of_grid(QUIRKS_ID, UNRELEASED, _order("REPO_FORKS", "DESC")),
        {"slug": QUIRKS, "filter": UNRELEASED, "order": _order("REPO_FORKS", "DESC")},
    ),
    "a package's grids": Paged(
        GRIDS_OF, ("package", "x"), 1, MODEL.grids_of[BUSIEST], {"id": BUSIEST}
    ),
    "a package's grids by size": Paged(
        GRIDS_OF,
        ("package", "x"),
        2,
        MODEL.grids_of_package(BUSIEST, _order("PACKAGE_COUNT", "DESC")),
        {"id": BUSIEST, "order": _order("PACKAGE_COUNT", "DESC")},
    ),
    "grids": Paged(GRID_LIST, ("x",), 5, MODEL.grids()),
    "grids by title": Paged(
        GRID_LIST, ("x",), 3, MODEL.grids(_order("TITLE")), {"order": _order("TITLE")}
    ),
    "grids by size": Paged(
        GRID_LIST,
        ("x",),
        4,
        MODEL.grids(_order("PACKAGE_COUNT")),
        {"order": _order("PACKAGE_COUNT")},
    ),
    "categories": Paged(CATEGORY_LIST, ("x",), 2, MODEL.categories()),
    "categories by size": Paged(
        CATEGORY_LIST,
        ("x",),
        2,
        MODEL.categories(_order("PACKAGE_COUNT", "DESC")),
        {"order": _order("PACKAGE_COUNT", "DESC")},
    ),
    "categories by title": Paged(
        CATEGORY_LIST,
        ("x",),
        2,
        MODEL.categories(_order("TITLE", "DESC")),
        {"order": _order("TITLE", "DESC")},
    ),
}


def dig(data: dict[str, Any], path: tuple[str, ...]) -> dict[str, Any]:
    for key in path:
        data = data[key]
    return data


@pytest.mark.parametrize("name", PAGED)
async def test_paging_to_the_end(gateway: Gateway, name: str) -> None:
    case = PAGED[name]
    whole = case.expected
    assert len(whole) > 2 * case.first, "a case of one or two pages pages little"
    ids: list[int] = []
    cursors: list[str] = []
    after = None
    for number in range(len(whole) // case.first + 2):
        data = await gateway.data(case.document, first=case.first, after=after, **case.variables)
        connection = dig(data, case.path)
        page = [edge["node"]["databaseId"] for edge in connection["edges"]]
        offset = len(ids)
        assert page == whole[offset : offset + case.first], f"page {number}"
        assert connection["totalCount"] == len(whole), f"page {number}"
        info = connection["pageInfo"]
        assert info["hasPreviousPage"] == (offset > 0)
        assert info["hasNextPage"] == (offset + case.first < len(whole))
        assert info["startCursor"] == connection["edges"][0]["cursor"]
        assert info["endCursor"] == connection["edges"][-1]["cursor"]
        ids += page
        cursors += [edge["cursor"] for edge in connection["edges"]]
        if not info["hasNextPage"]:
            break
        after = info["endCursor"]
    assert ids == whole
    assert len(set(cursors)) == len(cursors)
    # The last cursor is still a place in the list: after it, an empty page with the total.
    data = await gateway.data(case.document, first=case.first, after=cursors[-1], **case.variables)
    past = dig(data, case.path)
    assert (past["edges"], past["totalCount"]) == ([], len(whole))
    assert not past["pageInfo"]["hasNextPage"]


@pytest.mark.parametrize("name", PAGED)
async def test_paging_backward_to_the_start(gateway: Gateway, name: str) -> None:
    """`last`/`before` from the end to the start: the same list, read from its end, with
    `hasPreviousPage` exact and `hasNextPage` true once a `before` cursor leaves edges behind."""
    case = PAGED[name]
    whole = case.expected
    ids: list[int] = []
    before = None
    for number in range(len(whole) // case.first + 2):
        data = await gateway.data(case.document, last=case.first, before=before, **case.variables)
        connection = dig(data, case.path)
        page = [edge["node"]["databaseId"] for edge in connection["edges"]]
        end = len(whole) - len(ids)
        assert page == whole[max(0, end - case.first) : end], f"page {number}"
        assert connection["totalCount"] == len(whole), f"page {number}"
        info = connection["pageInfo"]
        assert info["hasPreviousPage"] == (end - case.first > 0), f"page {number}"
        assert info["hasNextPage"] == (before is not None), f"page {number}"
        assert info["startCursor"] == connection["edges"][0]["cursor"]
        assert info["endCursor"] == connection["edges"][-1]["cursor"]
        ids = page + ids
        if not info["hasPreviousPage"]:
            break
        before = info["startCursor"]
    assert ids == whole
    # Forward and backward meet: the page before a forward page's start is the one before it.
    data = await gateway.data(case.document, first=case.first, **case.variables)
    second = dig(
        await gateway.data(
            case.document,
            first=case.first,
            after=dig(data, case.path)["pageInfo"]["endCursor"],
            **case.variables,
        ),
        case.path,
    )
    back = dig(
        await gateway.data(
            case.document,
            last=case.first,
            before=second["pageInfo"]["startCursor"],
            **case.variables,
        ),
        case.path,
    )
    assert back["edges"] == dig(data, case.path)["edges"]
    assert (back["pageInfo"]["hasPreviousPage"], back["pageInfo"]["hasNextPage"]) == (False, True)
    # Between two cursors: `first` and `last` both read only the edges between them.
    after, until = whole[0], whole[2 * case.first]
    cursors = {edge["node"]["databaseId"]: edge["cursor"] for edge in dig(data, case.path)["edges"]}
    cursors |= {edge["node"]["databaseId"]: edge["cursor"] for edge in second["edges"]}
    if until in cursors:
        for arguments, expected in (
            ({"first": 100}, whole[1 : 2 * case.first]),
            ({"last": 2}, whole[2 * case.first - 2 : 2 * case.first]),
        ):
            between = dig(
                await gateway.data(
                    case.document,
                    after=cursors[after],
                    before=cursors[until],
                    **arguments,
                    **case.variables,
                ),
                case.path,
            )
            assert [edge["node"]["databaseId"] for edge in between["edges"]] == expected


@pytest.mark.parametrize("document", [TOP, GRID_LIST, CATEGORY_LIST])
async def test_first_with_last_is_bad_input(gateway: Gateway, document: str) -> None:
    body = await gateway.run(document, first=2, last=2)
    assert codes(body)[:1] == ["BAD_USER_INPUT"], body
    body = await gateway.run(document, last=101)
    assert codes(body)[:1] == ["BAD_USER_INPUT"], body


def random_case(seed: int) -> tuple[Filter, OrderArg | None]:
    """A filter of a few random conditions, with values the rows have, and a random order."""
    rng = random.Random(seed)
    rows = DATA.packages
    dates = [row.last_commit_date for row in rows if row.last_commit_date is not None]
    conditions: dict[str, Callable[[], Any]] = {
        "category": lambda: rng.choice(DATA.categories).slug,
        "grids": lambda: [row.slug for row in rng.sample(DATA.grids, rng.randint(1, 2))],
        "query": lambda: " ".join(
            _fragment(rng, rng.choice(rows)) for _ in range(rng.randint(1, 2))
        ),
        "hasPypiRelease": lambda: rng.random() < 0.5,
        "updatedAfter": lambda: _near(rng, rng.choice(dates)),
        "updatedBefore": lambda: _near(rng, rng.choice(dates)),
        "minWatchers": lambda: rng.choice(rows).repo_watchers,
    }
    chosen = rng.sample(sorted(conditions), rng.randint(1, 3))
    given = {name: conditions[name]() for name in chosen}
    field = rng.choice([None, *PACKAGE_FIELDS])
    order = None if field is None else _order(field, rng.choice(["ASC", "DESC"]))
    return given, order


def _fragment(rng: random.Random, row: PackageRow) -> str:
    """A piece of a word of the row's text, in a random case."""
    words = f"{row.title} {row.slug} {row.repo_description}".split()
    word = rng.choice(words)
    start = rng.randrange(len(word))
    piece = word[start : start + rng.randint(1, 6)]
    return piece.upper() if rng.random() < 0.3 else piece


def _near(rng: random.Random, when: datetime) -> str:
    """An instant at, just before or just after `when`, in some time zone."""
    moved = when + timedelta(microseconds=rng.choice([-1, 0, 0, 1]))
    zone = rng.choice([UTC, SITE, ZoneInfo("Asia/Kolkata")])
    return moved.astimezone(zone).isoformat()


@pytest.mark.parametrize("seed", range(24))
async def test_random_filters_and_orders(gateway: Gateway, seed: int) -> None:
    """Random combinations, paged with random sizes, on the list and on two relations."""
    given, order = random_case(seed)
    rng = random.Random(seed)
    grid = rng.choice([row for row in DATA.grids if MODEL.members[row.id]])
    category = rng.choice(DATA.categories)
    cases = (
        Paged(TOP, ("x",), rng.randint(3, 30), MODEL.packages(given, order)),
        Paged(IN_GRID, ("grid", "x"), rng.randint(1, 6), MODEL.of_grid(grid.id, given, order)),
        Paged(
            IN_CATEGORY,
            ("category", "x"),
            rng.randint(2, 10),
            MODEL.of_category(category.id, given, order),
        ),
    )
    variables = {"slug": grid.slug, "id": category.id, "filter": given, "order": order}
    for case in cases:
        ids: list[int] = []
        after = None
        for _ in range(len(case.expected) // case.first + 2):
            used = {name: variables[name] for name in variables if f"${name}:" in case.document}
            data = await gateway.data(case.document, first=case.first, after=after, **used)
            connection = dig(data, case.path)
            assert connection["totalCount"] == len(case.expected), (given, order)
            ids += [edge["node"]["databaseId"] for edge in connection["edges"]]
            if not connection["pageInfo"]["hasNextPage"]:
                break
            after = connection["pageInfo"]["endCursor"]
        assert ids == case.expected, (given, order, case.path)


# -- cursors of another list, and bad input ------------------------------------------------

# name: (document, path, variables the cursor comes from, variables it is used with)
MISMATCHED: dict[str, tuple[str, tuple[str, ...], dict[str, Any], dict[str, Any]]] = {
    "another filter": (TOP, ("x",), {"filter": RELEASED}, {"filter": UNRELEASED}),
    "a filter, then none": (TOP, ("x",), {"filter": RELEASED}, {}),
    "no filter, then one": (TOP, ("x",), {}, {"filter": RELEASED}),
    "another order": (
        TOP,
        ("x",),
        {"order": _order("TITLE")},
        {"order": _order("REPO_WATCHERS")},
    ),
    "another direction": (
        TOP,
        ("x",),
        {"order": _order("TITLE")},
        {"order": _order("TITLE", "DESC")},
    ),
    "an order, then none": (TOP, ("x",), {"order": _order("ID", "DESC")}, {}),
    "a category's packages, another filter": (
        IN_CATEGORY,
        ("category", "x"),
        {"id": APPS, "filter": {"query": "django"}},
        {"id": APPS, "filter": {"query": "django", "minWatchers": 1}},
    ),
    "a grid's packages, another order": (
        IN_GRID,
        ("grid", "x"),
        {"slug": QUIRKS, "order": _order("CREATED")},
        {"slug": QUIRKS, "order": _order("MODIFIED")},
    ),
    "a grid's packages, ordered then not": (
        IN_GRID,
        ("grid", "x"),
        {"slug": QUIRKS, "order": _order("TITLE")},
        {"slug": QUIRKS},
    ),
    "a package's grids, another order": (
        GRIDS_OF,
        ("package", "x"),
        {"id": BUSIEST, "order": _order("TITLE")},
        {"id": BUSIEST, "order": _order("PACKAGE_COUNT")},
    ),
    "grids, another order": (GRID_LIST, ("x",), {"order": _order("ID")}, {}),
    "categories, another order": (
        CATEGORY_LIST,
        ("x",),
        {"order": _order("TITLE")},
        {"order": _order("PACKAGE_COUNT")},
    ),
}


@pytest.mark.parametrize("name", MISMATCHED)
async def test_a_cursor_of_another_list_is_bad_input(gateway: Gateway, name: str) -> None:
    document, path, issued, used = MISMATCHED[name]
    first = dig(await gateway.data(document, first=1, **issued), path)
    cursor = first["pageInfo"]["endCursor"]
    assert cursor is not None
    still = await gateway.run(document, first=1, after=cursor, **issued)
    assert "errors" not in still, still["errors"]
    refused = await gateway.run(document, first=1, after=cursor, **used)
    assert codes(refused)[:1] == ["BAD_USER_INPUT"], refused


async def test_an_equal_filter_written_otherwise_keeps_its_cursors(gateway: Gateway) -> None:
    """The same instant in another offset, grids in another order, words in another case."""
    written = {
        "grids": ["admin-interface", QUIRKS],
        "query": "Django",
        "updatedAfter": "2012-01-01T00:00:00+00:00",
    }
    rewritten = {
        "grids": [QUIRKS, "admin-interface", QUIRKS],
        "query": "DJANGO",
        "updatedAfter": "2011-12-31T19:00:00-05:00",
    }
    expected = MODEL.packages(written, _order("TITLE"))
    assert len(expected) > 2
    first = await gateway.data(TOP, first=2, filter=written, order=_order("TITLE"))
    after = first["x"]["pageInfo"]["endCursor"]
    rest = await gateway.data(TOP, first=100, after=after, filter=rewritten, order=_order("TITLE"))
    assert [edge["node"]["databaseId"] for edge in rest["x"]["edges"]] == expected[2:]


TOO_MANY = [f"grid-{i}" for i in range(21)]
BAD_FILTERS: dict[str, Filter] = {
    "NUL in query": {"query": "django\x00"},
    "NUL in category": {"category": "apps\x00"},
    "NUL in a grid slug": {"grids": ["cms", "ad\x00min"]},
    "query too long": {"query": "a " * 500 + "b"},
    "category too long": {"category": "c" * 101},
    "grid slug too long": {"grids": ["g" * 101]},
    "too many grids": {"grids": TOO_MANY},
    # Instants the calendar cannot hold in UTC (an internal error once).
    "date past year 9999 in UTC": {"updatedBefore": "9999-12-31T23:00:00-05:00"},
    "date before year 1 in UTC": {"updatedAfter": "0001-01-01T00:00:00+05:00"},
}
ACCEPTED_FILTERS: dict[str, Filter] = {
    "longest query": {"query": "a " * 499 + "bc"},
    "longest category": {"category": "c" * 100},
    "longest grid slug": {"grids": ["g" * 100]},
    "most grids": {"grids": TOO_MANY[:20]},
    "a grid many times": {"grids": [QUIRKS] * 30},
}
FILTERED = """query($filter: PackageFilter) {
  packages(first: 100, filter: $filter) { totalCount nodes { databaseId } }
  category(id: 1) { packages(first: 100, filter: $filter) { totalCount nodes { databaseId } } }
  grid(slug: "quirks-edge-cases") { packages(first: 100, filter: $filter) {
    totalCount nodes { databaseId } } }
}"""


BAD_FILTER_PLACES = {
    "top": "packages(first: 5, filter: $filter) { totalCount }",
    "category": "category(id: 1) { packages(first: 5, filter: $filter) { totalCount } }",
    "grid": 'grid(slug: "%s") { packages(first: 5, filter: $filter) { totalCount } }' % QUIRKS,
}


@pytest.mark.parametrize("name", BAD_FILTERS)
@pytest.mark.parametrize("place", BAD_FILTER_PLACES)
async def test_bad_filters_are_bad_input(gateway: Gateway, name: str, place: str) -> None:
    document = "query($filter: PackageFilter) { %s }" % BAD_FILTER_PLACES[place]
    body = await gateway.run(document, filter=BAD_FILTERS[name])
    assert codes(body)[:1] == ["BAD_USER_INPUT"], body


@pytest.mark.parametrize("name", ACCEPTED_FILTERS)
async def test_filters_at_the_limits_are_answered(gateway: Gateway, name: str) -> None:
    given = ACCEPTED_FILTERS[name]
    data = await gateway.data(FILTERED, filter=given)
    assert [node["databaseId"] for node in data["packages"]["nodes"]] == MODEL.packages(given)
    assert [node["databaseId"] for node in data["category"]["packages"]["nodes"]] == (
        MODEL.of_category(1, given)
    )
    assert [node["databaseId"] for node in data["grid"]["packages"]["nodes"]] == MODEL.of_grid(
        QUIRKS_ID, given
    )


# -- the dataset's teeth -------------------------------------------------------------------


def _ascii_lower(text: str) -> str:
    """SQLite's lower(): ASCII letters only."""
    return "".join(c.lower() if c.isascii() else c for c in text)


def _simple_lower(text: str) -> str:
    """A character-by-character lower-casing (PostgreSQL's lower()): no final sigma, İ is i."""
    return "".join(c.lower()[0] for c in text)


def _accentless(text: str) -> str:
    return unicodedata.normalize("NFKD", text.lower()).encode("ascii", "ignore").decode()


def test_the_dataset_can_tell_right_from_wrong() -> None:
    """Plausible wrong implementations give other answers on `DATA` than the right one."""
    rows = list(DATA.packages)
    # Title order: not the raw title's, nor any other lower-casing's or folding's.
    right = MODEL.packages(None, _order("TITLE"))
    for wrong_key in (str, str.casefold, _ascii_lower, _simple_lower, _accentless):
        wrong = [r.id for r in sorted(rows, key=lambda r: (wrong_key(r.title), r.id))]
        assert wrong != right, wrong_key
    assert len({row.title.lower() for row in rows}) < len(rows)  # ties go by id
    grids_by_bytes = [row.id for row in sorted(DATA.grids, key=lambda r: (r.title, r.id))]
    assert MODEL.grids(_order("TITLE")) != grids_by_bytes
    categories = sorted(DATA.categories, key=lambda r: (r.title, r.id))
    assert MODEL.categories(_order("TITLE")) != [row.id for row in categories]
    # The words: some filter's answer differs under every other lower-casing of the query
    # and the text, or under a LIKE with its wildcards unescaped.
    queries = [given["query"] for given, _ in FILTERS.values() if given and given.get("query")]

    def matching(
        query: str, of_query: Callable[[str], str], of_text: Callable[[str], str]
    ) -> set[int]:
        words = [of_query(word) for word in query.split()]
        texts = {
            row.id: of_text("\n".join((row.title, row.slug, row.repo_description))) for row in rows
        }
        return {id_ for id_, text in texts.items() if all(word in text for word in words)}

    def like(query: str) -> set[int]:
        patterns = [
            re.compile(".*".join(re.escape(p) for p in w.lower().split("%")).replace("_", "."))
            for w in query.split()
        ]
        texts = {row.id: _text(row) for row in rows}
        return {id_ for id_, text in texts.items() if all(p.search(text) for p in patterns)}

    for of_query, of_text in (
        (_ascii_lower, _ascii_lower),
        (_simple_lower, _simple_lower),
        (str.casefold, str.casefold),
        (str.lower, _ascii_lower),
        (str.lower, _simple_lower),
        (_accentless, _accentless),
    ):
        assert any(
            matching(query, of_query, of_text) != set(MODEL.packages({"query": query}))
            for query in queries
        ), (of_query, of_text)
    assert any(like(query) != set(MODEL.packages({"query": query})) for query in queries)
    # Ties in every order field; nulls in last_updated, at the end either way.
    for field in ("repo_watchers", "repo_forks", "last_commit_date", "created", "modified"):
        values = Counter(getattr(row, field) for row in rows if getattr(row, field) is not None)
        assert values.most_common(1)[0][1] >= 2, field
    nulls = sorted(row.id for row in rows if row.last_commit_date is None)
    assert len(nulls) >= 5
    assert MODEL.packages(None, _order("LAST_UPDATED"))[-len(nulls) :] == nulls
    assert MODEL.packages(None, _order("LAST_UPDATED", "DESC"))[-len(nulls) :] == nulls[::-1]
    # The bounds of the filters fall on values some packages have.
    just = timedelta(microseconds=1)
    for bound, nearby in (
        ({"updatedAfter": TIE_DATE.isoformat()}, {"updatedAfter": (TIE_DATE - just).isoformat()}),
        ({"updatedBefore": TIE_DATE.isoformat()}, {"updatedBefore": (TIE_DATE + just).isoformat()}),
        ({"minWatchers": TIE_WATCHERS + 1}, {"minWatchers": TIE_WATCHERS}),
    ):
        assert len(MODEL.packages(nearby)) >= len(MODEL.packages(bound)) + 2, bound
    # Two categories share a slug; sizes tie among grids and among categories; a grid is empty.
    assert len({row.slug for row in DATA.categories}) < len(DATA.categories)
    grid_sizes = Counter(len(ids) for ids in MODEL.members.values())
    assert grid_sizes[0] >= 1 and any(n >= 2 for size, n in grid_sizes.items() if size)
    assert max(Counter(len(ids) for ids in MODEL.in_category.values()).values()) >= 2
    # Membership-row order is not grid-id order.
    assert any(ids != sorted(ids) for ids in MODEL.grids_of.values())
    # Every relation fits in one page of 100, as test_every_list_filtered_and_ordered reads
    # it, and the whole list does not.
    relations = (*MODEL.members.values(), *MODEL.in_category.values())
    assert max(len(ids) for ids in relations) <= 100 < len(rows)


def _text(row: PackageRow) -> str:
    return "\n".join((row.title.lower(), row.slug.lower(), row.repo_description.lower()))


async def test_a_cold_snapshot_is_fetched_once_for_concurrent_requests(small: Loaded) -> None:
    """Requests that all need the REST catalogue snapshot at once share one fetch of it."""
    upstream = (await small.gateway("rest")).upstream
    assert upstream is not None
    upstream.reset()
    async with open_backend(Settings(upstream=upstream.base_url)) as factory:
        gateway = Gateway("rest, cold", factory)
        cases = [random_case(seed) for seed in range(10)]
        answers = await asyncio.gather(
            *(gateway.data(TOP, first=100, filter=given, order=order) for given, order in cases)
        )
    for (given, order), data in zip(cases, answers, strict=True):
        ids = [edge["node"]["databaseId"] for edge in data["x"]["edges"]]
        assert ids == MODEL.packages(given, order)[:100]
    lists = Counter(target.partition("?")[0] for target in upstream.requests)
    assert all(count == 1 for count in lists.values()), upstream.requests
    assert upstream.count <= 5, upstream.requests


# -- cost on the full-scale dataset -----------------------------------------------------

SINCE_LAST_YEAR = datetime(NOW.year - 1, 1, 1, tzinfo=UTC).isoformat()
CONNECTION = "totalCount edges { node { databaseId title repoWatchers lastUpdated } }"
FILTERED_ORDERED = "$f: PackageFilter, $o: PackageOrder"
TOP_PAGE = "query(%s) { x: packages(first: 20, filter: $f, orderBy: $o) { %s } }"
GRID_PAGE = "query(%s, $slug: String!) { grid(slug: $slug) {"
GRID_PAGE += " x: packages(first: 20, filter: $f, orderBy: $o) { %s } } }"
CATEGORY_PAGE = "query(%s, $id: Int!) { category(id: $id) {"
CATEGORY_PAGE += " x: packages(first: 20, filter: $f, orderBy: $o) { %s } } }"


@dataclass(frozen=True)
class Costed:
    """A filtered, ordered first page on the full-scale dataset, and its brute force."""

    document: str
    variables: dict[str, Any]
    expected: Callable[[Model], list[int]]
    path: tuple[str, ...]


def _grid_id(model: Model, slug: str) -> int:
    return next(row.id for row in model.data.grids if row.slug == slug)


_REST: Filter = {"query": "rest framework", "updatedAfter": SINCE_LAST_YEAR}
_BOTH: Filter = {"grids": ["cms", "admin-interface"]}  # well-known grids: stable slugs
_RELEASED_DJANGO: Filter = {"hasPypiRelease": True, "query": "django"}
_POPULAR: Filter = {"minWatchers": 50}
COSTED: dict[str, Costed] = {
    "most-starred REST framework packages updated since last year": Costed(
        TOP_PAGE % (FILTERED_ORDERED, CONNECTION),
        {"f": _REST, "o": _order("REPO_WATCHERS", "DESC")},
        lambda model: model.packages(_REST, _order("REPO_WATCHERS", "DESC")),
        ("x",),
    ),
    "packages in two grids, by title": Costed(
        TOP_PAGE % (FILTERED_ORDERED, CONNECTION),
        {"f": _BOTH, "o": _order("TITLE")},
        lambda model: model.packages(_BOTH, _order("TITLE")),
        ("x",),
    ),
    "a grid's released packages matching a word, by last update": Costed(
        GRID_PAGE % (FILTERED_ORDERED, CONNECTION),
        {
            "f": _RELEASED_DJANGO,
            "o": _order("LAST_UPDATED", "DESC"),
            "slug": "rest-frameworks",
        },
        lambda model: model.of_grid(
            _grid_id(model, "rest-frameworks"),
            _RELEASED_DJANGO,
            _order("LAST_UPDATED", "DESC"),
        ),
        ("grid", "x"),
    ),
    "a category's popular packages, newest first": Costed(
        CATEGORY_PAGE % (FILTERED_ORDERED, CONNECTION),
        {"f": _POPULAR, "o": _order("CREATED", "DESC"), "id": 2},
        lambda model: model.of_category(2, _POPULAR, _order("CREATED", "DESC")),
        ("category", "x"),
    ),
}


@pytest.fixture(scope="module")
async def full(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[tuple[Loaded, Model]]:
    """The full-scale dataset, built once, on each backend as a test first asks for it."""
    data = generate(scale=1.0)
    loaded = Loaded(data, tmp_path_factory.mktemp("filters-full"))
    async with loaded.stack:
        yield loaded, Model(data)


@pytest.mark.parametrize("name", BACKENDS)
async def test_a_filtered_ordered_first_page_is_cheap(
    full: tuple[Loaded, Model], name: str
) -> None:
    """At most two SQL statements on a database; nothing upstream on a warm REST snapshot."""
    loaded, model = full
    gateway = await loaded.gateway(name)
    if gateway.upstream is not None:  # warm the snapshot (a handful of requests), then count
        for costed in COSTED.values():
            await gateway.data(costed.document, **costed.variables)
        assert 0 < gateway.upstream.count <= 10, gateway.upstream.requests
        gateway.upstream.reset()
    for query, costed in COSTED.items():
        expected = costed.expected(model)
        assert len(expected) > 0, query
        if gateway.engine is not None:
            async with statements(gateway.engine) as sent:
                data = await gateway.data(costed.document, **costed.variables)
            assert len(sent) <= 2, (query, sent)
        else:
            assert gateway.upstream is not None
            data = await gateway.data(costed.document, **costed.variables)
            assert gateway.upstream.requests == [], query
        connection = dig(data, costed.path)
        ids = [edge["node"]["databaseId"] for edge in connection["edges"]]
        assert (ids, connection["totalCount"]) == (expected[:20], len(expected)), query


# -- cursors hold their place while the list changes ------------------------------------------


def changed(data: Dataset, before_id: int, new_id: int) -> Dataset:
    """`data` with the package `before_id` removed and a package `new_id` added, titled to
    sort first: between two page requests, both shift an offset by one."""
    gone = next(row for row in data.packages if row.id == before_id)
    added = dataclasses.replace(
        gone, id=new_id, title="!!! first by title", slug="first-new", latest_version_id=None
    )
    kept = tuple(row for row in data.packages if row.id != before_id)
    return dataclasses.replace(
        data,
        packages=(*kept, added),
        versions=tuple(row for row in data.versions if row.package_id != before_id),
        grid_packages=tuple(row for row in data.grid_packages if row.package_id != before_id),
    )


@pytest.mark.parametrize("name", BACKENDS)
async def test_a_change_between_pages_neither_skips_nor_repeats(tmp_path: Path, name: str) -> None:
    """A package added and one removed before the cursor, in both directions: the next page
    starts right after (or ends right before) the cursor's edge all the same."""
    order = _order("TITLE")
    titled = MODEL.packages(None, order)
    new_id = max(MODEL.package) + 1
    after_change = Model(changed(DATA, titled[1], new_id))
    clock = Clock()
    async with AsyncExitStack() as stack:
        if name == "rest":
            upstream = stack.enter_context(serve_upstream(DATA))
            settings = Settings(upstream=upstream.base_url, cache_ttl=1.0)
            factory = await stack.enter_async_context(open_backend(settings, clock=clock))
            gateway = Gateway(name, factory)
        else:
            loaded = Loaded(DATA, tmp_path)
            await stack.enter_async_context(loaded.stack)
            gateway = await loaded.gateway(name)

        async def change() -> None:
            if name == "rest":
                upstream.dataset = after_change.data
                clock.advance(2.0)  # the snapshot expires: the next page reads the new lists
            else:
                assert gateway.engine is not None
                await write_dataset(gateway.engine, after_change.data)  # rows added, removed

        first = (await gateway.data(TOP, first=5, order=order))["x"]
        last = (await gateway.data(TOP, last=5, order=order))["x"]
        await change()
        now = after_change.packages(None, order)
        assert now != titled
        forward = await gateway.data(
            TOP, first=5, after=first["pageInfo"]["endCursor"], order=order
        )
        ids = [edge["node"]["databaseId"] for edge in forward["x"]["edges"]]
        assert ids == titled[5:10] == now[now.index(titled[4]) + 1 :][:5]
        backward = await gateway.data(
            TOP, last=5, before=last["pageInfo"]["startCursor"], order=order
        )
        ids = [edge["node"]["databaseId"] for edge in backward["x"]["edges"]]
        end = now.index(titled[-5])
        assert ids == now[end - 5 : end] == titled[-10:-5]
        assert backward["x"]["totalCount"] == len(now)
