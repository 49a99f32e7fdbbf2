"""Load: `gateway serve` as a real process, over a faulty fake APIv4, driven by many clients.

    python -m bench.load [--requests 20000] [--concurrency 50] [--hostile 0.02]

The fake APIv4 serves the full-scale demo catalogue from this process, on loopback. The gateway
runs with `--cache-ttl 60` (flags after `--` come after it): it renews its catalogue snapshot
every 54 seconds, so that the run goes through several renewals. Throughout, 5% of the
upstream's answers are 503s and 1% hang, and once half the requests are done it answers nothing
but 503s for `--outage` seconds: in the warm-up (`--warmup` requests of the same mix, and more
until the snapshot has been renewed once, for a while two snapshots are in memory, and until the
gateway's caches have stopped filling: by its `gateway_cache_bytes`, none grew by over 1% of its
bound in the last 500 requests) as in the measured run. The clients send a mix of the queries a
frontend sends (a package with its category and grids, a grid's fan-out, list pages, search,
node refetches) and, in a small share (`--hostile`), the attacks of bench/hostile.py: requests
that would make one request cost thousands of upstream calls, clients that hang up half-way,
and documents that are costly to validate or answer.
Another process probes /healthz every 50 ms throughout the measured requests. The load's own
process (its clients and the fake APIv4) runs at a lower priority than the gateway and the
prober: on a machine of two cores its CPU would otherwise keep the gateway waiting for a core.

The script prints what an operator would ask: did the gateway ever answer 5xx, how many
requests outlived its request timeout, latency, how hard it pressed the upstream (its peak
concurrency against `upstream_max_in_flight`, the most one request caused against
`max_upstream_requests`, anything reaching it after a client left), each attack's answers,
whether /healthz kept answering within 100 ms (and, from the gateway's own metrics, how often
its event loop was late and by its own work, and what the garbage collector took,
gateway/observability/stalls.py), and whether memory stayed flat once warm. Everything stays on
loopback and is bounded in count and time.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import tomllib
import tracemalloc
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import IO, Any, NamedTuple

import httpx
import orjson
from prometheus_client.parser import text_string_to_metric_families
from strawberry.relay.utils import to_base64

from bench.hostile import FRONTEND, HANG_UP_AFTER, KINDS, Attacks, Post, upstream_key
from gateway.config import Settings, settings_from_table
from gateway.demo.dataset import generate
from gateway.errors import SHUTTING_DOWN
from gateway.loaders.rest.fetcher import WHOLE_LIST
from gateway.loaders.sql.rows import Dataset
from gateway.observability.memory import snapshot_path
from gateway.schema.pagination import cursor_of
from tests.fake_upstream import FakeUpstream, FaultKind, Logged, serve_upstream

ROOT = Path(__file__).resolve().parent.parent

HEALTHZ_BOUND = 0.1  # seconds: /healthz must answer within it throughout
PROBE_INTERVAL = 0.05  # seconds between two probes of /healthz
LOAD_NICENESS = 10  # the load's process's, against the gateway's 0 (`yield_to_the_gateway`)
# The share RSS may move by, once warm, and still be flat: beside what the caches took in, which
# grow up to their bounds by design (a search's hits are kept until the least recently used go).
RSS_TOLERANCE = 0.1
# RSS is compared by its median over this many one-second samples at each end of the run: a
# renewal holds two snapshots for a second or two, a peak that is not growth.
RSS_WINDOW = 10
HANG_UP_GRACE = 1.0  # seconds after a hang-up in which its fetches already sent may still arrive
# The shares of the upstream's answers that fail so, in the warm-up and the measured run.
FAULTS: dict[FaultKind, float] = {"503": 0.05, "hang": 0.01}
UVICORN_CAP_REFUSAL = "Service Unavailable"  # uvicorn's 503 body past `limit_concurrency`
JSON_CONTENT = {"content-type": "application/json"}
SERVE_DEFAULTS = ("--cache-ttl", "60")  # the gateway's flags before the command line's
WARMUP_MORE = 500  # requests at a time while the warm-up waits for the renewal and the caches
FILLING = 0.01  # a cache still filling grew by more than this share of its bound in WARMUP_MORE

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


def mix(
    dataset: Dataset, rng: random.Random, hostile: float, kinds: Sequence[str] = KINDS
) -> Iterator[Post]:
    """The frontend's queries, and a share `hostile` of attacks of `kinds` among them."""
    frontend, attacks = requests(dataset, rng), iter(Attacks(dataset, rng, kinds))
    while True:
        if rng.random() < hostile:
            yield next(attacks)
        else:
            query, variables = next(frontend)
            yield Post(FRONTEND, {"query": query, "variables": variables})


