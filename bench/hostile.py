"""What hostile clients send: the attacks load.py mixes among the frontend's queries.

Two families. Amplification: requests that would make one request cost many upstream calls
(thousands of global ids of packages that do not exist, aliased unknown slugs alone and in a
batch, a batch of aliased searches, and the same batch from clients that hang up after half a
second). The stall: documents within the query limits that are costly to validate or to answer
(1,249 repeated `categories { totalCount }`, a batch of aliased `__schema` selections, 55 KB of
`__typename`). Each attack is made distinct (its slugs, terms and ids, or leading spaces), so
that no cache answers it, and says which keys of upstream requests it may cause, so that the
report can count what reached the upstream on its behalf.
"""

from __future__ import annotations

import dataclasses
import itertools
import random
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

from strawberry.relay.utils import to_base64

from gateway.loaders.sql.rows import Dataset

FRONTEND = "frontend"

NODES = "query($ids: [ID!]!) { nodes(ids: $ids) { id } }"
UNKNOWN_IDS = 3_000  # 69 KB of global ids: within the default 100,000-byte body
ALIASES = 30  # the default `max_aliases`
BATCH = 10  # the default `max_batch`
STALL = "{ " + "categories { totalCount } " * 1249 + "}"  # 4,998 tokens: within 5,000
INTROSPECTION = "__schema { types { fields { args { type { ofType { name } } } } } }"
TYPENAMES = "{ " + "__typename " * 4990 + "}"  # 55 KB, 4,992 tokens
HANG_UP_AFTER = 0.5  # seconds

KINDS = (
    "unknown-ids",
    "aliased-slugs",
    "batched-slugs",
    "aliased-searches",
    "hang-ups",
    "stalls",
    "introspection",
    "big-documents",
)


@dataclass(frozen=True, slots=True)
class Post:
    """One request to /graphql: its JSON body (an operation, or a batch of them), what kind it
    is, the keys (`upstream_key`) of the upstream requests it may cause, and whether its client
    hangs up after some seconds, answered or not."""

    kind: str
    body: Any
    keys: frozenset[str] = frozenset()
    hang_up: float | None = None


def upstream_key(target: str) -> str:
    """What an upstream request names: a search's terms, else its path's last segment (a
    detail's id or slug)."""
    path, _, query = target.partition("?")
    if path.endswith("/search/"):
        return parse_qs(query).get("q", [""])[0]
    return path.rstrip("/").rpartition("/")[2]


def _names(kind: str, n: int, operations: int) -> list[list[str]]:
    """Names that no package has and no other attack uses: for each operation, one per alias."""
    prefix = f"no-such-{kind}-{n}"
    return [[f"{prefix}-{op}-{i}" for i in range(ALIASES)] for op in range(operations)]


def _aliased(fields: list[str]) -> str:
    return "{ " + " ".join(f"a{i}: {field}" for i, field in enumerate(fields)) + " }"


def _packages(slugs: list[str]) -> str:
    return _aliased([f'package(slug: "{slug}") {{ id }}' for slug in slugs])


def _searches(terms: list[str]) -> str:
    return _aliased([f'search(query: "{term}") {{ title }}' for term in terms])


class Attacks:
    """An endless, seeded succession of attacks, their kinds drawn evenly among `kinds`."""

    def __init__(self, dataset: Dataset, rng: random.Random, kinds: Sequence[str] = KINDS) -> None:
        self._rng = rng
        self._kinds = tuple(kinds)
        self._first_unknown_id = max(row.id for row in dataset.packages) + 1
        self._made: Counter[str] = Counter()
        makers = (
            self._unknown_ids,
            self._aliased_slugs,
            self._batched_slugs,
            self._aliased_searches,
            self._hang_up,
            self._stall,
            self._introspection,
            self._typenames,
        )
        self._makers = dict(zip(KINDS, makers, strict=True))

    def __iter__(self) -> Iterator[Post]:
        while True:
            kind = self._rng.choice(self._kinds)
            self._made[kind] += 1
            yield self._makers[kind](kind, self._made[kind])

    def _unknown_ids(self, kind: str, n: int) -> Post:
        """Ids above the catalogue's highest, a range of their own for each request."""
        first = self._first_unknown_id + (n - 1) * UNKNOWN_IDS
        ids = range(first, first + UNKNOWN_IDS)
        variables = {"ids": [to_base64("Package", id) for id in ids]}
        keys = frozenset(map(str, ids))
        return Post(kind, {"query": NODES, "variables": variables}, keys)

    def _aliased_slugs(self, kind: str, n: int) -> Post:
        [slugs] = _names(kind, n, 1)
        return Post(kind, {"query": _packages(slugs)}, frozenset(slugs))

    def _batched_slugs(self, kind: str, n: int) -> Post:
        operations = _names(kind, n, BATCH)
        body = [{"query": _packages(slugs)} for slugs in operations]
        return Post(kind, body, frozenset(itertools.chain(*operations)))

    def _aliased_searches(self, kind: str, n: int) -> Post:
        operations = _names(kind, n, BATCH)
        body = [{"query": _searches(terms)} for terms in operations]
        return Post(kind, body, frozenset(itertools.chain(*operations)))

    def _hang_up(self, kind: str, n: int) -> Post:
        """The aliased searches, from a client that leaves before their answer."""
        return dataclasses.replace(self._aliased_searches(kind, n), hang_up=HANG_UP_AFTER)

    def _stall(self, kind: str, n: int) -> Post:
        return Post(kind, {"query": " " * n + STALL})

    def _introspection(self, kind: str, n: int) -> Post:
        selection = _aliased([INTROSPECTION] * ALIASES)
        body = [{"query": " " * (n * BATCH + op) + selection} for op in range(BATCH)]
        return Post(kind, body)

    def _typenames(self, kind: str, n: int) -> Post:
        return Post(kind, {"query": " " * n + TYPENAMES})
