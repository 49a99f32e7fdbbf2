"""The APIv4's JSON: its structs, how a body is decoded, its records, and the snapshot.

The structs are derived from the records' descriptions (records.py): each record field under
its REST key, after the relation lists the record does not keep (a grid's `packages`, a
package's `grids`); the converters put them back in the record's order and names.
"""

from __future__ import annotations

import functools
import logging
import weakref
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar, cast
from urllib.parse import urlsplit

import msgspec

from gateway.errors import UpstreamError
from gateway.loaders.entities import Spec, fields_of
from gateway.loaders.records import (
    Category,
    Form,
    Grid,
    Package,
    SearchHit,
    site_time,
    split_participants,
)
from gateway.loaders.rest.snapshot import Catalogue, Lists
from gateway.loaders.rest.turns import Steps, in_chunks

logger = logging.getLogger("gateway")

T = TypeVar("T")
K = TypeVar("K")
R = TypeVar("R", bound=msgspec.Struct)


class _Links(msgspec.Struct, weakref=True):
    """What the code around reads of a decoded APIv4 object before it is a record: of a
    search hit nothing; of the others their keys and relation lists."""


class _Keys(_Links):
    id: int
    slug: str


class _GridLinks(_Keys):
    packages: list[str]


class _PackageLinks(_Keys):
    category: str
    grids: list[str]


L = TypeVar("L", bound=_Links)


def _wire_type(spec: Spec) -> Any:
    return str if spec.link or spec.rest_form is Form.COMMAS else spec.type


def _wire_struct(record: type[msgspec.Struct], links: type[L]) -> type[L]:
    """The APIv4's JSON of `record`: `links`, then its other fields as the APIv4 names them."""
    fields = [
        (spec.rest, _wire_type(spec))
        for spec in fields_of(record)
        if spec.rest not in links.__struct_fields__
    ]
    return cast("type[L]", msgspec.defstruct(f"{record.__name__}JSON", fields, bases=(links,)))


# The code around sees only the relation lists: the record's fields are the converters' alone.
if TYPE_CHECKING:
    CategoryJSON = _Keys
    GridJSON = _GridLinks
    PackageJSON = _PackageLinks
    SearchJSON = _Links
else:
    CategoryJSON = _wire_struct(Category, _Keys)
    GridJSON = _wire_struct(Grid, _GridLinks)
    PackageJSON = _wire_struct(Package, _PackageLinks)
    SearchJSON = _wire_struct(SearchHit, _Links)


class ListJSON(msgspec.Struct):
    count: int
    results: list[msgspec.Raw]


@functools.lru_cache(maxsize=2**13)
def id_from_url(url: str) -> int:
    """The id at the end of a relation URL's path, whatever its host or query string.

    Remembered for the few thousand links a catalogue has: each grid's link recurs in every
    package it lists, and a snapshot's refresh parses them all again.
    """
    last = urlsplit(url).path.rstrip("/").rpartition("/")[2]
    if not (last.isascii() and last.isdigit()):
        raise UpstreamError("The upstream API returned a malformed relation link", f"link {url!r}")
    return int(last)


def _maybe_time(value: datetime | None) -> datetime | None:
    return None if value is None else site_time(value)


def _from_wire(spec: Spec) -> Callable[[Any], Any] | None:
    if spec.is_time:
        return _maybe_time
    if spec.link:
        return id_from_url
    if spec.rest_form is Form.COMMAS:
        return split_participants
    return None


def _converter(record: type[R], struct: type[msgspec.Struct]) -> Callable[[msgspec.Struct], R]:
    """What turns a decoded `struct` into its record, converting only the fields that need
    it: a snapshot's refresh converts every package, 5,400 at the real site's scale."""
    specs = fields_of(record)
    order = tuple(struct.__struct_fields__.index(spec.rest) for spec in specs)
    fixes = tuple((i, fix) for i, spec in enumerate(specs) if (fix := _from_wire(spec)))

    def convert(raw: msgspec.Struct) -> R:
        values = msgspec.structs.astuple(raw)
        fields = [values[index] for index in order]
        for index, fix in fixes:
            fields[index] = fix(fields[index])
        return record(*fields)

    return convert


to_category = _converter(Category, CategoryJSON)
to_grid = _converter(Grid, GridJSON)
to_package = _converter(Package, PackageJSON)
to_search_hit = _converter(SearchHit, SearchJSON)


def decode(body: bytes | msgspec.Raw, kind: type[T], path: str) -> T:
    """Decode and validate an upstream body; a body of the wrong shape is an upstream error."""
    try:
        return msgspec.json.decode(body, type=kind)
    except msgspec.ValidationError as exc:
        raise UpstreamError(
            "The upstream API returned data of an unexpected shape", f"{path}: {exc}"
        ) from exc
    except msgspec.DecodeError as exc:
        raise UpstreamError(
            "The upstream API returned a body that is not valid JSON", f"{path}: {exc}"
        ) from exc


