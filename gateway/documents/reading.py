"""Each document a client sends, read once: refused by the limits a parse can check, or its
normal form.

Two parts of the gateway need to read a document it has not seen: the response cache, for its
normal form (its key does not depend on whitespace, commas or comments), and the query limits,
to refuse it before validation (its tokens, nesting, the fields of each selection set and
introspection's root fields: measure.py). A reading does both with one parse, and is remembered
by the document's text (only its text: a reading keeps no parsed document, whose nodes weigh
hundreds of bytes per token).

A document is read in the documents' process (offload.py): parsing it in pure Python takes
some 2 ms per 1,000 characters (tens of milliseconds at the token limit), which on a thread of
this process would slow the event loop down (the interpreter's lock), so that every other
request, and `/healthz`, would crawl while a client sends documents it has not sent before. The
round trip costs this process some 0.2 ms. Most long documents a client makes up are refused by
the limits read there, and then never cost this process a parse at all. A document that passes
is validated there too, by a schema built as this process's (validating.py, once in the
documents' process), so that a valid one costs this process a parse only (limits.py), on the
documents' thread, some 1 ms for 30 aliased fields against 3 to 4 ms for their validation.
Sending the parsed document back instead would cost half a parse to unpickle, but it would come
back heavier (1.3 to 1.5 times, measured with tracemalloc) and without the links between its
tokens by which document_cache.py weighs it. A document that does not validate is validated
again here, for its errors; so is every document read while the documents' process is not
there.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cachetools import LRUCache
from graphql import (
    DocumentNode,
    GraphQLError,
    GraphQLSyntaxError,
    OperationDefinitionNode,
    OperationType,
    Source,
    print_ast,
)

from gateway.documents.measure import check_spread, parsed
from gateway.documents.offload import off_the_loop, out_of_process
from gateway.errors import ReportedError

MAX_BYTES = 4 * 2**20  # the texts whose readings are remembered, in all
ENTRY_OVERHEAD = 200  # bytes counted per reading for its key, its values and bookkeeping


@dataclass(frozen=True, slots=True)
class Normal:
    """A document's normal form, as far as the response cache needs it."""

    digest: bytes  # of the document as graphql-core prints it
    queries: frozenset[str | None]  # the names of its query operations (None: anonymous)
    operations: int


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a document is refused, such as pickle carries from the documents' process: the kind
    of the error (None: graphql-core's syntax error), its message, and where in the text."""

    kind: type[ReportedError] | None
    message: str
    positions: tuple[int, ...]

    @classmethod
    def of(cls, error: GraphQLError) -> Refusal:
        original = error.original_error
        kind = type(original) if isinstance(original, ReportedError) else None
        return cls(kind, error.message, tuple(error.positions or ()))

    def error(self, text: str) -> GraphQLError:
        """The error again, at the same place in `text`, the document it was read from."""
        source = Source(text)
        if self.kind is None:
            [position] = self.positions
            description = self.message.removeprefix("Syntax Error: ")
            return GraphQLSyntaxError(source, position, description)
        positions = list(self.positions) or None
        return GraphQLError(
            self.message, source=source, positions=positions, original_error=self.kind(self.message)
        )


@dataclass(frozen=True, slots=True)
class Reading:
    """A document read: refused (`refusal`), or its normal form; `valid` if it was validated
    too, and passed."""

    refusal: Refusal | None
    normal: Normal | None
    valid: bool = False


def read(text: str, max_tokens: int, max_selections: int) -> Reading:
    """`text` parsed within `max_tokens` and measured (measure.py): a function of this module,
    its arguments and its result small, for the documents' process."""
    return parse_and_read(text, max_tokens, max_selections)[1]


def parse_and_read(
    text: str, max_tokens: int, max_selections: int
) -> tuple[DocumentNode | None, Reading]:
    """`text`'s reading, and its parsed document unless it was refused."""
    try:
        document = parsed(text, max_tokens)
        check_spread(document, max_tokens, max_selections)
    except GraphQLError as error:
        return None, Reading(Refusal.of(error), None)
    return document, Reading(None, _normal(document))


def _read_here(text: str, max_tokens: int, max_selections: int, *_: Any) -> Reading:
    """`read` on this process's documents' thread, which leaves validation to the request:
    a schema of its own here would weigh megabytes."""
    return read(text, max_tokens, max_selections)


def _normal(document: DocumentNode) -> Normal:
    operations = [
        node for node in document.definitions if isinstance(node, OperationDefinitionNode)
    ]
    queries = frozenset(
        node.name.value if node.name else None
        for node in operations
        if node.operation == OperationType.QUERY
    )
    digest = hashlib.sha256(print_ast(document).encode()).digest()
    return Normal(digest, queries, len(operations))


class Readings:
    """The readings of the documents seen lately, by text, least recently used out first.

    A new document is read by `reader(text, max_tokens, max_selections, *reader_args)` in the
    documents' process (a module's function: validating.py's validates it too), by `read` on
    the documents' thread while that process is not there, or always so with `apart` false (one
    operation, `gateway query`, has no event loop to keep free, and needs no child Python)."""

    def __init__(
        self,
        max_tokens: int,
        max_selections: int,
        max_bytes: int = MAX_BYTES,
        *,
        reader: Callable[..., Reading] = read,
        reader_args: tuple[Any, ...] = (),
        apart: bool = True,
    ) -> None:
        self.max_tokens = max_tokens
        self.max_selections = max_selections
        self.reader = reader
        self.reader_args = reader_args
        self.apart = apart
        self._known: LRUCache[str, tuple[Reading, int]] = LRUCache(
            max_bytes, getsizeof=lambda kept: kept[1]
        )

    def __len__(self) -> int:
        return len(self._known)

    @property
    def size(self) -> int:
        """What the readings kept weigh, in bytes, about."""
        return int(self._known.currsize)

    @property
    def max_bytes(self) -> int:
        return int(self._known.maxsize)

    def known(self, text: str) -> Reading | None:
        """The reading of a document read already; None for one not read yet."""
        try:  # one lookup (`get` is two, in Python): this is every request's
            return self._known[text][0]
        except KeyError:
            return None

    async def get(self, text: str) -> Reading:
        """`text`'s reading, remembered or done now."""
        reading = self.known(text)
        if reading is None:
            limits = (self.max_tokens, self.max_selections)
            if self.apart:
                reader = self.reader
                args = (*limits, *self.reader_args)
                reading = await out_of_process(reader, text, *args, here=_read_here)
            else:
                reading = await off_the_loop(read, text, *limits)
            self._keep(text, reading)
        return reading

    def _keep(self, text: str, reading: Reading) -> None:
        size = len(text) + ENTRY_OVERHEAD
        if reading.refusal is not None:
            size += len(reading.refusal.message)
        if text not in self._known and size <= self._known.maxsize:
            self._known[text] = (reading, size)
