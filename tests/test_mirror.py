"""`gateway mirror`: the fake APIv4 copied into SQLite and PostgreSQL, and read back as the API.

A mirror is checked by what the API shows: the catalogue read back from the database must equal
the one the fake upstream serves, relation order and datetimes (as instants) included.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.cli import main
from gateway.errors import MirrorError, UpstreamError
from gateway.loaders.records import split_participants
from gateway.loaders.rest.wire import (
    CategoryJSON,
    GridJSON,
    ListJSON,
    PackageJSON,
    decode,
    id_from_url,
)
from gateway.loaders.sql import mirror as mirror_module
from gateway.loaders.sql.mirror import build_catalogue, mirror, mirror_to
from gateway.loaders.sql.rows import Dataset
from gateway.loaders.sql.tables import category, grid, grid_package, package, version
from gateway.loaders.sql.writer import TableChanges
from tests.fake_upstream import FakeUpstream
from tests.test_writer import edit, fresh_database

ROOT = Path(__file__).resolve().parent.parent
NOWHERE = "http://127.0.0.1:1/api/v4/"


@pytest.fixture(params=["sqlite", "postgresql"])
async def database(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    async with fresh_database(request.param, tmp_path) as engine:
        yield engine


def api_view(dataset: Dataset) -> dict[str, Any]:
    """What the API shows of a dataset: the fields, each package's grids in row-id order."""
    numbers = {v.id: v.number for v in dataset.versions}
    grids_of: dict[int, list[int]] = {p.id: [] for p in dataset.packages}
    members: dict[int, set[int]] = {g.id: set() for g in dataset.grids}
    for row in sorted(dataset.grid_packages, key=lambda row: row.id):
        grids_of[row.package_id].append(row.grid_id)
        members[row.grid_id].add(row.package_id)
    return {
        "categories": {
            c.id: (
                c.title,
                c.slug,
                c.description,
                c.title_plural,
                c.show_pypi,
                c.created,
                c.modified,
            )
            for c in dataset.categories
        },
        "grids": {
            g.id: (
                g.title,
                g.slug,
                g.description,
                g.is_locked,
                g.header,
                g.created,
                g.modified,
                members[g.id],
            )
            for g in dataset.grids
        },
        "packages": {
            p.id: (
                p.title,
                p.slug,
                p.category_id,
                p.last_commit_date,
                p.last_fetched,
                p.repo_url,
                numbers.get(p.latest_version_id or 0),
                p.created,
                p.modified,
                p.repo_forks,
                p.repo_description,
                p.pypi_url,
                p.documentation_url,
                p.repo_watchers,
                tuple(p.commits_over_52w),
                split_participants(p.participants),
                grids_of[p.id],
            )
            for p in dataset.packages
        },
    }


async def database_view(engine: AsyncEngine) -> dict[str, Any]:
    """The same view, read from the mirrored tables."""

    async def rows(table: Any) -> list[Any]:
        return list(await connection.execute(select(table).order_by(table.c.id)))

    async with engine.connect() as connection:
        dataset = Dataset(
            categories=tuple(await rows(category)),
            packages=tuple(await rows(package)),
            versions=tuple(await rows(version)),
            grids=tuple(await rows(grid)),
            grid_packages=tuple(await rows(grid_package)),
            search_rows=(),
        )
    return api_view(dataset)


async def test_a_first_mirror_copies_what_the_api_shows(
    upstream: FakeUpstream, database: AsyncEngine
) -> None:
    summary = await mirror(upstream.base_url, database)

    assert await database_view(database) == api_view(upstream.dataset)
    source = upstream.dataset
    assert summary.changes.tables["package_package"] == TableChanges(len(source.packages), 0, 0)
    assert summary.memberships == len(source.grid_packages)
    assert (summary.inconsistent, summary.dropped) == (0, 0)
    # The check above means something: some package's grids are not in grid-id order.
    orders = api_view(source)["packages"].values()
    assert any(grids != sorted(grids) for *_, grids in orders)


