"""Load: `gateway serve` as a real process, over a faulty fake APIv4, driven by many clients.

    python -m bench.load [--requests 20000] [--concurrency 50]

The fake APIv4 serves the full-scale demo catalogue from this process, on loopback. After a
warm-up without faults, 5% of its answers are 503s and 1% hang, and once half the requests are
done it answers nothing but 503s for `--outage` seconds. The clients send a mix of the queries
a frontend sends (a package with its category and grids, a grid's fan-out, list pages, search,
node refetches) and the script prints what an operator would ask: did the gateway ever answer
5xx, how many requests outlived its request timeout, latency, how hard it pressed the upstream,
and whether its memory grew. Everything stays on loopback and is bounded in count and time.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import httpx
from strawberry.relay.utils import to_base64

from gateway.config import Settings
from gateway.demo.dataset import generate
from gateway.loaders.sql.rows import Dataset
from gateway.schema.pagination import cursor_of
from tests.fake_upstream import FakeUpstream, serve_upstream

ROOT = Path(__file__).resolve().parent.parent

PACKAGE = """query($slug: String!) { package(slug: $slug) {
    title pypiVersion lastUpdated category { title }
    grids(first: 5) { totalCount nodes {
        title packages(first: 10) { nodes { title repoWatchers } }
    } }
} }"""
FAN_OUT = """query($slug: String!) { grid(slug: $slug) { title packages(first: 50) {
    totalCount nodes { title category { slug } grids(first: 5) { nodes { slug } } }
} } }"""
PACKAGES = """query($after: String) { packages(first: 50, after: $after) {
    totalCount pageInfo { hasNextPage endCursor } nodes { id title category { slug } }
} }"""
GRIDS = """query($after: String) { grids(first: 50, after: $after) {
    totalCount pageInfo { hasNextPage endCursor } nodes { id title }
} }"""
SEARCH = """query($q: String!) { search(query: $q) {
    itemType title package { slug repoUrl } grid { slug }
} }"""
NODE = """query($id: ID!) { node(id: $id) {
    id ... on Package { title pypiVersion } ... on Grid { title } ... on Category { title }
} }"""

Request = tuple[str, dict[str, Any]]


def requests(dataset: Dataset, rng: random.Random) -> Iterator[Request]:
    """An endless, seeded mix of the queries a frontend sends."""
    packages = [row.slug for row in dataset.packages]
    grids = [row.slug for row in dataset.grids]
    nodes = [to_base64("Package", row.id) for row in dataset.packages]
    nodes += [to_base64("Grid", row.id) for row in dataset.grids]
    nodes += [to_base64("Category", row.id) for row in dataset.categories]
    words = sorted({w for row in dataset.packages for w in row.title.lower().split("-") if w})

    package_ids = sorted((row.id for row in dataset.packages), reverse=True)
    grid_ids = sorted((row.id for row in dataset.grids), reverse=True)

    def page(ids: list[int]) -> dict[str, Any]:
        """A page of 50 at a random place: after the edge before it, in the lists' own order
        (newest id first, the id its cursors' key)."""
        offset = rng.randrange(len(ids) // 50 + 1) * 50
        return {"after": cursor_of((ids[offset - 1],)) if offset else None}

    makers: list[tuple[int, Callable[[], Request]]] = [
        (30, lambda: (PACKAGE, {"slug": rng.choice(packages)})),
        (15, lambda: (FAN_OUT, {"slug": rng.choice(grids)})),
        (12, lambda: (PACKAGES, page(package_ids))),
        (8, lambda: (GRIDS, page(grid_ids))),
        (15, lambda: (SEARCH, {"q": rng.choice(words)})),
        (20, lambda: (NODE, {"id": rng.choice(nodes)})),
    ]
    weights = [weight for weight, _ in makers]
    while True:
        [(_, make)] = rng.choices(makers, weights)
        yield make()


@dataclass(frozen=True, slots=True)
class Outcome:
    seconds: float
    status: int | None  # None: no HTTP answer (refused, reset, the client's own timeout)
    codes: tuple[str, ...]  # the GraphQL errors' `extensions.code`
    stale: bool


async def drive(
    client: httpx.AsyncClient,
    mix: Iterator[Request],
    count: int,
    concurrency: int,
    deadline: float,
    on_done: Callable[[int], None] = lambda done: None,
) -> list[Outcome]:
    """`count` requests from `concurrency` clients at once; none started after `deadline`."""
    outcomes: list[Outcome] = []
    left = count

    async def client_loop() -> None:
        nonlocal left
        while left > 0 and time.monotonic() < deadline:
            left -= 1
            query, variables = next(mix)
            outcomes.append(await one(client, query, variables))
            on_done(len(outcomes))

    await asyncio.gather(*(client_loop() for _ in range(concurrency)))
    return outcomes


async def one(client: httpx.AsyncClient, query: str, variables: dict[str, Any]) -> Outcome:
    started = time.monotonic()
    try:
        response = await client.post("/graphql", json={"query": query, "variables": variables})
    except httpx.TransportError:
        return Outcome(time.monotonic() - started, None, (), False)
    seconds = time.monotonic() - started
    try:
        body = response.json()
    except ValueError:
        return Outcome(seconds, response.status_code, ("NOT_JSON",), False)
    codes = tuple(
        str(error.get("extensions", {}).get("code")) for error in body.get("errors") or ()
    )
    stale = bool((body.get("extensions") or {}).get("stale"))
    return Outcome(seconds, response.status_code, codes, stale)


async def outage_at_half(
    upstream: FakeUpstream, halfway: asyncio.Event, seconds: float, finished: asyncio.Event
) -> None:
    """The whole upstream down for `seconds`, from the moment half the requests are done."""
    await halfway.wait()
    upstream.outage = "503"
    try:
        await asyncio.wait_for(finished.wait(), seconds)
    except TimeoutError:
        pass
    finally:
        upstream.outage = None


def resident_kib(pid: int) -> int:
    """The process's resident set size (VmRSS) in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for process {pid}")


def cpu_seconds(pid: int) -> float:
    """The CPU time the process has used so far, user and system."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def gateway(upstream_url: str, log: IO[bytes]) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """`gateway serve --upstream …` with its defaults, its log in `log`, until terminated."""
    port = _free_port()
    env = {name: value for name, value in os.environ.items() if not name.startswith("GATEWAY_")}
    command = [sys.executable, "-m", "gateway", "serve", "--port", str(port)]
    command += ["--upstream", upstream_url, "--log-level", "warning"]
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=log)
    origin = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the gateway did not start; its log: {log.name}")
            try:
                if httpx.get(f"{origin}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.05)
        yield process, origin
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _percentile(sorted_seconds: list[float], share: float) -> float:
    index = min(len(sorted_seconds) - 1, round(share * (len(sorted_seconds) - 1)))
    return sorted_seconds[index]


def report(
    outcomes: list[Outcome],
    args: argparse.Namespace,
    elapsed: float,
    upstream: FakeUpstream,
    memory: tuple[int, int],
    cpu: float,
) -> str:
    limit = Settings().request_timeout
    seconds = sorted(outcome.seconds for outcome in outcomes)
    statuses = Counter(o.status for o in outcomes)
    server_errors = sum(n for status, n in statuses.items() if status is not None and status >= 500)
    codes = Counter(code for o in outcomes for code in set(o.codes))
    failed = sum(1 for o in outcomes if o.codes)
    slow = sum(1 for s in seconds if s > limit)
    late = sum(1 for s in seconds if s > limit + 1)  # the gateway did not keep to its limit
    warm, end = memory
    rows = {
        "requests": f"{len(outcomes)} of {args.requests}, {args.concurrency} clients at once, "
        f"in {elapsed:.1f} s ({len(outcomes) / elapsed:.0f}/s)",
        "gateway 5xx": f"{server_errors}",
        "no HTTP answer": f"{statuses[None]}",
        "HTTP statuses": ", ".join(f"{s}: {n}" for s, n in sorted(statuses.items(), key=str)),
        "over time limit": f"{slow} (request_timeout {limit:g} s), {late} by over a second",
        "latency p50": f"{_percentile(seconds, 0.50) * 1000:.0f} ms",
        "latency p99": f"{_percentile(seconds, 0.99) * 1000:.0f} ms",
        "latency max": f"{seconds[-1] * 1000:.0f} ms",
        "with errors": f"{failed} ({100 * failed / len(outcomes):.1f}%): "
        + (", ".join(f"{code} {n}" for code, n in codes.most_common()) or "none"),
        "stale answers": f"{sum(1 for o in outcomes if o.stale)}",
        "upstream requests": f"{upstream.count} (peak {upstream.peak_in_flight} in flight)",
        "gateway CPU": f"{cpu:.0f} s ({100 * cpu / elapsed:.0f}% of one core)",
        "gateway RSS": f"{warm / 1024:.1f} MiB after warm-up, {end / 1024:.1f} MiB at the end "
        f"({100 * (end - warm) / warm:+.1f}%)",
    }
    width = max(map(len, rows))
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows.items())


async def run(args: argparse.Namespace) -> int:
    dataset = generate()
    mix = requests(dataset, random.Random(args.seed))
    limit = Settings().request_timeout
    with (
        serve_upstream(dataset) as upstream,
        tempfile.NamedTemporaryFile(prefix="gateway-load-", suffix=".log", delete=False) as log,
        gateway(upstream.base_url, log) as (process, origin),
    ):
        limits = httpx.Limits(max_connections=args.concurrency)
        timeout = httpx.Timeout(limit + 20)  # longer than the gateway's own limit: we count those
        async with httpx.AsyncClient(base_url=origin, limits=limits, timeout=timeout) as client:
            deadline = time.monotonic() + args.time_limit
            await drive(client, mix, args.warmup, args.concurrency, deadline)
            warm, cpu = resident_kib(process.pid), cpu_seconds(process.pid)

            upstream.reset()
            upstream.seed = args.seed
            upstream.random_faults = {"503": 0.05, "hang": 0.01}
            halfway, finished = asyncio.Event(), asyncio.Event()

            def on_done(done: int) -> None:
                if done >= args.requests // 2:
                    halfway.set()

            outage = asyncio.create_task(outage_at_half(upstream, halfway, args.outage, finished))
            started = time.monotonic()
            outcomes = await drive(client, mix, args.requests, args.concurrency, deadline, on_done)
            elapsed = time.monotonic() - started
            finished.set()
            await outage
            end, cpu = resident_kib(process.pid), cpu_seconds(process.pid) - cpu
        print(report(outcomes, args, elapsed, upstream, (warm, end), cpu))
    print(f"gateway log: {log.name}")
    return 0


def main() -> None:
    summary = __doc__.partition("\n")[0]
    parser = argparse.ArgumentParser(prog="python -m bench.load", description=summary)
    parser.add_argument("--requests", type=int, default=20_000, help="requests measured")
    parser.add_argument("--concurrency", type=int, default=50, help="clients at once")
    parser.add_argument(
        "--warmup",
        type=int,
        default=4_000,
        help="requests before measuring; enough to fill the resource cache, so that memory"
        " growth afterwards would be a leak, not the cache filling",
    )
    parser.add_argument("--outage", type=float, default=30.0, help="seconds of total outage")
    parser.add_argument("--time-limit", type=float, default=900.0, help="seconds, at most")
    parser.add_argument("--seed", type=int, default=0, help="the mix's and the faults' seed")
    args = parser.parse_args()
    if min(args.requests, args.concurrency, args.time_limit) <= 0 or args.warmup < 0:
        parser.error("requests, concurrency and time limit must be positive")
    sys.exit(asyncio.run(run(args)))


if __name__ == "__main__":
    main()
