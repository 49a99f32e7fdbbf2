"""The fixed cost of a request: what the gateway spends on one, the query's own work apart.

    python -m bench.overhead [--requests 2000] [--callgrind] [--against ../other-checkout]
                             [--database embedded|URL]

Each case sends the same request again and again, in this one process, through the gateway's
own uvicorn protocol (gateway/http/connection_limits.py, fed the request's bytes over a transport
that keeps what is written: no socket, no other process) and the whole app, as `gateway serve`
builds them, the response cache off unless the case is a hit:

- `tiny`: `{ __typename }` by its compiled plan: the HTTP stack, the middlewares, the view,
  the engine's lookups, metrics, log line and headers, with next to no query;
- `Q1`, `Q2`, `Q3`: bench/compare.py's queries over the fake APIv4 (a process of its own;
  after the warm-up every resource is in the gateway's cache, and no upstream request is made),
  or with `--database` over the embedded SQLite catalogue (`embedded`) or a database's URL (a
  PostgreSQL mirror of the same catalogue, made with `gateway mirror`: only the gateway's side
  of its statements is counted);
- `hit`: Q1 answered from the response cache;
- `bare`: bench/bare.py's Starlette endpoint on uvicorn's own protocol, answering Q1's bytes.

It prints the CPU time per request, noisy on a shared machine, or with `--callgrind` the
instructions per request, counted by valgrind (`--dump-before=getppid` splits the measured
loop's count from start-up's), which are stable enough to compare two commits: `--against DIR`
measures a checkout of another commit too, side by side, with this harness.
"""

from __future__ import annotations

import argparse
import asyncio
import logging.config
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from uvicorn import Config
from uvicorn.server import ServerState

ROOT = Path(__file__).resolve().parent.parent
CASES = ("tiny", "Q1", "Q2", "Q3", "hit", "bare")
QUERIES = ("Q1", "Q2", "Q3")
TINY = b'{"query":"{ __typename }"}'


class Kept(asyncio.Transport):
    """A connection's transport that keeps what is written to it."""

    def __init__(self) -> None:
        super().__init__()
        self.written: list[bytes] = []
        self.closing = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 50000)}.get(
            name, default
        )

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        pass


def post(body: bytes) -> bytes:
    """A POST of `body` to /graphql, as wrk sends it."""
    return (
        b"POST /graphql HTTP/1.1\r\nHost: 127.0.0.1:8000\r\nContent-Type: application/json\r\n"
        b"Accept: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    )


@contextmanager
def fake_upstream() -> Iterator[str]:
    """The fake APIv4 over the full-scale demo catalogue, in a process of its own (not counted
    with the gateway's): its base URL."""
    command = [sys.executable, "-m", "tests.fake_upstream", "--port", "0"]
    with subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, text=True) as process:
        try:
            assert process.stdout is not None
            yield process.stdout.readline().split()[-1]
        finally:
            process.terminate()


class Connection:
    """One keep-alive connection to `app` through uvicorn's protocol of `config`."""

    def __init__(self, config: Any) -> None:
        config.load()
        self.state = ServerState()
        date = (b"date", b"Tue, 02 Dec 2025 14:00:00 GMT")
        self.state.default_headers = [date, *config.encoded_headers]
        self.transport = Kept()
        self.protocol = config.http_protocol_class(
            config=config, server_state=self.state, app_state={}
        )
        self.protocol.connection_made(self.transport)

    async def ask(self, sent: bytes) -> bytes:
        """The answer to the request `sent`."""
        self.transport.written.clear()
        self.protocol.data_received(sent)
        for task in list(self.state.tasks):
            await task
        return b"".join(self.transport.written)

    def close(self) -> None:
        self.protocol.connection_lost(None)


def gateway(case: str, run: Run) -> tuple[Starlette, Config]:
    """The app of `gateway serve` for `case`, and uvicorn's configuration of it."""
    from gateway.app import create_app
    from gateway.config import load_settings
    from gateway.worker import server_options

    flags: dict[str, object] = {"warm_catalogue": False, "log_level": run.log_level}
    if not run.database:
        flags["upstream"] = run.upstream
    elif run.database != "embedded":
        flags["database"] = run.database
    if case != "hit":
        flags["response_cache_ttl"] = 0.0
    settings = load_settings(flags)
    options = server_options(settings)
    logging.config.dictConfig(options.pop("log_config"))
    del options["host"], options["port"]
    app = create_app(settings)
    return app, Config(app, **options)


async def measure(case: str, run: Run) -> float:
    """The CPU seconds of one request of `case`, on average over the run's requests after its
    warm-up."""
    from bench.bare import bare_app

    query = post(run.body.encode())
    sent = post(TINY) if case == "tiny" else query
    app, config = gateway(case, run)
    if case == "bare":  # answering the very bytes of the gateway's answer to Q1
        async with app.router.lifespan_context(app):
            connection = Connection(config)
            body = (await connection.ask(query)).partition(b"\r\n\r\n")[2]
            connection.close()
        app = bare_app(body)
        config = Config(app, log_level="warning")
    async with app.router.lifespan_context(app):
        connection = Connection(config)
        for _ in range(run.warmup):
            answer = await connection.ask(sent)
        if not answer.startswith(b"HTTP/1.1 200 OK") or b'"errors"' in answer:
            raise RuntimeError(f"{case}: not a good answer: {answer!r}")
        os.getppid()  # callgrind dumps its counts here (--dump-before=getppid) and after
        started = time.process_time()
        for _ in range(run.requests):
            await connection.ask(sent)
        spent = time.process_time() - started
        os.getppid()
        connection.close()
    return spent / run.requests


