"""What the gateway relies on of Strawberry's and graphql-core's private parts still holds
(gateway/internals.py): each test fails when an upgrade changes one of them."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
import strawberry
from cross_web import HTTPException
from graphql import (
    GraphQLObjectType,
    GraphQLSchema,
    GraphQLSyntaxError,
    OperationDefinitionNode,
    execute_sync,
    parse,
    validate,
)
from strawberry.asgi import GraphQL
from strawberry.exceptions import DuplicatedTypeName
from strawberry.extensions import SchemaExtension
from strawberry.http import GraphQLRequestData
from strawberry.schema.config import StrawberryConfig
from strawberry.types.base import get_object_definition

from gateway.documents.limits import FIELD_MERGING_BUDGET
from gateway.internals import (
    allow_types_of_one_name,
    graphql_schema,
    is_nested_too_deeply,
    is_over_token_limit,
    is_validation_cut_short,
    limit_field_merging,
    provided_operation_name,
    resolver_function,
    strawberry_validation,
    unknown_operation_name,
    variables_leniently,
)
from gateway.schema.direct import use_direct_resolvers


@dataclasses.dataclass
class Record:
    name: str


def _described(root: strawberry.Parent[Record], info: strawberry.Info) -> str:
    """All that a resolver may read of its `Info`."""
    return (
        f"{root.name} {info.field_name} {info.python_name} {info.return_type} {info.path.key}"
        f" {info.context['who']} {info.variable_values} {info.operation.name.value}"  # type: ignore[union-attr]
        f" {len(info.selected_fields)} {info.schema is not None}"
    )


@strawberry.type
class Item:
    name: str
    description: str = strawberry.field(resolver=_described)


@strawberry.type
class Query:
    @strawberry.field
    def item(self) -> Item:
        return Record("one")  # type: ignore[return-value]


DOCUMENT = "query Named($v: Boolean!) { item { name description @include(if: $v) } }"


async def _answer(schema: strawberry.Schema) -> Any:
    result = await schema.execute(DOCUMENT, {"v": True}, context_value={"who": "me"})
    assert result.errors is None, result.errors
    return result.data


async def test_a_direct_resolver_gets_the_info_strawberry_would_give() -> None:
    strawberrys = await _answer(strawberry.Schema(query=Query))
    assert strawberrys["item"]["description"] == (
        "one description description <class 'str'> description me {'v': True} Named 1 True"
    )
    direct = strawberry.Schema(query=Query)
    item = graphql_schema(direct).type_map["Item"]
    assert isinstance(item, GraphQLObjectType)
    wrapped = item.fields["description"].resolve
    use_direct_resolvers(direct)
    assert item.fields["description"].resolve is not wrapped
    assert await _answer(direct) == strawberrys


def test_a_resolvers_function_is_the_one_it_was_given() -> None:
    fields = get_object_definition(Item, strict=True).fields
    [resolver] = [field.base_resolver for field in fields if field.python_name == "description"]
    assert resolver is not None
    assert resolver_function(resolver) is _described


def test_the_graphql_schema_is_the_one_strawberry_executes() -> None:
    graphql = graphql_schema(strawberry.Schema(query=Query))
    assert isinstance(graphql, GraphQLSchema)
    result = execute_sync(graphql, parse("{ item { name } }"))
    assert result.data == {"item": {"name": "one"}}  # Strawberry's resolvers, in graphql-core's


def test_types_of_one_name_are_refused_unless_allowed() -> None:
    @strawberry.type(name="Item")
    class Entity(Item):
        pass

    with pytest.raises(DuplicatedTypeName):
        strawberry.Schema(query=Query, types=[Entity])
    config = StrawberryConfig()
    allow_types_of_one_name(config)
    schema = strawberry.Schema(query=Query, types=[Entity], config=config)
    assert "Item" in graphql_schema(schema).type_map


@pytest.mark.parametrize(
    ("document", "over_tokens", "too_deep"),
    [
        ("{ a b c d }", True, False),
        ("{ a # one\n # two\n # three\n b }", True, False),  # comments count
        ("{ " + "... on Query { " * 250 + "a" + " }" * 250 + " }", False, True),
        ("{ a ", False, False),
        ("{ a(b: [" + "[" * 300 + "]" * 300 + "]) }", False, True),
    ],
)
def test_the_parsers_own_limits_are_told_apart(
    document: str, over_tokens: bool, too_deep: bool
) -> None:
    with pytest.raises(GraphQLSyntaxError) as raised:
        parse(document, max_tokens=3 if over_tokens else None)
    assert is_over_token_limit(raised.value) is over_tokens
    assert is_nested_too_deeply(raised.value) is too_deep


def test_variables_are_coerced_leniently() -> None:
    """Those given are coerced; those missing or of the wrong type are left out, not errors."""

    @strawberry.type
    class Page:
        size: int = 20

    schema = graphql_schema(strawberry.Schema(query=Page))
    operation = parse("query($a: Int!, $b: Int, $c: String!, $d: Int) { size }")
    [definition] = operation.definitions
    assert isinstance(definition, OperationDefinitionNode)
    given = {"a": 100, "b": "not a number"}
    variables = variables_leniently(schema, definition.variable_definitions or (), given)
    assert variables.coerced == {"a": 100}


@pytest.mark.parametrize(
    ("query", "name", "unknown"),
    [
        (DOCUMENT, "Other", "Other"),
        (None, None, None),  # another refusal: no query at all
    ],
)
async def test_strawberrys_refusal_of_an_unknown_operation_name_tells_the_name(
    query: str | None, name: str | None, unknown: str | None
) -> None:
    view = GraphQL[Any, None](strawberry.Schema(query=Query))
    post: Any = SimpleNamespace(method="POST")  # all the view reads of the request
    unread: Any = None
    operation = GraphQLRequestData(query, {"v": True}, name, None)
    with pytest.raises(HTTPException) as refused:
        await view.execute_single(unread, post, unread, {"who": "me"}, None, operation)
    assert refused.value.status_code == 400
    assert unknown_operation_name(refused.value) == unknown


async def test_the_operation_name_a_request_gave_is_told_from_the_first_operations() -> None:
    """Strawberry's `operation_name` is the first operation's name when the request gave none."""
    seen: list[tuple[str | None, str | None]] = []

    class Seeing(SchemaExtension):
        def on_parse(self) -> Iterator[None]:
            yield
            context = self.execution_context
            seen.append((provided_operation_name(context), context.operation_name))

    schema = strawberry.Schema(query=Query, extensions=[Seeing])
    for name in (None, "Second"):
        document = "query First { item { name } } query Second { item { name } }"
        result = await schema.execute(document, operation_name=name)
        assert result.errors is None, result.errors
    assert seen == [(None, "First"), ("Second", "Second")]


@strawberry.input(one_of=True)
class Choice:
    a: int | None = strawberry.UNSET
    b: int | None = strawberry.UNSET


@strawberry.type
class Chosen:
    @strawberry.field
    def pick(self, choice: Choice) -> int:
        return 0


def test_strawberrys_validation_adds_its_own_rules_to_those_given() -> None:
    schema = graphql_schema(strawberry.Schema(query=Chosen))
    assert strawberry_validation(schema, parse("{ pick(choice: { a: 1 }) }"), ()) == []
    [error] = strawberry_validation(schema, parse("{ pick(choice: { a: 1, b: 2 }) }"), ())
    assert "exactly one" in error.message.lower()


def test_the_work_of_checking_that_fields_merge_is_bounded() -> None:
    schema = graphql_schema(strawberry.Schema(query=Query))
    document = parse("{ " + "item { name } " * 100 + "}")
    try:
        limit_field_merging(100)
        [error] = validate(schema, document)
        assert is_validation_cut_short(error)
        limit_field_merging(1_000_000)
        assert validate(schema, document) == []
    finally:
        limit_field_merging(FIELD_MERGING_BUDGET)
    errors = validate(schema, parse("{ " + "nope " * 3 + "}"), max_errors=2)
    assert errors[-1].message.startswith("Too many validation errors")
    assert not any(is_validation_cut_short(error) for error in errors)
