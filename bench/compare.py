"""Compare: the gateway against the Apollo Server + DataLoader peer over one fake APIv4.

    python -m bench.compare [--latency 0.02] [--duration 5] [--connections 10] [--queries Q1,Q2]

The fake APIv4 serves the full-scale demo catalogue from a process of its own. The gateway
(`gateway serve --upstream …`, REST backend) and the peer (`../shared/peers/apollo`, or a copy
with its `node_modules`: `--apollo DIR`) run one after the other, never at the same time, each
pinned to core 0; the fake upstream and wrk share core 1 (a third core, if there is one, goes to
wrk). For each of the issues' queries (Q1-Q4; QL, `packages(first: 100)` with all 17 scalar
fields of Package, for the engine only) and each server it measures:

- cold: a fresh server process per query; the upstream requests counted from the process's
  start through its first answer (start-up warm-up included), that answer's latency, and the
  upstream requests the same query costs when asked again at once;
- warm: wrk at `--connections` connections for `--duration` seconds after `--warmup` seconds
  unmeasured, default configuration: req/s, p99, and errors (non-2xx, socket errors and
  GraphQL `errors` in the body, which wrk's Lua script counts);
- engine: the upstream at 0 ms and the gateway's response cache off (`--response-cache-ttl 0`,
  when its `serve --help` has that flag), one process for all the queries: req/s; the peer is
  measured so twice, as it is and from memory (`MEMO=1`: every upstream answer kept, so that it
  too executes without I/O: the fair anchor);
- memory: the peak RSS (VmHWM) of every server process of the run; the engine process first
  pages through the whole catalogue so that the gateway's resource cache holds all of it;
- a frontend's mix: the package-page and list-page documents with 20,000 distinct sets of
  variables (slugs, 1 to 10 grids, pages of 1 to 100), round robin, the upstream at `--latency`,
  default configuration, so that the response cache rarely answers: req/s and p99.

The gateway alone is also measured over its embedded SQLite catalogue (`gateway serve` with no
source) and over a PostgreSQL mirror of the same catalogue (`--postgres`, made with `gateway
mirror`, dropped afterwards), the response cache off, against the peer's engine figures; over
its embedded catalogue, Q2's p50 with the response cache off; and its response-cache hit
against a bare Starlette endpoint (bench/bare.py) on the same uvicorn, uvloop and httptools,
answering the same bytes. It prints the machine, one Markdown table (gateway | Apollo | ratio |
goal) and which of the issues' goals hold. Figures, not a test: nothing here fails on them.
`--databases-only` measures the database backends alone, against the peer's engine figures.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import re
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, ClassVar

import httpx

ROOT = Path(__file__).resolve().parent.parent
APOLLO = ROOT.parent / "shared" / "peers" / "apollo"
CONTRACT = ROOT.parent / "shared" / "api-contract.graphql"  # the peer's schema
QUERY_NAMES = ("Q1", "Q2", "Q3", "Q4", "QL")
COLD_NAMES = ("Q1", "Q2", "Q3", "Q4")  # QL is measured in engine mode only
DATABASE_NAMES = ("Q1", "Q2", "Q3")  # over the embedded SQLite catalogue and PostgreSQL
MIX_SETS = 20_000  # distinct sets of variables of the frontend's mix
# Made on the --postgres server and dropped afterwards; the process id keeps runs apart.
BENCH_DATABASE = f"gateway_bench_{os.getpid()}"


# --- the queries --------------------------------------------------------------------------------

Q1 = """query Q1($slug: String!) { package(slug: $slug) {
    title slug repoWatchers pypiVersion category { title slug }
    grids(first: 10) { totalCount nodes { title slug } }
} }"""
Q2 = """query Q2($slug: String!) { grid(slug: $slug) { title packages(first: 100) {
    totalCount nodes { title slug category { title } grids(first: 5) { nodes { title slug } } }
} } }"""
Q3 = """query Q3 { packages(first: 50) {
    totalCount nodes { title slug repoWatchers category { title slug } }
} }"""
Q4 = """query Q4($q: String!) { search(query: $q) {
    itemType title slug package { title repoWatchers category { title } } grid { title }
} }"""
QL = """query QL { packages(first: 100) { nodes {
    id databaseId title slug lastUpdated lastFetched repoUrl pypiVersion created modified
    repoForks repoDescription pypiUrl documentationUrl repoWatchers commitsOver52 participants
} } }"""
# A frontend's two pages: a package with its category and some grids, and a page of the list.
PACKAGE_PAGE = """query PackagePage($slug: String!, $grids: Int!) { package(slug: $slug) {
    title slug repoUrl repoWatchers pypiVersion lastUpdated category { title slug }
    grids(first: $grids) { totalCount nodes { title slug } }
} }"""
LIST_PAGE = """query ListPage($first: Int!, $after: String) {
    packages(first: $first, after: $after) { totalCount pageInfo { hasNextPage endCursor }
    nodes { title slug repoWatchers category { slug } } }
}"""
FILL = {  # paged through before the memory reading: every resource of the catalogue once
    "packages": "query($after: String) { packages(first: 100, after: $after) {"
    " pageInfo { hasNextPage endCursor } nodes { slug title category { slug } } } }",
    "grids": "query($after: String) { grids(first: 100, after: $after) {"
    " pageInfo { hasNextPage endCursor } nodes { slug title } } }",
    "categories": "query($after: String) { categories(first: 100, after: $after) {"
    " pageInfo { hasNextPage endCursor } nodes { slug title } } }",
}


@dataclass(frozen=True, slots=True)
class Query:
    name: str
    what: str
    document: str
    variables: dict[str, Any]

    @property
    def body(self) -> bytes:
        payload: dict[str, Any] = {"query": self.document}
        if self.variables:
            payload["variables"] = self.variables
        return json.dumps(payload, separators=(",", ":")).encode()


def the_queries(scale: float) -> dict[str, Query]:
    """The issue's Q1-Q4 over the demo catalogue, their arguments picked from it deterministically.

    Q1's package has 3 grids, as the issue's reference had (Apollo: 1 package + 1 category +
    3 grids = 5 GETs); Q2's grid is the one with the most packages.
    """
    from gateway.demo.dataset import generate

    dataset = generate(scale=scale)
    grids_of: dict[int, int] = {}
    packages_of: dict[int, int] = {}
    for row in dataset.grid_packages:
        grids_of[row.package_id] = grids_of.get(row.package_id, 0) + 1
        packages_of[row.grid_id] = packages_of.get(row.grid_id, 0) + 1
    three = [p for p in dataset.packages if grids_of.get(p.id) == 3]
    package = max(three, key=lambda p: (p.repo_watchers, -p.id))
    largest = max(dataset.grids, key=lambda g: (packages_of.get(g.id, 0), -g.id))
    return {
        "Q1": Query(
            "Q1", f"package {package.slug}: category, grids(first: 10)", Q1, {"slug": package.slug}
        ),
        "Q2": Query(
            "Q2",
            f"grid {largest.slug} ({packages_of[largest.id]} packages):"
            " 100 packages, each with category and grids(first: 5)",
            Q2,
            {"slug": largest.slug},
        ),
        "Q3": Query("Q3", "packages(first: 50) with category", Q3, {}),
        "Q4": Query(
            "Q4",
            'search(query: "forms") with package (and its category) / grid',
            Q4,
            {"q": "forms"},
        ),
        "QL": Query("QL", "packages(first: 100) with all 17 scalar fields of Package", QL, {}),
    }


def the_mix(scale: float) -> list[Query]:
    """The frontend's mix: `MIX_SETS` distinct requests, package pages and list pages in turn.

    Package pages go through the catalogue's packages with 1 to 10 grids; list pages are pages
    of 1 to 100 packages from places 0, 50, 100, … (after the keyset cursor of the edge before)
    """
    from gateway.demo.dataset import generate
    from gateway.schema.pagination import cursor_of

    packages = generate(scale=scale).packages
    slugs = [package.slug for package in packages]
    newest = sorted((package.id for package in packages), reverse=True)  # the lists' own order
    mix = []
    for n in range(MIX_SETS // 2):
        # Every slug once, then again with another number of grids.
        page = {"slug": slugs[(n * 7919) % len(slugs)], "grids": 1 + (n + n // len(slugs)) % 10}
        mix.append(Query("mix", "package page", PACKAGE_PAGE, page))
        offset = n // 100 * 50
        # After the edge before the page: its key is its id, the list being newest id first.
        after = cursor_of((newest[offset - 1],)) if 0 < offset <= len(newest) else None
        listed = {"first": 1 + n % 100, "after": after}
        mix.append(Query("mix", "list page", LIST_PAGE, listed))
    return mix


# --- processes ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Cores:
    """Where each process runs: the server under test alone on one core, the rest elsewhere."""

    server: str | None
    upstream: str | None
    wrk: str | None
    wrk_threads: int

    @classmethod
    def plan(cls) -> Cores:
        cpus = sorted(os.sched_getaffinity(0))
        if len(cpus) < 2 or shutil.which("taskset") is None:
            return cls(None, None, None, 1)
        rest = cpus[2:] or cpus[1:2]
        return cls(str(cpus[0]), str(cpus[1]), ",".join(map(str, rest)), len(rest))

    def pin(self, cores: str | None, command: list[str]) -> list[str]:
        return command if cores is None else ["taskset", "-c", cores, *command]

    def load_cores(self) -> set[int]:
        """The cores of the fake upstream and wrk; every core when nothing is pinned."""
        if self.upstream is None or self.wrk is None:
            return set(os.sched_getaffinity(0))
        return {int(c) for c in f"{self.upstream},{self.wrk}".split(",")}

    def describe(self) -> str:
        if self.server is None:
            return "not pinned (fewer than 2 cores, or no taskset)"
        return f"server on core {self.server}, upstream on {self.upstream}, wrk on {self.wrk}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_listening(process: subprocess.Popen[bytes], port: int, log: Path, limit: float) -> None:
    deadline = time.monotonic() + limit
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode}; its log: {log}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"the server did not listen within {limit:g} s; its log: {log}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.01)


def stop(process: subprocess.Popen[Any]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def family(pid: int) -> list[int]:
    """The process and its descendants (a server with worker processes is all of them)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rpartition(")")[2].split()
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        found.append(todo.pop())
        todo += children.get(found[-1], [])
    return found