@dataclass(frozen=True, slots=True)
class Run:
    """What the child process measuring one case is told."""

    requests: int
    warmup: int
    log_level: str
    upstream: str
    database: str  # "" (the upstream), "embedded" or a URL
    body: str  # the query's (Q1's for tiny, hit and bare)

    def command(self, case: str) -> list[str]:
        """The child's command line: this harness, run as a script."""
        options = ["--requests", str(self.requests), "--warmup", str(self.warmup)]
        options += ["--log-level", self.log_level, "--upstream", self.upstream]
        options += ["--database", self.database, "--body", self.body]
        return [sys.executable, __file__, "--child", case, *options]


def callgrind(checkout: Path, case: str, run: Run) -> int:
    """Instructions per request of `case` with the gateway of `checkout`."""
    with tempfile.TemporaryDirectory() as where:
        out = Path(where) / "callgrind.out"
        valgrind = ["valgrind", "--tool=callgrind", "--dump-before=getppid"]
        run_in(checkout, [*valgrind, f"--callgrind-out-file={out}", *run.command(case)])
        loop = (Path(where) / "callgrind.out.2").read_text()  # between the two dumps
        totals = re.search(r"^totals: (\d+)", loop, re.MULTILINE)
        assert totals is not None
        return int(totals.group(1)) // run.requests


def cpu(checkout: Path, case: str, run: Run) -> float:
    """CPU microseconds per request of `case` with the gateway of `checkout`."""
    return float(run_in(checkout, run.command(case)).split()[-1])


def run_in(checkout: Path, command: list[str]) -> str:
    """`command`'s output, run with the gateway of `checkout` (and this harness)."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("GATEWAY_")}
    env.update(PYTHONPATH=f"{checkout}{os.pathsep}{ROOT}", PYTHONHASHSEED="0")
    with tempfile.TemporaryFile() as errors:
        done = subprocess.run(command, cwd=checkout, env=env, stdout=subprocess.PIPE, stderr=errors)
        if done.returncode != 0:
            errors.seek(0)
            tail = errors.read()[-4000:].decode(errors="replace")
            raise SystemExit(f"{' '.join(command)} failed:\n{tail}")
    return done.stdout.decode()


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.overhead",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--requests", type=int, default=2000, help="requests measured per case")
    parser.add_argument("--warmup", type=int, default=100, help="requests before measuring")
    parser.add_argument("--cases", default=",".join(CASES), help=f"of: {', '.join(CASES)}")
    parser.add_argument(
        "--log-level", default="info", help="the gateway's (info: a line per request)"
    )
    parser.add_argument("--callgrind", action="store_true", help="count instructions (valgrind)")
    parser.add_argument("--against", type=Path, help="another checkout, measured side by side")
    parser.add_argument(
        "--database", default="", help="Q1-Q3 over `embedded` SQLite or this database's URL"
    )
    parser.add_argument("--child", choices=CASES, dest="case", help=argparse.SUPPRESS)
    parser.add_argument("--upstream", help=argparse.SUPPRESS)
    parser.add_argument("--body", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case is not None:
        import uvloop

        run = Run(
            args.requests, args.warmup, args.log_level, args.upstream, args.database, args.body
        )
        print(f"{uvloop.run(measure(args.case, run)) * 1e6:.1f}")
        return
    cases = args.cases.split(",")
    if set(cases) - set(CASES) or args.requests <= 0 or args.warmup <= 0:
        parser.error(f"cases among {', '.join(CASES)}; requests and warm-up positive")
    if args.database and set(cases) - set(QUERIES):
        parser.error(f"over a database, cases among {', '.join(QUERIES)}")
    checkouts = [ROOT] if args.against is None else [ROOT, args.against.resolve()]
    unit = "instructions" if args.callgrind else "CPU µs"
    print(f"| case ({unit} per request) | {' | '.join(map(str, checkouts))} |")
    print(f"|---|{'---|' * len(checkouts)}")
    from bench.compare import the_queries

    queries = the_queries(1.0)
    with fake_upstream() as upstream:
        for case in cases:
            body = queries[case if case in QUERIES else "Q1"].body.decode()
            run = Run(args.requests, args.warmup, args.log_level, upstream, args.database, body)
            if args.callgrind:
                figures = [f"{callgrind(checkout, case, run):,}" for checkout in checkouts]
            else:
                figures = [f"{cpu(checkout, case, run):.1f}" for checkout in checkouts]
            print(f"| {case} | {' | '.join(figures)} |", flush=True)


if __name__ == "__main__":
    main()
