"""The contract over the REST backend, against the fake APIv4 on loopback."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from gateway.cli import run_query
from gateway.config import Settings
from gateway.loaders.rest.backend import MAX_DETAILS
from tests.expected import (
    LIST_REQUESTS,
    PACKAGE_DATETIMES,
    grid_ids_of_package,
    package_fields,
    package_ids_of_category,
    package_ids_of_grid,
    parse_datetimes,
    when,
)
from tests.fake_upstream import FakeUpstream, FaultKind, serve_upstream

PACKAGE_FIELDS = """
    id databaseId title slug lastUpdated lastFetched repoUrl pypiVersion created modified
    repoForks repoDescription pypiUrl documentationUrl repoWatchers commitsOver52 participants
"""


async def query(
    upstream: FakeUpstream, document: str, timeout: float = 5.0, **variables: Any
) -> dict[str, Any]:
    settings = Settings(upstream=upstream.base_url, upstream_timeout=timeout)
    return dict(await run_query(settings, document, variables or None))


async def data_of(upstream: FakeUpstream, document: str, **variables: Any) -> dict[str, Any]:
    body = await query(upstream, document, **variables)
    assert "errors" not in body, body["errors"]
    result: dict[str, Any] = body["data"]
    return result


def codes(body: dict[str, Any]) -> list[str]:
    return [error["extensions"]["code"] for error in body.get("errors", [])]


async def test_every_package_field_matches_the_dataset(upstream: FakeUpstream) -> None:
    dataset = upstream.dataset
    page = await data_of(
        upstream,
        "query($ids: [ID!]!) { nodes(ids: $ids) { __typename ... on Package { %s"
        " category { databaseId } grids(first: 100) { totalCount nodes { databaseId } } } } }"
        % PACKAGE_FIELDS,
        ids=[await _global_id(upstream, "packages", row.id) for row in dataset.packages[:40]],
    )
    for row, node in zip(dataset.packages[:40], page["nodes"], strict=True):
        assert node["__typename"] == "Package"
        served = {key: value for key, value in node.items() if key in package_fields(dataset, row)}
        assert parse_datetimes(served, PACKAGE_DATETIMES) == package_fields(dataset, row)
        assert node["category"]["databaseId"] == row.category_id
        grid_ids = grid_ids_of_package(dataset, row.id)
        assert node["grids"]["totalCount"] == len(grid_ids)
        assert [grid["databaseId"] for grid in node["grids"]["nodes"]] == grid_ids


async def _global_id(upstream: FakeUpstream, kind: str, id: int) -> str:
    type_name = {"packages": "Package", "grids": "Grid", "categories": "Category"}[kind]
    field = {"packages": "package", "grids": "grid", "categories": "category"}[kind]
    data = await data_of(upstream, "query($id: Int!) { x: %s(id: $id) { id } }" % field, id=id)
    global_id: str = data["x"]["id"]
    node = await data_of(
        upstream, "query($id: ID!) { node(id: $id) { __typename id } }", id=global_id
    )
    assert node["node"] == {"__typename": type_name, "id": global_id}
    return global_id


async def test_datetimes_keep_the_upstream_offset(upstream: FakeUpstream) -> None:
    row = upstream.dataset.packages[0]
    data = await data_of(upstream, "{ package(id: %d) { created } }" % row.id)
    created = data["package"]["created"]
    assert created.endswith(("-04:00", "-05:00")), created
    assert when(created) == row.created


async def test_every_grid_and_its_packages_in_title_order(upstream: FakeUpstream) -> None:
    dataset = upstream.dataset
    for row in dataset.grids:
        data = await data_of(
            upstream,
            "query($slug: String!) { grid(slug: $slug) { databaseId title slug description"
            " isLocked header created modified"
            " packages(first: 100) { totalCount nodes { databaseId } } } }",
            slug=row.slug,
        )
        grid = data["grid"]
        assert grid["databaseId"] == row.id
        assert (grid["title"], grid["slug"], grid["description"]) == (
            row.title,
            row.slug,
            row.description,
        )
        assert (grid["isLocked"], grid["header"]) == (row.is_locked, row.header)
        assert (when(grid["created"]), when(grid["modified"])) == (row.created, row.modified)
        expected = package_ids_of_grid(dataset, row.id)
        assert grid["packages"]["totalCount"] == len(expected)
        assert [p["databaseId"] for p in grid["packages"]["nodes"]] == expected[:100]


async def test_title_order_is_byte_order(upstream: FakeUpstream) -> None:
    """Capitals before lower case: the upstream's C collation, not a case-insensitive sort."""
    quirks = await data_of(
        upstream, '{ grid(slug: "quirks-edge-cases") { packages(first: 100) { nodes { title } } } }'
    )
    titles = [node["title"] for node in quirks["grid"]["packages"]["nodes"]]
    assert titles == sorted(titles, key=str.encode)
    assert titles != sorted(titles, key=str.lower)