def family_cpu(pid: int) -> float:
    total = 0.0
    for member in family(pid):
        with contextlib.suppress(OSError):
            total += cpu_seconds(member)
    return total


def family_peak_kib(pid: int) -> int:
    """The peak RSS (VmHWM) of the process plus its descendants' (an upper bound of theirs)."""
    total = 0
    for member in family(pid):
        with contextlib.suppress(OSError, RuntimeError):
            total += proc_status_kib(member, "VmHWM")
    return total


def proc_status_kib(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{key}:"):
            return int(line.split()[1])
    raise RuntimeError(f"no {key} for process {pid}")


def core_jiffies(cpus: set[int] | None) -> tuple[int, int, int]:
    """Clock ticks of these cores (None: all) so far, from /proc/stat: busy (all but idle and
    iowait), spent in processes (user, nice, system: what their own CPU times add up to), total."""
    busy = tasks = total = 0
    for line in Path("/proc/stat").read_text().splitlines():
        name, *ticks = line.split()
        if not (name.startswith("cpu") and name[3:].isdigit()):
            continue
        if cpus is None or int(name[3:]) in cpus:
            values = [int(t) for t in ticks[:8]]
            total += sum(values)
            busy += sum(values) - values[3] - values[4]
            tasks += values[0] + values[1] + values[2]
    return busy, tasks, total


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Upstream:
    """The fake APIv4 in a child process, steered over HTTP at `/_bench/` (not logged)."""

    def __init__(self, cores: Cores, latency: float, scale: float, log: IO[bytes]) -> None:
        command = [sys.executable, "-m", "bench.compare", "--upstream-process"]
        command += ["--latency", str(latency), "--scale", str(scale)]
        self.process = subprocess.Popen(
            cores.pin(cores.upstream, command),
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline().decode().strip()
        if not line.startswith("http://"):
            stop(self.process)
            raise RuntimeError(f"the fake upstream did not start: {line!r}; see {log.name}")
        self.origin = line
        self.api = f"{line}/api/v4/"
        self.client = httpx.Client(base_url=line, timeout=30)

    def control(self, **params: Any) -> dict[str, Any]:
        """The counters (before any reset asked for here); `latency=`, `reset=1` change them."""
        answer = self.client.get("/_bench/", params=params)
        answer.raise_for_status()
        result: dict[str, Any] = answer.json()
        return result

    def count(self) -> int:
        return int(self.control()["count"])

    def close(self) -> None:
        self.client.close()
        if self.process.stdin is not None:
            with contextlib.suppress(OSError):
                self.process.stdin.close()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            stop(self.process)


def upstream_process(latency: float, scale: float) -> None:
    """The child: serve the fake APIv4 until standard input closes."""
    from starlette.types import Receive, Scope, Send

    from gateway.demo.dataset import generate
    from tests.fake_upstream import API_PATH, create_upstream_app, serve_in_thread

    app = create_upstream_app(generate(scale=scale), latency=latency)

    async def steered(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/_bench/"):
            await app(scope, receive, send)
            return
        params = dict(
            pair.split("=", 1) for pair in scope["query_string"].decode().split("&") if "=" in pair
        )
        body = json.dumps(
            {"count": app.count, "in_flight": app.in_flight, "peak": app.peak_in_flight}
        ).encode()
        if params.get("reset") == "1":
            app.reset()
        if "latency" in params:
            app.latency = float(params["latency"])
        headers = [(b"content-type", b"application/json")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    with serve_in_thread(steered) as origin:
        app.base_url = f"{origin}{API_PATH}"
        print(origin, flush=True)
        sys.stdin.read()


@dataclass(frozen=True, slots=True)
class Running:
    process: subprocess.Popen[bytes]
    url: str
    startup: float  # seconds from the process's start to its port accepting connections


@dataclass(frozen=True, slots=True)
class Server:
    """How to start one of the two servers on a port, over an upstream."""

    name: str
    path: str  # where it answers GraphQL
    start: Callable[[Cores, int, str, bool, IO[bytes]], subprocess.Popen[bytes]]


def gateway_flags() -> set[str]:
    out = subprocess.run(
        [sys.executable, "-m", "gateway", "serve", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return set(re.findall(r"--[a-z][a-z0-9-]+", out))


def start_gateway(
    cores: Cores,
    port: int,
    upstream: str,
    engine: bool,
    log: IO[bytes],
    *,
    flags: set[str],
    database: str | None = None,
) -> subprocess.Popen[bytes]:
    """`gateway serve` over the upstream, else `database`, else its embedded catalogue."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("GATEWAY_")}
    command = [sys.executable, "-m", "gateway", "serve", "--port", str(port), "--log-level"]
    command += ["warning"]
    if upstream:
        command += ["--upstream", upstream]
    elif database:
        command += ["--database", database]
    if engine and "--response-cache-ttl" in flags:
        command += ["--response-cache-ttl", "0"]
    return subprocess.Popen(
        cores.pin(cores.server, command), cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
    )


def start_apollo(
    cores: Cores,
    port: int,
    upstream: str,
    engine: bool,
    log: IO[bytes],
    *,
    where: Path,
    memo: bool = False,
) -> subprocess.Popen[bytes]:
    """The peer from the directory `where`; with `memo`, keeping every upstream answer."""
    env = {**os.environ, "NODE_ENV": "production", "UPSTREAM": upstream.rstrip("/")}
    env.update(PORT=str(port), SCHEMA=str(CONTRACT), MEMO="1" if memo else "0")
    command = cores.pin(cores.server, ["node", "server.js"])
    return subprocess.Popen(command, cwd=where, env=env, stdout=log, stderr=subprocess.STDOUT)


def start_bare(cores: Cores, port: int, body: Path, log: IO[bytes]) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "bench.bare", "--port", str(port), "--body", str(body)]
    return subprocess.Popen(
        cores.pin(cores.server, command), cwd=ROOT, stdout=log, stderr=subprocess.STDOUT
    )


@contextlib.contextmanager
def running(
    server: Server, cores: Cores, upstream: str, engine: bool, logs: Path
) -> Iterator[Running]:
    port = free_port()
    path = logs / f"{server.name.lower()}-{port}.log"
    with path.open("wb") as log:
        started = time.perf_counter()
        process = server.start(cores, port, upstream, engine, log)
        try:
            wait_listening(process, port, path, 60)
            startup = time.perf_counter() - started
            yield Running(process, f"http://127.0.0.1:{port}{server.path}", startup)
        finally:
            stop(process)


# --- measuring ----------------------------------------------------------------------------------

WRK_HEAD = """
wrk.method = "POST"
wrk.body = [==[%s]==]
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Accept"] = "application/json"
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) bad = 0 end
"""
# Each request the next body of a file, one per line; each thread from its own place.
WRK_MIX_HEAD = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Accept"] = "application/json"
local bodies = {}
for line in io.lines([==[%s]==]) do bodies[#bodies + 1] = line end
local threads = {}
function setup(thread)
  table.insert(threads, thread)
  thread:set("first", #threads * 7919)
end
function init(args) bad = 0; at = first end
function request()
  at = at %% #bodies + 1
  return wrk.format(nil, nil, nil, bodies[at])
end
"""
WRK_TAIL = """
function response(status, headers, body)
  if status < 200 or status > 299 or string.find(body, '"errors":', 1, true) then
    bad = bad + 1
  end
end
function done(summary, latency, requests)
  local bad = 0
  for _, thread in ipairs(threads) do bad = bad + thread:get("bad") end
  local e = summary.errors
  io.write(string.format(
    'BENCH {"requests": %d, "seconds": %f, "p50_us": %d, "p99_us": %d, "bad": %d,'
    .. ' "socket": %d, "status": %d, "timeout": %d}\\n',
    summary.requests, summary.duration / 1e6, latency:percentile(50), latency:percentile(99),
    bad, e.connect + e.read + e.write, e.status, e.timeout))
end
"""


@dataclass(slots=True)
class Load:
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int  # non-2xx, socket errors, timeouts and answers with GraphQL errors
    server_cpu: float  # the server process's CPU time over the run's, as a share of one core
    load_core: float  # how busy the core(s) of the fake upstream and wrk were, 0 to 1
    foreign: float  # CPU used by processes other than the run's, in cores


@dataclass(frozen=True, slots=True)
class Usage:
    """CPU seconds used so far: by the server, the fake upstream, this process and its reaped
    children (wrk); and clock ticks of the load cores and of every core."""

    OURS: ClassVar[tuple[str, ...]] = ("server", "upstream", "me")
    at: float
    server: float
    upstream: float
    me: float
    load_busy: int
    load_total: int
    all_tasks: int

    @classmethod
    def now(cls, pids: tuple[int, int], load: set[int]) -> Usage:
        me, children = (
            resource.getrusage(resource.RUSAGE_SELF),
            resource.getrusage(resource.RUSAGE_CHILDREN),
        )
        mine = me.ru_utime + me.ru_stime + children.ru_utime + children.ru_stime
        load_busy, _, load_total = core_jiffies(load)
        return cls(
            at=time.monotonic(),
            server=family_cpu(pids[0]),
            upstream=cpu_seconds(pids[1]),
            me=mine,
            load_busy=load_busy,
            load_total=load_total,
            all_tasks=core_jiffies(None)[1],
        )


def wrk(
    cores: Cores,
    url: str,
    query: Query | list[Query],
    seconds: float,
    connections: int,
    pids: tuple[int, int],
    scripts: Path,
) -> Load:
    """wrk against `url`: one query, or a list of them, one after the other, round robin."""
    if isinstance(query, list):
        bodies = scripts / "mix.jsonl"
        bodies.write_bytes(b"\n".join(q.body for q in query) + b"\n")
        script = scripts / "mix.lua"
        script.write_text(WRK_MIX_HEAD % bodies + WRK_TAIL)
    else:
        script = scripts / f"{query.name}.lua"
        script.write_text(WRK_HEAD % query.body.decode() + WRK_TAIL)
    command = ["wrk", f"-t{min(cores.wrk_threads, connections)}", f"-c{connections}"]
    command += [f"-d{max(1, round(seconds))}s", "--timeout", "10s", "-s", str(script), url]
    load_cores = cores.load_cores()
    before = Usage.now(pids, load_cores)
    done = subprocess.run(cores.pin(cores.wrk, command), capture_output=True, text=True)
    after = Usage.now(pids, load_cores)
    seconds = after.at - before.at
    server_cpu = (after.server - before.server) / seconds
    load_core = (after.load_busy - before.load_busy) / max(1, after.load_total - before.load_total)
    ours = sum(getattr(after, name) - getattr(before, name) for name in Usage.OURS)
    tick = os.sysconf("SC_CLK_TCK")
    foreign = max(0.0, ((after.all_tasks - before.all_tasks) / tick - ours) / seconds)
    line = next((x for x in done.stdout.splitlines() if x.startswith("BENCH ")), None)
    if done.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stdout}{done.stderr}")
    result = json.loads(line[len("BENCH ") :])
    errors = result["bad"] + result["socket"] + result["timeout"]
    errors = max(errors, result["status"])  # wrk's own non-2xx count, in case Lua missed some
    return Load(
        rps=result["requests"] / result["seconds"],
        p50_ms=result["p50_us"] / 1000,
        p99_ms=result["p99_us"] / 1000,
        errors=errors,
        server_cpu=server_cpu,
        load_core=load_core,
        foreign=foreign,
    )


JSON_HEADERS = {"Content-Type": "application/json"}


def ask(client: httpx.Client, url: str, query: Query) -> tuple[float, str | None]:
    """One request: its latency and what was wrong with the answer, if anything."""
    started = time.perf_counter()
    answer = client.post(url, content=query.body, headers=JSON_HEADERS)
    seconds = time.perf_counter() - started
    if answer.status_code != 200:
        return seconds, f"HTTP {answer.status_code}: {answer.text[:200]}"
    try:
        body = answer.json()
    except ValueError:
        return seconds, f"not JSON: {answer.text[:200]}"
    if body.get("errors"):
        return seconds, f"GraphQL errors: {json.dumps(body['errors'])[:200]}"
    if not body.get("data") or None in body["data"].values():
        return seconds, f"no data: {answer.text[:200]}"
    return seconds, None


@dataclass(slots=True)
class Figures:
    """One server's measurements, per query."""

    cold_gets: dict[str, int] = field(default_factory=dict)
    startup_gets: dict[str, int] = field(default_factory=dict)
    startup_s: list[float] = field(default_factory=list)
    repeat_gets: dict[str, int] = field(default_factory=dict)
    cold_ms: dict[str, float] = field(default_factory=dict)
    warm: dict[str, Load] = field(default_factory=dict)
    engine: dict[str, Load] = field(default_factory=dict)
    mix: Load | None = None
    peak_rss_kib: int = 0
    rss_after_fill_kib: int = 0
    fill_gets: int = 0
    problems: list[str] = field(default_factory=list)


def fill(client: httpx.Client, url: str) -> str | None:
    """Every package, grid and category once, page by page; what went wrong, if anything."""
    for name, document in FILL.items():
        after = None
        while True:
            answer = client.post(url, json={"query": document, "variables": {"after": after}})
            try:
                page = answer.json()["data"][name]
                more, after = page["pageInfo"]["hasNextPage"], page["pageInfo"]["endCursor"]
            except (ValueError, KeyError, TypeError):
                return f"filling the catalogue: {name}: {answer.text[:200]}"
            if not more:
                break
    return None


def measure(
    server: Server,
    queries: list[Query],
    args: argparse.Namespace,
    cores: Cores,
    upstream: Upstream,
    logs: Path,
    *,
    cold: bool = True,
) -> Figures:
    """The server's figures: cold and warm (with `cold`), then its engine."""
    figures = Figures()
    say = progress(server.name)
    with httpx.Client(timeout=60) as client:
        # Cold, then warm under load: a fresh process per query, the upstream at --latency.
        for query in queries if cold else []:
            if query.name not in COLD_NAMES:
                continue
            upstream.control(reset=1, latency=args.latency)
            with running(server, cores, upstream.api, False, logs) as started:
                process, url = started.process, started.url
                figures.startup_s.append(started.startup)
                figures.startup_gets[query.name] = upstream.count()
                with httpx.Client(timeout=60) as fresh:  # a new connection, as a client's first
                    seconds, problem = ask(fresh, url, query)
                figures.cold_gets[query.name] = upstream.count()
                figures.cold_ms[query.name] = seconds * 1000
                if problem:
                    figures.problems.append(f"{query.name} cold: {problem}")
                time.sleep(0.05)  # let anything the first answer left in flight arrive
                before = upstream.count()
                _, problem = ask(client, url, query)
                figures.repeat_gets[query.name] = upstream.count() - before
                if problem:
                    figures.problems.append(f"{query.name} repeated: {problem}")
                say(f"{query.name} cold {seconds * 1000:.0f} ms")
                pids = (process.pid, upstream.process.pid)
                if args.warmup > 0:
                    wrk(cores, url, query, args.warmup, args.connections, pids, logs)
                load = wrk(cores, url, query, args.duration, args.connections, pids, logs)
                figures.warm[query.name] = load
                say(f"{query.name} warm {load.rps:.0f} req/s")
                figures.peak_rss_kib = max(figures.peak_rss_kib, family_peak_kib(process.pid))
        # The engine: the upstream at 0 ms, the response cache off; one process for all.
        upstream.control(reset=1, latency=0)
        with running(server, cores, upstream.api, True, logs) as started:
            figures.engine = engine(
                server, started, queries, args, cores, upstream, logs, figures.problems
            )
            process, url = started.process, started.url
            if cold:
                before = upstream.count()
                problem = fill(client, url)
                if problem:
                    figures.problems.append(problem)
                figures.fill_gets = upstream.count() - before
                figures.rss_after_fill_kib = family_peak_kib(process.pid)
            figures.peak_rss_kib = max(figures.peak_rss_kib, family_peak_kib(process.pid))
        upstream.control(reset=1, latency=args.latency)
    return figures


def engine(
    server: Server,
    started: Running,
    queries: list[Query],
    args: argparse.Namespace,
    cores: Cores,
    upstream: Upstream,
    logs: Path,
    problems: list[str],
) -> dict[str, Load]:
    """wrk on each query in turn, against a server already running: req/s, errors."""
    say = progress(server.name)
    loads = {}
    pids = (started.process.pid, upstream.process.pid)
    with httpx.Client(timeout=60) as client:
        for query in queries:
            _, problem = ask(client, started.url, query)
            if problem:
                problems.append(f"{server.name} {query.name}: {problem}")
            load = loads[query.name] = load_once(cores, started.url, query, args, pids, logs)
            say(f"{query.name} engine {load.rps:.0f} req/s")
    return loads


def mix(
    server: Server,
    requests: list[Query],
    args: argparse.Namespace,
    cores: Cores,
    upstream: Upstream,
    logs: Path,
) -> Load:
    """The frontend's mix against a fresh process, default configuration, the upstream at
    --latency: after --warmup seconds unmeasured, --duration seconds of wrk."""
    upstream.control(reset=1, latency=args.latency)
    with running(server, cores, upstream.api, False, logs) as started:
        pids = (started.process.pid, upstream.process.pid)
        if args.warmup > 0:
            wrk(cores, started.url, requests, args.warmup, args.connections, pids, logs)
        load = wrk(cores, started.url, requests, args.duration, args.connections, pids, logs)
    progress(server.name)(f"mix {load.rps:.0f} req/s, p99 {load.p99_ms:.1f} ms")
    return load


def cache_hit(
    gateway: Server,
    query: Query,
    args: argparse.Namespace,
    cores: Cores,
    upstream: Upstream,
    logs: Path,
) -> tuple[Load, Load]:
    """A response-cache hit of the gateway (default configuration, asked the same query again
    and again) and a bare Starlette endpoint answering the same bytes: both req/s."""
    upstream.control(reset=1, latency=args.latency)
    with running(gateway, cores, upstream.api, False, logs) as started:
        pids = (started.process.pid, upstream.process.pid)
        with httpx.Client(timeout=60) as client:
            answer = client.post(started.url, content=query.body, headers=JSON_HEADERS)
        hit = load_once(cores, started.url, query, args, pids, logs)
    body = logs / "answer.json"
    body.write_bytes(answer.content)

    def start(
        cores: Cores, port: int, upstream: str, engine: bool, log: IO[bytes]
    ) -> subprocess.Popen[bytes]:
        return start_bare(cores, port, body, log)

    with running(Server("bare", "/graphql", start), cores, "", False, logs) as started:
        pids = (started.process.pid, upstream.process.pid)
        bare = load_once(cores, started.url, query, args, pids, logs)
    progress("gateway")(f"response-cache hit {hit.rps:.0f} req/s, bare {bare.rps:.0f} req/s")
    return hit, bare


def load_once(
    cores: Cores,
    url: str,
    query: Query,
    args: argparse.Namespace,
    pids: tuple[int, int],
    logs: Path,
) -> Load:
    if args.warmup > 0:
        wrk(cores, url, query, args.warmup, args.connections, pids, logs)
    return wrk(cores, url, query, args.duration, args.connections, pids, logs)


def over_database(flags: set[str], name: str, database: str | None = None) -> Server:
    """The gateway over `database`, or its embedded catalogue, whatever upstream it is given."""

    def start(
        cores: Cores, port: int, upstream: str, engine: bool, log: IO[bytes]
    ) -> subprocess.Popen[bytes]:
        return start_gateway(cores, port, "", engine, log, flags=flags, database=database)

    return Server(name, "/graphql", start)


def database_p50(
    cores: Cores, flags: set[str], samples: int, logs: Path, query: Query
) -> tuple[float, str | None]:
    """Q2's p50 over the embedded SQLite catalogue, the response cache off (goal 6)."""
    server = over_database(flags, "gateway-sqlite")
    with running(server, cores, "", True, logs) as started, httpx.Client(timeout=60) as client:
        url = started.url
        _, problem = ask(client, url, query)
        for _ in range(3):
            ask(client, url, query)
        times = [ask(client, url, query)[0] for _ in range(samples)]
    return statistics.median(times) * 1000, problem


def on_database(
    server: Server,
    queries: list[Query],
    args: argparse.Namespace,
    cores: Cores,
    upstream: Upstream,
    logs: Path,
    problems: list[str],
) -> dict[str, Load]:
    """The engine figures of the gateway over a database, the response cache off."""
    with running(server, cores, "", True, logs) as started:
        return engine(server, started, queries, args, cores, upstream, logs, problems)


@contextlib.contextmanager
def postgres_mirror(admin_url: str, upstream: Upstream) -> Iterator[str]:
    """A database of its own on the server of `admin_url`, holding `gateway mirror`'s copy of
    the fake upstream, dropped afterwards; its URL."""
    import asyncpg  # type: ignore[import-untyped]  # the gateway's own PostgreSQL driver

    async def admin(statement: str) -> None:
        connection = await asyncpg.connect(admin_url)
        try:
            await connection.execute(statement)
        finally:
            await connection.close()

    url = admin_url.rsplit("/", 1)[0] + f"/{BENCH_DATABASE}"
    asyncio.run(admin(f"DROP DATABASE IF EXISTS {BENCH_DATABASE} WITH (FORCE)"))
    asyncio.run(admin(f"CREATE DATABASE {BENCH_DATABASE}"))
    try:
        upstream.control(reset=1, latency=0)
        subprocess.run(
            [sys.executable, "-m", "gateway", "mirror", "--from", upstream.api, "--to", url],
            cwd=ROOT,
            check=True,
            capture_output=True,
        )
        yield url
    finally:
        asyncio.run(admin(f"DROP DATABASE IF EXISTS {BENCH_DATABASE} WITH (FORCE)"))


def progress(name: str) -> Callable[[str], None]:
    def say(message: str) -> None:
        print(f"  {name}: {message}", file=sys.stderr, flush=True)

    return say


# --- the report ---------------------------------------------------------------------------------

COLD_LIMITS = {"Q1": 5, "Q2": 10, "Q3": 5, "Q4": 25}


def machine() -> str:
    model = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    memory = ""
    with contextlib.suppress(OSError, ValueError, IndexError):
        kib = int(Path("/proc/meminfo").read_text().split("\n")[0].split()[1])
        memory = f", {kib / 2**20:.0f} GiB"
    cores = len(os.sched_getaffinity(0))
    node = subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()
    head = subprocess.run(
        ["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    busy = os.getloadavg()[0]
    warning = (
        f"\nwarning: the load average is {busy:.1f} before the run: other work on this machine"
        " will disturb the figures"
        if busy > 0.5
        else ""
    )
    return (
        f"machine: {cores} cores ({os.cpu_count()} online), {model}{memory}; "
        f"Python {platform.python_version()}, Node {node}; gateway at {head or 'unknown'}"
        f"{warning}"
    )


def ratio(ours: float, theirs: float) -> str:
    if theirs == 0:
        return "-" if ours == 0 else "∞"
    return f"{ours / theirs:.2f}x"


def verdict(holds: bool) -> str:
    return "yes" if holds else "**no**"


@dataclass(slots=True)
class Goals:
    held: dict[int, list[bool]] = field(default_factory=dict)

    def check(self, goal: int, holds: bool, rule: str) -> str:
        self.held.setdefault(goal, []).append(holds)
        return f"{goal}: {rule}: {verdict(holds)}"


@dataclass(slots=True)
class Results:
    """Everything one run measured."""

    queries: list[Query]
    figures: dict[str, Figures]  # "gateway", "Apollo", "Apollo MEMO"
    response_cache_flag: bool
    sqlite_p50: tuple[float, str | None] | None = None
    databases: dict[str, dict[str, Load]] = field(default_factory=dict)  # "SQLite", …
    mix: dict[str, Load] = field(default_factory=dict)  # "gateway", "Apollo"
    hit: tuple[Load, Load] | None = None  # the gateway's response-cache hit, bare Starlette
    problems: list[str] = field(default_factory=list)


# The issues' goals for the engine: at least this many times the peer's req/s.
ENGINE_GOALS = {"Q1": 3.0, "Q2": 10.0, "Q3": 3.0, "QL": 3.0}  # Apollo, 0 ms
MEMO_GOALS = {"Q1": 0.5, "Q2": 1.0, "Q3": 1.0, "QL": 1.0}  # Apollo from memory
DATABASE_GOALS = {"Q1": 3.0, "Q2": 10.0, "Q3": 3.0}  # against Apollo's engine figures
MIX_GOAL = 5.0
HIT_GOAL = 0.5  # of bare Starlette's req/s


def cell(load: Load) -> str:
    return f"{load.rps:,.0f}" + (f" ({load.errors} errors)" if load.errors else "")


Row = tuple[str, str, str, str, str]


def table(results: Results) -> tuple[str, Goals]:
    goals = Goals()
    rows: list[Row] = []
    gw, ap = results.figures.get("gateway"), results.figures["Apollo"]
    if gw is not None:  # not measured with --databases-only
        rows += rest_rows(results, gw, ap, goals)
    for backend, loads in results.databases.items():
        for name, g in loads.items():
            a = ap.engine[name]
            times = DATABASE_GOALS[name]
            goal = goals.check(7, g.rps >= times * a.rps, f"≥ {times:g}x")
            label = f"{name} {backend} backend: req/s (response cache off; Apollo at 0 ms)"
            rows.append((label, cell(g), cell(a), ratio(g.rps, a.rps), goal))
    if "gateway" in results.mix and "Apollo" in results.mix:
        rows += mix_rows(results.mix["gateway"], results.mix["Apollo"], goals)
    if results.hit is not None:
        hit, bare = results.hit
        goal = goals.check(10, hit.rps >= HIT_GOAL * bare.rps, f"≥ {HIT_GOAL:g}x")
        label = "Q1 response-cache hit: req/s (peer: bare Starlette, same bytes)"
        rows.append((label, cell(hit), cell(bare), ratio(hit.rps, bare.rps), goal))
    if gw is not None:
        rows += process_rows(gw, ap, goals)
    if results.sqlite_p50 is not None:
        p50, _ = results.sqlite_p50
        rows.append(
            (
                "Q2 SQLite backend: p50 ms (response cache off)",
                f"{p50:.1f}",
                "",
                "",
                goals.check(6, p50 <= 25, "≤ 25"),
            )
        )
    header = ("query: measure", "gateway", "peer", "ratio", "goal: rule: met")
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(5)]

    def line(cells: tuple[str, ...]) -> str:
        padded = (
            c.ljust(w) if i in (0, 4) else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )
        return "| " + " | ".join(padded) + " |"

    rule = (
        "|"
        + "|".join(
            "-" * (w + 1) + ":" if 0 < i < 4 else "-" * (w + 2) for i, w in enumerate(widths)
        )
        + "|"
    )
    return "\n".join([line(header), rule, *(line(row) for row in rows)]), goals


def rest_rows(results: Results, gw: Figures, ap: Figures, goals: Goals) -> list[Row]:
    """The gateway over REST against the peer: cold, warm and engine figures per query."""
    rows: list[Row] = []
    memo = results.figures.get("Apollo MEMO")
    for q in results.queries:
        name = q.name
        if name in gw.cold_gets and name in ap.cold_gets:
            rows += cold_and_warm_rows(name, gw, ap, goals)
        g, a = gw.engine[name], ap.engine[name]
        times = ENGINE_GOALS.get(name)
        goal = "" if times is None else goals.check(4, g.rps >= times * a.rps, f"≥ {times:g}x")
        label = f"{name} engine: req/s (0 ms upstream" + (
            ", response cache off)" if results.response_cache_flag else ")"
        )
        rows.append((label, cell(g), cell(a), ratio(g.rps, a.rps), goal))
        if memo is not None and name in memo.engine:
            m = memo.engine[name]
            times = MEMO_GOALS.get(name)
            goal = "" if times is None else goals.check(8, g.rps >= times * m.rps, f"≥ {times:g}x")
            label = f"{name} engine: req/s against Apollo from memory (MEMO=1)"
            rows.append((label, cell(g), cell(m), ratio(g.rps, m.rps), goal))
    return rows


def process_rows(gw: Figures, ap: Figures, goals: Goals) -> list[Row]:
    g_up, a_up = (statistics.median(f.startup_s) * 1000 for f in (gw, ap))
    g_rss, a_rss = gw.peak_rss_kib / 1024, ap.peak_rss_kib / 1024
    return [
        (
            "start-up ms (process start to listening, median)",
            f"{g_up:,.0f}",
            f"{a_up:,.0f}",
            ratio(g_up, a_up),
            "",
        ),
        (
            "peak RSS MiB (all runs; catalogue cached)",
            f"{g_rss:.0f}",
            f"{a_rss:.0f}",
            ratio(g_rss, a_rss),
            goals.check(5, g_rss <= 200, "≤ 200"),
        ),
    ]


def mix_rows(g: Load, a: Load, goals: Goals) -> list[Row]:
    return [
        (
            f"frontend mix ({MIX_SETS:,} sets of variables): req/s",
            cell(g),
            cell(a),
            ratio(g.rps, a.rps),
            goals.check(9, g.rps >= MIX_GOAL * a.rps, f"≥ {MIX_GOAL:g}x"),
        ),
        (
            "frontend mix: p99 ms",
            f"{g.p99_ms:,.1f}",
            f"{a.p99_ms:,.1f}",
            ratio(g.p99_ms, a.p99_ms),
            goals.check(9, g.p99_ms <= a.p99_ms, "≤ Apollo"),
        ),
    ]


def cold_and_warm_rows(name: str, gw: Figures, ap: Figures, goals: Goals) -> list[Row]:
    g_cold, a_cold = gw.cold_gets[name], ap.cold_gets[name]
    start = f" ({gw.startup_gets[name]} at start-up)" if gw.startup_gets[name] else ""
    limit = COLD_LIMITS[name]
    g_rep, a_rep = gw.repeat_gets[name], ap.repeat_gets[name]
    g_ms, a_ms = gw.cold_ms[name], ap.cold_ms[name]
    share, rule = (0.5, "≤ ½ Apollo") if name == "Q2" else (1.0, "≤ Apollo")
    g, a = gw.warm[name], ap.warm[name]
    return [
        (
            f"{name} cold: upstream requests",
            f"{g_cold}{start}",
            str(a_cold),
            ratio(g_cold, a_cold),
            goals.check(1, g_cold <= limit, f"≤ {limit}"),
        ),
        (
            f"{name} same query again: upstream requests",
            str(g_rep),
            str(a_rep),
            "",
            goals.check(1, g_rep == 0, "0"),
        ),
        (
            f"{name} cold: latency ms",
            f"{g_ms:.0f}",
            f"{a_ms:.0f}",
            ratio(g_ms, a_ms),
            goals.check(2, g_ms <= share * a_ms, rule),
        ),
        (
            f"{name} warm: req/s",
            f"{g.rps:,.0f}",
            f"{a.rps:,.0f}",
            ratio(g.rps, a.rps),
            goals.check(3, g.rps >= 3 * a.rps, "≥ 3x Apollo"),
        ),
        (
            f"{name} warm: p99 ms",
            f"{g.p99_ms:,.1f}",
            f"{a.p99_ms:,.1f}",
            ratio(g.p99_ms, a.p99_ms),
            goals.check(3, g.p99_ms <= a.p99_ms, "≤ Apollo"),
        ),
        (
            f"{name} warm: errors",
            str(g.errors),
            str(a.errors),
            "",
            goals.check(3, g.errors == 0, "0"),
        ),
    ]


GOAL_NAMES = {
    1: "upstream requests for a cold query, and 0 again",
    2: "cold latency ≤ Apollo's (≤ ½ on Q2)",
    3: "warm throughput ≥ 3x Apollo's, p99 ≤ Apollo's, no errors",
    4: "engine (0 ms upstream, response cache off) ≥ 3x Apollo on Q1, Q3 and QL, ≥ 10x on Q2",
    5: "peak RSS ≤ 200 MiB with the catalogue cached",
    6: "SQLite backend: Q2 p50 ≤ 25 ms (the statement count is not measured here)",
    7: "embedded SQLite and PostgreSQL backends ≥ 3x Apollo's 0 ms figures on Q1 and Q3,"
    " ≥ 10x on Q2",
    8: "engine ≥ Apollo from memory (MEMO=1) on Q2, Q3 and QL, ≥ ½ on Q1",
    9: "frontend mix ≥ 5x Apollo's req/s, p99 ≤ Apollo's",
    10: "a response-cache hit ≥ ½ of bare Starlette's req/s on the same server stack",
}


def summary(goals: Goals) -> str:
    lines = ["goals:"]
    for goal, name in GOAL_NAMES.items():
        held = goals.held.get(goal)
        if not held:
            lines.append(f"  {goal}. {name}: not measured")
        else:
            lines.append(
                f"  {goal}. {name}: {'yes' if all(held) else 'no'}"
                f" ({sum(held)} of {len(held)} checks)"
            )
    return "\n".join(lines)


def notes(results: Results, cores: Cores) -> list[str]:
    out = list(results.problems)
    disturbed: list[float] = []
    saturated: list[str] = []
    measured: dict[str, dict[str, dict[str, Load]]] = {
        name: {"warm": f.warm, "engine": f.engine} for name, f in results.figures.items()
    }
    for backend, loads in results.databases.items():
        measured.setdefault("gateway", {})[backend] = loads
    for name, load in results.mix.items():
        measured.setdefault(name, {})["mix"] = {"mix": load}
    if results.hit is not None:
        measured["gateway"]["hit"] = {"Q1": results.hit[0]}
        measured["bare Starlette"] = {"hit": {"Q1": results.hit[1]}}
    count = 0
    for name, modes in measured.items():
        cells = []
        for mode, loads in modes.items():
            for query, load in loads.items():
                count += 1
                cells.append(
                    f"{mode} {query} {load.server_cpu:.0%}/{load.load_core:.0%}/{load.foreign:.0%}"
                )
                if load.foreign > 0.1:
                    disturbed.append(load.foreign)
                if load.load_core > 0.9:
                    saturated.append(f"{name} {mode} {query}")
        out.append(
            f"{name}: CPU under wrk (server process / core {cores.upstream} of upstream and wrk /"
            f" other processes, in cores): {', '.join(cells)}"
        )
    for name, f in results.figures.items():
        out += [f"{name}: {problem}" for problem in f.problems]
        if f.fill_gets:
            out.append(
                f"{name}: peak RSS {f.peak_rss_kib / 1024:.0f} MiB; the engine process's after"
                f" filling the catalogue {f.rss_after_fill_kib / 1024:.0f} MiB (the fill cost"
                f" {f.fill_gets} upstream requests)"
            )
    if saturated:
        out.append(
            f"the core of the fake upstream and wrk was over 90% busy in {', '.join(saturated)}:"
            " there the load side, not the server, may limit the figure"
        )
    if disturbed:
        out.append(
            f"WARNING: {len(disturbed)} of {count} wrk figures ran while other processes used"
            f" over 10% of a core (up to {max(disturbed):.0%}): rerun on a quiet machine before"
            " trusting them"
        )
    return out


# --- the command --------------------------------------------------------------------------------


def prepare_apollo(where: Path) -> Path:
    """A directory of the peer with its `node_modules`: `where`, or a copy of it in a temporary
    directory when `where` cannot take them (it is read-only)."""
    if not (where / "server.js").is_file():
        raise SystemExit(f"the Apollo peer is missing: no {where / 'server.js'}")
    if (where / "node_modules").is_dir():
        return where
    if shutil.which("npm") is None:
        raise SystemExit(f"npm is missing: run `npm ci` in {where}")
    if not os.access(where, os.W_OK):
        copy = Path(tempfile.mkdtemp(prefix="bench-apollo-")) / "apollo"
        shutil.copytree(where, copy)
        for path in (copy, *copy.rglob("*")):
            path.chmod(path.stat().st_mode | 0o200)
        where = copy
    print(f"npm ci in {where} …", file=sys.stderr, flush=True)
    subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=where, check=True)
    return where


def rest_and_peers(
    servers: tuple[Server, Server, Server],
    results: Results,
    q1: Query | None,
    args: argparse.Namespace,
    cores: Cores,
    upstream: Upstream,
    logs: Path,
) -> None:
    """Everything but the database backends: the gateway over REST and the peer (cold, warm,
    engine), the peer from memory, the frontend's mix and the response-cache hit on `q1`."""
    gateway, peer, memo = servers
    queries = results.queries
    for server in (gateway, peer):
        results.figures[server.name] = measure(server, queries, args, cores, upstream, logs)
    results.figures[memo.name] = measure(memo, queries, args, cores, upstream, logs, cold=False)
    if args.mix:
        requests = the_mix(args.scale)
        for server in (gateway, peer):
            results.mix[server.name] = mix(server, requests, args, cores, upstream, logs)
    if q1 is not None:
        results.hit = cache_hit(gateway, q1, args, cores, upstream, logs)


def run(args: argparse.Namespace) -> int:
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is missing: `apt-get install -y wrk` (or `make bench` as root)")
    apollo = prepare_apollo(args.apollo)
    started = time.monotonic()
    cores = Cores.plan()
    print(machine())
    if cores.upstream is not None:  # this process only waits: it stays off the server's core
        os.sched_setaffinity(0, {int(c) for c in cores.upstream.split(",")})
    print(f"pinning: {cores.describe()}")
    everything = the_queries(args.scale)
    queries = [everything[name] for name in args.queries]
    flags = gateway_flags()
    response_cache_flag = "--response-cache-ttl" in flags
    print(
        f"upstream latency {args.latency * 1000:g} ms; wrk: {args.connections} connections, "
        f"{args.warmup:g} s unmeasured then {args.duration:g} s per figure"
    )
    for q in queries:
        print(f"  {q.name}: {q.what}")
    if not response_cache_flag:
        print("  (`gateway serve` has no --response-cache-ttl yet: engine mode runs it as is)")
    sys.stdout.flush()

    def gateway_start(
        cores: Cores, port: int, upstream: str, engine: bool, log: IO[bytes]
    ) -> subprocess.Popen[bytes]:
        return start_gateway(cores, port, upstream, engine, log, flags=flags)

    def apollo_start(memo: bool) -> Callable[..., subprocess.Popen[bytes]]:
        def start(
            cores: Cores, port: int, upstream: str, engine: bool, log: IO[bytes]
        ) -> subprocess.Popen[bytes]:
            return start_apollo(cores, port, upstream, engine, log, where=apollo, memo=memo)

        return start

    gateway = Server("gateway", "/graphql", gateway_start)
    peer = Server("Apollo", "/", apollo_start(False))
    logs = Path(tempfile.mkdtemp(prefix="bench-compare-"))
    results = Results(queries, {}, response_cache_flag)
    databases = [name for name in DATABASE_NAMES if name in args.queries]
    with (logs / "upstream.log").open("wb") as upstream_log:
        upstream = Upstream(cores, args.latency, args.scale, upstream_log)
        try:
            if args.databases_only:
                results.figures[peer.name] = measure(
                    peer, queries, args, cores, upstream, logs, cold=False
                )
            else:
                memo = Server("Apollo MEMO", "/", apollo_start(True))
                servers = (gateway, peer, memo)
                q1 = everything.get("Q1")
                rest_and_peers(servers, results, q1, args, cores, upstream, logs)
            chosen = [everything[name] for name in databases]
            embedded = over_database(flags, "gateway SQLite")
            results.databases["embedded SQLite"] = on_database(
                embedded, chosen, args, cores, upstream, logs, results.problems
            )
            if args.postgres:
                with postgres_mirror(args.postgres, upstream) as url:
                    mirrored = over_database(flags, "gateway PostgreSQL", url)
                    results.databases["PostgreSQL"] = on_database(
                        mirrored, chosen, args, cores, upstream, logs, results.problems
                    )
        finally:
            upstream.close()
    if args.sqlite_samples > 0 and "Q2" in everything:
        results.sqlite_p50 = database_p50(cores, flags, args.sqlite_samples, logs, everything["Q2"])
        if results.sqlite_p50[1]:
            results.problems.append(f"SQLite Q2: {results.sqlite_p50[1]}")
    text, goals = table(results)
    print()
    print(text)
    print()
    print(summary(goals))
    for note in notes(results, cores):
        print(f"note: {note}")
    print(f"({time.monotonic() - started:.0f} s; logs and wrk scripts in {logs})")
    return 0


def main() -> None:
    summary = __doc__.partition("\n")[0]
    parser = argparse.ArgumentParser(prog="python -m bench.compare", description=summary)
    parser.add_argument(
        "--latency",
        type=float,
        default=0.020,
        help="seconds the fake upstream takes per answer (default 0.020)",
    )
    parser.add_argument(
        "--duration", type=float, default=5.0, help="seconds of wrk per measured figure (default 5)"
    )
    parser.add_argument(
        "--warmup",
        type=float,
        default=1.0,
        help="seconds of wrk before each figure, not measured (default 1; 0: none)",
    )
    parser.add_argument(
        "--connections", type=int, default=10, help="wrk's connections (default 10)"
    )
    parser.add_argument(
        "--queries",
        default=",".join(QUERY_NAMES),
        help=f"which of {','.join(QUERY_NAMES)} to run (default all)",
    )
    parser.add_argument(
        "--sqlite-samples",
        type=int,
        default=20,
        help="sequential Q2 requests timed over the embedded SQLite catalogue (goal 6; 0 skips)",
    )
    parser.add_argument(
        "--apollo",
        type=Path,
        default=APOLLO,
        help="the Apollo peer's directory; a read-only one without node_modules is copied to a"
        " temporary directory for `npm ci` (default ../shared/peers/apollo)",
    )
    parser.add_argument(
        "--postgres",
        default="postgresql://postgres@127.0.0.1:5432/postgres",
        help="a PostgreSQL server (a database on it to connect to) where a database of the"
        " catalogue, gateway_bench_<pid>, is made and dropped; '' skips the PostgreSQL figures",
    )
    parser.add_argument(
        "--no-mix", dest="mix", action="store_false", help="skip the frontend's mix"
    )
    parser.add_argument(
        "--databases-only",
        action="store_true",
        help="only the database backends' figures (and Q2's SQLite p50), against the peer's"
        " engine figures, which are all of the peer that is measured",
    )
    parser.add_argument("--scale", type=float, default=1.0, help=argparse.SUPPRESS)
    parser.add_argument("--upstream-process", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.upstream_process:
        upstream_process(args.latency, args.scale)
        return
    args.queries = [name.strip().upper() for name in args.queries.split(",") if name.strip()]
    unknown = sorted(set(args.queries) - set(QUERY_NAMES))
    if unknown or not args.queries:
        parser.error(f"--queries takes names among {', '.join(QUERY_NAMES)}")
    if args.latency < 0 or args.duration < 1 or args.connections < 1 or args.warmup < 0:
        parser.error("latency and warm-up not negative, duration ≥ 1 s, connections ≥ 1")
    sys.exit(run(args))


if __name__ == "__main__":
    main()
