"""Running a plan: level by level, one batch per field and level, the response as plain data.

A level is every object the plan reached with the last step: their leaves are read straight
from their records, and each batched field asks the loaders for all of them at once (one
dataloader batch per loader and level). What the loaders have at hand is answered at once;
the rest is awaited, once for the whole level, and the answers become the next level's
objects (a run that filled `TURN` objects lets the event loop turn before its next level).
Objects are dicts made with all their keys in order (copies of their selection's empty
object), filled in place; lists are lists.

Where each object sits is its place, a plain tuple (`Place`): the record it shows, the object,
its container and key, whether null may replace it there, and the place of its container.
The places of a selection's objects are what the next level fills.

Errors follow the spec as graphql-core applies it: a field error nulls the field, or, for a
non-null field, the nearest nullable place above it, where the error is recorded; an error
below a place already nulled is dropped, and work below it is not done. Which errors are kept
follows graphql-core's timing too: an error nulling its own (nullable) field is recorded at
once, while one from a non-null field reaches its nullable place only after every other field
of the same step has run (the nearest places first), so an error beside it is still kept.
"""

from __future__ import annotations

import asyncio
from itertools import count, repeat
from operator import is_, itemgetter
from typing import Any, Final

from graphql import ExecutionResult, FieldNode, GraphQLError, get_argument_values, located_error
from graphql.execution import VariableValues
from graphql.pyutils import Undefined

from gateway.engine.fields import Shape
from gateway.engine.leaves import ItemError, non_null_message
from gateway.engine.plan import Leaf, Loaded, Plan, Selection
from gateway.loaders.loaders import Loaders
from gateway.loaders.records import Page
from gateway.schema.pagination import Paged, cursor_of, travel
from gateway.schema.types import NODE_TYPE_NAMES
from gateway.tasks import taken

# A place in the response: (record, object, container, key, nullable, parent place). The
# record and the object are None for a place that holds no object of a selection (a list, a
# connection and its parts); the root's container, key and parent are None.
Place = tuple[Any, Any, Any, Any, bool, Any]
_RECORD: Final = 0
_OBJECT: Final = 1
_CONTAINER: Final = 2
_KEY: Final = 3
_NULLABLE: Final = 4
_PARENT: Final = 5
# The objects of one selection at one level, by their places.
Places = list[Place]

_EXCEPTION, _FUTURE = repeat(Exception), repeat(asyncio.Future)
_record_of, _object_of = itemgetter(_RECORD), itemgetter(_OBJECT)

# Objects from which a level's leaves are filled a leaf at a time, and a field's objects made
# together (below it, the lists this makes cost more than they save).
COLUMNS = 8

# Objects a run fills without a turn of the event loop, about, at most (its levels answered at
# hand need none): a few milliseconds' work.
TURN = 5_000


def _path(place: Place, *tail: str | int) -> list[str | int]:
    """The response path of `place`, then `tail`."""
    keys: list[str | int] = list(reversed(tail))
    found: Place | None = place
    while found is not None and found[_KEY] is not None:
        keys.append(found[_KEY])
        found = found[_PARENT]
    keys.reverse()
    return keys


class _Batch:
    """A batched field's answers for the places of one level."""

    __slots__ = ("answers", "loaded", "paging", "places")

    def __init__(
        self, loaded: Loaded, places: Places, answers: list[Any], paging: Paged | None
    ) -> None:
        self.loaded = loaded
        self.places = places
        self.answers = answers  # per place: a value, a future, or a list of those
        self.paging = paging

    def answer_lists(self) -> list[list[Any]]:
        """The answers, and the lists among them of a field that is a list of records: every
        list that may hold futures."""
        if self.loaded.batched.shape is not Shape.MANY:
            return [self.answers]
        return [self.answers, *(answer for answer in self.answers if type(answer) is list)]


async def run(plan: Plan, variables: VariableValues, loaders: Loaders) -> ExecutionResult:
    if plan.root.loaded:  # it reads the backend: first what its answers at hand need
        await loaders.backend.ready()
    return await _Run(variables, loaders).run(plan.root)


