"""What each field of the schema is, to the engine: a leaf it reads from the record, or a field
it answers through the request's loaders for every parent of a level at once.

The semantics are the resolvers' own (gateway/schema/): the same lookups, node ids, pagings,
filters, orders, relations and search hits, called once per field and level instead of once
per parent. A field missing here (federation's, say) is not the engine's: an operation that
selects one runs on graphql-core's path.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from functools import partial
from operator import attrgetter
from typing import Any, TypeVar

from strawberry import Schema
from strawberry.types.base import StrawberryObjectDefinition, get_object_definition

from gateway.engine.leaves import Completion
from gateway.loaders.loaders import Loader, Loaders
from gateway.loaders.records import PackageFilter
from gateway.schema import inputs, types
from gateway.schema.pagination import BY_ID, BY_MEMBERSHIP, BY_TITLE, Layout, Paged
from gateway.schema.query import Keyed, lookup_key, node_key, search

# A field's answers for all the parents of a level (their records), one each: a future (a
# loader's, or a task's), the value itself, None, the field's error for that parent, or for a
# list, a list of those.
Fetch = Callable[[list[Any]], list[Any]]
# Read a leaf from a record.
Read = Callable[[Any], Any]
T = TypeVar("T")


class Shape(Enum):
    """What a batched field gives each parent."""

    ONE = "one"  # an object, or None
    MANY = "many"  # a list of objects (or of Nones)
    PAGE = "page"  # a `Page` of a list, placed by the field's `Paged`: a connection
    COUNT = "count"  # a `Page` whose total is the answer


Begin = Callable[[Loaders, dict[str, Any]], tuple[Fetch, Paged | None]]


@dataclass(frozen=True, slots=True)
class Batched:
    """A field answered through the loaders: `begin` takes its arguments once per level (and
    raises the field's error for every parent), and gives what fetches the parents' answers
    (one batch per loader for them all)."""

    shape: Shape
    arguments: frozenset[str]
    begin: Begin


@dataclass(frozen=True, slots=True)
class Fields:
    """The engine's fields of one schema, by type and field name."""

    leaves: dict[tuple[str, str], Read]
    batched: dict[tuple[str, str], Batched]
    # How each leaf completes, by "Parent.name", made as plans first need it: shared by all
    # the plans, its closures are objects the garbage collector goes through once, not once a
    # plan (engine/plan.py).
    completions: dict[str, Completion | None] = field(default_factory=dict)


def fields_of(schema: Schema) -> Fields:
    """The schema's plain fields (attributes of the record) and the fields this module knows."""
    leaves = dict(_COMPUTED)
    for type_name in ("Category", "Grid", "Package", "SearchResult"):
        definition = schema.get_type_by_name(type_name)
        assert isinstance(definition, StrawberryObjectDefinition)
        for plain in definition.fields:
            if plain.base_resolver is None and not plain.arguments and not plain.extensions:
                name = schema.config.name_converter.get_graphql_name(plain)
                leaves[type_name, name] = attrgetter(plain.python_name)
    convert = _Inputs(schema)
    return Fields(leaves, _batched(convert))


_INPUTS = (inputs.PackageFilter, inputs.PackageOrder, inputs.GridOrder, inputs.CategoryOrder)


class _Inputs:
    """Input objects as graphql-core coerces them (dicts by GraphQL name) made into the
    Strawberry inputs the resolvers receive."""

    def __init__(self, schema: Schema) -> None:
        converter = schema.config.name_converter
        self.names: dict[type, dict[str, str]] = {}
        for cls in _INPUTS:
            fields = get_object_definition(cls, strict=True).fields
            self.names[cls] = {converter.get_graphql_name(f): f.python_name for f in fields}

    def __call__(self, cls: type[T], value: Any) -> T | None:
        if value is None:
            return None
        names = self.names[cls]
        return cls(**{names[name]: item for name, item in value.items()})


_COMPUTED: dict[tuple[str, str], Read] = {
    **{(name, "id"): read for name, read in types.GLOBAL_IDS.items()},
    **{(name, "databaseId"): attrgetter("id") for name in ("Category", "Grid", "Package")},
    ("SearchResult", "itemType"): types.item_type,
}

_LOOKUP = frozenset({"id", "slug"})
_LIST = frozenset({"first", "after", "last", "before", "orderBy"})
_PACKAGES = _LIST | {"filter"}


def _batched(convert: _Inputs) -> dict[tuple[str, str], Batched]:
    def kept(arguments: dict[str, Any]) -> PackageFilter | None:
        return inputs.package_filter(convert(inputs.PackageFilter, arguments.get("filter")))

    def lookup_by(kind: str) -> Batched:
        def begin(loaders: Loaders, arguments: dict[str, Any]) -> tuple[Fetch, None]:
            lookups = getattr(loaders, kind)
            id, slug = arguments.get("id"), arguments.get("slug")
            return lambda roots: [_load(lookup_key(id, slug, lookups)) for _ in roots], None

        return Batched(Shape.ONE, _LOOKUP, begin)

    def node(loaders: Loaders, arguments: dict[str, Any]) -> tuple[Fetch, None]:
        global_id = arguments["id"]
        return lambda roots: [_load(node_key(loaders, global_id)) for _ in roots], None

    def nodes(loaders: Loaders, arguments: dict[str, Any]) -> tuple[Fetch, None]:
        global_ids = arguments["ids"]

        def fetch(roots: list[Any]) -> list[Any]:
            return [_load_many([node_key(loaders, id) for id in global_ids]) for _ in roots]

        return fetch, None

    def searched(loaders: Loaders, arguments: dict[str, Any]) -> tuple[Fetch, None]:
        query = arguments["query"]

        def fetch(roots: list[Any]) -> list[Any]:
            return [asyncio.ensure_future(search(loaders, query)) for _ in roots]

        return fetch, None

    def listed(name: str, order_input: type, filtered: bool) -> Batched:
        def begin(loaders: Loaders, arguments: dict[str, Any]) -> tuple[Fetch, Paged]:
            shape: tuple[object, ...] = (kept(arguments),) if filtered else ()
            ordered = inputs.order(convert(order_input, arguments.get("orderBy")))
            page, load = types.list_page(
                getattr(loaders, name),
                arguments.get("first"),
                arguments.get("last"),
                arguments.get("after"),
                arguments.get("before"),
                *shape,
                ordered,
            )
            now = partial(getattr(loaders, f"{name}_now"), page.slice, *shape, ordered)

            def fetch(roots: list[Any]) -> list[Any]:
                found = now()
                return [asyncio.ensure_future(load()) if found is None else found for _ in roots]

            return fetch, page

        return Batched(Shape.PAGE, _PACKAGES if filtered else _LIST, begin)

    def windowed(
        relation: types.Relation, own_order: Layout, order_input: type, filtered: bool
    ) -> Batched:
        def begin(loaders: Loaders, arguments: dict[str, Any]) -> tuple[Fetch, Paged]:
            filter = kept(arguments) if filtered else None
            ordered = inputs.order(convert(order_input, arguments.get("orderBy")))
            page, window = types.window_of(
                own_order,
                arguments.get("first"),
                arguments.get("last"),
                arguments.get("after"),
                arguments.get("before"),
                filter,
                ordered,
            )
            load_all = relation(loaders).load_all
            return lambda parents: load_all([window(parent.id) for parent in parents]), page

        return Batched(Shape.PAGE, _PACKAGES if filtered else _LIST, begin)

    def counted(relation: types.Relation) -> Batched:
        def begin(loaders: Loaders, arguments: dict[str, Any]) -> tuple[Fetch, None]:
            load_all = relation(loaders).load_all
            return lambda parents: load_all([types.counted(parent.id) for parent in parents]), None

        return Batched(Shape.COUNT, frozenset(), begin)

    def category(loaders: Loaders, arguments: dict[str, Any]) -> tuple[Fetch, None]:
        load_all = loaders.categories.by_id.load_all
        return lambda packages: load_all([package.category_id for package in packages]), None

    def hit(kind: types.SearchItemType, lookups: str) -> Batched:
        def begin(loaders: Loaders, arguments: dict[str, Any]) -> tuple[Fetch, None]:
            load_all = getattr(loaders, lookups).by_slug.load_all

            def fetch(hits: list[Any]) -> list[Any]:
                slugs = [types.hit_slug(found, kind) for found in hits]
                loaded = iter(load_all([slug for slug in slugs if slug is not None]))
                return [None if slug is None else next(loaded) for slug in slugs]

            return fetch, None

        return Batched(Shape.ONE, frozenset(), begin)

    return {
        ("Query", "node"): Batched(Shape.ONE, frozenset({"id"}), node),
        ("Query", "nodes"): Batched(Shape.MANY, frozenset({"ids"}), nodes),
        ("Query", "category"): lookup_by("categories"),
        ("Query", "grid"): lookup_by("grids"),
        ("Query", "package"): lookup_by("packages"),
        ("Query", "categories"): listed("list_categories", inputs.CategoryOrder, False),
        ("Query", "grids"): listed("list_grids", inputs.GridOrder, False),
        ("Query", "packages"): listed("list_packages", inputs.PackageOrder, True),
        ("Query", "search"): Batched(Shape.MANY, frozenset({"query"}), searched),
        ("Category", "packages"): windowed(
            types.CATEGORY_PACKAGES, BY_ID, inputs.PackageOrder, True
        ),
        ("Category", "packageCount"): counted(types.CATEGORY_PACKAGES),
        ("Grid", "packages"): windowed(types.GRID_PACKAGES, BY_TITLE, inputs.PackageOrder, True),
        ("Grid", "packageCount"): counted(types.GRID_PACKAGES),
        ("Package", "category"): Batched(Shape.ONE, frozenset(), category),
        ("Package", "grids"): windowed(types.PACKAGE_GRIDS, BY_MEMBERSHIP, inputs.GridOrder, False),
        ("Package", "gridCount"): counted(types.PACKAGE_GRIDS),
        ("SearchResult", "package"): hit(types.SearchItemType.PACKAGE, "packages"),
        ("SearchResult", "grid"): hit(types.SearchItemType.GRID, "grids"),
    }


def _load(keyed: Keyed | None) -> Any:
    """What the loader has for the key (its value, or its future), or None without one."""
    return None if keyed is None else keyed[0].load_all([keyed[1]])[0]


def _load_many(keyed: list[Keyed | None]) -> list[Any]:
    """`_load` of each, each loader asked once for all its keys (one batch)."""
    keys: dict[Loader[Any, Any], list[Any]] = {}
    for found in keyed:
        if found is not None:
            keys.setdefault(found[0], []).append(found[1])
    answers = {loader: iter(loader.load_all(asked)) for loader, asked in keys.items()}
    return [None if found is None else next(answers[found[0]]) for found in keyed]
