"""A fake Django Packages APIv4, rendered from a `Dataset` as the real service renders its tables.

Tests and benchmarks run the gateway against it over real HTTP; it is test support, not part of
the gateway. It answers with the real service's shapes and quirks (Django REST Framework's:
limit/offset pages newest id first with absolute links on the request's host, `?format=` carried
into every link, lookups by id or slug, 301 for a missing trailing slash, an HTML 404 outside the
router, search as one plain list of at most 20), records every request with its time of arrival,
tracks how many are in flight, and can be made slow, faulty (by path, for the next few requests, at
random but reproducibly, or all at once in an outage) or link-forging at runtime.

`python -m tests.fake_upstream [--host H] [--port P] [--scale S] [--latency SECONDS]` serves it
over the generated demo catalogue until interrupted (`--port 0`: any free port; the first line
printed says where).
"""

from __future__ import annotations

import argparse
import asyncio
import heapq
import html
import random
import socket
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal
from urllib.parse import parse_qs, urlencode
from zoneinfo import ZoneInfo

import emoji
import msgspec
import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.demo.dataset import generate
from gateway.loaders.entities import Spec, fields_of, from_columns
from gateway.loaders.records import Form, Package
from gateway.loaders.sql.rows import Dataset

__all__ = [
    "API_PATH",
    "FakeUpstream",
    "FaultKind",
    "Logged",
    "create_upstream_app",
    "main",
    "serve_in_thread",
    "serve_upstream",
]

API_PATH = "/api/v4/"
DEFAULT_LIMIT = 20
SEARCH_LIMIT = 20
HANG_SECONDS = 300.0
OVERSIZED_BYTES = 60 * 2**20  # more than the real service ever sends: its whole list is 5 MB
NEW_YORK = ZoneInfo("America/New_York")

FaultKind = Literal["500", "503", "429", "hang", "malformed", "wrong-shape", "oversized"]
JSONDict = dict[str, Any]

_RESOURCES = {"categories": "Category", "grids": "Grid", "packages": "Package"}
_DRF_HEADERS = {"Allow": "GET, HEAD, OPTIONS", "Vary": "Accept, Cookie"}
_METHODS = ["GET", "HEAD", "OPTIONS", "POST", "PUT", "PATCH", "DELETE", "TRACE"]
_NOT_FOUND_HTML = (
    '<!doctype html>\n<html lang="en">\n<head>\n  <title>Not Found</title>\n</head>\n<body>\n'
    "  <h1>Not Found</h1><p>The requested resource was not found on this server.</p>\n"
    "</body>\n</html>\n"
)
_FAULT_BODIES: dict[str, tuple[int, bytes, str]] = {
    "500": (500, b"<h1>Server Error (500)</h1>", "text/html; charset=utf-8"),
    "503": (503, b"<h1>503 Service Unavailable</h1>", "text/html; charset=utf-8"),
    "malformed": (200, b'{"count": 3, "next": null, "results": [{"id": 1, "ti', "application/json"),
    "429": (429, b'{"detail": "Request was throttled."}', "application/json"),
}


@dataclass(frozen=True, slots=True)
class Logged:
    """A request as it arrived: its path and query, `time.monotonic()` then, and its headers
    (names lower-cased)."""

    target: str
    at: float
    headers: Mapping[str, str] = field(default_factory=dict)


def _when(value: datetime | None) -> str | None:
    """DRF renders aware datetimes in the site's zone: America/New_York."""
    return None if value is None else value.astimezone(NEW_YORK).isoformat()


def _shown(spec: Spec, value: Any) -> Any:
    if spec.is_time:
        return _when(value)
    if spec.rest_form is Form.COMMAS:
        return ",".join(value)
    return list(value) if isinstance(value, tuple) else value


def _rendered(item: msgspec.Struct, **given: Any) -> JSONDict:
    """A record as the APIv4 renders it, as its description says, but the keys `given`;
    its links are left to the request, which decides how they look."""
    return {
        spec.rest: given[spec.rest]
        if spec.rest in given
        else _shown(spec, getattr(item, spec.name))
        for spec in fields_of(type(item))
        if not spec.link
    }


_package = from_columns(Package)


@dataclass(frozen=True, slots=True)
class _Links:
    """How a request's links look: absolute, on its host, carrying its `format`."""

    origin: str
    suffix: str

    @property
    def prefix(self) -> str:
        return f"{self.origin}{API_PATH}"

    def to(self, resource: str, id_: int) -> str:
        return f"{self.prefix}{resource}/{id_}/{self.suffix}"


