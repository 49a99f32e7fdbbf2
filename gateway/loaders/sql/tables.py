"""The Django Packages tables, defined once for SQLite and PostgreSQL.

Only the columns the API uses are declared: pointed at the real Django Packages database,
the gateway reads these and ignores the rest. It creates the tables (with the indexes its
queries need) only in a database it owns: the embedded one, or the target of `mirror`.
There it also keeps key tables of its own (`gateway_*_key`): titles and text lower-cased by
Python, which SQL orders and matches exactly as Python would (see `sort_keys.py`).

The indexes behind filters and orders, beyond Django's own (primary keys, unique slugs, the
foreign keys, `grid_gridpackage (grid_id, package_id)`): `package_package` on (category_id,
id), (repo_watchers, id), (repo_forks, id), (last_commit_date, id), (created, id) and
(modified, id), plus on PostgreSQL (last_commit_date DESC NULLS LAST, id DESC), for ordered
pages, a category's packages and the date bounds; `grid_gridpackage (package_id, id)` for a
package's grids; each key table on (title_key, id).

A real Django Packages database has no key tables, and needs the same `package_package` and
`grid_gridpackage` indexes plus expression indexes for titles on PostgreSQL:
`CREATE INDEX ON package_package ((lower(title) COLLATE "C"), id)`, and the same on
`grid_grid` and `package_category`. The `query` words are substrings anywhere in a text, which
no B-tree serves: they are tested on the rows the other conditions leave (about 5,400 packages
on the site today).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp stored as UTC and always read back timezone-aware.

    PostgreSQL keeps `timestamptz` aware; SQLite has no time zones, so there the value is
    stored as naive UTC and given its zone back when read.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: store aware datetimes only")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        read: datetime = datetime.fromisoformat(value) if isinstance(value, str) else value
        return read if read.tzinfo is not None else read.replace(tzinfo=UTC)


def _id(name: str) -> Column[int]:
    """A bigint primary key; on SQLite an INTEGER one, so that it is the table's rowid."""
    return Column(name, BigInteger().with_variant(Integer, "sqlite"), primary_key=True)


def _timestamps() -> tuple[Column[datetime], Column[datetime]]:
    """Django's `created` and `modified`, which every table but the versions has."""
    return (
        Column("created", UTCDateTime, nullable=False),
        Column("modified", UTCDateTime, nullable=False),
    )


metadata = MetaData()

category = Table(
    "package_category",
    metadata,
    _id("id"),
    Column("title", String(50), nullable=False),
    Column("slug", String(50), nullable=False, index=True),
    Column("description", Text, nullable=False),
    Column("title_plural", String(50), nullable=False),
    Column("show_pypi", Boolean, nullable=False),
    *_timestamps(),
)

package = Table(
    "package_package",
    metadata,
    _id("id"),
    Column("title", String(100), nullable=False),
    Column("slug", String(50), nullable=False, unique=True),
    Column("category_id", BigInteger, ForeignKey("package_category.id"), nullable=False),
    Column("repo_description", Text, nullable=False),
    Column("repo_url", String(255), nullable=False, unique=True),
    Column("repo_watchers", Integer, nullable=False),
    Column("repo_forks", Integer, nullable=False),
    Column("pypi_url", String(255), nullable=False),
    Column("pypi_downloads", Integer, nullable=False),
    Column("participants", Text, nullable=False),
    Column("last_fetched", UTCDateTime, nullable=True),
    Column("documentation_url", String(255), nullable=True),
    Column("commits_over_52w", JSON, nullable=False),
    Column("last_commit_date", UTCDateTime, nullable=True),
    Column("latest_version_id", BigInteger, nullable=True),
    *_timestamps(),
    Index("package_package_category_id", "category_id", "id"),
    *(
        Index(f"package_package_{name}", name, "id")
        for name in ("repo_watchers", "repo_forks", "last_commit_date", "created", "modified")
    ),
)

# PostgreSQL reads an index backwards for a descending order, but then with the nulls first.
Index(
    "package_package_last_commit_date_desc",
    package.c.last_commit_date.desc().nulls_last(),
    package.c.id.desc(),
).ddl_if(dialect="postgresql")

version = Table(
    "package_version",
    metadata,
    _id("id"),
    Column("package_id", BigInteger, ForeignKey("package_package.id"), nullable=False, index=True),
    Column("number", String(100), nullable=False),
    Column("upload_time", UTCDateTime, nullable=True),
)

grid = Table(
    "grid_grid",
    metadata,
    _id("id"),
    Column("title", String(100), nullable=False),
    Column("slug", String(45), nullable=False, unique=True),
    Column("description", Text, nullable=False),
    Column("is_locked", Boolean, nullable=False),
    Column("header", Boolean, nullable=False),
    *_timestamps(),
)

grid_package = Table(
    "grid_gridpackage",
    metadata,
    _id("id"),
    Column("grid_id", BigInteger, ForeignKey("grid_grid.id"), nullable=False),
    Column("package_id", BigInteger, ForeignKey("package_package.id"), nullable=False),
    *_timestamps(),
    UniqueConstraint("grid_id", "package_id"),
    Index("grid_gridpackage_package_id", "package_id", "id"),
)

search = Table(
    "searchv3_searchv3",
    metadata,
    _id("id"),
    Column("item_type", String(40), nullable=False),
    Column("title", String(100), nullable=False),
    Column("slug", String(100), nullable=False),
    Column("description", Text, nullable=False),
    Column("category", String(50), nullable=False),
    Column("weight", Integer, nullable=False),
    Column("repo_watchers", Integer, nullable=False),
    Column("repo_forks", Integer, nullable=False),
    Column("pypi_downloads", Integer, nullable=False),
    Column("score", Integer, nullable=False),
    Column("usage", Integer, nullable=False),
    Column("participants", Text, nullable=False),
    Column("last_committed", UTCDateTime, nullable=True),
    Column("last_released", UTCDateTime, nullable=True),
    *_timestamps(),
)


# Compared byte by byte on both databases, which for UTF-8 text is code-point order: SQLite's
# default BINARY collation does that; PostgreSQL's default follows the database's locale.
_BYTES = Text().with_variant(Text(collation="C"), "postgresql")


def _key_table(name: str, id_name: str, *keys: str) -> Table:
    """A key table: one row per record, rebuilt whole by every write, so no foreign key."""
    return Table(
        name,
        metadata,
        _id(id_name),
        *(Column(key, _BYTES, nullable=False) for key in keys),
        Index(f"{name}_title_key", "title_key", id_name),
    )


package_key = _key_table("gateway_package_key", "package_id", "title_key", "text_key")
grid_key = _key_table("gateway_grid_key", "grid_id", "title_key")
category_key = _key_table("gateway_category_key", "category_id", "title_key")

KEY_TABLES = (package_key, grid_key, category_key)

# SQLite's FTS5 index over `searchv3_searchv3`, which `search.build_search_index` (re)builds.
FTS_TABLE = "searchv3_fts"
# ... and its FTS5 trigram index over titles and slugs, for the site's trigram matches.
TRIGRAM_TABLE = "searchv3_trigram"
