"""Query limits: what one document may ask of the gateway, refused before anything runs.

Tokens are counted by graphql-core's parser; depth, aliases and introspection are Strawberry's
and graphql-core's validation rules, their errors reported as ours (gateway/errors.py). Before
validation, the document is measured as if its fragments were written out where they are
spread: its size and nesting, the fields of each selection set (checking that fields of one
name merge compares them pairwise) and introspection's root fields, once each per operation.

Parsing and validation run off the event loop, within the request's time: a document at the
token limit takes tens of milliseconds to parse, and validation's work is bounded too
(`FIELD_MERGING_BUDGET`). A document that passed is kept (document_cache.py), by its text, so
that the next time it comes it needs neither; one refused is not kept, and is refused again
whenever it comes. The cost (cost.py) depends on the variables, so it is estimated after
validation, just before execution (what one HTTP request may take, its body and its time, is
request_limits.py's). `document_errors` holds a document to all the document limits at once,
whatever its variables: `gateway documents check`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import NamedTuple

from graphql import (
    ASTValidationRule,
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLSchema,
    GraphQLSyntaxError,
    InlineFragmentNode,
    Node,
    NoSchemaIntrospectionCustomRule,
    OperationDefinitionNode,
    SelectionSetNode,
    ValidationContext,
    parse,
    specified_rules,
)
from strawberry.extensions import (
    AddValidationRules,
    MaxAliasesLimiter,
    QueryDepthLimiter,
    SchemaExtension,
)

from gateway.cost import Costs, largest_cost, too_costly
from gateway.document_cache import DocumentCache
from gateway.errors import (
    EmptySelectionSet,
    IntrospectionDisabled,
    IntrospectionRepeated,
    QueryRefused,
    QueryTooComplex,
    QueryTooDeep,
    TooManyAliases,
    TooManySelections,
    TooManyTokens,
    located,
    reported_as,
)
from gateway.internals import (
    graphql_schema,
    is_nested_too_deeply,
    is_over_token_limit,
    is_validation_cut_short,
    limit_field_merging,
    strawberry_validation,
)
from gateway.offload import off_the_loop

# graphql-core's parser refuses selections nested deeper; fragments must not get around that.
MAX_NESTING = 200
# The work graphql-core may spend checking that a document's fields of one name merge, in its
# units (a comparison of two fields costs about 2): 50,000 take 20 to 100 ms of a loaded core.
# The largest introspection queries need none, 100 copies of one field with a selection of its
# own about 25,000; the same document with 50 fields in each copy would need millions.
FIELD_MERGING_BUDGET = 50_000
limit_field_merging(FIELD_MERGING_BUDGET)

Extension = type[SchemaExtension] | Callable[[], SchemaExtension]


@dataclass(frozen=True, slots=True)
class QueryLimits:
    """What one document may ask for (each is a setting of gateway/config.py)."""

    max_depth: int
    max_cost: int
    max_aliases: int
    max_tokens: int
    max_selections: int
    introspection: bool


def extensions(limits: QueryLimits, documents: DocumentCache) -> list[Extension]:
    """The schema extensions that enforce `limits`, one instance of each per request, all
    keeping the documents that passed in `documents`."""
    rules = _validation_rules(limits)
    costs = Costs(limits.max_cost)
    return [
        lambda: AddValidationRules(rules),
        lambda: _Checked(limits, documents),
        lambda: _Cost(costs),
    ]


def _validation_rules(limits: QueryLimits) -> list[type[ASTValidationRule]]:
    depth = QueryDepthLimiter(max_depth=limits.max_depth)
    aliases = MaxAliasesLimiter(max_alias_count=limits.max_aliases)
    rules = [_reporting(rule, QueryTooDeep) for rule in depth.validation_rules]
    rules += [_reporting(rule, TooManyAliases) for rule in aliases.validation_rules]
    if not limits.introspection:
        rules.append(_reporting(NoSchemaIntrospectionCustomRule, IntrospectionDisabled))
    return rules


def _reporting(rule: type[ASTValidationRule], kind: type[QueryRefused]) -> type[ASTValidationRule]:
    """`rule`, its errors reported as errors of `kind`: those it reports while visiting the
    document, and those Strawberry's limiters report all at once when they are created."""

    class Reporting(rule):  # type: ignore[misc,valid-type]
        def __init__(self, context: ValidationContext) -> None:
            report = context.on_error
            context.on_error = lambda error: report(reported_as(kind, error))  # type: ignore[method-assign]
            try:
                super().__init__(context)
            finally:
                context.on_error = report  # type: ignore[method-assign]

        def report_error(self, error: GraphQLError) -> None:
            super().report_error(reported_as(kind, error))

    return Reporting


