"""The exported SDL matches the code, and the code keeps the public contract."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from graphql import (
    GraphQLEnumType,
    GraphQLInterfaceType,
    GraphQLObjectType,
    GraphQLSchema,
    build_schema,
)

from gateway.compose import schema_for
from gateway.config import Settings
from gateway.internals import graphql_schema

ROOT = Path(__file__).resolve().parent.parent
CONTRACT = ROOT.parent / "shared" / "api-contract.graphql"

schema = schema_for(Settings())


def test_schema_graphql_is_the_exported_sdl() -> None:
    exported = (ROOT / "schema.graphql").read_text()
    assert exported.strip() == schema.as_str().strip(), (
        "schema.graphql is stale: run `gateway export-schema > schema.graphql`"
    )


def _contract() -> GraphQLSchema:
    if not CONTRACT.exists():
        reason = f"the contract is not beside the project: {CONTRACT}"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return build_schema(CONTRACT.read_text())


def test_every_contract_type_field_and_argument_is_served_with_its_type() -> None:
    contract = _contract()
    ours = graphql_schema(schema)
    checked = 0
    for name, expected in contract.type_map.items():
        if name.startswith("__"):
            continue
        actual = ours.type_map.get(name)
        assert actual is not None, f"type {name} is missing"
        assert isinstance(actual, type(expected)), f"{name} changed kind"
        if not isinstance(expected, GraphQLObjectType | GraphQLInterfaceType):
            continue
        assert isinstance(actual, GraphQLObjectType | GraphQLInterfaceType)
        assert {i.name for i in expected.interfaces} <= {i.name for i in actual.interfaces}
        for field_name, field in expected.fields.items():
            served = actual.fields.get(field_name)
            assert served is not None, f"{name}.{field_name} is missing"
            assert str(served.type) == str(field.type), f"{name}.{field_name} type changed"
            for arg_name, arg in field.args.items():
                assert arg_name in served.args, f"{name}.{field_name}({arg_name}) is missing"
                assert str(served.args[arg_name].type) == str(arg.type)
            for arg_name, arg in served.args.items():
                if arg_name not in field.args:
                    assert not str(arg.type).endswith("!") or arg.default_value is not None, (
                        f"{name}.{field_name}({arg_name}) is a new required argument"
                    )
            checked += 1
    assert checked >= 80  # the loop really walked the contract


def test_enum_values_of_the_contract_are_served() -> None:
    contract = _contract()
    expected = contract.type_map["SearchItemType"]
    actual = graphql_schema(schema).type_map["SearchItemType"]
    assert isinstance(expected, GraphQLEnumType) and isinstance(actual, GraphQLEnumType)
    assert set(expected.values) <= set(actual.values)