@dataclass(frozen=True, slots=True)
class Outcome:
    post: Post
    started: float  # `time.monotonic()`, the same clock in every process of the machine
    seconds: float
    status: int | None  # None: no HTTP answer (refused, reset, the client's own timeout)
    codes: tuple[str, ...] = ()  # the GraphQL errors' `extensions.code`, of every operation;
    # without an answer, the exception's name
    stale: bool = False
    refusal: bool = False  # a 503 the gateway means: past its connection cap, or shutting down
    left_at: float | None = None  # when the client hung up, unanswered (`time.monotonic()`)


async def drive(
    client: httpx.AsyncClient,
    mix: Iterator[Post],
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
            post = next(mix)
            if post.hang_up is None:
                outcomes.append(await one(client, post))
            else:
                outcomes.append(await hang_up(client.base_url, post, post.hang_up))
            on_done(len(outcomes))

    await asyncio.gather(*(client_loop() for _ in range(concurrency)))
    return outcomes


async def one(client: httpx.AsyncClient, post: Post) -> Outcome:
    started = time.monotonic()
    try:
        response = await client.post(
            "/graphql", content=orjson.dumps(post.body), headers=JSON_CONTENT
        )
    except httpx.TransportError as error:
        return Outcome(post, started, time.monotonic() - started, None, (type(error).__name__,))
    seconds = time.monotonic() - started
    if response.status_code == 503 and response.text == UVICORN_CAP_REFUSAL:
        return Outcome(post, started, seconds, 503, refusal=True)
    try:
        body = response.json()
    except ValueError:
        return Outcome(post, started, seconds, response.status_code, ("NOT_JSON",))
    answers = body if isinstance(body, list) else [body]
    codes = tuple(
        str(error.get("extensions", {}).get("code"))
        for answer in answers
        for error in answer.get("errors") or ()
    )
    stale = any((answer.get("extensions") or {}).get("stale") for answer in answers)
    refusal = response.status_code == 503 and SHUTTING_DOWN in codes
    return Outcome(post, started, seconds, response.status_code, codes, stale, refusal)


async def hang_up(origin: httpx.URL, post: Post, after: float) -> Outcome:
    """`post` over a connection of its own, which the client closes `after` seconds on unless
    an answer has begun by then."""
    body = orjson.dumps(post.body)
    head = (
        f"POST /graphql HTTP/1.1\r\nHost: {origin.host}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    started = time.monotonic()
    try:
        reader, writer = await asyncio.open_connection(origin.host, origin.port)
    except OSError:
        return Outcome(post, started, time.monotonic() - started, None)
    try:
        writer.write(head.encode() + body)
        status_line = await asyncio.wait_for(reader.readline(), after)
    except TimeoutError:
        return Outcome(post, started, after, None, left_at=time.monotonic())
    except OSError:
        return Outcome(post, started, time.monotonic() - started, None)
    finally:
        writer.close()
    status = int(status_line.split(b" ", 2)[1]) if status_line else None
    return Outcome(post, started, time.monotonic() - started, status)


@asynccontextmanager
async def faulty(
    upstream: FakeUpstream, seed: int, count: int, outage: float
) -> AsyncIterator[Callable[[int], None]]:
    """The upstream faulty from now on (`FAULTS` at random) and, while the block runs, down
    for `outage` seconds from when half of its `count` requests are done: the block tells by
    calling what it is given with the requests done so far."""
    upstream.seed = seed
    upstream.random_faults = dict(FAULTS)
    halfway, finished = asyncio.Event(), asyncio.Event()

    def on_done(done: int) -> None:
        if done >= count // 2:
            halfway.set()

    async def down() -> None:
        await halfway.wait()
        upstream.outage = "503"
        try:
            await asyncio.wait_for(finished.wait(), outage)
        except TimeoutError:
            pass
        finally:
            upstream.outage = None

    task = asyncio.create_task(down())
    try:
        yield on_done
    finally:
        finished.set()
        await task


def resident_kib(pid: int) -> int:
    """The process's resident set size (VmRSS) in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for process {pid}")


async def sample_resident(pid: int, into: list[tuple[float, int]]) -> None:
    """The process's RSS in KiB, with `time.monotonic()`, once a second, until cancelled."""
    while True:
        into.append((time.monotonic(), resident_kib(pid)))
        await asyncio.sleep(1)


def cpu_seconds(pid: int) -> float:
    """The CPU time the process has used so far, user and system."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def memory_snapshot(pid: int, n: int) -> tracemalloc.Snapshot:
    """The gateway's `n`th tracemalloc snapshot, asked for by SIGUSR2
    (gateway/observability/memory.py)."""
    os.kill(pid, signal.SIGUSR2)
    path = snapshot_path(pid, n)
    deadline = time.monotonic() + 120
    while not path.exists():
        if time.monotonic() > deadline:
            raise RuntimeError(f"the gateway wrote no snapshot to {path}")
        await asyncio.sleep(0.2)
    snapshot = tracemalloc.Snapshot.load(str(path))
    path.unlink()
    return snapshot


def memory_growth(warm: tracemalloc.Snapshot, end: tracemalloc.Snapshot, top: int = 15) -> str:
    """What grew most from `warm` to `end`, by the line that allocated it, with the nearest
    frames under it that are the gateway's."""
    ignored = [
        tracemalloc.Filter(False, tracemalloc.__file__),
        tracemalloc.Filter(False, "<frozen importlib._bootstrap*"),
    ]
    warm, end = warm.filter_traces(ignored), end.filter_traces(ignored)
    total = sum(stat.size for stat in end.statistics("filename")) - sum(
        stat.size for stat in warm.statistics("filename")
    )
    lines = [f"traced memory grew by {total / 2**20:+.1f} MiB; most, by where it was allocated:"]
    for stat in end.compare_to(warm, "traceback")[:top]:
        # A traceback runs from its oldest frame to the allocation.
        frames = [frame for frame in reversed(stat.traceback) if "/gateway/" in frame.filename]
        where = stat.traceback[-1]
        path = where.filename.rpartition("site-packages/")[2]
        lines.append(
            f"  {stat.size_diff / 2**20:+7.2f} MiB {stat.count_diff:+8d} blocks"
            f"  {path}:{where.lineno}"
            + "".join(
                f" < {frame.filename.rpartition('/gateway/')[2]}:{frame.lineno}"
                for frame in frames[:3]
            )
        )
    return "\n".join(lines)


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]  # the gateway's metrics
Caches = dict[str, tuple[float, float]]  # by name: bytes held and the bound, by the gateway


def caches(samples: Samples) -> Caches:
    """The gateway's caches in its metrics (`gateway_cache_bytes`, `gateway_cache_bound_bytes`)."""
    found: dict[str, dict[str, float]] = {}
    for (name, labels), value in samples.items():
        if name in ("gateway_cache_bytes", "gateway_cache_bound_bytes"):
            found.setdefault(dict(labels)["cache"], {})[name] = value
    return {
        name: (values["gateway_cache_bytes"], values["gateway_cache_bound_bytes"])
        for name, values in found.items()
    }


def filling(before: Caches, after: Caches) -> list[str]:
    """The caches that grew by over FILLING of their bound from `before` to `after`."""
    return [
        name
        for name, (held, bound) in after.items()
        if held - before.get(name, (0.0, bound))[0] > FILLING * bound
    ]


def _caches_line(held: Caches) -> str:
    return ", ".join(
        f"{name} {size / 2**20:.1f}/{bound / 2**20:.0f}" for name, (size, bound) in held.items()
    )


def snapshots(upstream: FakeUpstream) -> int:
    """How many catalogue snapshots the gateway has read: whole lists of packages."""
    return sum(1 for logged in upstream.log if _whole_packages(logged.target))


def _whole_packages(target: str) -> bool:
    """Whether an upstream request asks for the whole list of packages: a renewal's."""
    return "/packages/?" in target and f"limit={WHOLE_LIST}" in target


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _environment() -> dict[str, str]:
    """This process's environment without the gateway's variables: its settings are flags."""
    return {name: value for name, value in os.environ.items() if not name.startswith("GATEWAY_")}


def served_settings(*flags: str) -> Settings:
    """The settings `gateway serve` runs with under `flags`, as `gateway config` reports them."""
    command = [sys.executable, "-m", "gateway", "config", *flags]
    shown = subprocess.run(
        command, cwd=ROOT, env=_environment(), capture_output=True, text=True, check=True
    )
    return settings_from_table(tomllib.loads(shown.stdout), "gateway config")


@contextmanager
def gateway(
    upstream_url: str, log: IO[bytes], *flags: str, tracemalloc_frames: int = 0
) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """`gateway serve --upstream …` with its defaults but `flags`, its log in `log`, until
    terminated; traced by tracemalloc if `tracemalloc_frames` (gateway/observability/memory.py)."""
    port = _free_port()
    command = [sys.executable, "-m", "gateway", "serve", "--port", str(port)]
    command += ["--upstream", upstream_url, "--log-level", "warning", *flags]
    env = _environment()
    if tracemalloc_frames:
        env["PYTHONTRACEMALLOC"] = str(tracemalloc_frames)
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=log)
    origin = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + (180 if tracemalloc_frames else 30)  # tracing: slower
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


