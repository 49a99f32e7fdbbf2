"""Shared fixtures: the fake APIv4 served over real HTTP on loopback."""

from collections.abc import Iterator

import pytest

from gateway.demo.dataset import generate
from gateway.demo.upstream import FakeUpstream, serve_upstream


@pytest.fixture(scope="session")
def fake_upstream() -> Iterator[FakeUpstream]:
    """One fake APIv4 over the small dataset for the whole session."""
    with serve_upstream(generate(scale=0.02)) as upstream:
        yield upstream


@pytest.fixture
def upstream(fake_upstream: FakeUpstream) -> Iterator[FakeUpstream]:
    """The session's fake APIv4 with a clean log, no faults and no latency, left clean after."""
    dataset = fake_upstream.dataset
    fake_upstream.reset()
    yield fake_upstream
    fake_upstream.reset()
    if fake_upstream.dataset is not dataset:
        fake_upstream.dataset = dataset