@dataclass(frozen=True, slots=True)
class _SearchDoc:
    item: JSONDict
    title: str
    slug: str
    description: str
    rest: str
    weight: int
    raw_title: str
    id: int


class _Catalogue:
    """A dataset rendered once: scalar fields by id, slug lookups, list orders, search haystacks."""

    def __init__(self, dataset: Dataset) -> None:
        self.categories = {c.id: _rendered(c) for c in dataset.categories}
        versions = {v.id: v.number for v in dataset.versions}
        grids_of: dict[int, list[int]] = {p.id: [] for p in dataset.packages}
        packages_of: dict[int, list[int]] = {g.id: [] for g in dataset.grids}
        for row in sorted(dataset.grid_packages, key=lambda row: row.id):
            grids_of[row.package_id].append(row.grid_id)
            packages_of[row.grid_id].append(row.package_id)
        titles = {p.id: p.title for p in dataset.packages}
        self.packages: dict[int, tuple[int, list[int], JSONDict]] = {
            p.id: (
                p.category_id,
                grids_of[p.id],
                _rendered(
                    _package(
                        [
                            getattr(p, spec.column) if spec.column else None
                            for spec in fields_of(Package)
                        ]
                    ),
                    pypi_version=versions.get(p.latest_version_id or 0),
                ),
            )
            for p in dataset.packages
        }
        # Grid.packages: ORDER BY title under a C collation (code point order), no tie-break of
        # its own upstream; ours breaks ties by id so that tests can predict it.
        self.grids: dict[int, tuple[list[tuple[str, Any]], list[int]]] = {
            g.id: (
                list(_rendered(g).items()),
                sorted(packages_of[g.id], key=lambda id_: (titles[id_], id_)),
            )
            for g in dataset.grids
        }
        self.package_slugs = {p.slug: p.id for p in dataset.packages}
        self.grid_slugs = {g.slug: g.id for g in dataset.grids}
        self.order = {
            "categories": sorted(self.categories, reverse=True),
            "grids": sorted(self.grids, reverse=True),
            "packages": sorted(self.packages, reverse=True),
        }
        self.search_docs = [
            _SearchDoc(
                item={
                    "description": emoji.emojize(s.description),
                    "title": emoji.emojize(s.title),
                    "title_no_prefix": s.title,
                    "slug_no_prefix": s.slug,
                    "clean_title": s.title,
                    "absolute_url": f"/{s.item_type}s/{s.item_type[0]}/{s.slug}/",
                    "created": _when(s.created),
                    "modified": _when(s.modified),
                    "weight": s.weight,
                    "item_type": s.item_type,
                    "slug": s.slug,
                    "category": s.category,
                    "repo_watchers": s.repo_watchers,
                    "repo_forks": s.repo_forks,
                    "pypi_downloads": s.pypi_downloads,
                    "score": s.score,
                    "usage": s.usage,
                    "participants": s.participants,
                    "last_committed": _when(s.last_committed),
                    "last_released": _when(s.last_released),
                },
                title=s.title.lower(),
                slug=s.slug.lower(),
                description=s.description.lower(),
                rest=f"{s.category}\n{s.participants}".lower(),
                weight=s.weight,
                raw_title=s.title,
                id=s.id,
            )
            for s in dataset.search_rows
        ]

    def lookup(self, resource: str, key: str) -> int | None:
        """Categories by integer id only; grids and packages by id when all digits, else slug."""
        if resource == "categories":
            with suppress(ValueError):
                return int(key)
            return None
        if key.isascii() and key.isdigit():
            return int(key)
        return (self.package_slugs if resource == "packages" else self.grid_slugs).get(key)

    def render(self, resource: str, id_: int, links: _Links) -> JSONDict | None:
        if resource == "categories":
            return self.categories.get(id_)
        if resource == "packages":
            if id_ not in self.packages:
                return None
            category_id, grid_ids, body = self.packages[id_]
            return {
                "category": links.to("categories", category_id),
                "grids": [links.to("grids", g) for g in grid_ids],
                **body,
            }
        if id_ not in self.grids:
            return None
        fields, package_ids = self.grids[id_]
        links_at = 5  # the APIv4 shows `packages` between `is_locked` and `header`
        packages = ("packages", [links.to("packages", p) for p in package_ids])
        return dict([*fields[:links_at], packages, *fields[links_at:]])

    def search(self, q: str) -> list[JSONDict]:
        """Every word must match somewhere; title beats slug beats description beats the rest."""
        words = q.lower().split()
        if not words:
            return []
        hits = []
        for doc in self.search_docs:
            points = 0
            for word in words:
                if word in doc.title:
                    points += 8
                elif word in doc.slug:
                    points += 4
                elif word in doc.description:
                    points += 2
                elif word in doc.rest:
                    points += 1
                else:
                    break
            else:
                hits.append((-points, -doc.weight, doc.raw_title, doc.id, doc))
        best = heapq.nsmallest(SEARCH_LIMIT, hits, key=lambda hit: hit[:4])
        return [hit[4].item for hit in best]


