"""The engine: plans kept per document and operation, and operations answered by them.

`Engine` is a schema extension factory (`extensions=[engine]`): Strawberry parses and
validates a document as ever (through its caches and the query limits), then, where graphql-core
would execute the operation, the engine answers it if its plan covers it; otherwise
graphql-core runs it, as it did before the engine. `gateway_execution_total{path}` counts which.

Plans are kept by document text and operation name, with one plan per combination of the
values of the operation's `@skip`/`@include` conditions, up to about `MAX_BYTES` for all,
documents least recently used out first (any client may send new ones). The documents are those
the schema's documents cache keeps, made light and weighed (gateway/documents/document_cache.py): a
document is kept only once Strawberry has validated it under the query limits; the next time it
comes, `execute_known` answers it without Strawberry's pipeline, checking only what depends on
the request: the variables, and the cost limit (by the variables, unless none can change the
estimate: then it is made once).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from graphql import (
    DocumentNode,
    ExecutionResult,
    GraphQLSchema,
    OperationDefinitionNode,
    get_operation_ast,
    get_variable_values,
)
from graphql.execution import VariableValues
from strawberry import Schema
from strawberry.extensions import SchemaExtension
from strawberry.types import ExecutionContext

from gateway.documents.cost import Costs, Spending, costs_the_same
from gateway.documents.document_cache import DocumentCache, lighten
from gateway.engine.fields import Fields, fields_of
from gateway.engine.plan import Conditional, Plan, compile_plan, conditions, included
from gateway.engine.run import run
from gateway.engine.variables import Coercion, coercion
from gateway.errors import (
    BadUserInput,
    QueryTooCostly,
    located,
    reported_as,
)
from gateway.internals import graphql_schema
from gateway.observability import metrics
from gateway.schema import GatewaySchema
from gateway.schema.context import Context

# What the documents and their plans weigh, in all, about; bounded for the garbage collector's
# full collections too, which go through every object kept (document_cache.MAX_BYTES): at most
# some 14,000 objects, or about 130 operations of a frontend's, each with its document (11 to
# 20 KB for bench.load's).
MAX_BYTES = 2 * 2**20
# What a plan weighs, about: each field compiled (a leaf: itself and its nodes' tuple; the
# completions of leaves are shared by all plans, engine/fields.py), each selection (its objects,
# and its field's), the plan. Measured (tracemalloc): 2.5 to 6 KB for bench.load's frontend
# operations, 517 KB for 2,100 fields in 151 selections; this is 5 to 80% more.
FIELD_BYTES = 250
SELECTION_BYTES = 800
PLAN_BYTES = 300
MAX_VARIANTS = 32  # plans of one operation, one per combination of its conditions' values
MAX_COERCION_ERRORS = 50  # as graphql-core's `execute`


@dataclass(slots=True)
class _Operation:
    """An operation of a document, with its plan for each value of its conditions."""

    owner: _Document
    node: OperationDefinitionNode
    conditions: tuple[Conditional, ...]
    coercion: Coercion | None  # its variables at hand, where they are plain scalars
    plans: dict[tuple[bool, ...], Plan | None] = field(default_factory=dict)
    cost: int | None = None  # once estimated, if no variable changes it

    @property
    def covered(self) -> bool:
        """Whether a plan may cover it: it has one, or one per value of its conditions."""
        return self.plans.get(()) is not None or bool(self.conditions)


@dataclass(slots=True)
class _Document:
    """A validated document and its operations met so far, by name (None: its only one)."""

    text: str
    document: DocumentNode
    costs_the_same: bool  # whatever the variables (gateway/documents/cost.py)
    size: int = 0  # bytes, about: the parsed document and its plans
    operations: dict[str | None, _Operation] = field(default_factory=dict)


class Engine:
    """Plans for the operations of one schema: call it for a request's extension."""

    def __init__(self, max_cost: int) -> None:
        self.costs = Costs(max_cost)
        self._served: Schema | None = None
        self._schema: GraphQLSchema | None = None
        self._fields: Fields | None = None
        self._kept: DocumentCache | None = None  # the schema's, whose documents it plans
        self._documents: OrderedDict[str, _Document] = OrderedDict()
        self._size = 0

    def __call__(self) -> SchemaExtension:
        return _PlannedExecution(self)

    @property
    def size(self) -> int:
        """What the documents kept and their plans weigh, in bytes, about."""
        return self._size

    @property
    def max_bytes(self) -> int:
        return MAX_BYTES

    def bind(self, schema: Schema) -> None:
        """Serve `schema`: one engine serves one schema."""
        if self._served is None:
            assert isinstance(schema, GatewaySchema)  # its documents kept light, and weighed
            self._served = schema
            self._kept = schema.documents
            self._schema = graphql_schema(schema)
            self._fields = fields_of(schema)

    async def execute(
        self,
        query: str,
        document: DocumentNode,
        operation_name: str | None,
        variables: dict[str, object] | None,
        context: Context,
    ) -> ExecutionResult | None:
        """The result of a validated operation (its cost checked) by its plan; None when the
        plan does not cover it."""
        operation = self._operation(query, document, operation_name)
        if operation is None or not operation.covered:
            return None
        return await self._run(operation, variables, context)

    async def execute_known(
        self,
        query: str | None,
        operation_name: str | None,
        variables: dict[str, object] | None,
        context: Context,
    ) -> ExecutionResult | None:
        """The result of an operation of a document Strawberry has validated before, by its
        plan; None when the document is new or its plan does not cover the operation."""
        if query is None or not isinstance(operation_name, str | None):
            return None
        known = self._documents.get(query)
        operation = known.operations.get(operation_name) if known is not None else None
        if operation is None or not operation.covered:
            return None
        assert self._served is not None and self._schema is not None
        self._documents.move_to_end(query)
        result: ExecutionResult | None
        coerced = self._coerced(operation, variables)
        if isinstance(coerced, ExecutionResult):
            result = coerced
        else:
            spending = context.spending
            try:
                cost = self._charge(operation, query, operation_name, variables, spending)
            except QueryTooCostly as error:
                result = ExecutionResult(None, [located(error)])
            else:
                result = await self._planned(operation, coerced, context)
                if result is None:
                    spending.cost -= cost  # Strawberry's pipeline runs it, and charges it again
                    return None
        metrics.execution("plan")
        if result.errors:
            self._served.process_errors(result.errors)
        return result

    def _charge(
        self,
        operation: _Operation,
        query: str,
        operation_name: str | None,
        variables: dict[str, object] | None,
        spending: Spending,
    ) -> int:
        """Charge the operation's estimated cost to its request (or refuse it): estimated once
        for all when no variable changes it."""
        if operation.cost is not None:
            return self.costs.charge(operation.cost, spending)
        assert self._schema is not None
        document = operation.owner.document
        cost = self.costs.check(self._schema, query, document, operation_name, variables, spending)
        if operation.owner.costs_the_same:
            operation.cost = cost
        return cost

    async def _run(
        self, operation: _Operation, variables: dict[str, object] | None, context: Context
    ) -> ExecutionResult | None:
        coerced = self._coerced(operation, variables)
        if isinstance(coerced, ExecutionResult):
            return coerced
        return await self._planned(operation, coerced, context)

    def _coerced(
        self, operation: _Operation, variables: dict[str, object] | None
    ) -> VariableValues | ExecutionResult:
        """The operation's variables coerced, or the result that refuses them."""
        if operation.coercion is not None:
            at_hand = operation.coercion(variables or {})
            if at_hand is not None:
                return at_hand
        assert self._schema is not None
        coerced = get_variable_values(
            self._schema,
            operation.node.variable_definitions or (),
            variables or {},
            max_errors=MAX_COERCION_ERRORS,
        )
        if isinstance(coerced, list):  # as the schema's `VariableErrors` reports them
            return ExecutionResult(None, [reported_as(BadUserInput, error) for error in coerced])
        return coerced

    async def _planned(
        self, operation: _Operation, variables: VariableValues, context: Context
    ) -> ExecutionResult | None:
        """The result by the plan for the values of the operation's conditions, if it has one."""
        plan = self._plan(operation, variables)
        if plan is None:
            return None
        return await run(plan, variables, context.loaders)

    def _operation(
        self, query: str, document: DocumentNode, operation_name: str | None
    ) -> _Operation | None:
        known = self._documents.get(query)
        if known is None:
            assert self._kept is not None
            weighed = self._kept.weighed(query)
            if weighed is None:  # gone from the documents cache since: made light here
                weighed = (document, lighten(query, document))
            document, size = weighed
            known = self._documents[query] = _Document(query, document, costs_the_same(document))
            self._grow(known, size)
        else:
            self._documents.move_to_end(query)
            document = known.document
        operation = known.operations.get(operation_name)
        if operation is not None:
            return operation
        node = get_operation_ast(document, operation_name)
        if node is None:
            return None
        assert self._schema is not None
        at_hand = coercion(self._schema, node.variable_definitions or ())
        operation = _Operation(known, node, conditions(document, node), at_hand)
        if not operation.conditions:
            operation.plans[()] = self._compile(operation, frozenset())
        known.operations[operation_name] = operation
        if get_operation_ast(document) is node:  # its only operation: asked for by no name too
            known.operations[None] = operation
        return operation

    def _grow(self, known: _Document, size: int) -> None:
        """Count `size` more bytes for a document (if it is still kept); forget the least
        recently used documents while they weigh too much."""
        if self._documents.get(known.text) is not known:
            return
        known.size += size
        self._size += size
        while self._size > MAX_BYTES and len(self._documents) > 1:
            _, oldest = self._documents.popitem(last=False)
            self._size -= oldest.size
            oldest.operations.clear()  # each names it its `owner`: no cycle left to collect

    def _plan(self, operation: _Operation, variables: VariableValues) -> Plan | None:
        if not operation.conditions:
            return operation.plans[()]
        try:
            values = tuple(included(node, variables) for node in operation.conditions)
        except Exception:  # a condition graphql-core would refuse: let it say how
            return None
        if values in operation.plans:
            return operation.plans[values]
        if len(operation.plans) >= MAX_VARIANTS:
            return None
        excluded = frozenset(
            id(node) for node, kept in zip(operation.conditions, values, strict=True) if not kept
        )
        plan = operation.plans[values] = self._compile(operation, excluded)
        return plan

    def _compile(self, operation: _Operation, excluded: frozenset[int]) -> Plan | None:
        assert self._schema is not None and self._fields is not None
        document, node = operation.owner.document, operation.node
        plan = compile_plan(self._schema, self._fields, document, node, excluded)
        if plan is not None:
            size = plan.fields * FIELD_BYTES + plan.selections * SELECTION_BYTES + PLAN_BYTES
            self._grow(operation.owner, size)
        return plan


class _PlannedExecution(SchemaExtension):
    """Answer a validated operation by its plan, before graphql-core would execute it."""

    def __init__(self, engine: Engine) -> None:
        super().__init__()
        self.engine = engine

    async def on_execute(self) -> AsyncIterator[None]:
        context: ExecutionContext = self.execution_context
        self.engine.bind(context.schema)
        result = None
        if context.query is not None and context.graphql_document is not None:
            result = await self.engine.execute(
                context.query,
                context.graphql_document,
                context.operation_name,
                context.variables,
                context.context,
            )
        if result is not None:
            context.result = result
        metrics.execution("plan" if result is not None else "graphql")
        yield
