"""The cost limit: the most objects an operation may return, estimated before it runs.

The estimate depends on the variables, so it is made after validation, just before execution,
for each operation; the operations of one request (a batch's together) share the limit
(`Spending`). Introspection counts as any other field does, its lists by the schema's own sizes.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import orjson
from cachetools import LRUCache
from graphql import (
    BREAK,
    ArgumentNode,
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
    ListValueNode,
    NamedTypeNode,
    ObjectValueNode,
    OperationDefinitionNode,
    SchemaMetaFieldDef,
    SelectionSetNode,
    TypeMetaFieldDef,
    ValueNode,
    VariableNode,
    Visitor,
    get_argument_values,
    get_named_type,
    get_nullable_type,
    get_operation_ast,
    get_variable_values,
    is_abstract_type,
    is_composite_type,
    is_enum_type,
    is_input_object_type,
    type_from_ast,
    visit,
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

# The arguments whose values the estimate reads.
_SIZES = frozenset({"first", "last", "ids"})
# The root fields of introspection, which no type lists among its own fields.
_META_FIELDS = {"__schema": SchemaMetaFieldDef, "__type": TypeMetaFieldDef}


@dataclass(slots=True)
class Spending:
    """The estimated cost of the operations one request has run so far: the operations of a
    batch share the cost limit, or a batch would multiply it."""

    cost: int = 0


class Costs:
    """The cost limit, with the estimates of the documents seen lately, by document text,
    operation and variables: a client sends the same few queries again and again, and
    estimating one walks it whole."""

    SIZE = 1024

    def __init__(self, max_cost: int) -> None:
        self.max_cost = max_cost
        self._known: LRUCache[bytes, int] = LRUCache(self.SIZE)  # by digest: 24 bytes a key

    def check(
        self,
        schema: GraphQLSchema,
        query: str | None,
        document: DocumentNode,
        operation_name: str | None,
        variables: dict[str, Any] | None,
        spending: Spending,
    ) -> int:
        """Refuse an operation whose estimated cost, with what its request has spent before
        it, is over the limit; else charge it to the request: its cost."""
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
        return self.charge(cost, spending)

    def charge(self, cost: int, spending: Spending) -> int:
        """Refuse an operation of estimated `cost` if, with what its request has spent before
        it, it is over the limit; else charge it to the request."""
        if spending.cost + cost > self.max_cost:
            raise too_costly(cost, self.max_cost, spending.cost)
        spending.cost += cost
        return cost


def costs_the_same(document: DocumentNode) -> bool:
    """Whether the estimate of each operation of `document` is the same whatever its (valid)
    variables: no argument the estimate reads (`first`, `last`, `ids`) takes a variable."""
    sized_by_variable = _SizedByVariable()
    visit(document, sized_by_variable)
    # graphql-core's `Visitor` keeps its own bound methods, by kind: a cycle, unless let go.
    sized_by_variable.enter_leave_map.clear()
    return not sized_by_variable.found


class _SizedByVariable(Visitor):
    found = False

    def enter_argument(self, node: ArgumentNode, *_: object) -> object:
        if node.name.value in _SIZES and _takes_variable(node.value):
            self.found = True
            return BREAK
        return None


def _takes_variable(value: ValueNode) -> bool:
    if isinstance(value, VariableNode):
        return True
    if isinstance(value, ListValueNode):
        return any(_takes_variable(item) for item in value.values)
    if isinstance(value, ObjectValueNode):
        return any(_takes_variable(field.value) for field in value.fields)
    return False


def too_costly(cost: int, max_cost: int, spent: int = 0) -> QueryTooCostly:
    """The refusal of an operation of estimated `cost`, after its request's others `spent`."""
    before = f" (after {spent} for the batch's operations before it)" if spent else ""
    return QueryTooCostly(
        f"The query's estimated cost is {cost}, over the limit of {max_cost}{before}: ask"
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
    the number of `ids` for `nodes`, 20 otherwise (`search`), and for introspection's lists the
    largest of the schema (its types, the most fields of a type, the most arguments of a
    field...). The operation's cost is the sum over all these fields. Fragments count wherever
    they are spread, aliased fields once each. Variables the operation will refuse make the
    estimate 0: it will not run.
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
        self.introspection = _introspection_sizes(schema)
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
        name = node.name.value
        field = parent.fields.get(name) or _META_FIELDS.get(name)
        if field is None:
            return 0  # `__typename`
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
        introspected = self.introspection.get((parent.name, node.name.value))
        if introspected is not None:
            return introspected
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


@lru_cache(maxsize=8)
def _introspection_sizes(schema: GraphQLSchema) -> dict[tuple[str, str], int]:
    """The most items each list of objects of introspection may hold in `schema`, by its
    type's name and its own."""
    types = schema.type_map.values()
    with_fields = [
        kind for kind in types if isinstance(kind, GraphQLObjectType | GraphQLInterfaceType)
    ]
    fields = [field for kind in with_fields for field in kind.fields.values()]
    return {
        ("__Schema", "types"): len(schema.type_map),
        ("__Schema", "directives"): len(schema.directives),
        ("__Type", "fields"): max((len(kind.fields) for kind in with_fields), default=0),
        ("__Type", "interfaces"): max((len(kind.interfaces) for kind in with_fields), default=0),
        ("__Type", "possibleTypes"): max(
            (len(schema.get_possible_types(kind)) for kind in types if is_abstract_type(kind)),
            default=0,
        ),
        ("__Type", "enumValues"): max(
            (len(kind.values) for kind in types if is_enum_type(kind)), default=0
        ),
        ("__Type", "inputFields"): max(
            (len(kind.fields) for kind in types if is_input_object_type(kind)), default=0
        ),
        ("__Field", "args"): max((len(field.args) for field in fields), default=0),
        ("__Directive", "args"): max(
            (len(directive.args) for directive in schema.directives), default=0
        ),
    }
