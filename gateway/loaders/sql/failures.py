"""What a database failure is, and what a client is told about it."""

from __future__ import annotations

import sqlite3

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.exc import TimeoutError as PoolTimeout

__all__ = ["FAILURES", "failure_message"]

# What a driver or the network raises when the database is gone, slow or not what we expect.
FAILURES = (SQLAlchemyError, OSError, TimeoutError)

_QUERY_CANCELED = "57014"  # PostgreSQL's SQLSTATE for a statement stopped by statement_timeout


def failure_message(exc: BaseException) -> str:
    """What the client is told: a wait for a connection or a statement that took too long
    (PostgreSQL's query_canceled, SQLite's interrupt) is not a database that went away."""
    if isinstance(exc, PoolTimeout):
        return "The database is busy: no connection became free in time"
    original = getattr(exc, "orig", None)
    if (
        getattr(original, "sqlstate", None) == _QUERY_CANCELED
        or getattr(original, "sqlite_errorcode", None) == sqlite3.SQLITE_INTERRUPT
    ):
        return "The database took too long to answer"
    return "The database is unavailable"
