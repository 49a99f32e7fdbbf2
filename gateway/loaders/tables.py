"""The Django Packages tables, defined once for SQLite and PostgreSQL.

Only the columns the API uses are declared: pointed at the real Django Packages database,
the gateway reads these and ignores the rest. It creates the tables (with the indexes its
queries need) only in a database it owns: the embedded one, or the target of `mirror`.
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


metadata = MetaData()

category = Table(
    "package_category",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    Column("title", String(50), nullable=False),
    Column("slug", String(50), nullable=False, index=True),
    Column("description", Text, nullable=False),
    Column("title_plural", String(50), nullable=False),
    Column("show_pypi", Boolean, nullable=False),
    Column("created", UTCDateTime, nullable=False),
    Column("modified", UTCDateTime, nullable=False),
)

package = Table(
    "package_package",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
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
    Column("created", UTCDateTime, nullable=False),
    Column("modified", UTCDateTime, nullable=False),
    Index("package_package_category_id", "category_id", "id"),
)

version = Table(
    "package_version",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    Column("package_id", BigInteger, ForeignKey("package_package.id"), nullable=False, index=True),
    Column("number", String(100), nullable=False),
    Column("upload_time", UTCDateTime, nullable=True),
)

grid = Table(
    "grid_grid",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    Column("title", String(100), nullable=False),
    Column("slug", String(45), nullable=False, unique=True),
    Column("description", Text, nullable=False),
    Column("is_locked", Boolean, nullable=False),
    Column("header", Boolean, nullable=False),
    Column("created", UTCDateTime, nullable=False),
    Column("modified", UTCDateTime, nullable=False),
)

grid_package = Table(
    "grid_gridpackage",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    Column("grid_id", BigInteger, ForeignKey("grid_grid.id"), nullable=False),
    Column("package_id", BigInteger, ForeignKey("package_package.id"), nullable=False),
    Column("created", UTCDateTime, nullable=False),
    Column("modified", UTCDateTime, nullable=False),
    UniqueConstraint("grid_id", "package_id"),
    Index("grid_gridpackage_package_id", "package_id", "id"),
)

search = Table(
    "searchv3_searchv3",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
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
    Column("created", UTCDateTime, nullable=False),
    Column("modified", UTCDateTime, nullable=False),
)
