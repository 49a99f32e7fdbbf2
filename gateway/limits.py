"""Query limits: what one request may ask of the gateway, refused before anything runs.

Tokens are counted by graphql-core's parser; depth, aliases and introspection are Strawberry's
and graphql-core's validation rules, their errors reported as ours (gateway/errors.py). Parsing
and validation are cached per document, keyed by the limits too, so a refused document stays
refused. The cost (cost.py) depends on the variables, so it is estimated after validation, just
before execution (what one HTTP request may take, its body and its time, is request_limits.py's).
`document_errors` holds a document to all the document limits at once, whatever its variables:
`gateway documents check`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

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
    validate,
)
from strawberry.extensions import (
    AddValidationRules,
    MaxAliasesLimiter,
    MaxTokensLimiter,
    ParserCache,
    QueryDepthLimiter,
    SchemaExtension,
    ValidationCache,
)

from gateway.cost import Costs, largest_cost, too_costly
from gateway.errors import (
    EmptySelectionSet,
    IntrospectionDisabled,
    QueryRefused,
    QueryTooDeep,
    TooManyAliases,
    TooManyTokens,
    located,
    reported_as,
)
from gateway.internals import graphql_schema, is_nested_too_deeply, is_over_token_limit

# graphql-core's parser refuses selections nested deeper; fragments must not get around that.
MAX_NESTING = 200

Extension = type[SchemaExtension] | Callable[[], SchemaExtension]


@dataclass(frozen=True, slots=True)
class QueryLimits:
    """What one document may ask for (each is a setting of gateway/config.py)."""

    max_depth: int
    max_cost: int
    max_aliases: int
    max_tokens: int
    introspection: bool


def extensions(limits: QueryLimits) -> list[Extension]:
    """The schema extensions that enforce `limits`, one instance of each per request.

    The validation rules are made once, here: they are part of the validation cache's key.
    """
    rules = _validation_rules(limits)
    costs = Costs(limits.max_cost)
    return [
        lambda: MaxTokensLimiter(max_token_count=limits.max_tokens),
        lambda: _Parse(limits.max_tokens),
        lambda: AddValidationRules(rules),
        ValidationCache,
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


class _Parse(ParserCache):
    """Strawberry's parser cache, with the parser's own limits reported as ours, and a document
    measured as if its fragments were written out where they are spread.

    Strawberry's depth and alias limiters follow every spread of every fragment: a few hundred
    tokens of fragments spreading others twice would keep them busy for hours. They also fail
    on an empty selection set, which graphql-core's parser now accepts.
    """

    def __init__(self, max_tokens: int) -> None:
        super().__init__()
        self.max_tokens = max_tokens

    def on_parse(self) -> Iterator[None]:
        context = self.execution_context
        try:
            document = self.cached_parse_document(context.query, **context.parse_options)
        except GraphQLSyntaxError as error:
            raise _syntax_error(error) from None
        _check_spread(document, self.max_tokens)
        context.graphql_document = document
        yield


def _syntax_error(error: GraphQLSyntaxError) -> GraphQLError:
    """The parser's refusal, reported as ours when it is one of our limits."""
    if is_over_token_limit(error):
        return reported_as(TooManyTokens, error)
    if is_nested_too_deeply(error):
        return reported_as(QueryTooDeep, error)
    return error


def _check_spread(document: DocumentNode, max_tokens: int) -> None:
    """Refuse a document too large (or too deep) once its fragments are spread out."""
    selections = _Spread(document).selections()
    if selections > max_tokens:
        raise TooManyTokens(
            f"Document contains more than {max_tokens} tokens once its fragments are"
            f" spread: {selections} selections"
        )


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
        self.measured: dict[str, tuple[int, int]] = {}
        self.open: set[str] = set()

    def selections(self) -> int:
        """All the selections of all operations; unused fragments are measured too."""
        total = 0
        for node in self.document.definitions:
            if isinstance(node, OperationDefinitionNode):
                total += self._measure(node.selection_set, 1)[0]
            elif isinstance(node, FragmentDefinitionNode):
                self._fragment(node.name.value, 0)
        return total

    def _measure(self, selection_set: SelectionSetNode, depth: int) -> tuple[int, int]:
        """Selections in `selection_set`, at nesting `depth`, and how many levels it spans."""
        if not selection_set.selections:
            empty = EmptySelectionSet("Syntax Error: a selection set may not be empty.")
            raise located(empty, selection_set)
        if depth > MAX_NESTING:
            raise _too_deep(selection_set)
        count, levels = 0, 1
        for selection in selection_set.selections:
            inner = (0, 0)
            if isinstance(selection, FragmentSpreadNode):
                inner = self._fragment(selection.name.value, depth)
            elif isinstance(selection, FieldNode | InlineFragmentNode) and selection.selection_set:
                inner = self._measure(selection.selection_set, depth + 1)
            count += 1 + inner[0]
            levels = max(levels, 1 + inner[1])
        return count, levels

    def _fragment(self, name: str, depth: int) -> tuple[int, int]:
        fragment = self.fragments.get(name)
        if fragment is None or name in self.open:
            return 0, 0  # unknown fragments and cycles are validation errors
        if name not in self.measured:
            self.open.add(name)
            self.measured[name] = self._measure(fragment.selection_set, depth + 1)
            self.open.discard(name)
        count, levels = self.measured[name]
        if depth + levels > MAX_NESTING:
            raise _too_deep(fragment)
        return count, levels


def _too_deep(node: Node) -> GraphQLError:
    message = (
        f"Document is nested more than {MAX_NESTING} levels deep once its fragments are spread"
    )
    return located(QueryTooDeep(message), node)


class _Cost(SchemaExtension):
    """Refuse an operation whose estimated cost is over the limit, before it runs."""

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
        )
        yield


def document_errors(schema: GraphQLSchema, limits: QueryLimits, text: str) -> list[GraphQLError]:
    """Why the gateway would refuse the document under `limits`, whatever variables it comes
    with (a `first` from a variable counts as the largest page): it does not parse, or does not
    validate, or goes past depth, aliases, tokens, introspection or cost.

    For `gateway documents check`, which a client's CI runs on its documents before release.
    """
    try:
        document = parse(text, max_tokens=limits.max_tokens)
        _check_spread(document, limits.max_tokens)
    except GraphQLSyntaxError as error:
        return [_syntax_error(error)]
    except GraphQLError as error:
        return [error]
    except TooManyTokens as error:
        return [located(error)]
    errors = validate(schema, document, [*specified_rules, *_validation_rules(limits)])
    if errors:
        return errors
    for operation in document.definitions:
        if isinstance(operation, OperationDefinitionNode):
            cost = largest_cost(schema, document, operation)
            if cost > limits.max_cost:
                errors.append(located(too_costly(cost, limits.max_cost)))
    return errors
