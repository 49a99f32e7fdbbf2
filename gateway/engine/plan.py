"""Compiling an operation into a plan: for each selection, its leaves and its batched fields.

Fields are collected as graphql-core collects them (fragments spread, inline fragments applied
to the type they match, fields merged by response key, `@skip`/`@include` decided by the
variables), so the plan selects what graphql-core's executor would. A selection of an abstract
type (`Node`) is compiled once for each type it may turn out to be.

`compile_plan` gives None for an operation the engine does not cover: one that reaches a field
it does not know (introspection, federation), an argument it does not know, a directive other
than `@skip` and `@include`, or a type it leaves to graphql-core.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, NamedTuple

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLField,
    GraphQLIncludeDirective,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLSchema,
    GraphQLSkipDirective,
    InlineFragmentNode,
    ListValueNode,
    ObjectValueNode,
    OperationDefinitionNode,
    OperationType,
    SelectionSetNode,
    ValueNode,
    VariableNode,
    get_argument_values,
    get_directive_values,
    get_named_type,
    get_nullable_type,
    is_abstract_type,
    is_object_type,
    type_from_ast,
)
from graphql.execution import VariableValues

from gateway.engine.fields import Batched, Fields, Read, Shape
from gateway.engine.leaves import Complete, Completion, completion

_CONDITIONS = frozenset({GraphQLSkipDirective.name, GraphQLIncludeDirective.name})
_CONNECTION_PARTS = frozenset({"edges", "nodes", "pageInfo", "totalCount", "__typename"})
_EDGE_PARTS = frozenset({"cursor", "node", "__typename"})
_PAGE_INFO_PARTS = frozenset(
    {"hasNextPage", "hasPreviousPage", "startCursor", "endCursor", "__typename"}
)

Conditional = FieldNode | InlineFragmentNode | FragmentSpreadNode


class Leaf(NamedTuple):
    """A field read from the record and completed on the spot (`__typename` too): a value
    of type `native` as it is, any other by `complete`."""

    key: str
    read: Read
    native: type | None
    complete: Complete
    nullable: bool
    nodes: tuple[FieldNode, ...]


class ByVariable(NamedTuple):
    """An argument given as a variable: its key among the arguments, the variable's name,
    and whether the argument is non-null."""

    key: str
    variable: str
    non_null: bool


@dataclass(frozen=True, slots=True, eq=False)
class Loaded:
    """A field answered through the loaders, for all the parents of a level at once."""

    key: str
    field: str  # "Parent.name", for messages
    nodes: tuple[FieldNode, ...]
    definition: GraphQLField
    batched: Batched
    nullable: bool
    item_nullable: bool  # the items of a list (Shape.MANY)
    selections: dict[str, Selection]  # by the type the object turns out to be
    connection: Connection | None = None  # Shape.PAGE
    count: Complete | None = None  # Shape.COUNT
    # Its arguments as far as every run has them the same (`_arguments`), or None; the
    # arguments given as variables complete them at each run.
    arguments: dict[str, Any] | None = None
    variables: tuple[ByVariable, ...] = ()


@dataclass(frozen=True, slots=True, eq=False)
class Selection:
    """What to answer for each object of one type at one place of the response."""

    type_name: str
    empty: dict[str, None]  # its keys in order: each object is a copy (never changed itself)
    leaves: tuple[Leaf, ...]
    loaded: tuple[Loaded, ...]


@dataclass(frozen=True, slots=True, eq=False)
class Connection:
    """The selection of a connection: parts computed from its page and its paging."""

    type_name: str
    empty: dict[str, None]  # its keys in order, as `Selection.empty`
    total: tuple[str, ...]  # keys of `totalCount`
    typename: tuple[str, ...]  # keys of `__typename`
    page_info: tuple[PageInfo, ...]
    edges: tuple[Edges, ...]
    nodes: tuple[tuple[str, Selection], ...]


@dataclass(frozen=True, slots=True, eq=False)
class PageInfo:
    key: str
    type_name: str
    parts: tuple[tuple[str, str], ...]  # (response key, field name)


@dataclass(frozen=True, slots=True, eq=False)
class Edges:
    key: str
    type_name: str
    parts: tuple[tuple[str, str], ...]  # (response key, field name) of `cursor`, `__typename`
    node: tuple[tuple[str, Selection], ...]  # (response key, selection) of `node`
    empty: dict[str, None]  # an edge's keys in order, as `Selection.empty`


@dataclass(frozen=True, slots=True, eq=False)
class Plan:
    root: Selection
    fields: int  # compiled, all selections together
    selections: int  # compiled: with `fields`, what the plan weighs in memory


class NotCovered(Exception):
    """The operation needs something the engine leaves to graphql-core."""


def conditions(
    document: DocumentNode, operation: OperationDefinitionNode
) -> tuple[Conditional, ...]:
    """The selections of the operation (its fragments included) that `@skip` or `@include`
    decide, in a fixed order: their values pick one of the operation's plans."""
    found: list[Conditional] = []
    _conditioned(operation.selection_set, _fragments(document), set(), found)
    return tuple(found)


