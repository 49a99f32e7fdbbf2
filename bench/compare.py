"""Compare: the gateway against the Apollo Server + DataLoader peer over one fake APIv4.

    python -m bench.compare [--latency 0.02] [--duration 5] [--connections 10] [--queries Q1,Q2]

The fake APIv4 serves the full-scale demo catalogue from a process of its own. The gateway
(`gateway serve --upstream …`, REST backend) and the peer (`../shared/peers/apollo`) run one
after the other, never at the same time, each pinned to core 0; the fake upstream and wrk
share core 1 (a third core, if there is one, goes to wrk). For each of the issue's four
queries and each server it measures:

- cold: a fresh server process per query; the upstream requests counted from the process's
  start through its first answer (start-up warm-up included), that answer's latency, and the
  upstream requests the same query costs when asked again at once;
- warm: wrk at `--connections` connections for `--duration` seconds after `--warmup` seconds
  unmeasured, default configuration: req/s, p99, and errors (non-2xx, socket errors and
  GraphQL `errors` in the body, which wrk's Lua script counts);
- engine: the upstream at 0 ms and the gateway's response cache off (`--response-cache-ttl 0`,
  when its `serve --help` has that flag), one process for all the queries: req/s;
- memory: the peak RSS (VmHWM) of every server process of the run; the engine process first
  pages through the whole catalogue so that the gateway's resource cache holds all of it.

The gateway alone is also timed over its embedded SQLite catalogue (goal 6: Q2's p50 with the
response cache off). It prints the machine, one Markdown table (gateway | Apollo | ratio |
goal) and which of the issue's goals hold. Figures, not a test: nothing here fails on them.
"""

from __future__ import annotations

import argparse
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
QUERY_NAMES = ("Q1", "Q2", "Q3", "Q4")


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
    }


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
    cores: Cores, port: int, upstream: str, engine: bool, log: IO[bytes], *, flags: set[str]
) -> subprocess.Popen[bytes]:
    env = {name: value for name, value in os.environ.items() if not name.startswith("GATEWAY_")}
    command = [sys.executable, "-m", "gateway", "serve", "--port", str(port), "--log-level"]
    command += ["warning"]
    if upstream:
        command += ["--upstream", upstream]
    if engine and "--response-cache-ttl" in flags:
        command += ["--response-cache-ttl", "0"]
    return subprocess.Popen(
        cores.pin(cores.server, command), cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
    )


def start_apollo(
    cores: Cores, port: int, upstream: str, engine: bool, log: IO[bytes]
) -> subprocess.Popen[bytes]:
    env = {**os.environ, "NODE_ENV": "production", "UPSTREAM": upstream.rstrip("/")}
    env["PORT"] = str(port)
    command = cores.pin(cores.server, ["node", "server.js"])
    return subprocess.Popen(command, cwd=APOLLO, env=env, stdout=log, stderr=subprocess.STDOUT)


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

WRK_SCRIPT = """
wrk.method = "POST"
wrk.body = [==[%s]==]
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Accept"] = "application/json"
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) bad = 0 end
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
    'BENCH {"requests": %%d, "seconds": %%f, "p50_us": %%d, "p99_us": %%d, "bad": %%d,'
    .. ' "socket": %%d, "status": %%d, "timeout": %%d}\\n',
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
    query: Query,
    seconds: float,
    connections: int,
    pids: tuple[int, int],
    scripts: Path,
) -> Load:
    script = scripts / f"{query.name}.lua"
    script.write_text(WRK_SCRIPT % query.body.decode())
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


def ask(client: httpx.Client, url: str, query: Query) -> tuple[float, str | None]:
    """One request: its latency and what was wrong with the answer, if anything."""
    started = time.perf_counter()
    answer = client.post(url, content=query.body, headers={"Content-Type": "application/json"})
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
) -> Figures:
    figures = Figures()
    say = progress(server.name)
    with httpx.Client(timeout=60) as client:
        # Cold, then warm under load: a fresh process per query, the upstream at --latency.
        for query in queries:
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
            process, url = started.process, started.url
            pids = (process.pid, upstream.process.pid)
            for query in queries:
                _, problem = ask(client, url, query)
                if problem:
                    figures.problems.append(f"{query.name} engine: {problem}")
                if args.warmup > 0:
                    wrk(cores, url, query, args.warmup, args.connections, pids, logs)
                load = wrk(cores, url, query, args.duration, args.connections, pids, logs)
                figures.engine[query.name] = load
                say(f"{query.name} engine {load.rps:.0f} req/s")
            before = upstream.count()
            problem = fill(client, url)
            if problem:
                figures.problems.append(problem)
            figures.fill_gets = upstream.count() - before
            figures.rss_after_fill_kib = family_peak_kib(process.pid)
            figures.peak_rss_kib = max(figures.peak_rss_kib, figures.rss_after_fill_kib)
        upstream.control(reset=1, latency=args.latency)
    return figures


def database_p50(
    cores: Cores, flags: set[str], samples: int, logs: Path, query: Query
) -> tuple[float, str | None]:
    """Q2's p50 over the embedded SQLite catalogue, the response cache off (goal 6)."""

    def start(
        cores: Cores, port: int, upstream: str, engine: bool, log: IO[bytes]
    ) -> subprocess.Popen[bytes]:
        return start_gateway(cores, port, "", engine, log, flags=flags)

    server = Server("gateway-sqlite", "/graphql", start)
    with running(server, cores, "", True, logs) as started, httpx.Client(timeout=60) as client:
        url = started.url
        _, problem = ask(client, url, query)
        for _ in range(3):
            ask(client, url, query)
        times = [ask(client, url, query)[0] for _ in range(samples)]
    return statistics.median(times) * 1000, problem


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