STALL_BOUNDS = ("0.05", "0.1", "0.25")  # seconds: the stalls counted, by `le` bucket bound


async def gateway_samples(client: httpx.AsyncClient) -> Samples:
    """The gateway's metrics now, by sample name and labels."""
    response = await client.get("/metrics")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def loop_stalls(before: Samples, after: Samples) -> dict[str, str]:
    """The event loop's stalls and the collections' pauses between two readings of the
    gateway's metrics (gateway/observability/stalls.py): its own stalls, told from the machine's."""

    def grew(name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0.0) - before.get(key, 0.0)

    def over(histogram: str, **labels: str) -> str:
        count = grew(f"{histogram}_count", **labels)
        within = {bound: grew(f"{histogram}_bucket", le=bound, **labels) for bound in STALL_BOUNDS}
        return ", ".join(f"over {_ms(float(b))} {count - n:.0f}" for b, n in within.items())

    late, busy = "gateway_event_loop_lateness_seconds", "gateway_event_loop_busy_seconds"
    frozen = ("gateway_gc_frozen_objects", ())
    pauses = []
    for generation in ("0", "1", "2"):
        name = "gateway_gc_pause_seconds"
        count = grew(f"{name}_count", generation=generation)
        total = grew(f"{name}_sum", generation=generation)
        pauses.append(f"gen {generation} {count:.0f} ({_ms(total / count) if count else '-'} each)")
    gen2 = over("gateway_gc_pause_seconds", generation="2")
    return {
        "loop ticks late": f"{grew(f'{late}_count'):.0f} ticks, one every 10 ms: " + over(late),
        "loop busy": f"{over(busy)} (the loop thread's CPU between two ticks: its own part)",
        "gc pauses": "; ".join(pauses) + f"; gen 2 {gen2}",
        "gc frozen objects": f"{before.get(frozen, 0):.0f} after warm-up,"
        f" {after.get(frozen, 0):.0f} at the end (frozen: it should not grow)",
    }