def _positive(value: str | None, *, strict: bool, default: int) -> int:
    """DRF's `_positive_int`: anything unparsable, negative (or zero when strict) is the default."""
    if value is None:
        return default
    try:
        number = int(value)
    except ValueError:
        return default
    return default if number < 0 or (strict and number == 0) else number


def _page_link(page_url: str, query: str, limit: int, offset: int) -> str:
    """DRF's replace/remove_query_param: other parameters kept, all sorted by name."""
    params = parse_qs(query, keep_blank_values=True)
    params["limit"] = [str(limit)]
    if offset > 0:
        params["offset"] = [str(offset)]
    else:
        params.pop("offset", None)
    return f"{page_url}?{urlencode(sorted(params.items()), doseq=True)}"


def _resolve(path: str) -> tuple[str, str | None] | None:
    """The router: (view, key) for a path it serves, None for anything else."""
    if path == API_PATH:
        return "index", None
    if not path.startswith(API_PATH) or not path.endswith("/"):
        return None
    parts = path[len(API_PATH) : -1].split("/")
    if len(parts) == 1 and (parts[0] in _RESOURCES or parts[0] == "search"):
        return parts[0], None
    if len(parts) == 2 and parts[0] in _RESOURCES and parts[1]:
        return parts[0], parts[1]
    return None


