"""The engine: plans kept per document and operation, and operations answered by them.

`Engine` is a schema extension factory (`extensions=[Engine()]`): Strawberry parses and
validates a document as ever (through its caches and the query limits), then, where graphql-core
would execute the operation, the engine answers it if its plan covers it; otherwise
graphql-core runs it, as it did before the engine. `gateway_execution_total{path}` counts which.

Plans are kept by document text and operation name, least recently used out first, with one
plan per combination of the values of the operation's `@skip`/`@include` conditions.
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

from gateway import metrics
from gateway.engine.fields import Fields, fields_of
from gateway.engine.plan import Conditional, Plan, compile_plan, conditions, included
from gateway.engine.run import run
from gateway.schema.context import Context

MAX_OPERATIONS = 1000  # operations whose plans are kept
MAX_TEXT = 4 * 2**20  # characters of their documents, in all
MAX_VARIANTS = 32  # plans of one operation, one per combination of its conditions' values
MAX_COERCION_ERRORS = 50  # as graphql-core's `execute`


@dataclass(slots=True)
class _Operation:
    """An operation of a document, with its plan for each value of its conditions."""

    node: OperationDefinitionNode
    document: DocumentNode
    conditions: tuple[Conditional, ...]
    plans: dict[tuple[bool, ...], Plan | None] = field(default_factory=dict)


class Engine:
    """Plans for the operations of one schema: call it for a request's extension."""

    def __init__(self) -> None:
        self._schema: GraphQLSchema | None = None
        self._fields: Fields | None = None
        self._operations: OrderedDict[tuple[str, str | None], _Operation] = OrderedDict()
        self._text = 0

    def __call__(self) -> SchemaExtension:
        return _PlannedExecution(self)

    def bind(self, schema: Schema) -> None:
        """Serve `schema`: one engine serves one schema."""
        if self._fields is None:
            # Strawberry has no public accessor for the graphql-core schema it built.
            self._schema = schema._schema
            self._fields = fields_of(schema)

    async def execute(
        self,
        query: str,
        document: DocumentNode,
        operation_name: str | None,
        variables: dict[str, object] | None,
        context: Context,
    ) -> ExecutionResult | None:
        """The operation's result by its plan; None when the plan does not cover it."""
        assert self._schema is not None
        operation = self._operation(query, document, operation_name)
        if operation is None or (operation.plans.get(()) is None and not operation.conditions):
            return None
        coerced = get_variable_values(
            self._schema,
            operation.node.variable_definitions or (),
            variables or {},
            max_errors=MAX_COERCION_ERRORS,
        )
        if isinstance(coerced, list):
            return ExecutionResult(None, coerced)
        plan = self._plan(operation, coerced)
        if plan is None:
            return None
        return await run(plan, coerced, context.loaders)

    def _operation(
        self, query: str, document: DocumentNode, operation_name: str | None
    ) -> _Operation | None:
        key = (query, operation_name)
        found = self._operations.get(key)
        if found is not None:
            self._operations.move_to_end(key)
            return found
        node = get_operation_ast(document, operation_name)
        if node is None:
            return None
        found = _Operation(node, document, conditions(document, node))
        if not found.conditions:
            found.plans[()] = self._compile(found, frozenset())
        self._operations[key] = found
        self._text += len(query)
        while self._text > MAX_TEXT or len(self._operations) > MAX_OPERATIONS:
            (oldest, _), _ = self._operations.popitem(last=False)
            self._text -= len(oldest)
        return found

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
        return compile_plan(
            self._schema, self._fields, operation.document, operation.node, excluded
        )


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
