"""A document parsed within the token limit and measured as if its fragments were spread.

Checking that fields of one name merge compares them pairwise, and Strawberry's depth and alias
limiters follow every spread of every fragment: a few hundred tokens of fragments spreading
others twice would keep them busy for hours. So before validation a document is measured with
its fragments written out where they are spread, each fragment once, in time proportional to its
size: its selections and nesting, the fields of each selection set, and introspection's root
fields, once each per operation. The limits (limits.py) and the reading of a document
(reading.py) both hold a document to these measures.
"""

from __future__ import annotations

from typing import NamedTuple

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLSyntaxError,
    InlineFragmentNode,
    Node,
    OperationDefinitionNode,
    SelectionSetNode,
    parse,
)

from gateway.errors import (
    EmptySelectionSet,
    IntrospectionRepeated,
    QueryTooDeep,
    TooManySelections,
    TooManyTokens,
    located,
    reported_as,
)
from gateway.internals import is_nested_too_deeply, is_over_token_limit

# graphql-core's parser refuses selections nested deeper; fragments must not get around that.
MAX_NESTING = 200


def parsed(text: str, max_tokens: int) -> DocumentNode:
    """`text` parsed, the refusals of the parser's own limits reported as ours, and acyclic."""
    try:
        document = parse(text, max_tokens=max_tokens)
    except GraphQLSyntaxError as error:
        if is_over_token_limit(error):
            raise reported_as(TooManyTokens, error) from None
        if is_nested_too_deeply(error):
            raise reported_as(QueryTooDeep, error) from None
        raise
    _unlink_backwards(document)
    return document


def _unlink_backwards(document: DocumentNode) -> None:
    """Drop each token's link to the one before it, which nothing reads once parsed.

    graphql-core links a document's tokens both ways, a cycle per document: one dropped by a
    request would wait for a full collection of the garbage collector, which scans every
    object the process keeps (a pause of hundreds of milliseconds with the caches full), and
    one frozen out of the collector's sight (gateway/observability/stalls.py) would never be freed.
    Linked forwards only, a document is freed as soon as nothing holds it. (One kept holds no token
    at all: gateway/documents/document_cache.py.)
    """
    token = None if document.loc is None else document.loc.start_token
    while token is not None:
        token.prev = None
        token = token.next


def check_spread(document: DocumentNode, max_tokens: int, max_selections: int) -> None:
    """Refuse a document too large (or too deep) once its fragments are spread out, with a
    selection set of too many fields, or an operation asking for introspection's root fields
    more than once each."""
    spread = _Spread(document)
    selections = spread.selections()
    if selections > max_tokens:
        message = (
            f"Document contains more than {max_tokens} tokens once its fragments are"
            f" spread: {selections} selections"
        )
        raise located(TooManyTokens(message))
    fields, widest = spread.widest
    if fields > max_selections:
        message = (
            f"A selection set holds {fields} fields once its fragments are spread, over the"
            f" limit of {max_selections}: ask for each field once"
        )
        raise located(TooManySelections(message), widest)
    if spread.repeating is not None:
        message = "An operation may ask for `__schema` once, and for `__type` once"
        raise located(IntrospectionRepeated(message), spread.repeating)


class _Measure(NamedTuple):
    """A selection set with its fragments spread."""

    selections: int  # at every level
    levels: int  # how deep it nests
    fields: int  # at its own level of the response, with its fragments' and inline fragments'
    schemas: int  # of those, `__schema` fields
    types: int  # and `__type` fields


_NOTHING = _Measure(0, 0, 0, 0, 0)


class _Spread:
    """Selections counted, and nesting checked, with every fragment spread out; each fragment is
    measured once, so that this takes time in proportion to the document's size."""

    def __init__(self, document: DocumentNode) -> None:
        self.document = document
        self.fragments = {
            node.name.value: node
            for node in document.definitions
            if isinstance(node, FragmentDefinitionNode)
        }
        self.measured: dict[str, _Measure] = {}
        self.open: set[str] = set()
        self.widest: tuple[int, SelectionSetNode | None] = (0, None)  # the most fields, where
        self.repeating: OperationDefinitionNode | None = None  # `__schema` or `__type` twice

    def selections(self) -> int:
        """All the selections of all operations; unused fragments are measured too."""
        total = 0
        for node in self.document.definitions:
            if isinstance(node, OperationDefinitionNode):
                measure = self._measure(node.selection_set, 1)
                if measure.schemas > 1 or measure.types > 1:
                    self.repeating = node
                total += measure.selections
            elif isinstance(node, FragmentDefinitionNode):
                self._fragment(node.name.value, 0)
        return total

    def _measure(self, selection_set: SelectionSetNode, depth: int) -> _Measure:
        """`selection_set`, at nesting `depth`."""
        if not selection_set.selections:
            empty = EmptySelectionSet("Syntax Error: a selection set may not be empty.")
            raise located(empty, selection_set)
        if depth > MAX_NESTING:
            raise _too_deep(selection_set)
        selections, levels, fields, schemas, types = 0, 1, 0, 0, 0
        for selection in selection_set.selections:
            if isinstance(selection, FieldNode):
                inner = _NOTHING
                if selection.selection_set is not None:
                    inner = self._measure(selection.selection_set, depth + 1)
                fields += 1
                schemas += selection.name.value == "__schema"
                types += selection.name.value == "__type"
            elif isinstance(selection, FragmentSpreadNode | InlineFragmentNode):
                if isinstance(selection, FragmentSpreadNode):
                    inner = self._fragment(selection.name.value, depth)
                else:
                    inner = self._measure(selection.selection_set, depth + 1)
                fields += inner.fields
                schemas += inner.schemas
                types += inner.types
            selections += 1 + inner.selections
            levels = max(levels, 1 + inner.levels)
        if fields > self.widest[0]:
            self.widest = (fields, selection_set)
        return _Measure(selections, levels, fields, schemas, types)

    def _fragment(self, name: str, depth: int) -> _Measure:
        fragment = self.fragments.get(name)
        if fragment is None or name in self.open:
            return _NOTHING  # unknown fragments and cycles are validation errors
        if name not in self.measured:
            self.open.add(name)
            self.measured[name] = self._measure(fragment.selection_set, depth + 1)
            self.open.discard(name)
        measure = self.measured[name]
        if depth + measure.levels > MAX_NESTING:
            raise _too_deep(fragment)
        return measure


def _too_deep(node: Node) -> GraphQLError:
    message = (
        f"Document is nested more than {MAX_NESTING} levels deep once its fragments are spread"
    )
    return located(QueryTooDeep(message), node)
