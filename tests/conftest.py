"""Shared fixtures: the fake APIv4 served over real HTTP on loopback."""

from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from gateway.demo.dataset import generate
from tests.fake_upstream import FakeUpstream, serve_upstream

# The machines share their cores: how fast Hypothesis makes examples is not what a test asks.
settings.register_profile(
    "shared-machine", deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile("shared-machine")


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


@pytest.fixture(scope="session")
def embedded_data_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data directory for `gateway serve` processes: the embedded catalogue is built there
    once for the session (tests/serving.py)."""
    return tmp_path_factory.mktemp("data-home")
