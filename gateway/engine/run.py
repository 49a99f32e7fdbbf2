"""Running a plan: level by level, one batch per field and level, the response as plain data.

A level is every object the plan reached with the last await: their leaves are read straight
from their records, and each batched field asks the loaders for all of them at once (one
dataloader batch per loader and level). Then one await for the whole level, and the answers
become the next level's objects. Objects are dicts made with all their keys in order, filled
in place; lists are lists.

Errors follow the spec as graphql-core applies it: a field error nulls the field, or, for a
non-null field, the nearest nullable place above it, where the error is recorded; an error
below a place already nulled is dropped, and work below it is not done. Which errors are kept
follows graphql-core's timing too: an error nulling its own (nullable) field is recorded at
once, while one from a non-null field reaches its nullable place only after every other field
of the same step has run (the nearest places first), so an error beside it is still kept.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from graphql import ExecutionResult, FieldNode, GraphQLError, get_argument_values, located_error
from graphql.execution import VariableValues

from gateway.engine.fields import Shape
from gateway.engine.leaves import ItemError, non_null_message
from gateway.engine.plan import Connection, Loaded, Plan, Selection
from gateway.loaders.loaders import Loaders
from gateway.loaders.records import Page
from gateway.schema.pagination import Paged, cursor_of, travel
from gateway.schema.types import NODE_TYPE_NAMES


class _Place:
    """Where a composite value sits in the response: `container[key]`, whether null may
    replace it there, and the place of its container."""

    __slots__ = ("container", "key", "nullable", "parent")

    def __init__(
        self, container: Any, key: str | int | None, nullable: bool, parent: _Place | None
    ) -> None:
        self.container = container
        self.key = key
        self.nullable = nullable
        self.parent = parent

    def path(self, *tail: str | int) -> list[str | int]:
        keys: list[str | int] = list(reversed(tail))
        place: _Place | None = self
        while place is not None and place.key is not None:
            keys.append(place.key)
            place = place.parent
        keys.reverse()
        return keys


# The objects of one selection at one level: (record, its response dict, its place).
Parents = list[tuple[Any, dict[str, Any], _Place]]


class _Batch:
    """A batched field's answers for the parents of one level."""

    __slots__ = ("answers", "loaded", "paging", "parents")

    def __init__(
        self, loaded: Loaded, parents: Parents, answers: list[Any], paging: Paged | None
    ) -> None:
        self.loaded = loaded
        self.parents = parents
        self.answers = answers  # per parent: a value, a future, or a list of those
        self.paging = paging

    def answer_lists(self) -> list[list[Any]]:
        """The answers, and the lists among them of a field that is a list of records: every
        list that may hold futures."""
        if self.loaded.batched.shape is not Shape.MANY:
            return [self.answers]
        return [self.answers, *(answer for answer in self.answers if type(answer) is list)]


async def run(plan: Plan, variables: VariableValues, loaders: Loaders) -> ExecutionResult:
    return await _Run(variables, loaders).run(plan.root)