@dataclass(frozen=True, slots=True)
class Probe:
    started: float  # `time.monotonic()`
    seconds: float | None  # None: no answer, or not 200


def probe_healthz(origin: str, interval: float, pipe: Connection) -> None:
    """Once told to start, GET /healthz every `interval` seconds until told to stop, then send
    back the probes. In a process of its own, so that the load's clients and the fake APIv4
    (the load's process) do not delay them."""
    probes: list[Probe] = []
    with httpx.Client(base_url=origin, timeout=60) as client:
        pipe.send("ready")
        if pipe.recv() == "start":
            while not pipe.poll(interval):
                started = time.monotonic()
                try:
                    ok = client.get("/healthz").status_code == 200
                except httpx.TransportError:
                    ok = False
                probes.append(Probe(started, time.monotonic() - started if ok else None))
            pipe.recv()  # stop
    pipe.send(probes)


@dataclass
class Prober:
    """The /healthz prober's process, started and waiting: `probing` runs it."""

    pipe: Connection
    stopped: bool = False

    @asynccontextmanager
    async def probing(self) -> AsyncIterator[list[Probe]]:
        """/healthz probed for as long as the context lasts; the list it yields holds the
        probes once it has ended."""
        probes: list[Probe] = []
        self.pipe.send("start")
        yield probes
        self.pipe.send("stop")
        self.stopped = True
        probes.extend(await asyncio.to_thread(self.pipe.recv))


@asynccontextmanager
async def healthz_prober(origin: str) -> AsyncIterator[Prober]:
    """A process that will probe /healthz, started now: before the load lowers its own
    priority (`yield_to_the_gateway`), which a process it started later would take on."""
    context = multiprocessing.get_context("spawn")
    ours, theirs = context.Pipe()
    process = context.Process(target=probe_healthz, args=(origin, PROBE_INTERVAL, theirs))
    process.start()
    prober = Prober(ours)
    try:
        await asyncio.to_thread(ours.recv)  # ready
        yield prober
    finally:
        if not prober.stopped:
            ours.send("stop")
        await asyncio.to_thread(process.join, 60)


