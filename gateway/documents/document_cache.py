"""Documents kept parsed, by their text, within a budget of memory.

A parsed document weighs far more than its text: graphql-core keeps a node per name and
selection, each with its location in the source, and every token of the source, linked, from
those locations; a field written in a few characters costs hundreds of bytes. Every one of those
objects is also one that each full collection of the garbage collector goes through, the whole
process stopped meanwhile (gateway/observability/stalls.py). So a document is made light before it
is kept (`lighten`): what only the parser and validation read goes, what execution's errors read
stays. It is weighed by what it then holds, and a cache keeps what fits in its budget, least
recently used out first: a client may send any number of distinct documents, each up to the token
limit.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import fields

from cachetools import LRUCache
from graphql import DocumentNode, NameNode, Node, SelectionSetNode

# What each object a kept document holds costs, about: a node, its location, a tuple of nodes;
# measured (tracemalloc, Python 3.11) at 110 to 145 bytes with its share of the text.
OBJECT_BYTES = 150
# What the documents one schema keeps valid weigh, in all, about. Every object kept is one each
# full collection of the garbage collector goes through, the whole process stopped meanwhile
# (about a microsecond each): at 32 MiB, some 130,000 of them made each such pause 250 ms; at
# 8 MiB, with the plans' bound (engine.MAX_BYTES), 160 ms under bench.load's attacks, of
# which the documents were some 32,000 objects. Made light, a document holds 2.5 times fewer
# (each token was 3.7 of them), but a byte holds more: 2 MiB is at most some 14,000 objects, or
# some 200 documents of a frontend's (bench.load's weigh 8 to 13 KB).
MAX_BYTES = 2 * 2**20


def lighten(text: str, document: DocumentNode) -> int:
    """Drop from `document`, parsed from `text`, what nothing reads once it has been validated;
    give what it then weighs, about, in bytes: its text, its objects (OBJECT_BYTES each) and the
    texts of its names and values (copies of the text's).

    The tokens go (each location links the ones it spans, and through them the whole source's);
    so do the locations of names and selection sets, which only validation's errors point at
    (execution's point at fields, arguments, values and variables), and a name written several
    times is one node. Nodes are frozen dataclasses: they are changed as their constructor sets
    them, before the document is shared. A walk of every node, some 10 ms for a document at the
    token limit: not one for the event loop. Lightening a light document changes nothing.
    """
    names: dict[str, NameNode] = {}
    objects, texts = 0, 0
    for node in _nodes(document):
        for key in _node_keys(type(node)):
            value = getattr(node, key)
            if isinstance(value, NameNode):
                object.__setattr__(node, key, names.setdefault(value.value, value))
            elif isinstance(value, tuple):
                objects += len(value) > 0
            elif isinstance(value, str):
                texts += len(value)
        if isinstance(node, NameNode | SelectionSetNode):
            object.__setattr__(node, "loc", None)
        elif node.loc is not None:
            node.loc.start_token = node.loc.end_token = None  # type: ignore[assignment]
        objects += 1 + (node.loc is not None)
    return len(text) + objects * OBJECT_BYTES + texts


def _nodes(document: DocumentNode) -> Iterator[Node]:
    """Every node of `document`, each once (a name shared by `lighten` is one node)."""
    seen: set[int] = set()
    stack: list[Node] = [document]
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        yield node
        for key in _node_keys(type(node)):
            value = getattr(node, key)
            if isinstance(value, Node):
                stack.append(value)
            elif isinstance(value, tuple):
                stack.extend(item for item in value if isinstance(item, Node))


_KEYS: dict[type[Node], tuple[str, ...]] = {}


def _node_keys(kind: type[Node]) -> tuple[str, ...]:
    """The attributes of a kind of node besides its location (made once a kind)."""
    keys = _KEYS.get(kind)
    if keys is None:
        keys = _KEYS[kind] = tuple(field.name for field in fields(kind) if field.name != "loc")
    return keys


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

    def weighed(self, text: str) -> tuple[DocumentNode, int] | None:
        """The document of `text` and what it weighs, if it is kept."""
        return self._documents.get(text)

    def keep(self, text: str, document: DocumentNode, weight: int) -> None:
        """Keep `document`, made light, of `weight` (both by `lighten`)."""
        if text not in self._documents and weight <= self.max_bytes:
            self._documents[text] = (document, weight)
