"""Documents kept parsed, by their text, within a budget of memory.

A parsed document weighs far more than its text: graphql-core keeps a node per name and
selection, and every token of the source, linked, from the location of each node; a field
written in a few characters costs hundreds of bytes. So a document is weighed by its tokens
(`document_weight`), and a cache keeps what fits in its budget, least recently used out first:
a client may send any number of distinct documents, each up to the token limit.
"""

from __future__ import annotations

from cachetools import LRUCache
from graphql import DocumentNode

# What one token of a document costs once parsed, at most, about: measured (tracemalloc) at
# 300 to 620 bytes, the most for a document of fields with no arguments, a node per token.
TOKEN_BYTES = 700
# What the documents one schema keeps valid weigh, in all, about. Every node and token kept is
# an object each full collection of the garbage collector goes through, the whole process
# stopped meanwhile: at 32 MiB, some 130,000 of them made each such pause 250 ms; at 8 MiB,
# with the plans' bound (engine.MAX_BYTES), 160 ms under bench.load's attacks.
MAX_BYTES = 8 * 2**20


def document_weight(text: str, document: DocumentNode) -> int:
    """The bytes `document`, parsed from `text`, holds, about (see TOKEN_BYTES)."""
    tokens = 0
    token = None if document.loc is None else document.loc.start_token
    while token is not None:
        tokens += 1
        token = token.next
    return len(text) + tokens * TOKEN_BYTES


class DocumentCache:
    """Documents by text, least recently used out first once they weigh more than
    `max_bytes` (MAX_BYTES by default); a document heavier than that is not kept at all."""

    def __init__(self, max_bytes: int | None = None) -> None:
        self._documents: LRUCache[str, tuple[DocumentNode, int]] = LRUCache(
            MAX_BYTES if max_bytes is None else max_bytes, getsizeof=lambda kept: kept[1]
        )

    def __len__(self) -> int:
        return len(self._documents)

    @property
    def max_bytes(self) -> int:
        return int(self._documents.maxsize)

    @property
    def size(self) -> int:
        """What the documents kept weigh, in bytes, about."""
        return int(self._documents.currsize)

    def get(self, text: str) -> DocumentNode | None:
        kept = self._documents.get(text)
        return None if kept is None else kept[0]

    def keep(self, text: str, document: DocumentNode) -> None:
        if text in self._documents:
            return
        weight = document_weight(text, document)
        if weight <= self.max_bytes:
            self._documents[text] = (document, weight)