def _conditioned(
    selection_set: SelectionSetNode,
    fragments: dict[str, FragmentDefinitionNode],
    seen: set[str],
    found: list[Conditional],
) -> None:
    """Add to `found` the selections under `selection_set` that `@skip` or `@include` decide.
    (A function of the module's: nested, calling itself, it would be a cycle to collect.)"""
    for selection in selection_set.selections:
        assert isinstance(selection, Conditional)
        if any(d.name.value in _CONDITIONS for d in selection.directives or ()):
            found.append(selection)
        if isinstance(selection, FragmentSpreadNode):
            name = selection.name.value
            if name not in seen and name in fragments:
                seen.add(name)
                _conditioned(fragments[name].selection_set, fragments, seen, found)
        elif selection.selection_set is not None:
            _conditioned(selection.selection_set, fragments, seen, found)


def included(selection: Conditional, variables: VariableValues) -> bool:
    """Whether `@skip` and `@include` keep a selection, as graphql-core decides it."""
    skip = get_directive_values(GraphQLSkipDirective, selection, variables)
    if skip is not None and skip["if"]:
        return False
    include = get_directive_values(GraphQLIncludeDirective, selection, variables)
    return include is None or bool(include["if"])


def compile_plan(
    schema: GraphQLSchema,
    fields: Fields,
    document: DocumentNode,
    operation: OperationDefinitionNode,
    excluded: frozenset[int],
) -> Plan | None:
    """The plan of a query operation, with the selections in `excluded` (by `id`) left out as
    their `@skip`/`@include` decided; None when the engine does not cover it."""
    if operation.operation is not OperationType.QUERY or schema.query_type is None:
        return None
    compiler = _Compiler(schema, fields, _fragments(document), excluded)
    try:
        root = compiler.selection(schema.query_type, [operation.selection_set])
    except NotCovered:
        return None
    return Plan(root, compiler.compiled, compiler.selections)


def _fragments(document: DocumentNode) -> dict[str, FragmentDefinitionNode]:
    return {
        node.name.value: node
        for node in document.definitions
        if isinstance(node, FragmentDefinitionNode)
    }


