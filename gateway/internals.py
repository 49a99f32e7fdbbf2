"""What the gateway needs of Strawberry and graphql-core that neither offers publicly.

Nothing else in the gateway touches their private names or relies on their wording: each contact
is here, tests/test_internals.py fails when an upgrade changes one, and pyproject.toml pins both
libraries to the minor versions these were checked against.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any

import strawberry
from graphql import (
    ASTValidationRule,
    DocumentNode,
    GraphQLError,
    GraphQLResolveInfo,
    GraphQLSchema,
    GraphQLSyntaxError,
    VariableDefinitionNode,
)
from graphql.execution.get_variable_signature import (
    GraphQLVariableSignature,
    get_variable_signature,
)
from graphql.execution.values import VariableValues, VariableValueSource, coerce_variable_values
from graphql.validation.rules import overlapping_fields_can_be_merged
from graphql.validation.validate import ValidationAbortedError
from strawberry.schema.config import StrawberryConfig
from strawberry.schema.exceptions import CannotGetOperationTypeError
from strawberry.schema.schema import validate_document
from strawberry.types import ExecutionContext
from strawberry.types.field import StrawberryField
from strawberry.types.fields.resolver import StrawberryResolver

MakeInfo = Callable[[GraphQLResolveInfo[Any]], strawberry.Info[Any, Any]]


def graphql_schema(schema: strawberry.Schema) -> GraphQLSchema:
    """The graphql-core schema Strawberry built, and executes."""
    return schema._schema


def info_maker(schema: strawberry.Schema, field: StrawberryField) -> MakeInfo:
    """What makes, from graphql-core's resolve info, the `Info` Strawberry gives the resolver
    of `field`: Strawberry builds it from two private fields."""
    info_class = schema.config.info_class

    def make(info: GraphQLResolveInfo[Any]) -> strawberry.Info[Any, Any]:
        return info_class(_raw_info=info, _field=field)

    return make


def resolver_function(resolver: StrawberryResolver[Any]) -> Callable[..., Any]:
    """The function a resolver wraps: the resolver object's own call checks and repacks the
    arguments first, which costs more than most resolvers take."""
    function: Callable[..., Any] = resolver.wrapped_func  # type: ignore[assignment]
    return function


def allow_types_of_one_name(config: StrawberryConfig) -> None:
    """Let a subclass stand for its base under the same GraphQL name (the federation entities),
    which Strawberry otherwise refuses as two types of one name."""
    config._unsafe_disable_same_type_validation = True


def is_over_token_limit(error: GraphQLSyntaxError) -> bool:
    """Whether the parser stopped at its `max_tokens`: graphql-core says so in words only."""
    return "Document contains more than" in error.message


def is_nested_too_deeply(error: GraphQLSyntaxError) -> bool:
    """Whether the parser stopped at its nesting limit: graphql-core says so in words only."""
    return "Document is nested too deeply" in error.message


def variables_leniently(
    schema: GraphQLSchema, definitions: Collection[VariableDefinitionNode], inputs: dict[str, Any]
) -> VariableValues:
    """The variables `inputs` gives, coerced, those missing or of the wrong type left out (the
    public `get_variable_values` gives the errors alone): graphql-core's private helper."""
    return coerce_variable_values(schema, definitions, inputs, lambda error: None)


VariableSignature = GraphQLVariableSignature


def variable_signature(
    schema: GraphQLSchema, definition: VariableDefinitionNode
) -> VariableSignature | GraphQLError:
    """A variable's name, type and default as graphql-core coerces it (or its error)."""
    return get_variable_signature(schema, definition)


def variable_values(
    given: list[tuple[VariableSignature, Any]], coerced: dict[str, Any]
) -> VariableValues:
    """Coerced variables as graphql-core's `get_variable_values` gives them: `coerced`, and
    the source of each (its signature, and its value as given, `Undefined` where it was not
    given), which graphql-core reads when a literal names a variable."""
    sources = {signature.name: VariableValueSource(signature, value) for signature, value in given}
    return VariableValues(sources, coerced)


def unknown_operation_name(refusal: Exception) -> str | None:
    """The operation name a refusal of Strawberry's view says the document lacks, or None for
    any other refusal: Strawberry words it with the name quoted whole, and keeps the name only
    on the exception the refusal was raised from."""
    cause = refusal.__cause__
    return cause.operation_name if isinstance(cause, CannotGetOperationTypeError) else None


def provided_operation_name(context: ExecutionContext) -> str | None:
    """The operation name the request gave, if any: Strawberry's `operation_name` is the name of
    the document's first operation when the request gave none, and keeps the given one private."""
    return context._provided_operation_name


def strawberry_validation(
    schema: GraphQLSchema, document: DocumentNode, rules: tuple[type[ASTValidationRule], ...]
) -> list[GraphQLError]:
    """The errors Strawberry's own validation finds: graphql-core's with `rules`, and the
    rules Strawberry adds to every validation (of its `Maybe` and of `@oneOf` inputs)."""
    return validate_document(schema, document, rules)


def limit_field_merging(budget: int) -> None:
    """Bound the work of graphql-core's check that fields of one response name merge, for
    every validation in the process: the check compares such fields pairwise, so a few
    thousand tokens of one field repeated keep it busy for seconds. Past `budget` units of
    work, the validation ends with one error (`is_validation_cut_short`). The rule's module
    documents this attribute as the way to set it."""
    overlapping_fields_can_be_merged.MAX_COMPLEXITY_BUDGET = budget


def is_validation_cut_short(error: GraphQLError) -> bool:
    """Whether validation stopped at a bound of its work (`limit_field_merging`, or fragments
    nested past the interpreter's recursion), rather than at its count of errors: graphql-core
    says so in words only."""
    return isinstance(error, ValidationAbortedError) and error.message == "Validation aborted."
