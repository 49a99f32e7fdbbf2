"""The cost limit: the most objects an operation may return, estimated before it runs.

The estimate depends on the variables, so it is made after validation, just before execution.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from typing import Any

import orjson
from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLField,
    GraphQLInt,
    GraphQLInterfaceType,
    GraphQLList,
    GraphQLNamedType,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLSchema,
    InlineFragmentNode,
    NamedTypeNode,
    OperationDefinitionNode,
    SelectionSetNode,
    get_argument_values,
    get_named_type,
    get_nullable_type,
    get_operation_ast,
    get_variable_values,
    is_composite_type,
    type_from_ast,
)
from graphql.execution.values import VariableValues

from gateway.errors import QueryTooCostly
from gateway.internals import variables_leniently

# The most items a connection gives at once (`first` or `last`); the resolvers refuse more.
MAX_FIRST = 100
# What a connection gives when neither `first` nor `last` is given.
DEFAULT_FIRST = 20
# A list of objects that is neither a connection nor `nodes(ids:)`: `search` has at most 20 hits.
LIST_SIZE = 20


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
        cost = self._cost(schema, query, document, operation_name, variables)
        if cost > self.max_cost:
            raise too_costly(cost, self.max_cost)

    def _cost(
        self,
        schema: GraphQLSchema,
        query: str | None,
        document: DocumentNode,
        operation_name: str | None,
        variables: dict[str, Any] | None,
    ) -> int:
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
        return cost


def too_costly(cost: int, max_cost: int) -> QueryTooCostly:
    return QueryTooCostly(
        f"The query's estimated cost is {cost}, over the limit of {max_cost}: ask"
        " for fewer items with `first`, or nest fewer connections"
    )


def largest_cost(
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
