"""bench/load.py's mix: every attack of bench/hostile.py is in it, and each stays within the
gateway's default request limits, so that the load measures the attack, not its refusal."""

from __future__ import annotations

import asyncio
import random
from collections import Counter

import orjson
import pytest
from graphql import FieldNode, Visitor, parse, visit

from bench.hostile import FRONTEND, KINDS, Post
from bench.load import (
    FAULTS,
    RSS_WINDOW,
    Caches,
    Samples,
    faulty,
    filling,
    loop_stalls,
    mix,
    resident_ends,
    resident_growth,
)
from gateway.config import Settings
from gateway.demo.dataset import generate
from tests.fake_upstream import create_upstream_app


def posts(count: int, hostile: float) -> list[Post]:
    made = mix(generate(scale=0.05), random.Random(0), hostile)
    return [next(made) for _ in range(count)]


class Aliases(Visitor):
    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def enter_field(self, node: FieldNode, *_: object) -> None:
        self.count += node.alias is not None


def test_the_mix_sends_each_attack_in_its_share() -> None:
    sent = Counter(post.kind for post in posts(4_000, 0.1))
    assert set(sent) == {FRONTEND, *KINDS}
    assert 300 <= sum(sent[kind] for kind in KINDS) <= 500


def test_each_attack_is_within_the_default_request_limits() -> None:
    settings = Settings()
    first_of_each = {post.kind: post for post in reversed(posts(200, 1.0))}
    assert set(first_of_each) == set(KINDS)
    for post in first_of_each.values():
        assert len(orjson.dumps(post.body)) <= settings.max_body_bytes, post.kind
        operations = post.body if isinstance(post.body, list) else [post.body]
        assert len(operations) <= settings.max_batch, post.kind
        for operation in operations:
            aliases = Aliases()
            visit(parse(operation["query"], max_tokens=settings.max_tokens), aliases)
            assert aliases.count <= settings.max_aliases, post.kind


def test_the_warm_up_waits_for_the_caches_that_still_grow() -> None:
    mib = 2.0**20
    before: Caches = {"documents": (20 * mib, 32 * mib), "plans": (16 * mib, 16 * mib)}
    after: Caches = {
        "documents": (21 * mib, 32 * mib),  # 1 MiB more: 3% of its bound, still filling
        "plans": (16 * mib, 16 * mib),  # at its bound
        "responses": (0.1 * mib, 32 * mib),  # new, and a mere 0.3% of its bound
    }
    assert filling(before, after) == ["documents"]
    assert filling(after, after) == []


def test_the_loops_stalls_are_read_from_two_scrapes() -> None:
    late = "gateway_event_loop_lateness_seconds"
    before: Samples = {(f"{late}_count", ()): 10.0}
    before |= {(f"{late}_bucket", (("le", le),)): 10.0 for le in ("0.05", "0.1", "0.25")}
    after: Samples = {
        (f"{late}_count", ()): 110.0,
        (f"{late}_bucket", (("le", "0.05"),)): 107.0,
        (f"{late}_bucket", (("le", "0.1"),)): 109.0,
        (f"{late}_bucket", (("le", "0.25"),)): 110.0,
        ("gateway_gc_pause_seconds_count", (("generation", "2"),)): 2.0,
        ("gateway_gc_pause_seconds_sum", (("generation", "2"),)): 0.3,
    }
    stalls = loop_stalls(before, after)
    assert stalls["loop ticks late"].startswith("100 ticks")
    assert "over 50 ms 3, over 100 ms 1, over 250 ms 0" in stalls["loop ticks late"]
    assert "gen 2 2 (150 ms each)" in stalls["gc pauses"]


def test_a_renewal_peak_at_the_end_is_not_growth_but_a_steady_rise_is() -> None:
    flat = [(float(second), 100_000) for second in range(60)]
    peak_at_the_end = [*flat[:-1], (59.0, 115_000)]  # two snapshots held for a second
    assert resident_ends(peak_at_the_end) == (100_000, 100_000)
    risen = [*flat[:-RSS_WINDOW], *((float(s), 115_000) for s in range(50, 60))]
    assert resident_ends(risen) == (100_000, 115_000)


def test_rss_is_flat_beside_what_the_caches_took_in_within_their_bounds() -> None:
    mib = 2.0**20
    warm = [(float(second), 100 * 1024) for second in range(60)]  # 100 MiB, in KiB
    risen = [*warm[:-RSS_WINDOW], *((float(s), 115 * 1024) for s in range(50, 60))]
    unchanged: Caches = {"resources": (20 * mib, 32 * mib)}
    filled: Caches = {"resources": (32 * mib, 32 * mib)}
    growth = resident_growth(risen, (unchanged, filled))  # 12 of its 15 MiB the cache's
    assert growth.in_all == pytest.approx(0.15)
    assert growth.cached == 12 * 1024
    assert growth.beside == pytest.approx(0.03)
    assert resident_growth(risen, (unchanged, unchanged)).beside == pytest.approx(0.15)
    assert resident_growth(warm, (filled, filled)) == (0.0, 0.0, 0.0)


async def test_the_outage_begins_half_way_and_ends_after_its_seconds_within_the_block() -> None:
    upstream = create_upstream_app(generate(scale=0.01))
    async with faulty(upstream, seed=1, count=10, outage=0.05) as on_done:
        assert upstream.random_faults == FAULTS
        on_done(4)
        await asyncio.sleep(0.01)
        assert upstream.outage is None  # not yet half of the 10 requests
        on_done(5)
        await asyncio.sleep(0.01)
        assert upstream.outage == "503"
        await asyncio.sleep(0.2)
        assert upstream.outage is None  # over after its 0.05 s, the block still running