def table(
    queries: list[Query],
    gw: Figures,
    ap: Figures,
    sqlite: tuple[float, str | None] | None,
    response_cache_flag: bool,
) -> tuple[str, Goals]:
    goals = Goals()
    rows: list[tuple[str, str, str, str, str]] = []
    for q in queries:
        name = q.name
        g_cold, a_cold = gw.cold_gets[name], ap.cold_gets[name]
        start = f" ({gw.startup_gets[name]} at start-up)" if gw.startup_gets[name] else ""
        limit = COLD_LIMITS[name]
        rows.append(
            (
                f"{name} cold: upstream requests",
                f"{g_cold}{start}",
                str(a_cold),
                ratio(g_cold, a_cold),
                goals.check(1, g_cold <= limit, f"≤ {limit}"),
            )
        )
        g_rep, a_rep = gw.repeat_gets[name], ap.repeat_gets[name]
        rows.append(
            (
                f"{name} same query again: upstream requests",
                str(g_rep),
                str(a_rep),
                "",
                goals.check(1, g_rep == 0, "0"),
            )
        )
        g_ms, a_ms = gw.cold_ms[name], ap.cold_ms[name]
        share = 0.5 if name == "Q2" else 1.0
        rule = "≤ ½ Apollo" if name == "Q2" else "≤ Apollo"
        rows.append(
            (
                f"{name} cold: latency ms",
                f"{g_ms:.0f}",
                f"{a_ms:.0f}",
                ratio(g_ms, a_ms),
                goals.check(2, g_ms <= share * a_ms, rule),
            )
        )
        g, a = gw.warm[name], ap.warm[name]
        rows.append(
            (
                f"{name} warm: req/s",
                f"{g.rps:,.0f}",
                f"{a.rps:,.0f}",
                ratio(g.rps, a.rps),
                goals.check(3, g.rps >= 3 * a.rps, "≥ 3x Apollo"),
            )
        )
        rows.append(
            (
                f"{name} warm: p99 ms",
                f"{g.p99_ms:,.1f}",
                f"{a.p99_ms:,.1f}",
                ratio(g.p99_ms, a.p99_ms),
                goals.check(3, g.p99_ms <= a.p99_ms, "≤ Apollo"),
            )
        )
        rows.append(
            (
                f"{name} warm: errors",
                str(g.errors),
                str(a.errors),
                "",
                goals.check(3, g.errors == 0, "0"),
            )
        )
        g, a = gw.engine[name], ap.engine[name]
        g_cell = f"{g.rps:,.0f}" + (f" ({g.errors} errors)" if g.errors else "")
        a_cell = f"{a.rps:,.0f}" + (f" ({a.errors} errors)" if a.errors else "")
        engine_goal = {"Q1": 1.0, "Q2": 5.0, "Q3": 1.0}.get(name)
        goal = (
            ""
            if engine_goal is None
            else goals.check(
                4, g.rps >= engine_goal * a.rps, "≥ Apollo" if engine_goal == 1 else "≥ 5x Apollo"
            )
        )
        label = f"{name} engine: req/s (0 ms upstream" + (
            ", response cache off)" if response_cache_flag else ")"
        )
        rows.append((label, g_cell, a_cell, ratio(g.rps, a.rps), goal))
    g_up, a_up = (statistics.median(f.startup_s) * 1000 for f in (gw, ap))
    rows.append(("start-up ms (process start to listening, median)", f"{g_up:,.0f}",
                 f"{a_up:,.0f}", ratio(g_up, a_up), ""))  # fmt: skip
    g_rss, a_rss = gw.peak_rss_kib / 1024, ap.peak_rss_kib / 1024
    rows.append(
        (
            "peak RSS MiB (all runs; catalogue cached)",
            f"{g_rss:.0f}",
            f"{a_rss:.0f}",
            ratio(g_rss, a_rss),
            goals.check(5, g_rss <= 200, "≤ 200"),
        )
    )
    if sqlite is not None:
        p50, _ = sqlite
        rows.append(
            (
                "Q2 SQLite backend: p50 ms (response cache off)",
                f"{p50:.1f}",
                "",
                "",
                goals.check(6, p50 <= 25, "≤ 25"),
            )
        )
    header = ("query: measure", "gateway", "Apollo", "ratio", "goal: rule: met")
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


