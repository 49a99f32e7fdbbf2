"""Plain fields resolved without Strawberry's per-field wrapper.

Strawberry wraps every field's resolver to convert its arguments into Python values, build
its `Info` and run field extensions. A field with no arguments and no extensions needs none
of that: an attribute is read straight from the record, and a resolver that takes only the
parent (and `info`) is called directly. Most fields of a query are such fields (titles, ids,
a package's category), so this halves the time a large query spends per field. Fields with
arguments (connections, lookups) keep Strawberry's resolver.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from graphql import GraphQLObjectType, GraphQLResolveInfo
from strawberry import Schema
from strawberry.types.base import StrawberryObjectDefinition
from strawberry.types.field import StrawberryField

from gateway.internals import graphql_schema, info_maker, resolver_function

Info = GraphQLResolveInfo[Any]
Resolve = Callable[[Any, Info], Any]


def use_direct_resolvers(schema: Schema) -> None:
    """Give every plain field of `schema`'s object types a direct resolver."""
    for name, graphql_type in graphql_schema(schema).type_map.items():
        definition = schema.get_type_by_name(name)
        if not isinstance(graphql_type, GraphQLObjectType) or not isinstance(
            definition, StrawberryObjectDefinition
        ):
            continue
        for field in definition.fields:
            resolve = _direct(schema, field)
            if resolve is not None:
                graphql_type.fields[
                    schema.config.name_converter.get_graphql_name(field)
                ].resolve = resolve


def _direct(schema: Schema, field: StrawberryField) -> Resolve | None:
    """The direct resolver of a plain field; None for a field that needs Strawberry's."""
    if field.extensions or field.permission_classes or field.arguments:
        return None
    resolver = field.base_resolver
    if resolver is None:
        name = field.python_name

        def attribute(source: Any, info: Info) -> Any:
            return getattr(source, name)

        return attribute
    root = resolver.root_parameter or resolver.parent_parameter
    info = resolver.info_parameter
    wanted = {root.name} | ({info.name} if info else set()) if root else set()
    if root is None or set(resolver.signature.parameters) != wanted:
        return None  # a resolver of other parameters (self, ones with defaults): Strawberry's
    function, root_name = resolver_function(resolver), root.name
    if info is None:

        def from_parent(source: Any, graphql_info: Info) -> Any:
            return function(**{root_name: source})

        return from_parent
    make_info, info_name = info_maker(schema, field), info.name

    def with_info(source: Any, graphql_info: Info) -> Any:
        return function(**{root_name: source, info_name: make_info(graphql_info)})

    return with_info
