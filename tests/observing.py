"""Helpers of the observability tests: a served gateway and its scraped metrics."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from gateway.app import create_app
from gateway.config import Settings
from tests.fake_upstream import serve_in_thread

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    """Every sample of a Prometheus text exposition, by name and labels."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def scrape(client: httpx.Client) -> Samples:
    response = client.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return parse(response.text)


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


class Metrics:
    """What the counters gained since `mark()`: the metrics are process-wide, and other
    gateways in this process (other tests) counted too."""

    def __init__(self, client: httpx.Client) -> None:
        self.client = client
        self.before: Samples = {}
        self.after: Samples = {}
        self.mark()

    def mark(self) -> None:
        self.before = scrape(self.client)

    def read(self) -> None:
        self.after = scrape(self.client)

    def gained(self, name: str, **labels: str) -> float:
        return value(self.after, name, **labels) - value(self.before, name, **labels)


@contextmanager
def served(clock: Callable[[], float] = time.monotonic, **settings: Any) -> Iterator[httpx.Client]:
    """A gateway of the test's own (its caches and breaker on `clock`), and a client of it."""
    app = create_app(Settings(**settings), clock=clock)
    with serve_in_thread(app) as origin, httpx.Client(base_url=origin, timeout=30) as client:
        yield client


def post(client: httpx.Client, query: str, **extra: Any) -> Any:
    response = client.post("/graphql", json={"query": query, **extra})
    assert response.status_code == 200, response.text
    return response.json()