GOAL_NAMES = {
    1: "upstream requests for a cold query, and 0 again",
    2: "cold latency ≤ Apollo's (≤ ½ on Q2)",
    3: "warm throughput ≥ 3x Apollo's, p99 ≤ Apollo's, no errors",
    4: "engine ≥ Apollo on Q1 and Q3, ≥ 5x on Q2",
    5: "peak RSS ≤ 200 MiB with the catalogue cached",
    6: "SQLite backend: Q2 p50 ≤ 25 ms (the statement count is not measured here)",
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


def notes(queries: list[Query], figures: dict[str, Figures], cores: Cores) -> list[str]:
    out = []
    disturbed: list[float] = []
    saturated: list[str] = []
    for name, f in figures.items():
        out += [f"{name}: {problem}" for problem in f.problems]
        cells = []
        for mode, loads in (("warm", f.warm), ("engine", f.engine)):
            for q in queries:
                load = loads[q.name]
                cells.append(
                    f"{mode} {q.name} {load.server_cpu:.0%}/{load.load_core:.0%}/{load.foreign:.0%}"
                )
                if load.foreign > 0.1:
                    disturbed.append(load.foreign)
                if load.load_core > 0.9:
                    saturated.append(f"{name} {mode} {q.name}")
        out.append(
            f"{name}: CPU under wrk (server process / core {cores.upstream} of upstream and wrk /"
            f" other processes, in cores): {', '.join(cells)}"
        )
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
            f"WARNING: {len(disturbed)} of {2 * len(queries) * len(figures)} wrk figures ran while"
            f" other processes used over 10% of a core (up to {max(disturbed):.0%}):"
            " rerun on a quiet machine before trusting them"
        )
    return out


# --- the command --------------------------------------------------------------------------------


def prepare_apollo() -> None:
    if (APOLLO / "node_modules").is_dir():
        return
    if shutil.which("npm") is None:
        raise SystemExit(f"npm is missing: run `npm ci` in {APOLLO}")
    print(f"npm ci in {APOLLO} …", file=sys.stderr, flush=True)
    subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=APOLLO, check=True)


def run(args: argparse.Namespace) -> int:
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is missing: `apt-get install -y wrk` (or `make bench` as root)")
    if not (APOLLO / "server.js").is_file():
        raise SystemExit(f"the Apollo peer is missing: no {APOLLO / 'server.js'}")
    prepare_apollo()
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

    servers = [Server("gateway", "/graphql", gateway_start), Server("Apollo", "/", start_apollo)]
    logs = Path(tempfile.mkdtemp(prefix="bench-compare-"))
    figures: dict[str, Figures] = {}
    sqlite = None
    with (logs / "upstream.log").open("wb") as upstream_log:
        upstream = Upstream(cores, args.latency, args.scale, upstream_log)
        try:
            for server in servers:
                figures[server.name] = measure(server, queries, args, cores, upstream, logs)
        finally:
            upstream.close()
    if args.sqlite_samples > 0 and "Q2" in everything:
        sqlite = database_p50(cores, flags, args.sqlite_samples, logs, everything["Q2"])
        if sqlite[1]:
            figures["gateway"].problems.append(f"SQLite Q2: {sqlite[1]}")
    text, goals = table(queries, figures["gateway"], figures["Apollo"], sqlite, response_cache_flag)
    print()
    print(text)
    print()
    print(summary(goals))
    for note in notes(queries, figures, cores):
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
        "--queries", default=",".join(QUERY_NAMES), help="which of Q1,Q2,Q3,Q4 to run (default all)"
    )
    parser.add_argument(
        "--sqlite-samples",
        type=int,
        default=20,
        help="sequential Q2 requests timed over the embedded SQLite catalogue (goal 6; 0 skips)",
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
