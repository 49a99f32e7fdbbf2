"""Rate limits under load: what a client over its budget costs the gateway and the other clients.

    python -m bench.rate_limit [--budget 60] [--others 20] [--other-rate 0.5] [--abuser-rate 200]

A real `gateway serve` (one process, `--rate-limit`, clients told apart by `X-API-Key`) serves the
full-scale demo catalogue through a fake APIv4 in this process, on loopback. Well-behaved clients,
each with a key of its own and well within its budget, send load.py's mix of frontend queries at a
steady rate; one abuser, its budget already spent, sends a grid's fifty packages (each a real
fan-out when it runs) many times faster, from a process of its own. Four phases of `--seconds`
each: the others alone, the others with the abuser, and the others with the abuser sent to a
second, identical gateway process (the machine as busy, the others' gateway not), taken in turns
(`--turns`, so that the machine's drift weighs on all three alike); then the abuser alone. The
script prints the others' latency, as they see it and as the gateway counts it, in the first three
(the abuser should not move it more than its decoy does), and the gateway's CPU time per request:
per answer while the others run alone, per refusal while the abuser runs alone (its refill's few
answers included; it should be a small fraction of an answer).
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import random
import re
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
from prometheus_client.parser import text_string_to_metric_families

from bench.load import FAN_OUT, _percentile, cpu_seconds, gateway, requests
from gateway.demo.dataset import generate
from tests.fake_upstream import serve_upstream

Request = tuple[str, dict[str, Any]]

# The abuser's document, named so that the gateway's metrics tell its few answers from the others'.
ABUSE = FAN_OUT.replace("query(", "query Abuse(", 1)


@dataclass(frozen=True, slots=True)
class Sent:
    seconds: float
    status: int | None  # None: no HTTP answer


async def one(client: httpx.AsyncClient, request: Request, key: str) -> Sent:
    query, variables = request
    started = time.monotonic()
    try:
        response = await client.post(
            "/graphql", json={"query": query, "variables": variables}, headers={"x-api-key": key}
        )
    except httpx.TransportError:
        return Sent(time.monotonic() - started, None)
    return Sent(time.monotonic() - started, response.status_code)


def flood_elsewhere(
    origin: str, rate: float, seconds: float, slugs: list[str], seed: int
) -> list[Sent]:
    """The abuser's requests, from a process of its own: this one serves the fake APIv4 and the
    other clients, and sending hundreds of requests a second would slow them here."""
    rng = random.Random(seed)

    def fan_out() -> Request:
        return ABUSE, {"slug": rng.choice(slugs)}

    return asyncio.run(flood(origin, rate, seconds, fan_out, "abuser"))


async def flood(
    origin: str, rate: float, seconds: float, make: Callable[[], Request], key: str
) -> list[Sent]:
    """`steady` for the abuser, over raw keep-alive connections: an HTTP client in Python costs
    more per request than the gateway's refusal."""
    loop = asyncio.get_running_loop()
    url = httpx.URL(origin)
    due: asyncio.Queue[float | None] = asyncio.Queue()
    sent: list[Sent] = []

    async def connection() -> None:
        reader, writer = await asyncio.open_connection(url.host, url.port)
        try:
            while (at := await due.get()) is not None:
                query, variables = make()
                body = orjson.dumps({"query": query, "variables": variables})
                head = (
                    f"POST /graphql HTTP/1.1\r\nHost: {url.host}\r\nX-API-Key: {key}\r\n"
                    f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
                )
                writer.write(head.encode() + body)
                headers = await reader.readuntil(b"\r\n\r\n")
                length = re.search(rb"(?i)\r\ncontent-length: *(\d+)", headers)
                await reader.readexactly(int(length.group(1)) if length else 0)
                sent.append(Sent(loop.time() - at, int(headers.split(b" ", 2)[1])))
        finally:
            writer.close()

    connections = [asyncio.create_task(connection()) for _ in range(8)]
    start = loop.time()
    for n in range(round(rate * seconds)):
        await asyncio.sleep(max(0.0, start + n / rate - loop.time()))
        due.put_nowait(loop.time())
    for _ in connections:
        due.put_nowait(None)
    await asyncio.gather(*connections)
    return sent