class _Made(weakref.ref[Any]):
    """A weak reference to a JSON object, holding what was made of it and its key in `_MADE`:
    one object an entry. (With a plain reference, its callback's partial and a tuple each, a
    snapshot's 5,820 entries kept 3.0 MiB, tracemalloc; now 1.9 MiB.)"""

    __slots__ = ("key", "made")

    def __new__(cls, raw: Any, made: tuple[Any, tuple[int, ...]]) -> _Made:
        return super().__new__(cls, raw, _forget)

    def __init__(self, raw: Any, made: tuple[Any, tuple[int, ...]]) -> None:
        # `weakref.ref.__init__` only checks the arguments `__new__` took.
        self.key = id(raw)
        self.made = made


# Each record made from the upstream's JSON, with its relation's ids, by the JSON it was made
# from (by `id`), for as long as that JSON lives: the resource cache hands every request, and
# each renewal of the snapshot, the same decoded JSON while it holds it (a list's item equal to
# the one it holds is replaced by it, fetcher.py), and a lookup costs less than making the record
# and parsing its links again. An entry goes with its JSON (a weak reference's callback): what is
# made is bounded by what the cache keeps, which is bounded in bytes, and holds no JSON the cache
# let go of.
_MADE: dict[int, _Made] = {}


def made_once(raw: L, make: Callable[[L], T], links: list[str]) -> tuple[T, tuple[int, ...]]:
    """The record of `raw`, and the ids of its relation's `links`: made once per JSON. A
    malformed link raises, and nothing is remembered."""
    found = _MADE.get(id(raw))
    if found is not None and found() is raw:
        return cast("tuple[T, tuple[int, ...]]", found.made)
    made: tuple[T, tuple[int, ...]] = (make(raw), tuple(id_from_url(url) for url in links))
    entry = _Made(raw, made)
    _MADE[entry.key] = entry
    return made


def _forget(gone: weakref.ref[Any]) -> None:
    """A JSON object is gone: so is what was made of it (unless the entry is a newer one's)."""
    key = cast(_Made, gone).key
    if _MADE.get(key) is gone:
        del _MADE[key]


def snapshot_in_steps(
    categories: Sequence[CategoryJSON], grids: Sequence[GridJSON], packages: Sequence[PackageJSON]
) -> Steps[Catalogue]:
    """The catalogue snapshot of the three whole lists, made a chunk at a time (turns.py).

    A grid or package whose JSON is the last snapshot's (fetcher.py hands it back unchanged)
    keeps that snapshot's record and relation ids: the long-lived objects stay where they are.
    """
    grid_records = yield from _readable_in_steps(
        lambda raw: _made_or_read(raw, to_grid, raw.packages), grids
    )
    package_records = yield from _readable_in_steps(
        lambda raw: _made_or_read(raw, to_package, raw.grids), packages
    )
    return (
        yield from Catalogue.in_steps(
            Lists(
                _readable(to_category, categories),
                [record for record, _ in grid_records],
                [record for record, _ in package_records],
                packages_of_grid={record.id: links for record, links in grid_records},
                grids_of_package={record.id: links for record, links in package_records},
            )
        )
    )


def _made_or_read(raw: L, make: Callable[[L], T], links: list[str]) -> tuple[T, Sequence[int]]:
    """`made_once`, or for JSON with a malformed link what the snapshot reads of it: the record
    without that link, or no record if the link is the record's own (`_readable` leaves it out).
    Such JSON is read anew at each renewal: it is rare, and the memo's requests must see it fail."""
    try:
        return made_once(raw, make, links)
    except UpstreamError:
        return make(raw), _link_ids(links)


def _readable(convert: Callable[[K], T], raws: Iterable[K], what: str = "a record") -> list[T]:
    """What `convert` makes of each of `raws`, leaving out (and logging) any with a malformed
    link: one odd package must not cost every filter, order and category its snapshot."""
    converted = []
    for raw in raws:
        try:
            converted.append(convert(raw))
        except UpstreamError as exc:
            logger.warning("catalogue snapshot: left out %s: %s (%s)", what, exc, exc.detail)
    return converted


def _readable_in_steps(convert: Callable[[K], T], raws: Sequence[K]) -> Steps[list[T]]:
    """`_readable`, `PER_TURN` records a step."""
    converted: list[T] = []
    yield from in_chunks(raws, lambda chunk: converted.extend(_readable(convert, chunk)))
    return converted


def _link_ids(urls: Iterable[str]) -> list[int]:
    """The ids of a relation's links, leaving out any malformed one (logged)."""
    return _readable(id_from_url, urls, "a link")
