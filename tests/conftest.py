"""Shared fixtures: the fake APIv4 served over real HTTP on loopback."""

from collections.abc import Iterator

import pytest

from gateway.demo.dataset import generate
from tests.fake_upstream import FakeUpstream, serve_upstream


@pytest.fixture(scope="session")
def fake_upstream() -> Iterator[FakeUpstream]:
    """One fake APIv4 over the small dataset for the whole session."""
    with serve_upstream(generate(scale=0.02)) as upstream:
        yield upstream


def settle(upstream: FakeUpstream) -> None:
    """Wait (a little) for requests a gateway gave up on but the fake still serves: left in
    flight, they would count in the next test's log and peak concurrency."""
    upstream.wait_until(lambda: upstream.in_flight == 0, timeout=3)
    upstream.reset()


@pytest.fixture
def upstream(fake_upstream: FakeUpstream) -> Iterator[FakeUpstream]:
    """The session's fake APIv4 with a clean log, no faults and no latency, left clean after."""
    dataset = fake_upstream.dataset
    settle(fake_upstream)
    yield fake_upstream
    settle(fake_upstream)
    if fake_upstream.dataset is not dataset:
        fake_upstream.dataset = dataset
