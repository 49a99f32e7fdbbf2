"""The DateTime scalar: ISO-8601 with the upstream's UTC offset kept."""

from __future__ import annotations

from datetime import datetime

import strawberry

from gateway.errors import BadUserInput
from gateway.loaders.records import site_time


def serialize_datetime(value: datetime) -> str:
    return value.isoformat()


def _parse(value: object) -> datetime:
    """A DateTime sent as a variable or written in the document (graphql-core parses a literal
    by its plain value); anything else is the client's mistake, BAD_USER_INPUT either way.

    graphql-core reports what a scalar raises with the error it stands for: a `ValueError`
    would be an internal error, logged with its traceback.
    """
    if isinstance(value, str):
        try:
            return site_time(datetime.fromisoformat(value))
        except ValueError:
            pass
    raise BadUserInput("DateTime must be an ISO-8601 date and time, e.g. 2018-08-03T04:16:50Z")


DateTime = strawberry.scalar(
    name="DateTime",
    description="ISO-8601 date and time with its UTC offset, e.g. 2018-08-03T04:16:50-04:00.",
    serialize=serialize_datetime,
    parse_value=_parse,
)