class _Run:
    def __init__(self, variables: VariableValues, loaders: Loaders) -> None:
        self.variables = variables
        self.loaders = loaders
        self.errors: list[GraphQLError] = []
        self.nulled: dict[int, Place] = {}  # the places errors nulled, by `id`
        # Errors of non-null fields on their way up: (places climbed, order, error, place).
        self.rising: list[tuple[int, int, GraphQLError, Place]] = []

    async def run(self, selection: Selection) -> ExecutionResult:
        data = selection.empty.copy()
        root: Place = (None, data, None, None, True, None)
        level: dict[Selection, Places] = {selection: [root]}
        work = 0  # objects filled since the event loop last turned
        while level:
            work += sum(map(len, level.values()))
            if work > TURN:  # a long run at hand lets others in, and meets its deadline
                await asyncio.sleep(0)
                work = 0
            batches: list[_Batch] = []
            for selection, places in level.items():
                self.fill(selection, places, batches)
            if self.rising:
                self.null_rising()
            if id(root) in self.nulled:
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
            if self.rising:
                self.null_rising()
            if id(root) in self.nulled:
                break
        result = None if id(root) in self.nulled else data
        return ExecutionResult(result, self.errors or None)

    # -- one level --------------------------------------------------------------------------

    def fill(self, selection: Selection, places: Places, batches: list[_Batch]) -> None:
        """Read the selection's leaves, and start its batched fields, for all `places`."""
        if self.nulled:
            places = [place for place in places if not self.dropped(place)]
        leaves = selection.leaves
        if leaves and not _columns(leaves, places):
            for place in places:  # row by row, to find what fails
                record, target = place[_RECORD], place[_OBJECT]
                try:
                    for key, read, native, complete, _, _ in leaves:
                        value = read(record)
                        target[key] = value if type(value) is native else complete(value)
                except Exception:  # find which, and fail it
                    self.leaves_one_by_one(selection, place)
        if not selection.loaded or not places:
            return
        records = list(map(_record_of, places))
        for loaded in selection.loaded:
            key, nodes, nullable = loaded.key, loaded.nodes, loaded.nullable
            try:
                fetch, paging = loaded.batched.begin(self.loaders, self.arguments(loaded))
                answers = fetch(records)
            except Exception as error:
                for place in places:
                    self.fail(error, nodes, nullable, place[_OBJECT], key, place)
                continue
            asked = places
            if any(map(isinstance, answers, _EXCEPTION)):  # the field failed for some
                asked, kept = [], []
                for place, answer in zip(places, answers, strict=True):
                    if isinstance(answer, Exception):
                        self.fail(answer, nodes, nullable, place[_OBJECT], key, place)
                    else:
                        asked.append(place)
                        kept.append(answer)
                answers = kept
            batches.append(_Batch(loaded, asked, answers, paging))

    def leaves_one_by_one(self, selection: Selection, place: Place) -> None:
        record, target = place[_RECORD], place[_OBJECT]
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
        """The field's arguments for this run, as graphql-core coerces them."""
        if loaded.arguments is not None:
            if not loaded.variables:
                return loaded.arguments
            given = self.variables.coerced
            arguments = loaded.arguments.copy()
            for key, variable, non_null in loaded.variables:
                value = given.get(variable, Undefined)
                if value is None and non_null:
                    break  # graphql-core's to refuse
                if value is not Undefined:  # else the argument's default, if any
                    arguments[key] = value
            else:
                return arguments
        node = loaded.nodes[0]
        if not loaded.definition.args and not node.arguments:
            return {}
        return get_argument_values(loaded.definition, node, self.variables)

    async def settle(self, batches: list[_Batch]) -> None:
        """Wait for every answer of the level still to come, and put each outcome (a value or
        an exception) in its place. The loaders' futures of one batch are all set at once:
        awaiting them in turn waits once per batch, not once per future. A failure is waited for,
        never raised here: raised, its traceback would hold this frame, which holds the batch
        that keeps the failure, a cycle wherever the failure never reaches the result (a
        request timed out, an error below a place already nulled)."""
        for batch in batches:
            for answers in batch.answer_lists():
                if not any(map(isinstance, answers, _FUTURE)):
                    continue
                for index, answer in enumerate(answers):
                    if isinstance(answer, asyncio.Future):
                        if not answer.done():
                            await asyncio.wait((answer,))
                        answers[index] = answer.exception() or answer.result()

    def complete(self, batch: _Batch, level: dict[Selection, Places]) -> None:
        """Place each answer, and gather the objects it holds for the next level."""
        loaded = batch.loaded
        selections = loaded.selections
        shape = loaded.batched.shape
        if shape is Shape.ONE and len(selections) == 1:
            [selection] = selections.values()
            self.objects(batch, selection, level)
            return
        if shape is Shape.PAGE and not self.nulled:
            assert batch.paging is not None
            answered: list[tuple[Place, Page[Any]]] = []
            for place, answer in zip(batch.places, batch.answers, strict=True):
                if isinstance(answer, Page):
                    answered.append((place, answer))
                else:
                    self.answer(batch, place, answer, level)
            self.connections(loaded, batch.paging, answered, level)
            return
        for place, answer in zip(batch.places, batch.answers, strict=True):
            self.answer(batch, place, answer, level)

    def objects(self, batch: _Batch, selection: Selection, level: dict[Selection, Places]) -> None:
        """`complete` for a field whose answers are records of one type, None or errors: where
        many are all records (and nothing was nulled), their objects and places are made
        together."""
        answers, places = batch.answers, batch.places
        if (
            len(answers) < COLUMNS
            or self.nulled
            or None in answers
            or any(map(isinstance, answers, _EXCEPTION))
        ):
            for place, answer in zip(places, answers, strict=True):
                self.answer(batch, place, answer, level)
            return
        loaded = batch.loaded
        key, size = loaded.key, len(answers)
        made = list(map(dict.copy, repeat(selection.empty, size)))
        containers = list(map(_object_of, places))
        for container, found in zip(containers, made, strict=True):
            container[key] = found
        # Each object's place: (record, object, container, key, nullable, parent place).
        level.setdefault(selection, []).extend(
            zip(answers, made, containers, repeat(key, size), repeat(loaded.nullable), places)
        )

    def answer(
        self, batch: _Batch, place: Place, answer: Any, level: dict[Selection, Places]
    ) -> None:
        """Place one answer of a batch."""
        if self.nulled and self.dropped(place):
            return
        loaded = batch.loaded
        shape = loaded.batched.shape
        key, nodes, nullable = loaded.key, loaded.nodes, loaded.nullable
        target = place[_OBJECT]
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
            target[key] = self.object(loaded, answer, target, key, nullable, place, level)
        elif shape is Shape.MANY:
            self.list_of(loaded, answer, target, place, level)
        elif shape is Shape.COUNT:
            assert loaded.count is not None
            try:
                target[key] = loaded.count(answer.total)
            except Exception as error:
                self.fail(error, nodes, nullable, target, key, place)
        else:
            assert batch.paging is not None
            self.connections(loaded, batch.paging, [(place, answer)], level)

    def object(
        self,
        loaded: Loaded,
        record: Any,
        container: Any,
        key: str | int,
        nullable: bool,
        parent: Place,
        level: dict[Selection, Places],
    ) -> dict[str, Any]:
        """The response object of `record` at `container[key]`, to be filled at the next
        level."""
        selections = loaded.selections
        if len(selections) == 1:
            [selection] = selections.values()
        else:
            selection = selections[NODE_TYPE_NAMES[type(record)]]
        target = selection.empty.copy()
        level.setdefault(selection, []).append((record, target, container, key, nullable, parent))
        return target

    def list_of(
        self,
        loaded: Loaded,
        items: list[Any],
        target: dict[str, Any],
        place: Place,
        level: dict[Selection, Places],
    ) -> None:
        listed: list[Any] = []
        target[loaded.key] = listed
        here: Place = (None, None, target, loaded.key, loaded.nullable, place)
        item_nullable = loaded.item_nullable
        for index, item in enumerate(items):
            if item is not None:
                listed.append(self.object(loaded, item, listed, index, item_nullable, here, level))
                continue
            listed.append(None)
            if not item_nullable:
                error = TypeError(non_null_message(loaded.field))
                self.rise(located_error(error, list(loaded.nodes), _path(here, index)), here)
                return

    def connections(
        self,
        loaded: Loaded,
        paging: Paged,
        answered: list[tuple[Place, Page[Any]]],
        level: dict[Selection, Places],
    ) -> None:
        """The connections of the pages `answered` at their places, as the resolvers build
        them (gateway/schema/pagination.py): the same edges and pageInfo, cursors made only
        where the selection asks for them. Each part is made for all the pages in turn."""
        plan, key, nullable = loaded.connection, loaded.key, loaded.nullable
        assert plan is not None
        shape, empty = paging.shape, plan.empty
        # Each connection, its page, and its own place (the parent of its parts' places).
        made: list[tuple[dict[str, Any], Page[Any], Place]] = []
        for place, page in answered:
            container = place[_OBJECT]
            target: dict[str, Any] = empty.copy()
            container[key] = target
            made.append((target, page, (None, None, container, key, nullable, place)))
        if not made:
            return
        for total in plan.total:
            for target, page, _ in made:
                target[total] = page.total
        for typename in plan.typename:
            for target, _, _ in made:
                target[typename] = plan.type_name
        for info in plan.page_info:
            for target, page, _ in made:
                target[info.key] = {
                    part: _page_info(name, info.type_name, page, paging)
                    for part, name in info.parts
                }
        for edges in plan.edges:
            for target, page, here in made:
                listed: list[dict[str, Any]] = []
                target[edges.key] = listed
                edges_place: Place = (None, None, target, edges.key, False, here)
                for index, item in enumerate(page.items):
                    edge: dict[str, Any] = edges.empty.copy()
                    for part, name in edges.parts:
                        cursor = name == "cursor"
                        edge[part] = (
                            cursor_of(page.keys[index], shape) if cursor else edges.type_name
                        )
                    edge_place: Place = (None, None, listed, index, False, edges_place)
                    for node_key, selection in edges.node:
                        node = edge[node_key] = selection.empty.copy()
                        level.setdefault(selection, []).append(
                            (item, node, edge, node_key, False, edge_place)
                        )
                    listed.append(edge)
        for nodes_key, selection in plan.nodes:
            places = level.setdefault(selection, [])
            for target, page, here in made:
                items = page.items
                size = len(items)
                nodes: list[dict[str, Any]] = list(map(dict.copy, repeat(selection.empty, size)))
                target[nodes_key] = nodes
                nodes_place: Place = (None, None, target, nodes_key, False, here)
                # Each node's place: (item, node, nodes, index, False, nodes_place).
                places.extend(
                    zip(
                        items,
                        nodes,
                        repeat(nodes, size),
                        count(),
                        repeat(False),
                        repeat(nodes_place),
                    )
                )

    # -- errors -------------------------------------------------------------------------------

    def fail(
        self,
        error: Exception,
        nodes: tuple[FieldNode, ...],
        nullable: bool,
        target: dict[str, Any],
        key: str,
        place: Place,
        *index: int,
    ) -> None:
        """A field error at `target[key]`: null the field, or rise from a non-null one."""
        located = located_error(error, list(nodes), _path(place, key, *index))
        if not nullable:
            self.rise(located, place)
        elif not self.dropped(place):
            target[key] = None
            self.errors.append(located)

    def rise(self, error: GraphQLError, place: Place) -> None:
        """An error on its way to the nearest nullable place at or above `place`."""
        nearest, climbed = place, 1
        while not nearest[_NULLABLE]:
            nearest, climbed = nearest[_PARENT], climbed + 1  # the root is nullable
        self.rising.append((climbed, len(self.rising), error, nearest))

    def null_rising(self) -> None:
        """Null the places the errors of this step rose to, the nearest first; an error
        whose place is already null (or below one) is dropped."""
        rising, self.rising = self.rising, []
        for _, _, error, place in sorted(rising, key=lambda rise: rise[:2]):
            if self.dropped(place):
                continue
            if place[_CONTAINER] is not None:
                place[_CONTAINER][place[_KEY]] = None
            self.nulled[id(place)] = place
            self.errors.append(error)

    def dropped(self, place: Place) -> bool:
        """Whether the place, or a place above it, was nulled by an error."""
        found: Place | None = place
        while found is not None:
            if id(found) in self.nulled:
                return True
            found = found[_PARENT]
        return False


def _columns(leaves: tuple[Leaf, ...], places: Places) -> bool:
    """Fill the leaves of many objects a leaf at a time, each read and completed for all
    of them at once: True, or False where any of them fails (then nothing is decided, and
    they are filled again row by row, which finds what fails and where)."""
    if len(places) < COLUMNS:
        return False
    records, objects = list(map(_record_of, places)), list(map(_object_of, places))
    try:
        for key, read, native, complete, _, _ in leaves:
            values = list(map(read, records))
            if native is None:
                values = list(map(complete, values))
            elif not all(map(is_, map(type, values), repeat(native))):
                values = [value if type(value) is native else complete(value) for value in values]
            for target, value in zip(objects, values, strict=True):
                target[key] = value
    except Exception:
        return False
    return True


def _abandon(batches: list[_Batch]) -> None:
    """Cancel the tasks of answers no one will wait for, and take the exception of each such
    answer as it ends: asyncio would log those no one took, a traceback each."""
    for batch in batches:
        for answers in batch.answer_lists():
            for answer in answers:
                if isinstance(answer, asyncio.Future):
                    answer.add_done_callback(taken)
                    if isinstance(answer, asyncio.Task):
                        answer.cancel()


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