async def test_a_second_mirror_changes_exactly_what_changed(
    upstream: FakeUpstream, database: AsyncEngine
) -> None:
    await mirror(upstream.base_url, database)
    original = upstream.dataset
    changed, removed, _ = edit(original)
    upstream.dataset = changed

    summary = await mirror(upstream.base_url, database)

    assert await database_view(database) == api_view(changed)
    memberships = sum(row.package_id == removed.id for row in original.grid_packages)
    tables = summary.changes.tables
    assert tables["package_category"] == tables["grid_grid"] == TableChanges(0, 0, 0)
    assert tables["package_package"] == TableChanges(inserted=1, updated=1, deleted=1)
    assert tables["package_version"] == TableChanges(inserted=0, updated=0, deleted=1)
    assert tables["grid_gridpackage"] == TableChanges(inserted=1, updated=0, deleted=memberships)


async def test_pages_are_read_concurrently_within_the_bound(
    upstream: FakeUpstream, database: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(mirror_module, "PAGE_SIZE", 10)
    upstream.latency = 0.02
    seen: list[tuple[str, int, int]] = []

    await mirror(upstream.base_url, database, concurrency=3, progress=lambda *a: seen.append(a))

    packages = len(upstream.dataset.packages)
    pages = [r for r in upstream.requests if r.startswith("/api/v4/packages/")]
    assert len(pages) == -(-packages // 10)
    assert upstream.peak_in_flight == 3
    assert seen[-1] == ("packages", packages, packages)
    assert await database_view(database) == api_view(upstream.dataset)


async def test_an_upstream_failing_half_way_leaves_the_previous_copy(
    upstream: FakeUpstream, database: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    await mirror(upstream.base_url, database)
    previous = api_view(upstream.dataset)
    upstream.dataset = edit(upstream.dataset)[0]
    monkeypatch.setattr(mirror_module, "PAGE_SIZE", 10)

    def fail_after_the_first_page(resource: str, done: int, total: int) -> None:
        if resource == "packages":
            upstream.faults["/api/v4/packages/"] = "500"

    with pytest.raises(UpstreamError, match="HTTP 500"):
        await mirror(upstream.base_url, database, progress=fail_after_the_first_page)

    pages = [r for r in upstream.requests if r.startswith("/api/v4/packages/")]
    assert len(pages) > 1
    assert await database_view(database) == previous


@pytest.mark.parametrize("fault", ["malformed", "wrong-shape", "503"])
async def test_a_broken_upstream_writes_nothing(
    upstream: FakeUpstream, tmp_path: Path, fault: Any
) -> None:
    target = tmp_path / "mirror.sqlite3"
    upstream.faults["/api/v4/grids/"] = fault

    with pytest.raises(MirrorError) as raised:
        await mirror_to(upstream.base_url, f"sqlite:///{target}")

    assert str(raised.value).startswith("upstream: ")
    assert "\n" not in str(raised.value)
    assert not target.exists()


def read_json(
    upstream: FakeUpstream,
) -> tuple[list[CategoryJSON], list[GridJSON], list[PackageJSON]]:
    """The three lists as the upstream serves them, decoded as the mirror decodes them."""

    def read(resource: str, kind: Any) -> list[Any]:
        body = httpx.get(f"{upstream.base_url}{resource}/?limit=1000").content
        return [decode(raw, kind, resource) for raw in decode(body, ListJSON, resource).results]

    return read("categories", CategoryJSON), read("grids", GridJSON), read("packages", PackageJSON)


def test_memberships_listed_on_one_side_are_kept_and_counted(upstream: FakeUpstream) -> None:
    categories, grids, packages = read_json(upstream)
    forgetful, other = [p for p in packages if len(p.grids) >= 2][:2]
    forgotten = forgetful.grids[0]
    unlisted = next(g for g in grids if f"grids/{g.id}/" not in " ".join(other.grids))
    unlisted_url = f"{upstream.base_url}grids/{unlisted.id}/"
    gone = f"{upstream.base_url}grids/99999/"
    changed = {
        # The package forgets a grid that still lists it, and links a grid that is gone.
        forgetful.id: msgspec.structs.replace(forgetful, grids=[*forgetful.grids[1:], gone]),
        # The package links a grid that does not list it.
        other.id: msgspec.structs.replace(other, grids=[unlisted_url, *other.grids]),
    }
    packages = [changed.get(p.id, p) for p in packages]
    # A grid lists a package that is gone.
    grids[0] = msgspec.structs.replace(
        grids[0], packages=[*grids[0].packages, f"{upstream.base_url}packages/99999/"]
    )

    catalogue = build_catalogue(categories, grids, packages, datetime.now(UTC))

    assert (catalogue.inconsistent, catalogue.dropped) == (2, 2)
    orders = {id_: fields[-1] for id_, fields in api_view(catalogue.dataset)["packages"].items()}
    assert orders[forgetful.id] == [*map(id_from_url, forgetful.grids[1:]), id_from_url(forgotten)]
    assert orders[other.id] == [unlisted.id, *map(id_from_url, other.grids)]


def test_a_package_in_an_unlisted_category_stops_the_mirror(upstream: FakeUpstream) -> None:
    categories, grids, packages = read_json(upstream)
    lost = packages[0].category

    with pytest.raises(UpstreamError, match="category it does not list"):
        build_catalogue(
            [c for c in categories if id_from_url(lost) != c.id], grids, packages, datetime.now(UTC)
        )


# -- the command ---------------------------------------------------------------------------


def run_main(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exited:
        main(["mirror", *args])
    out, err = capsys.readouterr()
    return int(exited.value.code or 0), out, err


def test_an_unreachable_upstream_is_a_one_line_error(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    target = tmp_path / "mirror.sqlite3"

    code, out, err = run_main(capsys, "--from", NOWHERE, "--to", f"sqlite:///{target}")

    assert code == 1
    assert out == ""
    assert err.startswith("gateway: error: upstream: The upstream API could not be reached")
    assert err.count("\n") == 1
    assert not target.exists()


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--from", NOWHERE, "--to", "mysql://localhost/db"], "sqlite:// or postgresql://"),
        (["--from", "djangopackages.org", "--to", "sqlite:///x.db"], "http:// or https://"),
        (["--from", NOWHERE, "--to", "sqlite:///x.db", "--concurrency", "0"], "at least 1"),
        (["--to", "sqlite:///x.db"], "--from"),
        (["--from", NOWHERE, "--to", "sqlite:///x.db", "--concurrency", "many"], "invalid int"),
    ],
)
def test_wrong_arguments_are_one_line_errors(
    capsys: pytest.CaptureFixture[str], args: list[str], needle: str
) -> None:
    code, out, err = run_main(capsys, *args)

    assert code == 2
    assert out == ""
    assert err.startswith("gateway: error: ")
    assert needle in err
    assert err.count("\n") == 1


def test_the_command_mirrors_and_prints_a_summary(upstream: FakeUpstream, tmp_path: Path) -> None:
    target = tmp_path / "mirror.sqlite3"

    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "gateway",
            "mirror",
            "--from",
            upstream.base_url,
            "--to",
            f"sqlite:///{target}",
        ],
        capture_output=True,
        encoding="utf-8",
        cwd=ROOT,
        timeout=60,
        check=False,
    )

    assert run.returncode == 0, run.stderr
    packages = len(upstream.dataset.packages)
    assert f"packages {packages}/{packages}\n" in run.stderr
    assert "Traceback" not in run.stderr
    rows = {line.split()[0]: line.split()[1:] for line in run.stdout.splitlines()}
    assert rows["package_package"] == [str(packages), "0", "0"]
    assert rows["memberships:"][0] == str(len(upstream.dataset.grid_packages))