async def test_categories_and_their_packages(upstream: FakeUpstream) -> None:
    dataset = upstream.dataset
    data = await data_of(
        upstream,
        "{ categories { totalCount nodes { databaseId title slug description titlePlural"
        " showPypi created modified packages(first: 100) { totalCount nodes { databaseId } } } } }",
    )
    categories = data["categories"]
    assert categories["totalCount"] == len(dataset.categories)
    rows = sorted(dataset.categories, key=lambda row: row.id, reverse=True)
    for row, node in zip(rows, categories["nodes"], strict=True):
        assert node["databaseId"] == row.id
        assert (node["title"], node["slug"], node["description"]) == (
            row.title,
            row.slug,
            row.description,
        )
        assert (node["titlePlural"], node["showPypi"]) == (row.title_plural, row.show_pypi)
        assert when(node["created"]) == row.created
        expected = package_ids_of_category(dataset, row.id)
        assert node["packages"]["totalCount"] == len(expected)
        assert [p["databaseId"] for p in node["packages"]["nodes"]] == expected[:100]


async def test_paging_through_the_whole_package_list(upstream: FakeUpstream) -> None:
    expected = sorted((row.id for row in upstream.dataset.packages), reverse=True)
    seen: list[int] = []
    after: str | None = None
    pages = 0
    while True:
        data = await data_of(
            upstream,
            "query($after: String) { packages(first: 25, after: $after) { totalCount"
            " edges { cursor node { databaseId } }"
            " pageInfo { hasNextPage hasPreviousPage startCursor endCursor } } }",
            after=after,
        )
        connection = data["packages"]
        assert connection["totalCount"] == len(expected)
        edges = connection["edges"]
        info = connection["pageInfo"]
        assert info["startCursor"] == edges[0]["cursor"]
        assert info["endCursor"] == edges[-1]["cursor"]
        assert info["hasPreviousPage"] is (pages > 0)
        seen += [edge["node"]["databaseId"] for edge in edges]
        pages += 1
        if not info["hasNextPage"]:
            break
        after = info["endCursor"]
    assert seen == expected
    assert pages == -(-len(expected) // 25)


async def test_one_list_request_per_page(upstream: FakeUpstream) -> None:
    """A first page is one list request; a page after a cursor is read from the snapshot (the
    upstream's offsets cannot hold a cursor's place), which one request then keeps at hand."""
    first = await data_of(upstream, "{ packages(first: 10) { pageInfo { endCursor } } }")
    assert upstream.requests == ["/api/v4/packages/?limit=10&offset=0"]
    upstream.reset()
    cursor = first["packages"]["pageInfo"]["endCursor"]
    await data_of(upstream, '{ packages(first: 7, after: "%s") { nodes { slug } } }' % cursor)
    lists = {"categories", "grids", "packages"}
    assert upstream.requests == [f"/api/v4/{name}/?limit=100000&offset=0" for name in sorted(lists)]


async def test_first_zero_gives_the_count_and_no_nodes(upstream: FakeUpstream) -> None:
    data = await data_of(
        upstream, "{ grids(first: 0) { totalCount nodes { id } pageInfo { hasNextPage } } }"
    )
    assert data["grids"] == {
        "totalCount": len(upstream.dataset.grids),
        "nodes": [],
        "pageInfo": {"hasNextPage": True},
    }


async def test_lookups_by_id_and_slug_and_unknowns(upstream: FakeUpstream) -> None:
    package = upstream.dataset.packages[3]
    grid = upstream.dataset.grids[1]
    category = upstream.dataset.categories[2]
    body = await query(
        upstream,
        "query($p: String!, $g: String!, $c: String!) {"
        " a: package(slug: $p) { databaseId } b: package(id: %d) { slug }"
        " c: grid(slug: $g) { databaseId } d: grid(id: %d) { slug }"
        " e: category(slug: $c) { databaseId } f: category(id: %d) { slug }"
        ' u1: package(id: 999999) { id } u2: package(slug: "no-such-package") { id }'
        ' u3: grid(slug: "no-such-grid") { id } u4: category(id: 999) { id }'
        ' u5: category(slug: "nope") { id } u6: package(slug: "%d") { id } }'
        % (package.id, grid.id, category.id, package.id),
        p=package.slug,
        g=grid.slug,
        c=category.slug,
    )
    assert "errors" not in body
    data = body["data"]
    assert data["a"] == {"databaseId": package.id} and data["b"] == {"slug": package.slug}
    assert data["c"] == {"databaseId": grid.id} and data["d"] == {"slug": grid.slug}
    assert data["e"] == {"databaseId": category.id} and data["f"] == {"slug": category.slug}
    # An all-digit slug is an id to the upstream; it must not return the package with that id.
    assert [data[f"u{i}"] for i in range(1, 7)] == [None] * 6


async def test_node_refetches_every_type_and_unknowns_are_null(upstream: FakeUpstream) -> None:
    dataset = upstream.dataset
    for kind, row_id in (
        ("packages", dataset.packages[5].id),
        ("grids", dataset.grids[2].id),
        ("categories", dataset.categories[1].id),
    ):
        await _global_id(upstream, kind, row_id)
    # Well-formed global ids of an unknown type or an unknown id are null, not errors.
    body = await query(
        upstream,
        '{ a: node(id: "UGFja2FnZTo5OTk5OTk=") { id } b: node(id: "VXNlcjox") { id }'
        ' c: nodes(ids: ["UGFja2FnZTo5OTk5OTk=", "Q2F0ZWdvcnk6MQ=="]) { id } }',
    )
    assert "errors" not in body
    assert body["data"] == {"a": None, "b": None, "c": [None, {"id": "Q2F0ZWdvcnk6MQ=="}]}


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ('{ package(id: 1, slug: "x") { id } }', "exactly one"),
        ("{ package { id } }", "exactly one"),
        ('{ grid(id: 1, slug: "x") { id } }', "exactly one"),
        ("{ category { id } }", "exactly one"),
        ("{ p: package(id: 1) { grids(first: 101) { totalCount } } }", "exceed 100"),
        ("{ p: package(id: 1) { grids(first: -1) { totalCount } } }", "negative"),
        ('{ p: package(id: 1) { grids(after: "bad") { totalCount } } }', "cursor"),
        ('{ p: package(id: 1) { grids(after: "UGFja2FnZTox") { totalCount } } }', "cursor"),
        ('{ n: node(id: "not base64!") { id } }', "node id"),
    ],
)
async def test_bad_input_is_a_bad_user_input_error(
    upstream: FakeUpstream, document: str, message: str
) -> None:
    body = await query(upstream, document)
    assert codes(body) == ["BAD_USER_INPUT"]
    assert message in body["errors"][0]["message"]