class _Compiler:
    def __init__(
        self,
        schema: GraphQLSchema,
        fields: Fields,
        fragments: dict[str, FragmentDefinitionNode],
        excluded: frozenset[int],
    ) -> None:
        self.schema = schema
        self.fields = fields
        self.fragments = fragments
        self.excluded = excluded
        self.compiled = 0  # fields
        self.selections = 0

    # -- collecting fields, as graphql-core does --------------------------------------------

    def collect(
        self, type_: GraphQLObjectType, selection_sets: Iterable[SelectionSetNode]
    ) -> dict[str, list[FieldNode]]:
        collected: dict[str, list[FieldNode]] = {}
        visited: set[str] = set()
        for selection_set in selection_sets:
            self._visit(type_, selection_set, collected, visited)
        return collected

    def _visit(
        self,
        type_: GraphQLObjectType,
        selection_set: SelectionSetNode,
        collected: dict[str, list[FieldNode]],
        visited: set[str],
    ) -> None:
        for selection in selection_set.selections:
            if not self._kept(selection):
                continue
            if isinstance(selection, FieldNode):
                key = selection.alias.value if selection.alias else selection.name.value
                collected.setdefault(key, []).append(selection)
            elif isinstance(selection, InlineFragmentNode):
                if self._applies(selection.type_condition, type_):
                    self._visit(type_, selection.selection_set, collected, visited)
            elif isinstance(selection, FragmentSpreadNode):
                fragment = self.fragments.get(selection.name.value)
                if fragment is None or not self._applies(fragment.type_condition, type_):
                    continue
                if fragment.name.value in visited:
                    continue
                visited.add(fragment.name.value)
                self._visit(type_, fragment.selection_set, collected, visited)

    def _kept(self, selection: Any) -> bool:
        directives = selection.directives or ()
        if any(directive.name.value not in _CONDITIONS for directive in directives):
            raise NotCovered
        return not directives or id(selection) not in self.excluded

    def _applies(self, condition: Any, type_: GraphQLObjectType) -> bool:
        if condition is None:
            return True
        conditional = type_from_ast(self.schema, condition)
        if conditional is type_:
            return True
        return is_abstract_type(conditional) and self.schema.is_sub_type(conditional, type_)

    # -- compiling ----------------------------------------------------------------------------

    def selection(
        self, type_: GraphQLObjectType, selection_sets: Iterable[SelectionSetNode]
    ) -> Selection:
        leaves: list[Leaf] = []
        loaded: list[Loaded] = []
        collected = self.collect(type_, selection_sets)
        self.compiled += len(collected)
        self.selections += 1
        for key, nodes in collected.items():
            name = nodes[0].name.value
            if name == "__typename":
                typename = Leaf(key, _constant(type_.name), str, _same, False, tuple(nodes))
                leaves.append(typename)
                continue
            definition = type_.fields.get(name)
            if definition is None:  # `__schema`, `__type`
                raise NotCovered
            where = f"{type_.name}.{name}"
            read = self.fields.leaves.get((type_.name, name))
            if read is not None:
                completes = self._completion(definition, where)
                if completes is None or definition.args:
                    raise NotCovered
                nullable = not isinstance(definition.type, GraphQLNonNull)
                leaves.append(Leaf(key, read, *completes, nullable, tuple(nodes)))
                continue
            batched = self.fields.batched.get((type_.name, name))
            if batched is None or not set(definition.args) <= batched.arguments:
                raise NotCovered
            loaded.append(self._loaded(key, where, nodes, definition, batched))
        return Selection(type_.name, dict.fromkeys(collected), tuple(leaves), tuple(loaded))

    def _loaded(
        self,
        key: str,
        where: str,
        nodes: list[FieldNode],
        definition: GraphQLField,
        batched: Batched,
    ) -> Loaded:
        nullable = not isinstance(definition.type, GraphQLNonNull)
        inner = get_nullable_type(definition.type)
        shape = batched.shape
        common = (key, where, tuple(nodes), definition, batched, nullable)
        arguments, variables = _arguments(definition, nodes[0])
        if shape is Shape.COUNT:
            count = self._completion(definition, where)
            if count is None:
                raise NotCovered
            return Loaded(
                *common, False, {}, count=count.complete, arguments=arguments, variables=variables
            )
        if shape is Shape.PAGE:
            connection = self._connection(inner, nodes)
            return Loaded(
                *common, False, {}, connection=connection, arguments=arguments, variables=variables
            )
        item_nullable = False
        if shape is Shape.MANY:
            item = getattr(inner, "of_type", None)
            if item is None or get_nullable_type(item) is not get_named_type(item):
                raise NotCovered  # not a list of objects
            item_nullable = not isinstance(item, GraphQLNonNull)
        named = get_named_type(definition.type)
        return Loaded(
            *common,
            item_nullable,
            self._by_type(named, nodes),
            arguments=arguments,
            variables=variables,
        )

    def _completion(self, definition: GraphQLField, where: str) -> Completion | None:
        """How the leaf `where` ("Parent.name") completes: made once for all plans."""
        known = self.fields.completions
        if where not in known:
            known[where] = completion(definition.type, where)
        return known[where]

    def _by_type(self, named: Any, nodes: list[FieldNode]) -> dict[str, Selection]:
        """The sub-selection of `nodes` for each object type a value of `named` may be."""
        selection_sets = [node.selection_set for node in nodes if node.selection_set]
        possible = self.schema.get_possible_types(named) if is_abstract_type(named) else [named]
        if not all(is_object_type(type_) for type_ in possible):
            raise NotCovered
        return {type_.name: self.selection(type_, selection_sets) for type_ in possible}

    def _connection(self, type_: Any, nodes: list[FieldNode]) -> Connection:
        if not is_object_type(type_):
            raise NotCovered
        collected = self._parts(type_, nodes, _CONNECTION_PARTS)
        total, typename, page_info, edges, listed = [], [], [], [], []
        for key, parts in collected.items():
            name = parts[0].name.value
            if name == "totalCount":
                total.append(key)
                continue
            if name == "__typename":
                typename.append(key)
                continue
            field_type = get_named_type(type_.fields[name].type)
            if name == "pageInfo":
                info = self._parts(field_type, parts, _PAGE_INFO_PARTS)
                page_info.append(PageInfo(key, field_type.name, _names(info)))
            elif name == "edges":
                edges.append(self._edges(key, field_type, parts))
            else:
                listed.append((key, self._by_type(field_type, parts)))
        return Connection(
            type_.name,
            dict.fromkeys(collected),
            tuple(total),
            tuple(typename),
            tuple(page_info),
            tuple(edges),
            tuple((key, _only(selections)) for key, selections in listed),
        )

    def _edges(self, key: str, type_: Any, nodes: list[FieldNode]) -> Edges:
        collected = self._parts(type_, nodes, _EDGE_PARTS)
        parts = tuple((k, n) for k, n in _names(collected) if n != "node")
        node = tuple(
            (k, _only(self._by_type(get_named_type(type_.fields["node"].type), found)))
            for k, found in collected.items()
            if found[0].name.value == "node"
        )
        return Edges(key, type_.name, parts, node, dict.fromkeys(collected))

    def _parts(
        self, type_: Any, nodes: list[FieldNode], known: frozenset[str]
    ) -> dict[str, list[FieldNode]]:
        """The fields selected of a connection's own type (`known` are those it answers)."""
        if not is_object_type(type_):
            raise NotCovered
        collected = self.collect(
            type_, [node.selection_set for node in nodes if node.selection_set]
        )
        for found in collected.values():
            if found[0].name.value not in known or any(node.arguments for node in found):
                raise NotCovered
        return collected


