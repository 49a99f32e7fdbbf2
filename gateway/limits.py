"""Query limits: what one request may ask of the gateway, refused before anything runs.

Tokens are counted by graphql-core's parser; depth, aliases and introspection are Strawberry's
and graphql-core's validation rules, their errors reported as ours (gateway/errors.py). Parsing
and validation are cached per document, keyed by the limits too, so a refused document stays
refused. The cost depends on the variables, so it is estimated after validation, just before
execution (what one HTTP request may take, its body and its time, is request_limits.py's).
`document_errors` holds a document to all the document limits at once, whatever its variables:
`gateway documents check`.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import orjson
from graphql import (
    ASTValidationRule,
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLField,
    GraphQLInt,
    GraphQLInterfaceType,
    GraphQLList,
    GraphQLNamedType,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLSchema,
    GraphQLSyntaxError,
    InlineFragmentNode,
    NamedTypeNode,
    Node,
    NoSchemaIntrospectionCustomRule,
    OperationDefinitionNode,
    SelectionSetNode,
    ValidationContext,
    get_argument_values,
    get_named_type,
    get_nullable_type,
    get_operation_ast,
    get_variable_values,
    is_composite_type,
    parse,
    specified_rules,
    type_from_ast,
    validate,
)
from graphql.execution.values import VariableValues
from strawberry.extensions import (
    AddValidationRules,
    MaxAliasesLimiter,
    MaxTokensLimiter,
    ParserCache,
    QueryDepthLimiter,
    SchemaExtension,
    ValidationCache,
)

from gateway.errors import (
    EmptySelectionSet,
    IntrospectionDisabled,
    QueryRefused,
    QueryTooCostly,
    QueryTooDeep,
    TooManyAliases,
    TooManyTokens,
    located,
    reported_as,
)
from gateway.internals import (
    graphql_schema,
    is_nested_too_deeply,
    is_over_token_limit,
    variables_leniently,
)

# graphql-core's parser refuses selections nested deeper; fragments must not get around that.
MAX_NESTING = 200
# The most items a connection gives at once (`first` or `last`); the resolvers refuse more.
MAX_FIRST = 100
# What a connection gives when neither `first` nor `last` is given.
DEFAULT_FIRST = 20
# A list of objects that is neither a connection nor `nodes(ids:)`: `search` has at most 20 hits.
LIST_SIZE = 20

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


class Costs:
    """The cost limit, with the estimates of the documents seen lately, by document text,
    operation and variables: a client sends the same few queries again and again, and
    estimating one walks it whole."""

    SIZE = 1024

    def __init__(self, max_cost: int) -> None:
        self.max_cost = max_cost
        self._known: OrderedDict[bytes, int] = OrderedDict()  # by digest: 24 bytes a key

    def check(
        self,
        schema: GraphQLSchema,
        query: str | None,
        document: DocumentNode,
        operation_name: str | None,
        variables: dict[str, Any] | None,
    ) -> None:
        """Refuse an operation whose estimated cost is over the limit."""
        try:
            encoded = orjson.dumps(variables or {}, option=orjson.OPT_SORT_KEYS)
        except orjson.JSONEncodeError:  # not from JSON: estimate it, but do not keep it
            encoded = b""
        digest = hashlib.blake2b(digest_size=24)
        for part in ((query or "").encode(), (operation_name or "").encode()):
            digest.update(len(part).to_bytes(8, "big") + part)  # no two keys run together
        digest.update(encoded)
        key = digest.digest()
        cost = self._known.get(key)
        if cost is None:
            cost = estimate_cost(schema, document, operation_name, variables)
            if encoded:
                self._known[key] = cost
                if len(self._known) > self.SIZE:
                    self._known.popitem(last=False)
        else:
            self._known.move_to_end(key)
        if cost > self.max_cost:
            raise _too_costly(cost, self.max_cost)


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


def _too_costly(cost: int, max_cost: int) -> QueryTooCostly:
    return QueryTooCostly(
        f"The query's estimated cost is {cost}, over the limit of {max_cost}: ask"
        " for fewer items with `first`, or nest fewer connections"
    )


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
            cost = _largest_cost(schema, document, operation)
            if cost > limits.max_cost:
                errors.append(located(_too_costly(cost, limits.max_cost)))
    return errors


def _largest_cost(
    schema: GraphQLSchema, document: DocumentNode, operation: OperationDefinitionNode
) -> int:
    """The estimate with every Int variable at the largest page a connection serves."""
    largest: dict[str, int] = {}
    for definition in operation.variable_definitions or ():
        declared = type_from_ast(schema, definition.type)
        if declared is GraphQLInt or (
            isinstance(declared, GraphQLNonNull) and declared.of_type is GraphQLInt
        ):
            largest[definition.variable.name.value] = MAX_FIRST
    variables = variables_leniently(schema, operation.variable_definitions or (), largest)
    root = schema.get_root_type(operation.operation)
    if root is None:
        return 0
    return _Estimate(schema, document, variables).selections(operation.selection_set, root)


def estimate_cost(
    schema: GraphQLSchema,
    document: DocumentNode,
    operation_name: str | None = None,
    variables: dict[str, Any] | None = None,
) -> int:
    """The most objects a valid operation may return.

    Each connection field counts its `first` or `last` (20 when neither is given) times
    the sizes of the lists above it, and so does each other list of objects with its own size:
    the number of `ids` for `nodes`, 20 otherwise (`search`). The operation's cost is the sum
    over all these fields. Fragments count wherever they are spread, aliased fields once each.
    Variables the operation will refuse make the estimate 0: it will not run.
    """
    operation = get_operation_ast(document, operation_name)
    if operation is None:
        return 0
    coerced = get_variable_values(schema, operation.variable_definitions or (), variables or {})
    root = schema.get_root_type(operation.operation)
    if isinstance(coerced, list) or root is None:
        return 0
    return _Estimate(schema, document, coerced).selections(operation.selection_set, root)


class _Estimate:
    def __init__(self, schema: GraphQLSchema, document: DocumentNode, variables: VariableValues):
        self.schema = schema
        self.variables = variables
        self.fragments = {
            node.name.value: node
            for node in document.definitions
            if isinstance(node, FragmentDefinitionNode)
        }
        self.costs: dict[str, int] = {}  # per fragment, for each of its spreads

    def selections(self, selection_set: SelectionSetNode, parent: GraphQLNamedType | None) -> int:
        """The cost of `selection_set` as if its parent were one object: the cost is linear."""
        total = 0
        for selection in selection_set.selections:
            if isinstance(selection, FieldNode):
                total += self._field(selection, parent)
            elif isinstance(selection, InlineFragmentNode):
                inner = self._type(selection.type_condition, parent)
                total += self.selections(selection.selection_set, inner)
            elif isinstance(selection, FragmentSpreadNode):
                total += self._fragment(selection.name.value)
        return total

    def _fragment(self, name: str) -> int:
        if name not in self.costs:
            self.costs[name] = 0  # validation refuses cycles; this only ends one
            fragment = self.fragments[name]
            inner = self._type(fragment.type_condition, None)
            self.costs[name] = self.selections(fragment.selection_set, inner)
        return self.costs[name]

    def _type(
        self, condition: NamedTypeNode | None, parent: GraphQLNamedType | None
    ) -> GraphQLNamedType | None:
        return parent if condition is None else self.schema.get_type(condition.name.value)

    def _field(self, node: FieldNode, parent: GraphQLNamedType | None) -> int:
        if not isinstance(parent, GraphQLObjectType | GraphQLInterfaceType):
            return 0  # `__typename` of a union
        field = parent.fields.get(node.name.value)
        if field is None:
            return 0  # `__typename`, `__schema`, `__type`
        inner = 0
        if node.selection_set is not None:
            inner = self.selections(node.selection_set, get_named_type(field.type))
        size = self._size(node, field, parent)
        return inner if size is None else size * (1 + inner)

    def _size(
        self, node: FieldNode, field: GraphQLField, parent: GraphQLObjectType | GraphQLInterfaceType
    ) -> int | None:
        """How many objects the field returns, or None for one object (or a connection's page,
        already counted by the connection)."""
        if "first" in field.args:
            arguments = get_argument_values(field, node, self.variables)
            # `last` counts as `first` does; null or absent, the resolvers use the default
            # (both at once the resolver refuses: count the larger).
            given = [arguments.get(name) for name in ("first", "last")]
            sizes = [size for size in given if size is not None] or [DEFAULT_FIRST]
            if not all(isinstance(size, int) for size in sizes):
                return LIST_SIZE
            # Over MAX_FIRST the resolver refuses it (BAD_USER_INPUT): count what it allows.
            return min(max(0, *map(int, sizes)), MAX_FIRST)
        listed = get_nullable_type(field.type)
        if not isinstance(listed, GraphQLList) or not is_composite_type(get_named_type(listed)):
            return None
        if "pageInfo" in parent.fields:
            return None
        ids = get_argument_values(field, node, self.variables).get("ids")
        return len(ids) if isinstance(ids, list) else LIST_SIZE