class _Run:
    def __init__(self, variables: VariableValues, loaders: Loaders) -> None:
        self.variables = variables
        self.loaders = loaders
        self.errors: list[GraphQLError] = []
        self.nulled: set[_Place] = set()
        # Errors of non-null fields on their way up: (places climbed, order, error, place).
        self.rising: list[tuple[int, int, GraphQLError, _Place]] = []
        self.root = _Place(None, None, True, None)

    async def run(self, root: Selection) -> ExecutionResult:
        data = dict.fromkeys(root.keys)
        level: dict[Selection, Parents] = {root: [(None, data, self.root)]}
        while level:
            batches: list[_Batch] = []
            for selection, parents in level.items():
                self.fill(selection, parents, batches)
            self.null_rising()
            if self.root in self.nulled:
                _abandon(batches)
                break
            try:
                await self.settle(batches)
            except asyncio.CancelledError:  # the client left, or the request timed out
                _abandon(batches)
                raise
            level = {}
            for batch in batches:
                self.complete(batch, level)
            self.null_rising()
            if self.root in self.nulled:
                break
        result = None if self.root in self.nulled else data
        return ExecutionResult(result, self.errors or None)

    # -- one level --------------------------------------------------------------------------

    def fill(self, selection: Selection, parents: Parents, batches: list[_Batch]) -> None:
        """Read the selection's leaves, and start its batched fields, for all `parents`."""
        if self.nulled:
            parents = [parent for parent in parents if not self.dropped(parent[2])]
        leaves = selection.leaves
        for record, target, place in parents:
            try:
                for key, read, native, complete, _, _ in leaves:
                    value = read(record)
                    target[key] = value if type(value) is native else complete(value)
            except Exception:  # find which, and fail it
                self.leaves_one_by_one(selection, record, target, place)
        for loaded in selection.loaded:
            key, nodes, nullable = loaded.key, loaded.nodes, loaded.nullable
            try:
                fetch, paging = loaded.batched.begin(self.loaders, self.arguments(loaded))
            except Exception as error:
                for _, target, place in parents:
                    self.fail(error, nodes, nullable, target, key, place)
                continue
            asked: Parents = []
            answers: list[Any] = []
            for parent in parents:
                try:
                    answers.append(fetch(parent[0]))
                except Exception as error:
                    self.fail(error, nodes, nullable, parent[1], key, parent[2])
                    continue
                asked.append(parent)
            batches.append(_Batch(loaded, asked, answers, paging))

    def leaves_one_by_one(
        self, selection: Selection, record: Any, target: dict[str, Any], place: _Place
    ) -> None:
        for leaf in selection.leaves:
            if self.dropped(place):
                return
            try:
                value = leaf.read(record)
                target[leaf.key] = value if type(value) is leaf.native else leaf.complete(value)
            except ItemError as error:
                at = error.index
                self.fail(error.error, leaf.nodes, leaf.nullable, target, leaf.key, place, at)
            except Exception as error:
                self.fail(error, leaf.nodes, leaf.nullable, target, leaf.key, place)

    def arguments(self, loaded: Loaded) -> dict[str, Any]:
        if loaded.arguments is not None:
            return loaded.arguments
        node = loaded.nodes[0]
        if not loaded.definition.args and not node.arguments:
            return {}
        return get_argument_values(loaded.definition, node, self.variables)

    async def settle(self, batches: list[_Batch]) -> None:
        """Wait for every answer of the level, and put each outcome (a value or an exception)
        in its place. The loaders' futures of one batch are all set at once: awaiting them in
        turn waits once per batch, not once per future."""
        for batch in batches:
            for answers in batch.answer_lists():
                for index, answer in enumerate(answers):
                    if isinstance(answer, asyncio.Future):
                        if not answer.done():
                            with contextlib.suppress(Exception):
                                await answer
                        answers[index] = answer.exception() or answer.result()

    def complete(self, batch: _Batch, level: dict[Selection, Parents]) -> None:
        """Place each parent's answer, and gather the objects it holds for the next level."""
        loaded = batch.loaded
        shape = loaded.batched.shape
        key, nodes, nullable = loaded.key, loaded.nodes, loaded.nullable
        for (_, target, place), answer in zip(batch.parents, batch.answers, strict=True):
            if self.nulled and self.dropped(place):
                continue
            if shape is Shape.MANY and type(answer) is list:
                failed = next((item for item in answer if isinstance(item, Exception)), None)
                if failed is not None:
                    answer = failed
            if isinstance(answer, Exception):
                self.fail(answer, nodes, nullable, target, key, place)
            elif answer is None:
                if nullable:
                    target[key] = None
                else:
                    message = TypeError(non_null_message(loaded.field))
                    self.fail(message, nodes, False, target, key, place)
            elif shape is Shape.ONE:
                target[key] = self.object(
                    loaded, answer, _Place(target, key, nullable, place), level
                )
            elif shape is Shape.MANY:
                self.list(loaded, answer, target, place, level)
            elif shape is Shape.COUNT:
                assert loaded.count is not None
                try:
                    target[key] = loaded.count(answer.total)
                except Exception as error:
                    self.fail(error, nodes, nullable, target, key, place)
            else:
                assert loaded.connection is not None and batch.paging is not None
                here = _Place(target, key, nullable, place)
                target[key] = self.connection(loaded.connection, answer, batch.paging, here, level)

    def object(
        self, loaded: Loaded, record: Any, place: _Place, level: dict[Selection, Parents]
    ) -> dict[str, Any]:
        """The response object of `record` at `place`, to be filled at the next level."""
        selections = loaded.selections
        if len(selections) == 1:
            [selection] = selections.values()
        else:
            selection = selections[NODE_TYPE_NAMES[type(record)]]
        target = dict.fromkeys(selection.keys)
        level.setdefault(selection, []).append((record, target, place))
        return target

    def list(
        self,
        loaded: Loaded,
        items: list[Any],
        target: dict[str, Any],
        place: _Place,
        level: dict[Selection, Parents],
    ) -> None:
        listed: list[Any] = []
        target[loaded.key] = listed
        here = _Place(target, loaded.key, loaded.nullable, place)
        for index, item in enumerate(items):
            if item is not None:
                item_place = _Place(listed, index, loaded.item_nullable, here)
                listed.append(self.object(loaded, item, item_place, level))
                continue
            listed.append(None)
            if not loaded.item_nullable:
                error = TypeError(non_null_message(loaded.field))
                self.rise(located_error(error, list(loaded.nodes), here.path(index)), here)
                return

    def connection(
        self,
        plan: Connection,
        page: Page[Any],
        paging: Paged,
        place: _Place,
        level: dict[Selection, Parents],
    ) -> dict[str, Any]:
        # The connection as the resolvers build it (gateway/schema/pagination.py): the same
        # edges and pageInfo, its cursors made only where the selection asks for them.
        items, shape = page.items, paging.shape
        target: dict[str, Any] = dict.fromkeys(plan.keys)
        for key in plan.total:
            target[key] = page.total
        for key in plan.typename:
            target[key] = plan.type_name
        for info in plan.page_info:
            target[info.key] = {
                key: _page_info(name, info.type_name, page, paging) for key, name in info.parts
            }
        for edges in plan.edges:
            listed: list[dict[str, Any]] = []
            target[edges.key] = listed
            edges_place = _Place(target, edges.key, False, place)
            for index, item in enumerate(items):
                edge: dict[str, Any] = dict.fromkeys(edges.keys)
                for key, name in edges.parts:
                    cursor = name == "cursor"
                    edge[key] = cursor_of(page.keys[index], shape) if cursor else edges.type_name
                edge_place = _Place(listed, index, False, edges_place)
                for key, selection in edges.node:
                    node = edge[key] = dict.fromkeys(selection.keys)
                    level.setdefault(selection, []).append(
                        (item, node, _Place(edge, key, False, edge_place))
                    )
                listed.append(edge)
        for key, selection in plan.nodes:
            nodes = [dict.fromkeys(selection.keys) for _ in items]
            target[key] = nodes
            nodes_place = _Place(target, key, False, place)
            parents = level.setdefault(selection, [])
            for index, item in enumerate(items):
                parents.append((item, nodes[index], _Place(nodes, index, False, nodes_place)))
        return target

    # -- errors -------------------------------------------------------------------------------

    def fail(
        self,
        error: Exception,
        nodes: tuple[FieldNode, ...],
        nullable: bool,
        target: dict[str, Any],
        key: str,
        place: _Place,
        *index: int,
    ) -> None:
        """A field error at `target[key]`: null the field, or rise from a non-null one."""
        located = located_error(error, list(nodes), place.path(key, *index))
        if not nullable:
            self.rise(located, place)
        elif not self.dropped(place):
            target[key] = None
            self.errors.append(located)

    def rise(self, error: GraphQLError, place: _Place) -> None:
        """An error on its way to the nearest nullable place at or above `place`."""
        nearest, climbed = place, 1
        while not nearest.nullable:
            assert nearest.parent is not None  # the root is nullable
            nearest, climbed = nearest.parent, climbed + 1
        self.rising.append((climbed, len(self.rising), error, nearest))

    def null_rising(self) -> None:
        """Null the places the errors of this step rose to, the nearest first; an error
        whose place is already null (or below one) is dropped."""
        rising, self.rising = self.rising, []
        for _, _, error, place in sorted(rising, key=lambda rise: rise[:2]):
            if self.dropped(place):
                continue
            if place.container is not None:
                place.container[place.key] = None
            self.nulled.add(place)
            self.errors.append(error)

    def dropped(self, place: _Place) -> bool:
        """Whether the place, or a place above it, was nulled by an error."""
        found: _Place | None = place
        while found is not None:
            if found in self.nulled:
                return True
            found = found.parent
        return False


def _abandon(batches: list[_Batch]) -> None:
    """Cancel the tasks of answers no one will wait for, and take the exception of each such
    answer as it ends: asyncio would log those no one took, a traceback each."""
    for batch in batches:
        for answers in batch.answer_lists():
            for answer in answers:
                if isinstance(answer, asyncio.Future):
                    answer.add_done_callback(_taken)
                    if isinstance(answer, asyncio.Task):
                        answer.cancel()


def _taken(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


def _page_info(name: str, type_name: str, page: Page[Any], paging: Paged) -> Any:
    if name == "hasNextPage":
        return travel(page, paging.slice)[0]
    if name == "hasPreviousPage":
        return travel(page, paging.slice)[1]
    if name == "startCursor":
        return cursor_of(page.keys[0], paging.shape) if page.keys else None
    if name == "endCursor":
        return cursor_of(page.keys[-1], paging.shape) if page.keys else None
    return type_name