class FakeUpstream:
    """The fake APIv4 as an ASGI app, with its instrumentation and fault controls as attributes.

    `faults` maps a path prefix (`/api/v4/grids/`) to a fault kind; the longest prefix wins.
    `fail` sets one for the next few requests only. `random_faults` maps kinds to the share of
    requests they hit, drawn from `seed`, the path and how many times it was asked, so that a
    run's faults do not depend on the order concurrent requests arrive in. `outage` answers
    every request with one fault. A 429 carries `Retry-After: <retry_after>`.
    `foreign_origin` (`https://evil.example`) replaces the request's origin in every link.
    """

    def __init__(self, dataset: Dataset, *, latency: float = 0.0) -> None:
        self._catalogue = _Catalogue(dataset)
        self._dataset = dataset
        self._initial_latency = latency
        self.latency = latency
        self.faults: dict[str, FaultKind] = {}
        self.random_faults: dict[FaultKind, float] = {}
        self.seed = 0
        self.outage: FaultKind | None = None
        self.retry_after = "1"
        self.foreign_origin: str | None = None
        self.log: list[Logged] = []
        self._fault_times: dict[str, int] = {}
        self._asked: Counter[str] = Counter()
        self.in_flight = 0
        self.peak_in_flight = 0
        self._changed = threading.Condition()  # notified as a request arrives and as it ends
        self.base_url = f"http://testserver{API_PATH}"
        self._app = Starlette(routes=[Route("/{path:path}", self._endpoint, methods=_METHODS)])

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._app(scope, receive, send)

    @property
    def dataset(self) -> Dataset:
        return self._dataset

    @dataset.setter
    def dataset(self, dataset: Dataset) -> None:
        """Swap the served catalogue at once, as a mirror would see the site change."""
        self._catalogue, self._dataset = _Catalogue(dataset), dataset

    @property
    def requests(self) -> list[str]:
        """Each request's path and query, in order of arrival, since the last reset."""
        return [logged.target for logged in self.log]

    @property
    def count(self) -> int:
        """How many requests arrived since the last reset."""
        return len(self.log)

    def wait_until(self, condition: Callable[[], bool], timeout: float = 10.0) -> bool:
        """Block until `condition()` holds, checked again as each request arrives and as each
        ends (the fake serves on a thread of its own); whether it held within `timeout`."""
        with self._changed:
            return self._changed.wait_for(condition, timeout)

    def _notify(self) -> None:
        with self._changed:
            self._changed.notify_all()

    def fail(self, prefix: str, kind: FaultKind, times: int) -> None:
        """Answer the next `times` requests under `prefix` with `kind`, then answer again."""
        self._fault_times[prefix] = times
        self.faults[prefix] = kind

    def reset(self) -> None:
        """Forget requests and peak, clear faults and forged links, restore the initial latency."""
        self.log = []
        self.peak_in_flight = self.in_flight
        self.faults = {}
        self.random_faults = {}
        self.seed = 0
        self.outage = None
        self.retry_after = "1"
        self._fault_times = {}
        self._asked = Counter()
        self.foreign_origin = None
        self.latency = self._initial_latency

    async def _endpoint(self, request: Request) -> Response:
        path, query = request.url.path, request.url.query
        target = f"{path}?{query}" if query else path
        self.log.append(Logged(target, time.monotonic(), dict(request.headers)))
        self.in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        self._notify()
        try:
            if self.latency > 0:
                await asyncio.sleep(self.latency)
            fault = self._fault(path, target)
            if fault is None:
                return self._answer(request)
            if fault == "hang":
                with suppress(TimeoutError):
                    await asyncio.wait_for(_disconnected(request), HANG_SECONDS)
                return Response(status_code=504)
            if fault == "wrong-shape":  # an object where a list is expected, and vice versa
                search = path.startswith(f"{API_PATH}search/")
                body = b'{"results": []}' if search else b'[{"id": 1}]'
                return Response(body, media_type="application/json")
            if fault == "oversized":
                return StreamingResponse(_oversized(), media_type="application/json")
            status, body, media_type = _FAULT_BODIES[fault]
            headers = {"Retry-After": self.retry_after} if fault == "429" else None
            return Response(body, status_code=status, headers=headers, media_type=media_type)
        finally:
            self.in_flight -= 1
            self._notify()

    def _fault(self, path: str, target: str) -> FaultKind | None:
        if self.outage is not None:
            return self.outage
        matches = [(p, kind) for p, kind in tuple(self.faults.items()) if path.startswith(p)]
        if matches:
            prefix, kind = max(matches, key=lambda match: len(match[0]))
            times = self._fault_times.get(prefix)
            if times is not None:
                self._fault_times[prefix] = times - 1
                if times <= 1:
                    self.faults.pop(prefix, None)
                    self._fault_times.pop(prefix, None)
            return kind
        if not self.random_faults:
            return None
        self._asked[target] += 1
        draw = random.Random(f"{self.seed}:{target}:{self._asked[target]}").random()
        for kind, share in tuple(self.random_faults.items()):
            if draw < share:
                return kind
            draw -= share
        return None

    def _answer(self, request: Request) -> Response:
        path = request.url.path
        view = _resolve(path)
        if view is None:
            if _resolve(f"{path}/") is None:
                return Response(_NOT_FOUND_HTML, 404, _DRF_HEADERS, "text/html; charset=utf-8")
            raw = request.scope.get("raw_path") or path.encode()
            query = f"?{request.url.query}" if request.url.query else ""
            location = f"{raw.decode('latin-1')}/{query}"
            return Response(status_code=301, headers={**_DRF_HEADERS, "Location": location})
        name, key = view
        params = request.query_params
        fmt = params.get("format")
        if fmt not in (None, "json", "api"):
            return _render(404, {"detail": "Not found."}, html_api=False)
        if request.method == "OPTIONS":
            return _render(200, _metadata(name, key), html_api=fmt == "api")
        if request.method not in ("GET", "HEAD"):
            detail = f'Method "{request.method}" not allowed.'
            return _render(405, {"detail": detail}, html_api=fmt == "api")
        origin = self.foreign_origin or f"{request.url.scheme}://{request.url.netloc}"
        links = _Links(origin, f"?format={fmt}" if fmt else "")
        status, payload = self._view(name, key, request, links)
        return _render(status, payload, html_api=fmt == "api")

    def _view(
        self, name: str, key: str | None, request: Request, links: _Links
    ) -> tuple[int, object]:
        catalogue, params = self._catalogue, request.query_params
        if name == "index":
            names = ("packages", "search", "grids", "categories")
            return 200, {n: f"{links.prefix}{n}/{links.suffix}" for n in names}
        if name == "search":
            return 200, catalogue.search(params.get("q", ""))
        if key is not None:
            id_ = catalogue.lookup(name, key)
            if id_ is None and name == "categories":  # DRF turns int("apps") into a bare 404
                return 404, {"detail": "Not found."}
            found = None if id_ is None else catalogue.render(name, id_, links)
            if found is None:
                return 404, {"detail": f"No {_RESOURCES[name]} matches the given query."}
            return 200, found
        ids, page_url = catalogue.order[name], f"{links.origin}{request.url.path}"
        limit = _positive(params.get("limit"), strict=True, default=DEFAULT_LIMIT)
        offset = _positive(params.get("offset"), strict=False, default=0)
        query = request.url.query
        return 200, {
            "count": len(ids),
            "next": _page_link(page_url, query, limit, offset + limit)
            if offset + limit < len(ids)
            else None,
            "previous": _page_link(page_url, query, limit, offset - limit) if offset > 0 else None,
            "results": [catalogue.render(name, id_, links) for id_ in ids[offset : offset + limit]],
        }