def _names(collected: dict[str, list[FieldNode]]) -> tuple[tuple[str, str], ...]:
    return tuple((key, nodes[0].name.value) for key, nodes in collected.items())


def _only(selections: dict[str, Selection]) -> Selection:
    """The selection of a list that holds objects of one type only (a connection's)."""
    if len(selections) != 1:
        raise NotCovered
    [selection] = selections.values()
    return selection


@functools.cache
def _constant(value: str) -> Read:
    """What reads `__typename` of a type named `value`: one for all plans (see _completion)."""
    return lambda record: value


def _same(value: Any) -> Any:
    return value


def _arguments(
    definition: GraphQLField, node: FieldNode
) -> tuple[dict[str, Any] | None, tuple[ByVariable, ...]]:
    """A field's arguments as graphql-core coerces them, as far as they are the same for every
    run of the plan: all of them where they name no variable; where some are variables
    themselves (`ByVariable`), the others, and the defaults of those (graphql-core's when a
    variable is not given). (None, ()) where a variable is nested in a value or stands for a
    required argument, or where coercing fails: each run then coerces them, and reports what
    fails."""
    given = node.arguments or ()
    by_variable, rest = [], []
    for argument in given:
        name, value = argument.name.value, argument.value
        if isinstance(value, VariableNode) and name in definition.args:
            found = definition.args[name]
            key = found.out_name or name
            non_null = isinstance(found.type, GraphQLNonNull)
            by_variable.append(ByVariable(key, value.name.value, non_null))
        elif _names_a_variable(value):
            return None, ()
        else:
            rest.append(argument)
    if by_variable:
        node = FieldNode(name=node.name, arguments=tuple(rest))
    try:
        return get_argument_values(definition, node), tuple(by_variable)
    except Exception:
        return None, ()


def _names_a_variable(value: ValueNode) -> bool:
    if isinstance(value, VariableNode):
        return True
    if isinstance(value, ListValueNode):
        return any(map(_names_a_variable, value.values))
    if isinstance(value, ObjectValueNode):
        return any(_names_a_variable(field.value) for field in value.fields)
    return False
