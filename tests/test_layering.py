"""The rooms of gateway/ import one another only the way README "How it works" lays them out.

Each room (a top-level module, a package, or a backend's folder under loaders/) stands on a
floor and imports only rooms on floors below its own; some rooms' docs narrow that further,
to the rooms they may import or the rooms that may import them. The imports are read from the
source with `ast`, every one of them, inside functions and `TYPE_CHECKING` blocks too.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import gateway

GATEWAY = Path(gateway.__file__).parent

# The rooms, top floor first (README "How it works"; each room's __init__.py says the same).
FLOORS = [
    {"__main__"},
    {"cli"},
    {"worker"},
    {"app"},
    {"operations", "run"},
    {"http", "compose"},
    {"engine", "backends", "validating"},
    {"schema", "demo"},
    {"loaders.sql"},
    {"loaders.rest"},
    {"loaders"},
    {"caching"},
    {"documents"},
    {"observability", "config"},
    {"errors", "internals", "middleware", "tasks"},
]

# Rooms whose docs name all they may import.
IMPORTS_ONLY = {
    "config": {"errors"},
    "observability": {"errors", "middleware"},
    "documents": {"errors", "internals", "observability"},
    "caching": {"config", "errors", "documents", "observability"},
}

# Rooms whose docs name all that may import them: the HTTP layer; the settings, read where
# the gateway is put together; each backend, chosen by backends.py alone (the mirror reads
# the APIv4, the demo and `gateway mirror` write a database).
IMPORTED_ONLY_BY = {
    "http": {"app", "operations", "run", "worker"},
    "config": {"app", "compose", "cli", "worker", "backends", "caching"},
    "loaders.rest": {"backends", "loaders.sql"},
    "loaders.sql": {"backends", "cli", "demo"},
}

FLOOR = {room: level for level, rooms in enumerate(FLOORS) for room in rooms}


def room_of(module: str) -> str | None:
    """The room of a dotted name under `gateway`: its longest prefix that is a room."""
    parts = module.split(".")[1:]
    for end in range(len(parts), 0, -1):
        if ".".join(parts[:end]) in FLOOR:
            return ".".join(parts[:end])
    return None


def modules() -> Iterator[tuple[str, Path]]:
    """Each module of the gateway, dotted, but the package's own empty __init__."""
    for path in sorted(GATEWAY.rglob("*.py")):
        parts = path.relative_to(GATEWAY.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if len(parts) > 1:
            yield ".".join(parts), path


def imported(module: str, path: Path) -> Iterator[str]:
    """Each name under `gateway` the module imports, a relative import made absolute, and
    `from m import n` read as `m.n` (which may be a module of its own)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                above = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*above, base]) if base else ".".join(above)
            names = [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        yield from (name for name in names if name.split(".")[0] == "gateway")


def arrows() -> set[tuple[str, str]]:
    """(importer, imported) for each pair of distinct rooms with an import between them."""
    found = set()
    for module, path in modules():
        room = room_of(module)
        assert room is not None, f"{module} is in no room: put it on a floor of FLOORS"
        for name in imported(module, path):
            target = room_of(name)
            assert target is not None, f"{module} imports {name}, in no room"
            if target != room:
                found.add((room, target))
    return found


def test_the_rooms_are_read_from_the_code() -> None:
    """The reading finds what the README draws (a reader that found nothing would pass all)."""
    found = arrows()
    assert {("schema", "loaders"), ("loaders.sql", "loaders.rest"), ("app", "http")} <= found
    assert {room for arrow in found for room in arrow} == set(FLOOR)


def test_a_room_imports_only_rooms_below_its_own_floor() -> None:
    upward = sorted(
        f"{room} imports {target}" for room, target in arrows() if FLOOR[target] <= FLOOR[room]
    )
    assert not upward, upward


def test_a_room_imports_only_what_its_docs_name() -> None:
    beyond = sorted(
        f"{room} imports {target}"
        for room, target in arrows()
        if room in IMPORTS_ONLY and target not in IMPORTS_ONLY[room]
    )
    assert not beyond, beyond


def test_a_room_is_imported_only_by_those_its_docs_name() -> None:
    beyond = sorted(
        f"{room} imports {target}"
        for room, target in arrows()
        if target in IMPORTED_ONLY_BY and room not in IMPORTED_ONLY_BY[target]
    )
    assert not beyond, beyond