async def steady(
    client: httpx.AsyncClient, rate: float, seconds: float, make: Callable[[], Request], key: str
) -> list[Sent]:
    """`rate` requests a second for `seconds`, each sent on time whatever the earlier ones'
    answers (an open loop: a slow gateway shows as latency, not as fewer requests)."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    sent: list[asyncio.Task[Sent]] = []
    for n in range(round(rate * seconds)):
        await asyncio.sleep(max(0.0, start + n / rate - loop.time()))
        sent.append(asyncio.create_task(one(client, make(), key)))
    return list(await asyncio.gather(*sent))


@dataclass(frozen=True, slots=True)
class Phase:
    others: list[Sent]
    abuser: list[Sent]
    cpu: float  # the gateway's CPU seconds
    seconds: float
    inside: tuple[float, float]  # the others' operations in the gateway: seconds, count

    @staticmethod
    def merged(phases: list[Phase]) -> Phase:
        return Phase(
            [sent for phase in phases for sent in phase.others],
            [sent for phase in phases for sent in phase.abuser],
            sum(phase.cpu for phase in phases),
            sum(phase.seconds for phase in phases),
            (sum(p.inside[0] for p in phases), sum(p.inside[1] for p in phases)),
        )

    def latency(self, share: float) -> str:
        seconds = sorted(s.seconds for s in self.others)
        return f"{_percentile(seconds, share) * 1000:.1f} ms" if seconds else "-"


async def time_inside(client: httpx.AsyncClient) -> tuple[float, float]:
    """The gateway's own count of the others' (anonymous) operations: seconds, and how many."""
    response = await client.get("/metrics")
    totals = {"_sum": 0.0, "_count": 0.0}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            if sample.labels.get("operation") != "anonymous":
                continue
            for suffix in totals:
                if sample.name == f"gateway_request_duration_seconds{suffix}":
                    totals[suffix] += sample.value
    return totals["_sum"], totals["_count"]


async def run(args: argparse.Namespace) -> int:
    dataset = generate()
    mix = requests(dataset, random.Random(args.seed))
    grids = [row.slug for row in dataset.grids]
    elsewhere = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
    budget = args.budget
    flags = ["--rate-limit", str(budget), "--rate-limit-key", "header:X-API-Key"]
    with (
        serve_upstream(dataset) as upstream,
        tempfile.NamedTemporaryFile(prefix="gateway-rate-", suffix=".log", delete=False) as log,
        gateway(upstream.base_url, log, *flags) as (process, origin),
        gateway(upstream.base_url, log, *flags) as (_, decoy),
        elsewhere,
    ):
        limits = httpx.Limits(max_connections=args.others * 4 + 64)
        async with httpx.AsyncClient(base_url=origin, limits=limits, timeout=30) as client:

            async def phase(seconds: float, others: int, abused: str | None) -> Phase:
                async def well_behaved() -> list[Sent]:
                    runs = [
                        steady(client, args.other_rate, seconds, lambda: next(mix), key)
                        for key in (f"other-{n}" for n in range(others))
                    ]
                    return [sent for run in await asyncio.gather(*runs) for sent in run]

                async def abusing() -> list[Sent]:
                    if abused is None:
                        return []
                    flooding = (abused, args.abuser_rate, seconds, grids, args.seed)
                    return await loop.run_in_executor(elsewhere, flood_elsewhere, *flooding)

                cpu, inside = cpu_seconds(process.pid), await time_inside(client)
                sent, refused = await asyncio.gather(well_behaved(), abusing())
                cpu, (total, count) = cpu_seconds(process.pid) - cpu, await time_inside(client)
                return Phase(sent, refused, cpu, seconds, (total - inside[0], count - inside[1]))

            loop = asyncio.get_running_loop()
            await loop.run_in_executor(elsewhere, int)  # its process started before measuring

            async def spend_budget(target: str) -> None:
                """The abuser spends what it has of its budget at once, in batches of documents
                that cost nothing (each operation counts), until it is refused: then only its
                refusals, and its refill's few answers, count in the turn that follows."""
                batch = [{"query": "{ __typename }"}] * 10
                headers = {"x-api-key": "abuser"}
                while (
                    await client.post(f"{target}/graphql", json=batch, headers=headers)
                ).is_success:
                    pass

            await phase(args.seconds, args.others, None)  # warm-up: the caches fill
            # The others alone, with the abuser, and with the abuser sent to another gateway
            # process (the machine busier, this gateway not), in turns: the machine's drift
            # weighs on all three alike.
            turns: dict[str | None, list[Phase]] = {None: [], origin: [], decoy: []}
            for _ in range(args.turns):
                for target, done in turns.items():
                    if target is not None:
                        await spend_budget(target)
                    done.append(await phase(args.seconds / args.turns, args.others, target))
            await spend_budget(origin)
            abused = await phase(args.seconds, 0, origin)
    alone, crowded, elsewhere_crowded = (Phase.merged(done) for done in turns.values())
    print(report(args, alone, crowded, elsewhere_crowded, abused))
    print(f"gateway log: {log.name}")
    return 0


