"""The embedded catalogue: a SQLite file filled with the demo dataset on first use.

It lets `gateway serve` answer with no upstream and no database server. The file is built
beside its final path and renamed into place, so an interrupted first run leaves nothing
half-filled behind; once it exists, opening it costs one `stat` and one small query.
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
from gateway.loaders.database import create_engine
from gateway.loaders.writer import write_dataset

__all__ = ["default_database_path", "open_embedded"]


def default_database_path() -> Path:
    """Where the embedded catalogue lives unless told otherwise: the user's data directory."""
    return Path(user_data_dir("djangopackages-gateway")) / "catalogue.sqlite3"


async def open_embedded(path: Path | None = None) -> str:
    """The `sqlite:///` URL of the embedded catalogue, created from the demo dataset if missing."""
    path = (path or default_database_path()).absolute()
    if _has_tables(path):
        return _url(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(descriptor)
    temporary = Path(name)
    try:
        engine = create_engine(_url(temporary))
        try:
            await write_dataset(engine, generate())
        finally:
            # Closing the last connection folds the write-ahead log into the file itself.
            await engine.dispose()
        os.replace(temporary, path)
    finally:
        for leftover in (temporary, *_sidecars(temporary)):
            leftover.unlink(missing_ok=True)
    return _url(path)


def _has_tables(path: Path) -> bool:
    """False for a missing or empty file, which is ours to fill; any other file is kept."""
    if not path.exists() or path.stat().st_size == 0:
        return False
    try:
        with closing(sqlite3.connect(path)) as connection:
            (count,) = connection.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.DatabaseError as exc:
        raise ConfigError(f"the embedded catalogue {path} cannot be read: {exc}") from None
    return bool(count)


def _sidecars(path: Path) -> tuple[Path, Path]:
    return path.with_name(f"{path.name}-wal"), path.with_name(f"{path.name}-shm")


def _url(path: Path) -> str:
    return f"sqlite:///{path}"