async def test_top_level_first_over_100_fails_the_request(upstream: FakeUpstream) -> None:
    body = await query(upstream, "{ packages(first: 101) { totalCount } }")
    assert codes(body) == ["BAD_USER_INPUT"]
    assert body["data"] is None
    assert upstream.count == 0


async def test_fan_out_costs_the_grid_and_the_catalogue_lists(upstream: FakeUpstream) -> None:
    """A grid's hundred packages are more than `MAX_DETAILS`: the snapshot's three lists
    bring them all, and their categories and grids, instead of a GET each."""
    dataset = upstream.dataset
    grid = max(dataset.grids, key=lambda row: len(package_ids_of_grid(dataset, row.id)))
    package_ids = package_ids_of_grid(dataset, grid.id)[:100]
    assert len(package_ids) > MAX_DETAILS  # the fan-out really fans out
    packages = {row.id: row for row in dataset.packages}
    grids = {row.id: row for row in dataset.grids}
    upstream.reset()
    data = await data_of(
        upstream,
        "query($slug: String!) { grid(slug: $slug) { packages(first: 100) { nodes {"
        " slug category { slug } grids(first: 10) { nodes { slug } } } } } }",
        slug=grid.slug,
    )
    nodes = data["grid"]["packages"]["nodes"]
    assert [node["slug"] for node in nodes] == [packages[id].slug for id in package_ids]
    for node, id in zip(nodes, package_ids, strict=True):
        assert node["grids"]["nodes"] == [
            {"slug": grids[gid].slug} for gid in grid_ids_of_package(dataset, id)[:10]
        ]
    assert sorted(upstream.requests) == sorted([f"/api/v4/grids/{grid.slug}/", *LIST_REQUESTS])


