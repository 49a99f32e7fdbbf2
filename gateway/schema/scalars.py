"""The DateTime scalar: ISO-8601 with the upstream's UTC offset kept."""

from __future__ import annotations

from datetime import datetime

import strawberry

from gateway.loaders.records import site_time


def _serialize(value: datetime) -> str:
    return value.isoformat()


def _parse(value: object) -> datetime:
    if not isinstance(value, str):
        raise ValueError("DateTime must be an ISO-8601 string")
    return site_time(datetime.fromisoformat(value))


DateTime = strawberry.scalar(
    name="DateTime",
    description="ISO-8601 date and time with its UTC offset, e.g. 2018-08-03T04:16:50-04:00.",
    serialize=_serialize,
    parse_value=_parse,
)