def yield_to_the_gateway() -> None:
    """This process's threads (the load's clients, the fake APIv4) at a lower priority than
    the gateway's and the prober's processes, started before: on a machine of two cores the
    load's own CPU would otherwise keep the gateway waiting for a core, which its clients,
    elsewhere in production, do not. Threads started later take on their starter's."""
    for thread in os.listdir("/proc/self/task"):
        os.setpriority(os.PRIO_PROCESS, int(thread), LOAD_NICENESS)


def upstream_arrivals(outcomes: list[Outcome], log: list[Logged]) -> dict[int, list[Logged]]:
    """For each outcome (by index) whose post names the upstream requests it may cause, those
    of them that reached the upstream."""
    owner = {key: index for index, outcome in enumerate(outcomes) for key in outcome.post.keys}
    arrivals: dict[int, list[Logged]] = {}
    for logged in log:
        index = owner.get(upstream_key(logged.target))
        if index is not None:
            arrivals.setdefault(index, []).append(logged)
    return arrivals


def _fetches(arrived: list[Logged]) -> int:
    """Upstream fetches, as the budget counts them: a retry of a target is the same fetch."""
    return len({logged.target for logged in arrived})


def _percentile(sorted_seconds: list[float], share: float) -> float:
    index = min(len(sorted_seconds) - 1, round(share * (len(sorted_seconds) - 1)))
    return sorted_seconds[index]


def _counted(counter: Counter[Any]) -> str:
    return ", ".join(f"{key} {n}" for key, n in counter.most_common()) or "none"


def _yes(held: bool) -> str:
    return "yes" if held else "NO"


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


@dataclass(frozen=True, slots=True)
class Run:
    """What one measured run saw, besides its requests' outcomes."""

    settings: Settings  # the gateway's
    elapsed: float
    upstream: FakeUpstream
    warmup: int  # requests in the warm-up
    caches: tuple[Caches, Caches]  # the gateway's, after the warm-up and at the end
    resident: list[tuple[float, int]]  # the gateway's RSS in KiB once a second, with the time
    cpu: float
    probes: list[Probe]
    tracebacks: int
    stalls: dict[str, str]  # the gateway's own figures (`loop_stalls`)