async def test_a_few_records_cost_a_get_each(upstream: FakeUpstream) -> None:
    """A package with its category and grids: fewer than `MAX_DETAILS` of each, no lists."""
    dataset = upstream.dataset
    row = max(dataset.packages, key=lambda p: len(grid_ids_of_package(dataset, p.id)))
    grid_ids = grid_ids_of_package(dataset, row.id)[:10]
    assert 1 < len(grid_ids) <= MAX_DETAILS
    upstream.reset()
    data = await data_of(
        upstream,
        "query($id: Int!) { package(id: $id) { category { slug } grids(first: 10) {"
        " nodes { databaseId } } } }",
        id=row.id,
    )
    assert [n["databaseId"] for n in data["package"]["grids"]["nodes"]] == grid_ids
    expected = [f"/api/v4/packages/{row.id}/", f"/api/v4/categories/{row.category_id}/"]
    expected += [f"/api/v4/grids/{id}/" for id in grid_ids]
    assert sorted(upstream.requests) == sorted(expected)


async def test_the_same_package_twice_costs_one_request(upstream: FakeUpstream) -> None:
    row = upstream.dataset.packages[7]
    data = await data_of(
        upstream,
        "{ a: package(id: %d) { title } b: package(id: %d) { slug"
        " grids { nodes { packages { nodes { databaseId } } } } } }" % (row.id, row.id),
    )
    assert data["a"]["title"] == row.title and data["b"]["slug"] == row.slug
    assert upstream.requests.count(f"/api/v4/packages/{row.id}/") == 1


async def test_category_packages_cost_the_catalogue_snapshot(upstream: FakeUpstream) -> None:
    """The upstream cannot filter by category: the snapshot's whole lists, one request each."""
    data = await data_of(
        upstream,
        "{ category(id: 1) { packages(first: 5) {"
        " totalCount nodes { title category { slug } } } } }",
    )
    assert len(data["category"]["packages"]["nodes"]) == 5
    assert upstream.requests[0] == "/api/v4/categories/1/"
    assert sorted(upstream.requests[1:]) == [
        f"/api/v4/{resource}/?limit=100000&offset=0"
        for resource in ("categories", "grids", "packages")
    ]


async def test_search_wraps_the_upstream_and_resolves_relations(upstream: FakeUpstream) -> None:
    import httpx

    term = "django"
    async with httpx.AsyncClient() as client:
        raw = (await client.get(upstream.base_url + "search/", params={"q": term})).json()
    assert raw, "the search term must find something"
    data = await data_of(
        upstream,
        "query($q: String!) { search(query: $q) { itemType title slug description category"
        " weight repoWatchers repoForks pypiDownloads usage participants lastCommitted"
        " lastReleased absoluteUrl created modified package { slug } grid { slug } } }",
        q=term,
    )
    assert len(data["search"]) == len(raw)
    for hit, item in zip(data["search"], raw, strict=True):
        assert hit["itemType"] == item["item_type"].upper()
        for field, key in (
            ("title", "title"),
            ("slug", "slug"),
            ("description", "description"),
            ("category", "category"),
            ("weight", "weight"),
            ("absoluteUrl", "absolute_url"),
            ("pypiDownloads", "pypi_downloads"),
        ):
            assert hit[field] == item[key]
        assert hit["participants"] == [
            p.strip() for p in item["participants"].split(",") if p.strip()
        ]
        assert when(hit["created"]) == when(item["created"])
        assert when(hit["lastCommitted"]) == when(item["last_committed"])
        resolved = hit["package"] if item["item_type"] == "package" else hit["grid"]
        other = hit["grid"] if item["item_type"] == "package" else hit["package"]
        assert resolved == {"slug": item["slug"]} and other is None


async def test_empty_search_is_empty_without_a_request(upstream: FakeUpstream) -> None:
    assert await data_of(upstream, '{ search(query: "  ") { slug } }') == {"search": []}
    assert upstream.count == 0


@pytest.mark.parametrize("fault", ["500", "503", "malformed", "wrong-shape", "hang"])
async def test_an_upstream_fault_fails_only_the_fields_that_needed_it(
    upstream: FakeUpstream, fault: FaultKind
) -> None:
    grid = upstream.dataset.grids[0]
    upstream.faults["/api/v4/grids/"] = fault
    body = await query(
        upstream,
        "{ grid(id: %d) { title } packages(first: 3) { nodes { title } }"
        " categories { totalCount } }" % grid.id,
        timeout=0.5,
    )
    assert codes(body) == ["UPSTREAM_ERROR"]
    assert body["errors"][0]["path"] == ["grid"]
    assert body["data"]["grid"] is None
    assert len(body["data"]["packages"]["nodes"]) == 3
    assert body["data"]["categories"]["totalCount"] == len(upstream.dataset.categories)
    message = body["errors"][0]["message"]
    assert "127.0.0.1" not in message and "/api/v4" not in message


