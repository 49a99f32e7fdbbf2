"""The fake APIv4 answers as UPSTREAM.md says the real service does, from the dataset's rows."""

import asyncio
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import orjson
import pytest

from gateway.demo.dataset import generate
from gateway.loaders.sql.rows import Dataset, PackageRow
from tests.fake_upstream import FakeUpstream, FaultKind

ROOT = Path(__file__).resolve().parent.parent
NEW_YORK = ZoneInfo("America/New_York")
CATEGORY_FIELDS = [
    "id", "title", "slug", "description", "title_plural", "show_pypi", "created", "modified",
]  # fmt: skip
GRID_FIELDS = [
    "id", "title", "slug", "description", "is_locked", "packages", "header", "created", "modified",
]  # fmt: skip
SEARCH_FIELDS = [
    "description", "title", "title_no_prefix", "slug_no_prefix", "clean_title", "absolute_url",
    "created", "modified", "weight", "item_type", "slug", "category", "repo_watchers",
    "repo_forks", "pypi_downloads", "score", "usage", "participants", "last_committed",
    "last_released",
]  # fmt: skip


@pytest.fixture
def client(upstream: FakeUpstream) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=upstream.base_url, timeout=5) as client:
        yield client


def ny(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(NEW_YORK).isoformat()


def grids_in_row_order(dataset: Dataset, package_id: int) -> list[int]:
    rows = sorted(dataset.grid_packages, key=lambda row: row.id)
    return [row.grid_id for row in rows if row.package_id == package_id]


def expected_package(dataset: Dataset, package: PackageRow, base: str) -> dict[str, object]:
    versions = {version.id: version.number for version in dataset.versions}
    return {
        "category": f"{base}categories/{package.category_id}/",
        "grids": [f"{base}grids/{id_}/" for id_ in grids_in_row_order(dataset, package.id)],
        "id": package.id,
        "title": package.title,
        "slug": package.slug,
        "last_updated": ny(package.last_commit_date),
        "last_fetched": ny(package.last_fetched),
        "repo_url": package.repo_url,
        "pypi_version": versions.get(package.latest_version_id or 0),
        "created": ny(package.created),
        "modified": ny(package.modified),
        "repo_forks": package.repo_forks,
        "repo_description": package.repo_description,
        "pypi_url": package.pypi_url,
        "documentation_url": package.documentation_url,
        "repo_watchers": package.repo_watchers,
        "commits_over_52": list(package.commits_over_52w),
        "participants": [part.strip() for part in package.participants.split(",") if part.strip()],
    }


def test_generate_is_deterministic_and_shaped_like_the_tables() -> None:
    dataset = generate(scale=0.02)
    assert dataset == generate(scale=0.02)
    assert dataset != generate(scale=0.02, seed=1)
    assert [(c.id, c.title, c.slug) for c in dataset.categories] == [
        (1, "App", "apps"),
        (2, "Framework", "frameworks"),
        (3, "Other", "others"),
        (4, "Project", "projects"),
    ]
    assert 90 <= len(dataset.packages) <= 120 and 6 <= len(dataset.grids) <= 12
    assert dataset.packages[-1].id > len(dataset.packages)  # sparse ids
    assert len({p.slug for p in dataset.packages}) == len(dataset.packages)
    assert len({p.title for p in dataset.packages}) < len(dataset.packages)  # duplicate titles
    pairs = [(row.grid_id, row.package_id) for row in dataset.grid_packages]
    assert len(set(pairs)) == len(pairs)
    assert pairs != sorted(pairs) and [p[::-1] for p in pairs] != sorted(p[::-1] for p in pairs)
    packages = dataset.packages
    assert {p.documentation_url for p in packages} >= {None, ""}
    assert any(p.last_fetched is None for p in packages)
    assert any(p.last_commit_date is None for p in packages)
    assert any(p.latest_version_id is None and p.pypi_url == "" for p in packages)
    assert any(",," in p.participants or ", " in p.participants for p in packages)
    assert all(len(p.commits_over_52w) == 52 for p in packages)
    assert all(p.created.microsecond and p.created.utcoffset() == timedelta(0) for p in packages)
    assert all(p.last_commit_date.microsecond == 0 for p in packages if p.last_commit_date)
    assert len(dataset.search_rows) == len(packages) + len(dataset.grids)


def test_index_lists_the_four_endpoints(client: httpx.Client, upstream: FakeUpstream) -> None:
    body = client.get("").json()
    assert list(body) == ["packages", "search", "grids", "categories"]
    assert body["grids"] == f"{upstream.base_url}grids/"


def test_category_list_is_by_id_descending(client: httpx.Client) -> None:
    body = client.get("categories/").json()
    assert list(body) == ["count", "next", "previous", "results"]
    assert (body["count"], body["next"], body["previous"]) == (4, None, None)
    assert [c["id"] for c in body["results"]] == [4, 3, 2, 1]
    assert all(list(category) == CATEGORY_FIELDS for category in body["results"])


def test_package_detail_renders_the_row(client: httpx.Client, upstream: FakeUpstream) -> None:
    dataset = upstream.dataset
    for package in dataset.packages[::7]:
        body = client.get(f"packages/{package.id}/").json()
        expected = expected_package(dataset, package, upstream.base_url)
        assert list(body.items()) == list(expected.items())


def test_grid_detail_field_order_and_slug_lookup(
    client: httpx.Client, upstream: FakeUpstream
) -> None:
    grid = upstream.dataset.grids[0]
    body = client.get(f"grids/{grid.id}/").json()
    assert list(body) == GRID_FIELDS
    assert body == client.get(f"grids/{grid.slug}/").json()
    assert body["created"] == ny(grid.created)


def test_lookups_by_id_and_slug(client: httpx.Client, upstream: FakeUpstream) -> None:
    package = next(p for p in upstream.dataset.packages if "_" in p.slug)
    assert client.get(f"packages/{package.slug}/").json()["id"] == package.id
    assert client.get(f"packages/{package.id}/").json()["slug"] == package.slug
    assert client.get("packages/100%25-coverage/").status_code == 404  # slug "100-coverage"
    assert client.get("categories/2/").json()["slug"] == "frameworks"
    response = client.get("categories/frameworks/")
    assert response.status_code == 404 and response.json() == {"detail": "Not found."}


def test_format_json_is_carried_by_every_link(client: httpx.Client) -> None:
    listed = client.get("packages/?format=json&limit=3&offset=3").json()
    assert listed["next"].endswith("/packages/?format=json&limit=3&offset=6")
    assert listed["previous"].endswith("/packages/?format=json&limit=3")
    links = [link for p in listed["results"] for link in [p["category"], *p["grids"]]]
    assert links and all(link.endswith("/?format=json") for link in links)
    index = client.get("?format=json").json()
    assert all(url.endswith("/?format=json") for url in index.values())


def test_format_api_answers_html(client: httpx.Client) -> None:
    response = client.get("packages/?format=api")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "?format=api" in response.text


def test_pagination_links_and_counts(client: httpx.Client, upstream: FakeUpstream) -> None:
    ids = sorted((p.id for p in upstream.dataset.packages), reverse=True)
    page = client.get("packages/?limit=5&offset=12").json()
    assert page["count"] == len(ids)
    assert [p["id"] for p in page["results"]] == ids[12:17]
    assert page["next"] == f"{upstream.base_url}packages/?limit=5&offset=17"
    assert page["previous"] == f"{upstream.base_url}packages/?limit=5&offset=7"
    first = client.get("packages/?offset=3&limit=5").json()
    assert first["previous"] == f"{upstream.base_url}packages/?limit=5"
    last = client.get(f"packages/?limit=5&offset={len(ids) - 2}").json()
    assert last["next"] is None and len(last["results"]) == 2
    everything = client.get("packages/?limit=10000").json()
    assert [p["id"] for p in everything["results"]] == ids
    assert client.get("packages/?offset=100000").json()["results"] == []


@pytest.mark.parametrize(
    "query", ["limit=abc", "limit=0", "limit=-3", "limit=2.5", "offset=-1", "offset=x"]
)
def test_bad_limit_or_offset_fall_back_to_defaults(client: httpx.Client, query: str) -> None:
    page = client.get(f"grids/?{query}").json()
    default = client.get("grids/").json()
    assert page["results"] == default["results"] and page["previous"] is None
    assert len(client.get(f"packages/?{query}").json()["results"]) == 20


def test_not_found_answers(client: httpx.Client) -> None:
    for path, name in [("packages/no-such-thing/", "Package"), ("grids/99999/", "Grid")]:
        response = client.get(path)
        assert response.status_code == 404
        assert response.json() == {"detail": f"No {name} matches the given query."}
    assert client.get("categories/999/").json()["detail"] == "No Category matches the given query."
    response = client.get("packages/1/grids/")
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("text/html")


def test_missing_slash_redirects_with_a_relative_location(
    client: httpx.Client, upstream: FakeUpstream
) -> None:
    root = upstream.base_url.removesuffix("/api/v4/")
    response = client.get(f"{root}/api/v4/packages?limit=3")
    assert response.status_code == 301
    assert response.headers["location"] == "/api/v4/packages/?limit=3"
    assert client.get(f"{root}/api/v4/grids/1").headers["location"] == "/api/v4/grids/1/"
    assert client.get(f"{root}/api/v4/nothing").status_code == 404


def test_only_reads_are_allowed(client: httpx.Client) -> None:
    for method in ["POST", "PUT", "PATCH", "DELETE"]:
        response = client.request(method, "packages/")
        assert response.status_code == 405
        assert response.json() == {"detail": f'Method "{method}" not allowed.'}
        assert response.headers["allow"] == "GET, HEAD, OPTIONS"
    head = client.head("packages/")
    assert head.status_code == 200 and head.content == b""
    assert client.options("grids/1/").json()["name"] == "Grid Instance"


def test_headers_compact_json_and_raw_unicode(client: httpx.Client) -> None:
    response = client.get("packages/dzhango-utility/")
    assert response.headers["allow"] == "GET, HEAD, OPTIONS"
    assert response.headers["vary"] == "Accept, Cookie"
    assert response.content == orjson.dumps(response.json())
    assert "Джанго".encode() in response.content


def test_datetimes_carry_the_new_york_offset(client: httpx.Client, upstream: FakeUpstream) -> None:
    rows = {p.id: p for p in upstream.dataset.packages}
    offsets = set()
    for package in client.get("packages/?limit=1000").json()["results"]:
        row = rows[package["id"]]
        created = datetime.fromisoformat(package["created"])
        assert created == row.created and "." in package["created"]
        offsets.add(created.utcoffset())
        assert package["last_updated"] == ny(row.last_commit_date)
        if package["last_updated"]:
            assert "." not in package["last_updated"]
    assert offsets == {timedelta(hours=-4), timedelta(hours=-5)}


def test_grid_packages_sort_by_title_bytes(client: httpx.Client, upstream: FakeUpstream) -> None:
    titles = {p.id: p.title for p in upstream.dataset.packages}
    for grid in upstream.dataset.grids:
        urls = client.get(f"grids/{grid.id}/").json()["packages"]
        ids = [int(url.rstrip("/").rsplit("/", 1)[1]) for url in urls]
        members = {
            row.package_id for row in upstream.dataset.grid_packages if row.grid_id == grid.id
        }
        assert ids == sorted(members, key=lambda id_: (titles[id_], id_))
    quirks = client.get(f"grids/{upstream.dataset.grids[1].id}/").json()["packages"]
    ordered = [titles[int(url.rstrip("/").rsplit("/", 1)[1])] for url in quirks]
    assert ordered != sorted(ordered, key=str.lower)
    assert ordered.index("Aardvark") < ordered.index("DJANGO-FOO") < ordered.index("django-foo")


def test_package_grids_follow_membership_rows(client: httpx.Client, upstream: FakeUpstream) -> None:
    shuffled = 0
    for package in client.get("packages/?limit=1000").json()["results"]:
        ids = [int(url.rstrip("/").rsplit("/", 1)[1]) for url in package["grids"]]
        assert ids == grids_in_row_order(upstream.dataset, package["id"])
        shuffled += ids != sorted(ids)
    assert shuffled > 0


def test_search_items(client: httpx.Client) -> None:
    items = client.get("search/", params={"q": "foo"}).json()
    assert all(list(item) == SEARCH_FIELDS for item in items)
    original = next(item for item in items if item["slug"] == "django-foo")
    assert original["description"] == "The original ⚙️ foo."
    assert original["absolute_url"] == "/packages/p/django-foo/"
    assert original["title_no_prefix"] == original["clean_title"] == "django-foo"
    assert isinstance(original["participants"], str) and original["category"] == "Project"
    assert len(client.get("search/?q=django").json()) == 20
    assert client.get("search/?q=").json() == [] and client.get("search/").json() == []
    grid = client.get("search/?q=healt").json()[0]
    assert (grid["item_type"], grid["category"]) == ("grid", "")
    assert grid["absolute_url"] == "/grids/g/healt-checkers/"


def test_search_needs_every_word(client: httpx.Client) -> None:
    items = client.get("search/", params={"q": "Django FOO"}).json()
    assert items and items[0]["title"].lower().count("foo") == 1
    for item in items:
        text = " ".join(str(item[k]) for k in ("title", "slug", "description", "participants"))
        assert "django" in text.lower() and "foo" in text.lower()


def test_requests_are_logged_in_order(client: httpx.Client, upstream: FakeUpstream) -> None:
    started = time.monotonic()
    client.get("packages/?limit=2")
    client.get("grids/1/")
    client.post("search/")
    assert upstream.count == 3
    assert upstream.requests == ["/api/v4/packages/?limit=2", "/api/v4/grids/1/", "/api/v4/search/"]
    times = [logged.at for logged in upstream.log]
    assert started <= times[0] <= times[1] <= times[2] <= time.monotonic()
    upstream.reset()
    assert upstream.count == 0 and upstream.log == []


@pytest.mark.parametrize("kind", ["500", "503", "429", "malformed", "wrong-shape"])
def test_faults_hit_only_their_prefix(
    client: httpx.Client, upstream: FakeUpstream, kind: FaultKind
) -> None:
    upstream.faults["/api/v4/grids/"] = kind
    response = client.get("grids/1/")
    assert client.get("packages/1/").status_code == 200
    if kind in ("500", "503", "429"):
        assert response.status_code == int(kind)
        assert response.headers.get("retry-after") == ("1" if kind == "429" else None)
    elif kind == "malformed":
        assert response.status_code == 200
        with pytest.raises(ValueError):
            response.json()
    else:
        assert isinstance(response.json(), list)


def test_a_fault_for_the_next_few_requests_only(
    client: httpx.Client, upstream: FakeUpstream
) -> None:
    upstream.retry_after = "7"
    upstream.fail("/api/v4/grids/", "429", times=2)
    statuses = [client.get("grids/1/").status_code for _ in range(4)]
    assert statuses == [429, 429, 200, 200]
    assert upstream.faults == {}
    upstream.fail("/api/v4/grids/", "429", times=1)
    assert client.get("grids/1/").headers["retry-after"] == "7"


def test_random_faults_are_reproducible(client: httpx.Client, upstream: FakeUpstream) -> None:
    paths = [f"packages/{row.id}/" for row in upstream.dataset.packages[:50]] * 4

    def statuses(seed: int) -> list[int]:
        upstream.reset()
        upstream.random_faults = {"503": 0.2, "500": 0.1}
        upstream.seed = seed
        return [client.get(path).status_code for path in paths]

    first = statuses(1)
    assert first == statuses(1)
    assert first != statuses(2)
    assert 0.1 < first.count(503) / len(first) < 0.3
    assert set(first) == {200, 500, 503}


async def test_random_faults_do_not_depend_on_arrival_order(upstream: FakeUpstream) -> None:
    """The nth request for a path meets the same fate however concurrent requests interleave."""
    paths = [f"packages/{row.id}/" for row in upstream.dataset.packages[:30]] * 2
    upstream.random_faults = {"503": 0.3}
    upstream.seed = 5
    async with httpx.AsyncClient(base_url=upstream.base_url) as client:
        concurrent = await asyncio.gather(*(client.get(path) for path in paths))
        upstream.reset()
        upstream.random_faults = {"503": 0.3}
        upstream.seed = 5
        serial = [await client.get(path) for path in paths]
    assert [r.status_code for r in concurrent] == [r.status_code for r in serial]


def test_an_outage_hits_everything_until_it_ends(
    client: httpx.Client, upstream: FakeUpstream
) -> None:
    upstream.outage = "503"
    assert {client.get(path).status_code for path in ("", "grids/1/", "search/?q=x")} == {503}
    upstream.outage = None
    assert client.get("grids/1/").status_code == 200


def test_oversized_body_is_streamed_past_any_bound(upstream: FakeUpstream) -> None:
    upstream.faults["/api/v4/packages/"] = "oversized"
    with (
        httpx.Client(base_url=upstream.base_url) as client,
        client.stream("GET", "packages/1/") as response,
    ):
        assert response.status_code == 200
        assert "content-length" not in response.headers
        size = sum(len(chunk) for chunk in response.iter_raw())
    assert size > 50 * 2**20


def test_hang_lasts_until_the_client_gives_up(upstream: FakeUpstream) -> None:
    upstream.faults["/api/v4/packages/"] = "hang"
    with httpx.Client(timeout=0.3) as client, pytest.raises(httpx.ReadTimeout):
        client.get(f"{upstream.base_url}packages/")
    assert upstream.wait_until(lambda: upstream.in_flight == 0, timeout=2)


def test_foreign_origin_forges_every_link(client: httpx.Client, upstream: FakeUpstream) -> None:
    upstream.foreign_origin = "https://evil.example"
    page = client.get("packages/?limit=1").json()
    assert page["next"] == "https://evil.example/api/v4/packages/?limit=1&offset=1"
    assert page["results"][0]["category"].startswith("https://evil.example/api/v4/categories/")


async def test_latency_and_peak_in_flight(upstream: FakeUpstream) -> None:
    upstream.latency = 0.2
    started = time.monotonic()
    async with httpx.AsyncClient(base_url=upstream.base_url) as client:
        responses = await asyncio.gather(*(client.get(f"packages/{i}/") for i in range(5)))
    assert all(r.status_code in (200, 404) for r in responses)
    assert 0.2 <= time.monotonic() - started < 1.5
    assert upstream.peak_in_flight == 5 and upstream.in_flight == 0


def test_dataset_can_be_replaced(client: httpx.Client, upstream: FakeUpstream) -> None:
    replacement = generate(scale=0.01, seed=3)
    upstream.dataset = replacement
    page = client.get("packages/?limit=1").json()
    assert page["count"] == len(replacement.packages)
    assert page["results"][0]["title"] == replacement.packages[-1].title


async def test_full_scale_catalogue_serves_everything_in_one_response() -> None:
    started = time.perf_counter()
    dataset = generate()
    assert time.perf_counter() - started < 10  # generous: CI machines are shared
    assert 5300 <= len(dataset.packages) <= 5500 and dataset.packages[-1].id <= 6000
    assert 370 <= len(dataset.grids) <= 450 and 12000 <= len(dataset.grid_packages) <= 14000
    app = FakeUpstream(dataset)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url=app.base_url) as client:
        started = time.perf_counter()
        response = await client.get("packages/?limit=10000")
        assert time.perf_counter() - started < 10
    assert len(response.json()["results"]) == len(dataset.packages)


def test_the_module_serves_the_demo_catalogue_until_terminated() -> None:
    """`python -m tests.fake_upstream`, as a person or a benchmark starts it from the checkout."""
    command = [sys.executable, "-m", "tests.fake_upstream", "--port", "0", "--scale", "0.01"]
    process = subprocess.Popen(
        command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        announced = process.stdout.readline()  # printed once the socket listens
        assert announced.startswith("fake APIv4 at http://127.0.0.1:"), process.communicate()
        base_url = announced.split()[-1]
        page = httpx.get(f"{base_url}packages/?limit=1", timeout=10).json()
        assert page["count"] == len(generate(scale=0.01).packages)
        assert page["results"][0]["category"].startswith(base_url)
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=15)
    assert process.returncode == -signal.SIGTERM  # uvicorn re-raises the signal it stopped on
    assert "Traceback" not in stderr


def test_the_module_refuses_a_scale_it_cannot_generate() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "tests.fake_upstream", "--scale", "0"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert run.returncode == 2
    assert "--scale must be positive" in run.stderr