def report(outcomes: list[Outcome], args: argparse.Namespace, run: Run) -> str:
    settings = run.settings
    limit = settings.request_timeout
    frontend = [o for o in outcomes if o.post.kind == FRONTEND]
    seconds = sorted(o.seconds for o in frontend)
    refusals = sum(1 for o in outcomes if o.refusal)
    server_errors = sum(1 for o in outcomes if (o.status or 0) >= 500 and not o.refusal)
    unanswered = sum(1 for o in outcomes if o.status is None and o.left_at is None)
    codes = Counter(code for o in frontend for code in set(o.codes))
    failed = sum(1 for o in frontend if o.codes)
    slow = sum(1 for o in outcomes if o.seconds > limit)
    late = sum(1 for o in outcomes if o.seconds > limit + 1)  # the gateway did not keep to it
    arrivals = upstream_arrivals(outcomes, run.upstream.log)
    most_per_request = max(map(_fetches, arrivals.values()), default=0)
    budget = settings.max_upstream_requests
    cap, peak = settings.upstream_max_in_flight, run.upstream.peak_in_flight
    left = [(o.left_at, arrivals.get(i, [])) for i, o in enumerate(outcomes) if o.left_at]
    before = sum(1 for at, arrived in left for a in arrived if a.at <= at)
    lingering = [a.at - at for at, arrived in left for a in arrived if a.at > at + HANG_UP_GRACE]
    healthz, healthz_held = _healthz(run.probes)
    warm, end = resident_ends(run.resident)
    growth, cached, beside = resident_growth(run.resident, run.caches)
    rows = {
        "requests": f"{len(outcomes)} of {args.requests}, {args.concurrency} clients at once, "
        f"in {run.elapsed:.1f} s ({len(outcomes) / run.elapsed:.0f}/s), "
        f"{len(outcomes) - len(frontend)} of them attacks",
        "gateway 5xx": f"{server_errors}",
        "503 refusals": f"{refusals} (past the connection cap, or shutting down)",
        "no HTTP answer": f"{unanswered} (besides the clients that hung up): "
        + _counted(Counter(o.codes[0] for o in outcomes if o.status is None and o.codes)),
        "HTTP statuses": _counted(Counter(map(_status, outcomes))),
        "over time limit": f"{slow} (request_timeout {limit:g} s), {late} by over a second",
        "latency p50": f"{_ms(_percentile(seconds, 0.50))} (the frontend's queries)",
        "latency p99": _ms(_percentile(seconds, 0.99)),
        "latency max": _ms(seconds[-1]),
        "with errors": f"{failed} ({100 * failed / len(frontend):.1f}%): {_counted(codes)}",
        "stale answers": f"{sum(1 for o in frontend if o.stale)}",
        "upstream requests": f"{run.upstream.count} (peak {peak} in flight)",
        "/healthz": healthz,
        "slow /healthz beside": _beside(outcomes, run.probes),
        **run.stalls,
        "gateway CPU": f"{run.cpu:.0f} s ({100 * run.cpu / run.elapsed:.0f}% of one core)",
        "gateway caches": f"MiB held/bound after warm-up: {_caches_line(run.caches[0])};"
        f" at the end: {_caches_line(run.caches[1])}",
        "gateway RSS": f"{warm / 1024:.1f} MiB after warm-up ({run.warmup} requests, until the"
        f" snapshot was renewed and no cache grew by over {100 * FILLING:g}% of its bound in"
        f" {WARMUP_MORE} requests), {end / 1024:.1f} MiB at the end ({100 * growth:+.1f}%), each"
        f" the median of {RSS_WINDOW} one-second samples; the median of each quarter of the run: "
        + ", ".join(f"{_median(quarter) / 1024:.1f}" for quarter in _quarters(run.resident)),
        "RSS beside renewals": _renewals(run),
        "tracebacks logged": f"{run.tracebacks}",
    }
    attacks = {}
    for kind in KINDS:
        attacks[kind] = _attack_row(
            [(o, arrivals.get(i, [])) for i, o in enumerate(outcomes) if o.post.kind == kind]
        )
    attacks["hung-up work"] = (
        f"{len(left)} left unanswered after {HANG_UP_AFTER:g} s; {before} of their upstream"
        f" requests came before, {len(lingering)} over {HANG_UP_GRACE:g} s after"
        + (f" (the latest {max(lingering):.1f} s after)" if lingering else "")
    )
    verdicts = {
        "no gateway 5xx": _yes(server_errors == 0),
        "upstream within its cap": f"{_yes(peak <= cap)} (peak {peak} in flight,"
        f" upstream_max_in_flight {cap})",
        "upstream budget kept": f"{_yes(most_per_request <= budget)} (at most"
        f" {most_per_request} upstream fetches for one request, max_upstream_requests {budget})",
        "hung-up work stopped": f"{_yes(not lingering)} ({len(lingering)} of its upstream"
        f" requests over {HANG_UP_GRACE:g} s after the client left)",
        "/healthz within 100 ms": f"{_yes(healthz_held)} (throughout the measured run)",
        "RSS flat once warm": f"{_yes(abs(beside) <= RSS_TOLERANCE)} ({100 * beside:+.1f}%"
        f" beside the caches, which took in {cached / 1024:+.1f} MiB within their bounds;"
        f" {100 * growth:+.1f}% in all; tolerance ±{100 * RSS_TOLERANCE:.0f}%)",
    }
    width = max(map(len, [*rows, *attacks, *verdicts]))
    return "\n\n".join(
        "\n".join(f"{name:<{width}}  {value}" for name, value in section.items())
        for section in (rows, attacks, verdicts)
    )


def _renewals(run: Run) -> str:
    """When the snapshot's renewals began, from the run's start, and when RSS peaked: a renewal
    holds two snapshots for a second or two."""
    start = run.resident[0][0]
    began = [logged.at - start for logged in run.upstream.log if _whole_packages(logged.target)]
    peak_at, peak = max(run.resident, key=lambda sample: sample[1])
    return (
        f"began at {', '.join(f'{at:.0f}' for at in began)} s;" if began else "none began;"
    ) + f" RSS peaked at {peak / 1024:.1f} MiB, {peak_at - start:.0f} s"