def _render(status: int, payload: object, *, html_api: bool) -> Response:
    """Compact JSON with non-ASCII as is, or the browsable API's HTML page for `?format=api`."""
    if not html_api:
        return Response(orjson.dumps(payload), status, _DRF_HEADERS, "application/json")
    pretty = html.escape(orjson.dumps(payload, option=orjson.OPT_INDENT_2).decode())
    page = f"<!DOCTYPE html><title>Django REST framework</title><pre>{pretty}</pre>"
    return Response(page, status, _DRF_HEADERS, "text/html; charset=utf-8")


def _metadata(name: str, key: str | None) -> JSONDict:
    """DRF's answer to OPTIONS: the view's name and what it renders and parses."""
    if name in _RESOURCES:
        title = f"{_RESOURCES[name]} {'Instance' if key else 'List'}"
    else:
        title = {"index": "Api Root", "search": "Search"}[name]
    return {
        "name": title,
        "description": "",
        "renders": ["application/json", "text/html"],
        "parses": ["application/json", "application/x-www-form-urlencoded", "multipart/form-data"],
    }


async def _oversized() -> AsyncIterator[bytes]:
    """A JSON list padded with spaces past any sane size, sent without a Content-Length."""
    yield b"["
    chunk = b" " * 2**20
    for _ in range(OVERSIZED_BYTES // len(chunk)):
        yield chunk
    yield b"]"


async def _disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


def create_upstream_app(dataset: Dataset, *, latency: float = 0.0) -> FakeUpstream:
    """The fake APIv4 over `dataset`, each request delayed by `latency` seconds."""
    return FakeUpstream(dataset, latency=latency)


@contextmanager
def serve_in_thread(
    app: ASGIApp, host: str = "127.0.0.1", port: int = 0, **options: Any
) -> Iterator[str]:
    """Serve any ASGI app with uvicorn on a background thread; yields `http://host:port` once
    the server has started. `options`: more of uvicorn's (`http=...`, its protocol)."""
    sock = _listening_socket(host, port)
    config = uvicorn.Config(
        app, log_level="warning", access_log=False, timeout_graceful_shutdown=1, **options
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        while not server.started:
            if not thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.005)
        yield f"http://{host}:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


@contextmanager
def serve_upstream(dataset: Dataset, *, latency: float = 0.0) -> Iterator[FakeUpstream]:
    """A `FakeUpstream` over real HTTP on loopback, its `base_url` set to where it listens."""
    app = create_upstream_app(dataset, latency=latency)
    with serve_in_thread(app) as origin:
        app.base_url = f"{origin}{API_PATH}"
        yield app


def _listening_socket(host: str, port: int) -> socket.socket:
    """A socket already listening, so that port 0 picks a free port without a race and a client
    may connect before the server runs. Its protocol is named so that asyncio turns Nagle off
    (with proto 0 it does not: 40 ms per reply)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen()
    return sock


def main(argv: Sequence[str] | None = None) -> None:
    """Serve the fake APIv4 over the generated demo catalogue until interrupted."""
    parser = argparse.ArgumentParser(
        prog="python -m tests.fake_upstream",
        description="Serve a fake APIv4 over the generated demo catalogue.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on")
    parser.add_argument("--port", type=int, default=8401, help="port to listen on (0: any)")
    parser.add_argument(
        "--scale", type=float, default=1.0, help="catalogue size, 1.0 = the real site"
    )
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added to every answer")
    args = parser.parse_args(argv)
    if args.scale <= 0 or args.latency < 0:
        parser.error("--scale must be positive and --latency not negative")
    app = create_upstream_app(generate(scale=args.scale), latency=args.latency)
    sock = _listening_socket(args.host, args.port)
    app.base_url = f"http://{args.host}:{sock.getsockname()[1]}{API_PATH}"
    print(f"fake APIv4 at {app.base_url}", flush=True)
    uvicorn.Server(uvicorn.Config(app, log_level="warning")).run(sockets=[sock])


if __name__ == "__main__":
    main()