def report(
    args: argparse.Namespace, alone: Phase, crowded: Phase, beside: Phase, abused: Phase
) -> str:
    def statuses(sent: list[Sent]) -> str:
        counted: dict[int | None, int] = {}
        for s in sent:
            counted[s.status] = counted.get(s.status, 0) + 1
        return ", ".join(f"{status}: {n}" for status, n in sorted(counted.items(), key=str))

    refused = sum(1 for s in abused.abuser if s.status == 429)
    per_answer = alone.cpu / len(alone.others) * 1e6
    per_refusal = abused.cpu / len(abused.abuser) * 1e6
    rows = {
        "budget": f"{args.budget} requests a minute per client (X-API-Key), one gateway process",
        "others": f"{args.others} clients at {args.other_rate:g} requests/s each, load.py's mix",
        "abuser": f"one client at {args.abuser_rate:g} requests/s (a grid's 50 packages), "
        "its budget spent",
        "phases": f"{args.seconds:g} s each, the first three in {args.turns} turns each",
        **{
            name: f"p50 {phase.latency(0.5)}, p99 {phase.latency(0.99)}; "
            f"{statuses(phase.others)}; gateway CPU {100 * phase.cpu / phase.seconds:.0f}%; "
            f"{1000 * phase.inside[0] / max(1, phase.inside[1]):.1f} ms each in the gateway"
            for name, phase in [
                ("others alone", alone),
                ("others + abuser", crowded),
                ("others + abuser elsewhere", beside),
            ]
        },
        "abuser's answers": f"{statuses(crowded.abuser)} (with the others), "
        f"{statuses(abused.abuser)} (alone)",
        "abuser alone": f"gateway CPU {100 * abused.cpu / abused.seconds:.0f}% for "
        f"{len(abused.abuser) / abused.seconds:.0f} requests/s, {refused} of them refused",
        "CPU per request": f"{per_answer:.0f} µs per answer (others alone), "
        f"{per_refusal:.0f} µs per refusal (abuser alone): {per_refusal / per_answer:.0%}",
    }
    width = max(map(len, rows))
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows.items())


def main() -> None:
    summary = __doc__.partition("\n")[0]
    parser = argparse.ArgumentParser(prog="python -m bench.rate_limit", description=summary)
    parser.add_argument("--budget", type=int, default=60, help="requests a minute per client")
    parser.add_argument("--others", type=int, default=20, help="well-behaved clients")
    parser.add_argument("--other-rate", type=float, default=0.5, help="requests/s each")
    parser.add_argument("--abuser-rate", type=float, default=200.0, help="requests/s")
    parser.add_argument("--seconds", type=float, default=20.0, help="length of each phase")
    parser.add_argument(
        "--turns", type=int, default=4, help="turns the others take alone and with the abuser"
    )
    parser.add_argument("--seed", type=int, default=0, help="the mix's seed")
    args = parser.parse_args()
    if (
        min(args.budget, args.others, args.other_rate, args.abuser_rate, args.seconds, args.turns)
        <= 0
    ):
        parser.error("every figure must be positive")
    if args.other_rate * 60 > args.budget:
        parser.error("the others must stay within their budget: --other-rate * 60 <= --budget")
    sys.exit(asyncio.run(run(args)))


if __name__ == "__main__":
    main()