def _quarters(samples: list[tuple[float, int]]) -> list[list[tuple[float, int]]]:
    return [
        samples[len(samples) * q // 4 : len(samples) * (q + 1) // 4] or samples for q in range(4)
    ]


def resident_ends(samples: list[tuple[float, int]]) -> tuple[int, int]:
    """RSS once warm and at the end of the run: the median of its first and last `RSS_WINDOW`
    samples, so that a renewal's peak caught by one sample is not taken for growth."""
    return _median(samples[:RSS_WINDOW]), _median(samples[-RSS_WINDOW:])


class Growth(NamedTuple):
    """How RSS moved over the run: its share of RSS once warm, in all and beside what the caches
    took in (`cached`, in KiB)."""

    in_all: float
    cached: float
    beside: float


def resident_growth(samples: list[tuple[float, int]], caches: tuple[Caches, Caches]) -> Growth:
    """RSS's growth from its median once warm to its median at the end (`resident_ends`), and
    beside the bytes the caches took in meanwhile (`gateway_cache_bytes`, all caches together)."""
    warm, end = resident_ends(samples)
    before, after = caches
    cached = (sum(held for held, _ in after.values()) - sum(h for h, _ in before.values())) / 1024
    return Growth((end - warm) / warm, cached, (end - warm - cached) / warm)


def _median(samples: list[tuple[float, int]]) -> int:
    """The median RSS of timed samples."""
    return int(statistics.median(kib for _, kib in samples))


def _healthz(probes: list[Probe]) -> tuple[str, bool]:
    """The /healthz probes in a line, and whether every one of them answered within bounds."""
    answered = sorted(p.seconds for p in probes if p.seconds is not None)
    line = f"{len(probes)} probes, one every {_ms(PROBE_INTERVAL)}: "
    if not answered:
        return line + "none answered", False
    over = sum(1 for p in answered if p > HEALTHZ_BOUND)
    line += f"p99 {_ms(_percentile(answered, 0.99))}, max {_ms(answered[-1])}"
    line += f", {over} over {_ms(HEALTHZ_BOUND)}"
    if len(answered) < len(probes):
        line += f", {len(probes) - len(answered)} unanswered"
    return line, over == 0 and len(answered) == len(probes)


def _beside(outcomes: list[Outcome], probes: list[Probe]) -> str:
    """Which attacks were in flight while /healthz was slow: for each kind, how many of the
    slow probes it overlapped."""
    attacks = [o for o in outcomes if o.post.kind != FRONTEND]
    beside: Counter[str] = Counter()
    for probe in probes:
        if probe.seconds is not None and probe.seconds <= HEALTHZ_BOUND:
            continue
        ended = probe.started + (probe.seconds or 60)
        kinds = {
            o.post.kind
            for o in attacks
            if o.started < ended and probe.started < o.started + o.seconds
        }
        beside.update(kinds or {"no attack"})
    return _counted(beside) + " (slow probes each kind overlapped)"


def _status(outcome: Outcome) -> str:
    if outcome.left_at is not None:
        return "left"
    return "none" if outcome.status is None else str(outcome.status)


def _attack_row(sent: list[tuple[Outcome, list[Logged]]]) -> str:
    """One kind of attack, each with the upstream requests it caused: how many were sent,
    their statuses and codes, the slowest, and what reached the upstream."""
    if not sent:
        return "none sent"
    statuses = Counter(_status(o) for o, _ in sent)
    codes = Counter(code for o, _ in sent for code in set(o.codes))
    row = f"{len(sent)} sent: {_counted(statuses)}; codes: {_counted(codes)}"
    row += f"; slowest {_ms(max(o.seconds for o, _ in sent))}"
    if any(o.post.keys for o, _ in sent):
        requests = sum(len(arrived) for _, arrived in sent)
        most = max(_fetches(arrived) for _, arrived in sent)
        row += f"; upstream requests {requests}, at most {most} fetches for one"
    return row


async def run(args: argparse.Namespace) -> int:
    dataset = generate()
    requests_ = mix(dataset, random.Random(args.seed), args.hostile, args.attacks)
    settings = served_settings(*args.serve)
    limit = settings.request_timeout
    with (
        serve_upstream(dataset) as upstream,
        tempfile.NamedTemporaryFile(prefix="gateway-load-", suffix=".log", delete=False) as log,
        gateway(upstream.base_url, log, *args.serve, tracemalloc_frames=args.tracemalloc) as (
            process,
            origin,
        ),
    ):
        limits = httpx.Limits(max_connections=args.concurrency)
        timeout = httpx.Timeout(limit + 20)  # longer than the gateway's own limit: we count those
        async with (
            httpx.AsyncClient(base_url=origin, limits=limits, timeout=timeout) as client,
            healthz_prober(origin) as prober,
        ):
            yield_to_the_gateway()
            deadline = time.monotonic() + args.time_limit
            # The warm-up goes through the faults and an outage as the measured run does: what
            # the allocators keep after their peaks is then in RSS before it is measured.
            async with faulty(upstream, args.seed, args.warmup, args.outage) as on_done:
                warmup = len(
                    await drive(client, requests_, args.warmup, args.concurrency, deadline, on_done)
                )
            held = caches(await gateway_samples(client))
            while time.monotonic() < deadline:
                renewed = not settings.warm_catalogue or snapshots(upstream) >= 2
                warmup += len(
                    await drive(client, requests_, WARMUP_MORE, args.concurrency, deadline)
                )
                before, held = held, caches(await gateway_samples(client))
                if renewed and not filling(before, held):
                    break
            cpu = cpu_seconds(process.pid)
            samples = await gateway_samples(client)
            warm_caches = caches(samples)
            if args.tracemalloc:
                warm_snapshot = await memory_snapshot(process.pid, 1)

            upstream.reset()
            resident: list[tuple[float, int]] = []
            sampling = asyncio.create_task(sample_resident(process.pid, resident))
            async with (
                faulty(upstream, args.seed, args.requests, args.outage) as on_done,
                prober.probing() as probes,
            ):
                started = time.monotonic()
                outcomes = await drive(
                    client, requests_, args.requests, args.concurrency, deadline, on_done
                )
                elapsed = time.monotonic() - started
            sampling.cancel()
            cpu = cpu_seconds(process.pid) - cpu
            end_samples = await gateway_samples(client)
            end_caches = caches(end_samples)
            stalls = loop_stalls(samples, end_samples)
            if args.tracemalloc:
                growth = memory_growth(warm_snapshot, await memory_snapshot(process.pid, 2))
    tracebacks = Path(log.name).read_text(errors="replace").count("Traceback (most recent call")
    measured = Run(
        settings,
        elapsed,
        upstream,
        warmup,
        (warm_caches, end_caches),
        resident,
        cpu,
        probes,
        tracebacks,
        stalls,
    )
    print(report(outcomes, args, measured))
    if args.tracemalloc:
        print(growth)
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
        default=20_000,
        help="requests before measuring, of the same mix, attacks included; then more, 500 at a"
        " time, until the catalogue snapshot was renewed and the gateway's caches stopped"
        " filling, so that memory growth afterwards would be a leak, not a cache filling",
    )
    parser.add_argument(
        "--hostile",
        type=float,
        default=0.02,
        help="share of the requests that are attacks (bench/hostile.py), drawn evenly by kind",
    )
    parser.add_argument(
        "--attacks",
        type=lambda names: names.split(","),
        default=KINDS,
        help=f"comma-separated kinds of attack among: {', '.join(KINDS)}; default: all",
    )
    parser.add_argument("--outage", type=float, default=30.0, help="seconds of total outage")
    parser.add_argument("--time-limit", type=float, default=900.0, help="seconds, at most")
    parser.add_argument("--seed", type=int, default=0, help="the mix's and the faults' seed")
    parser.add_argument(
        "--tracemalloc",
        type=int,
        default=0,
        metavar="FRAMES",
        help="trace the gateway's memory (PYTHONTRACEMALLOC=FRAMES: slower) and print what grew"
        " between the snapshots after the warm-up and at the end (gateway/observability/memory.py)",
    )
    parser.add_argument(
        "serve",
        nargs=argparse.REMAINDER,
        help="after --: flags for `gateway serve` (--idle-timeout 60, ...), after"
        f" {' '.join(SERVE_DEFAULTS)}",
    )
    args = parser.parse_args()
    args.serve = [*SERVE_DEFAULTS, *(args.serve[1:] if args.serve[:1] == ["--"] else args.serve)]
    if min(args.requests, args.concurrency, args.time_limit) <= 0 or args.warmup < 0:
        parser.error("requests, concurrency and time limit must be positive")
    if not 0 <= args.hostile <= 1:
        parser.error("--hostile is a share: from 0 to 1")
    if not args.attacks or set(args.attacks) - set(KINDS):
        parser.error(f"--attacks: kinds among {', '.join(KINDS)}")
    sys.exit(asyncio.run(run(args)))


if __name__ == "__main__":
    main()
