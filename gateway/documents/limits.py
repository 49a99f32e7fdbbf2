"""Query limits: what one document may ask of the gateway, refused before anything runs.

Tokens are counted by graphql-core's parser; depth, aliases and introspection are Strawberry's
and graphql-core's validation rules, their errors reported as ours (gateway/errors.py). Before
validation, the document is measured as if its fragments were written out where they are
spread (measure.py): its size and nesting, the fields of each selection set (checking that
fields of one name merge compares them pairwise) and introspection's root fields, once each per
operation.

A document not seen before is read first (reading.py: parsed and measured, a long one in a
process of its own), and refused if that says so; parsing it again and validating it run off
the event loop, within the request's time: a document at the token limit takes tens of
milliseconds to parse, and validation's work is bounded too (`FIELD_MERGING_BUDGET`). A document
that passed is made light (off the event loop too) and kept (document_cache.py), by its text, so
that the next time it comes it needs none of that; one refused is not kept, and is refused again
whenever it comes. The cost (cost.py) depends on the variables, so it is estimated after
validation, just before execution (what one HTTP request may take, its body and its time, is
request_limits.py's).
`document_errors` holds a document to all the document limits at once, whatever its variables:
`gateway documents check`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass

from graphql import (
    ASTValidationRule,
    DocumentNode,
    GraphQLError,
    GraphQLSchema,
    NoSchemaIntrospectionCustomRule,
    OperationDefinitionNode,
    ValidationContext,
    specified_rules,
)
from strawberry.extensions import (
    AddValidationRules,
    MaxAliasesLimiter,
    QueryDepthLimiter,
    SchemaExtension,
)

from gateway.documents.cost import Costs, largest_cost, too_costly
from gateway.documents.document_cache import DocumentCache, lighten
from gateway.documents.measure import check_spread, parsed
from gateway.documents.offload import off_the_loop
from gateway.documents.reading import Readings
from gateway.errors import (
    IntrospectionDisabled,
    OperationNameRequired,
    QueryRefused,
    QueryTooComplex,
    QueryTooDeep,
    TooManyAliases,
    located,
    reported_as,
)
from gateway.internals import (
    graphql_schema,
    is_validation_cut_short,
    limit_field_merging,
    provided_operation_name,
    strawberry_validation,
)

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


def extensions(
    limits: QueryLimits, documents: DocumentCache, readings: Readings
) -> list[Extension]:
    """The schema extensions that enforce `limits`, one instance of each per request, all
    reading documents through `readings` and keeping those that passed in `documents`."""
    rules = _validation_rules(limits)
    costs = Costs(limits.max_cost)
    return [
        lambda: AddValidationRules(rules),
        lambda: _Checked(limits, documents, readings),
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
    """A document read (reading.py) and refused if that says so, else parsed and validated on a
    thread of its own, so that the event loop goes on serving meanwhile and the request's
    deadline holds; or, if it passed before, as it was. Of several operations, the request must
    name the one to run (`OperationNameRequired`).

    Strawberry's depth and alias limiters follow every spread of every fragment: a few hundred
    tokens of fragments spreading others twice would keep them busy for hours. They also fail
    on an empty selection set, which graphql-core's parser now accepts. So the reading measures
    the document first, with its fragments spread (measure.py).
    """

    def __init__(self, limits: QueryLimits, documents: DocumentCache, readings: Readings) -> None:
        super().__init__()
        self.limits = limits
        self.documents = documents
        self.readings = readings
        self.known = False  # the document passed before: it needs no validation

    async def on_parse(self) -> AsyncIterator[None]:
        context = self.execution_context
        query = context.query
        assert query is not None  # Strawberry refuses an operation without it first
        document = self.documents.get(query)
        self.known = document is not None
        if document is None:
            reading = await self.readings.get(query)
            if reading.refusal is not None:
                raise reading.refusal.error(query)
            document = await off_the_loop(parsed, query, self.limits.max_tokens)
            if reading.valid:  # validated as it was read, in the documents' process
                await self._keep(query, document)
                self.known = True
        context.graphql_document = document
        # Strawberry would run the first; refused where Strawberry refuses an unknown name.
        if provided_operation_name(context) is None and _operations(document) > 1:
            raise OperationNameRequired
        yield

    async def _keep(self, query: str, document: DocumentNode) -> None:
        """Keep a valid `document`, made light and weighed off the event loop."""
        weight = await off_the_loop(lighten, query, document)
        self.documents.keep(query, document, weight)

    async def on_validate(self) -> AsyncIterator[None]:
        context = self.execution_context
        errors: list[GraphQLError] = []
        if not self.known:
            assert context.query is not None and context.graphql_document is not None
            schema = graphql_schema(context.schema)
            rules = context.validation_rules
            document = context.graphql_document
            errors = await off_the_loop(validated, schema, document, rules)
            if not errors:
                await self._keep(context.query, document)
        context.pre_execution_errors = errors  # Strawberry validates no more
        yield


def _parsed(text: str, limits: QueryLimits) -> DocumentNode:
    """`text` parsed and measured (measure.py)."""
    document = parsed(text, limits.max_tokens)
    check_spread(document, limits.max_tokens, limits.max_selections)
    return document


def _operations(document: DocumentNode) -> int:
    return sum(isinstance(node, OperationDefinitionNode) for node in document.definitions)


def validation_rules(limits: QueryLimits) -> tuple[type[ASTValidationRule], ...]:
    """All the rules a document is validated by under `limits`, as a request's validation
    runs them: graphql-core's, and the limits' own."""
    return (*specified_rules, *_validation_rules(limits))


def validated(
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
    errors = validated(schema, document, validation_rules(limits))
    if errors:
        return errors
    for operation in document.definitions:
        if isinstance(operation, OperationDefinitionNode):
            cost = largest_cost(schema, document, operation)
            if cost > limits.max_cost:
                errors.append(located(too_costly(cost, limits.max_cost)))
    return errors