class _Checked(SchemaExtension):
    """A document parsed and validated on a thread of its own, so that the event loop goes on
    serving meanwhile and the request's deadline holds; or, if it passed before, as it was.

    Strawberry's depth and alias limiters follow every spread of every fragment: a few hundred
    tokens of fragments spreading others twice would keep them busy for hours. They also fail
    on an empty selection set, which graphql-core's parser now accepts. So the document is
    measured first, with its fragments spread (`_check_spread`).
    """

    def __init__(self, limits: QueryLimits, documents: DocumentCache) -> None:
        super().__init__()
        self.limits = limits
        self.documents = documents
        self.known = False  # the document passed before: it needs no validation

    async def on_parse(self) -> AsyncIterator[None]:
        context = self.execution_context
        assert context.query is not None  # Strawberry refuses an operation without it first
        document = self.documents.get(context.query)
        self.known = document is not None
        if document is None:
            document = await off_the_loop(_parsed, context.query, self.limits)
        context.graphql_document = document
        yield

    async def on_validate(self) -> AsyncIterator[None]:
        context = self.execution_context
        errors: list[GraphQLError] = []
        if not self.known:
            assert context.query is not None and context.graphql_document is not None
            schema = graphql_schema(context.schema)
            rules = context.validation_rules
            errors = await off_the_loop(_validated, schema, context.graphql_document, rules)
            if not errors:
                self.documents.keep(context.query, context.graphql_document)
        context.pre_execution_errors = errors  # Strawberry validates no more
        yield


def _parsed(text: str, limits: QueryLimits) -> DocumentNode:
    """`text` parsed and measured (`_check_spread`); the refusals of the parser's own limits
    reported as ours."""
    try:
        document = parse(text, max_tokens=limits.max_tokens)
    except GraphQLSyntaxError as error:
        if is_over_token_limit(error):
            raise reported_as(TooManyTokens, error) from None
        if is_nested_too_deeply(error):
            raise reported_as(QueryTooDeep, error) from None
        raise
    _check_spread(document, limits)
    return document


def _validated(
    schema: GraphQLSchema, document: DocumentNode, rules: tuple[type[ASTValidationRule], ...]
) -> list[GraphQLError]:
    """Strawberry's validation of `document` by `rules`: the errors, validation cut short by
    its bound of work reported as ours."""
    errors = strawberry_validation(schema, document, rules)
    if any(is_validation_cut_short(error) for error in errors):
        message = (
            "The document repeats fields of one name too often to check that they merge:"
            " ask for each field once"
        )
        return [located(QueryTooComplex(message))]
    return errors


def _check_spread(document: DocumentNode, limits: QueryLimits) -> None:
    """Refuse a document too large (or too deep) once its fragments are spread out, with a
    selection set of too many fields, or an operation asking for introspection's root fields
    more than once each."""
    spread = _Spread(document)
    selections = spread.selections()
    if selections > limits.max_tokens:
        message = (
            f"Document contains more than {limits.max_tokens} tokens once its fragments are"
            f" spread: {selections} selections"
        )
        raise located(TooManyTokens(message))
    fields, widest = spread.widest
    if fields > limits.max_selections:
        message = (
            f"A selection set holds {fields} fields once its fragments are spread, over the"
            f" limit of {limits.max_selections}: ask for each field once"
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


class _Cost(SchemaExtension):
    """Refuse an operation whose estimated cost is over what its request has left, before it
    runs."""

    def __init__(self, costs: Costs) -> None:
        super().__init__()
        self.costs = costs

    def on_execute(self) -> Iterator[None]:
        context = self.execution_context
        assert context.graphql_document is not None  # validated by now
        self.costs.check(
            graphql_schema(context.schema),
            context.query,
            context.graphql_document,
            context.operation_name,
            context.variables,
            context.context.spending,
        )
        yield


def document_errors(schema: GraphQLSchema, limits: QueryLimits, text: str) -> list[GraphQLError]:
    """Why the gateway would refuse the document under `limits`, whatever variables it comes
    with (a `first` from a variable counts as the largest page): it does not parse, or does not
    validate, or goes past depth, aliases, tokens, selections, introspection or cost.

    For `gateway documents check`, which a client's CI runs on its documents before release.
    """
    try:
        document = _parsed(text, limits)
    except GraphQLError as error:
        return [error]
    errors = _validated(schema, document, (*specified_rules, *_validation_rules(limits)))
    if errors:
        return errors
    for operation in document.definitions:
        if isinstance(operation, OperationDefinitionNode):
            cost = largest_cost(schema, document, operation)
            if cost > limits.max_cost:
                errors.append(located(too_costly(cost, limits.max_cost)))
    return errors
