"""The embedded catalogue: a SQLite file filled with the demo dataset on first use.

It lets `gateway serve` answer with no upstream and no database server. The file is built
beside its final path and renamed into place, so an interrupted first run leaves nothing
half-filled behind; once it exists, opening it costs one `stat` and one small query. The file
carries the layout version it was built with (SQLite's `user_version`): a catalogue built by an
older gateway, without the tables or indexes this one reads, is built again.
"""

from __future__ import annotations

import os
import sqlite3
import tempfile
from contextlib import closing
from pathlib import Path

from platformdirs import user_data_dir

from gateway.demo.dataset import generate
from gateway.errors import ConfigError
from gateway.loaders.sql.engine import create_engine
from gateway.loaders.sql.writer import write_dataset

__all__ = ["default_database_path", "open_embedded"]

# Raised whenever the gateway starts to need more of its own database (2: the sort-key tables)
# or the demo dataset changes (3: the well-known packages and grids).
LAYOUT_VERSION = 3


def default_database_path() -> Path:
    """Where the embedded catalogue lives unless told otherwise: the user's data directory."""
    return Path(user_data_dir("djangopackages-gateway")) / "catalogue.sqlite3"


async def open_embedded(path: Path | None = None) -> str:
    """The `sqlite:///` URL of the embedded catalogue, created from the demo dataset if missing."""
    path = (path or default_database_path()).absolute()
    if _layout_version(path) == LAYOUT_VERSION:
        return _url(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        reason = exc.strerror or exc
        raise ConfigError(
            f"the embedded catalogue cannot be made in {path.parent}: {reason}"
        ) from None
    os.close(descriptor)
    temporary = Path(name)
    try:
        engine = create_engine(_url(temporary))
        try:
            await write_dataset(engine, generate())
            async with engine.begin() as connection:
                await connection.exec_driver_sql(f"PRAGMA user_version = {LAYOUT_VERSION}")
        finally:
            # Closing the last connection folds the write-ahead log into the file itself.
            await engine.dispose()
        os.replace(temporary, path)
    finally:
        for leftover in (temporary, *_sidecars(temporary)):
            leftover.unlink(missing_ok=True)
    return _url(path)


def _layout_version(path: Path) -> int:
    """The layout a catalogue file was built with; 0 for a missing or empty file."""
    if not path.exists() or path.stat().st_size == 0:
        return 0
    try:
        with closing(sqlite3.connect(path)) as connection:
            (version,) = connection.execute("PRAGMA user_version").fetchone()
    except sqlite3.DatabaseError as exc:
        raise ConfigError(f"the embedded catalogue {path} cannot be read: {exc}") from None
    return int(version)


def _sidecars(path: Path) -> tuple[Path, Path]:
    return path.with_name(f"{path.name}-wal"), path.with_name(f"{path.name}-shm")


def _url(path: Path) -> str:
    return f"sqlite:///{path}"