async def test_an_unreachable_upstream_is_an_upstream_error(upstream: FakeUpstream) -> None:
    settings = Settings(upstream="http://127.0.0.1:9/api/v4/", upstream_timeout=1.0)
    body = dict(await run_query(settings, "{ package(id: 1) { title } }"))
    assert codes(body) == ["UPSTREAM_ERROR"]
    assert body["data"] == {"package": None}


async def test_links_to_a_foreign_host_are_read_for_their_id_only(upstream: FakeUpstream) -> None:
    """The links point at another live APIv4 (which would answer): it must never be asked."""
    with serve_upstream(upstream.dataset) as foreign:
        upstream.foreign_origin = foreign.base_url.removesuffix("/api/v4/")
        row = next(
            r for r in upstream.dataset.packages if grid_ids_of_package(upstream.dataset, r.id)
        )
        data = await data_of(
            upstream,
            "{ package(id: %d) { category { databaseId } grids { nodes { databaseId } } } }"
            % row.id,
        )
        assert foreign.count == 0
    assert data["package"]["category"]["databaseId"] == row.category_id
    expected = grid_ids_of_package(upstream.dataset, row.id)
    assert [g["databaseId"] for g in data["package"]["grids"]["nodes"]] == expected
    assert upstream.count > 0


@pytest.mark.parametrize(
    ("document", "variables", "code"),
    [
        ("query($id: Int!) { package(id: $id) { id } }", {"id": "x"}, "BAD_USER_INPUT"),
        ("query($id: Int!) { package(id: $id) { id } }", {}, "BAD_USER_INPUT"),
        ("query($id: Int!) { package(id: $id) { id } }", {"id": None}, "BAD_USER_INPUT"),
        ("query($v: Int) { categories { totalCount } }", {}, "GRAPHQL_VALIDATION_FAILED"),
        ("{ package(id: $nope) { id } }", {}, "GRAPHQL_VALIDATION_FAILED"),
        ("{ package(id: 1) { id }", {}, "GRAPHQL_PARSE_FAILED"),
    ],
)
async def test_request_errors_say_whose_fault_they_are(
    upstream: FakeUpstream, document: str, variables: dict[str, Any], code: str
) -> None:
    settings = Settings(upstream=upstream.base_url)
    body = dict(await run_query(settings, document, variables))
    assert codes(body) == [code]
    assert "data" not in body
    assert upstream.count == 0


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("package(id: 1) { grids(after: $v) { totalCount } }", b64("arrayconnection:²"), "cursor"),
        (
            "package(id: 1) { grids(after: $v) { totalCount } }",
            b64("arrayconnection:" + "9" * 5000),
            "cursor",
        ),
        ("search(query: $v) { title }", "a\x00b", "NUL"),
        ("search(query: $v) { title }", "x" * 1001, "longer than"),
    ],
)
async def test_odd_input_is_bad_user_input(
    upstream: FakeUpstream, field: str, value: str, message: str
) -> None:
    body = await query(upstream, "query($v: String!) { x: %s }" % field, v=value)
    assert codes(body) == ["BAD_USER_INPUT"] and message in body["errors"][0]["message"]
    assert len(body["errors"][0]["message"]) < 200  # the value is not echoed whole
    assert upstream.count <= 1  # the package, never the odd value


async def test_odd_ids_and_slugs_name_nothing(upstream: FakeUpstream) -> None:
    """Unicode digits, ids past any bigint, NUL and overlong slugs: null, and no request."""
    body = await query(
        upstream,
        "query($a: ID!, $b: ID!, $c: String!, $d: String!) { a: node(id: $a) { id }"
        " b: node(id: $b) { id } c: package(slug: $c) { id } d: grid(slug: $d) { id }"
        ' e: package(slug: "..") { id } }',
        a=b64("Package:²"),
        b=b64("Package:" + "9" * 5000),
        c="a\x00b",
        d="x" * 101,
    )
    assert body == {"data": {"a": None, "b": None, "c": None, "d": None, "e": None}}
    assert upstream.count == 0
