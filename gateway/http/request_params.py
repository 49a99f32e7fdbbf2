"""A GraphQL-over-HTTP request's parameters, decoded from JSON and checked before any use.

Strawberry checks the type of `query`, `variables` and `extensions` in a single request's body only;
`operationName` and a batch's operations would reach the layers below (the response cache's key,
`.get` on a scalar) and end as 500s. Here every parameter of the wrong JSON type, from a body, a
batch or a GET's query string, is a 400 with a one-line reason.
"""

from __future__ import annotations

from collections.abc import Mapping

import orjson
from cross_web import HTTPException
from strawberry.http import GraphQLRequestData

from gateway.errors import BadRequest
from gateway.internals import unknown_operation_name
from gateway.schema.pagination import shown

__all__ = ["bad_request", "from_body", "from_query_string"]

# Each parameter, the JSON types it may have besides null, and how a reason names them.
_PARAMETERS = {
    "query": (str, "a string"),
    "operationName": (str, "a string"),
    "variables": (dict, "an object"),
    "extensions": (dict, "an object"),
}


def from_body(body: str | bytes) -> dict[str, object] | list[dict[str, object]]:
    """A POST body: one operation, or a batch of them (a non-empty array)."""
    value = _decode(body, "request body")
    if isinstance(value, list):
        if not value:
            raise HTTPException(400, "A batch must hold at least one operation.")
        return [_operation(item) for item in value]
    return _operation(value)


def from_query_string(params: Mapping[str, str | None]) -> dict[str, object]:
    """A GET's operation: `variables` and `extensions` are JSON in the query string."""
    operation: dict[str, object] = dict(params)
    for name in ("variables", "extensions"):
        text = params.get(name)
        operation[name] = _decode(text, f"the `{name}` parameter") if text else None
    return _operation(operation)


def _decode(text: str | bytes, what: str) -> object:
    # orjson stops deep nesting with an error where `json` overflows into a 500.
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        raise HTTPException(400, f"Unable to parse {what} as JSON") from None


def _operation(value: object) -> dict[str, object]:
    if not isinstance(value, dict):
        raise HTTPException(400, "A GraphQL operation must be a JSON object.")
    for name, (kind, described) in _PARAMETERS.items():
        if not isinstance(value.get(name), kind | None):
            raise HTTPException(
                400, f"The GraphQL operation's `{name}` must be {described} or null, if provided."
            )
    return value


def bad_request(refusal: HTTPException) -> BadRequest:
    """Strawberry's refusal of the request (these checks' too) as a coded GraphQL error, at its
    status; an unknown operation name in it quoted short, as every error quotes a client's value
    (Strawberry quotes it whole, be it 90 KB of markup)."""
    name = unknown_operation_name(refusal)
    reason = refusal.reason if name is None else f"Unknown operation named {shown(name)}."
    return BadRequest(reason, refusal.status_code)


def operation_from_query(params: Mapping[str, str]) -> dict[str, object] | None:
    """A GET's operation, its `variables` and `extensions` decoded; None if either is not an
    object in JSON: the fast path leaves such a request to Strawberry's view, which refuses it."""
    data: dict[str, object] = dict(params)
    for name in ("variables", "extensions"):
        text = params.get(name)
        if text:
            try:
                data[name] = orjson.loads(text)
            except orjson.JSONDecodeError:
                return None
    return data


def plain_operation(data: object) -> GraphQLRequestData | None:
    """The operation `data` holds if it is a JSON object whose members have their types and that
    has a `query` or `extensions`; None for anything else, which Strawberry's view answers."""
    if not isinstance(data, dict):
        return None
    query, variables = data.get("query"), data.get("variables")
    operation_name, extensions = data.get("operationName"), data.get("extensions")
    if not (
        isinstance(query, str | None)
        and isinstance(variables, dict | None)
        and isinstance(operation_name, str | None)
        and isinstance(extensions, dict | None)
    ) or (query is None and extensions is None):
        return None
    return GraphQLRequestData(query, variables, operation_name, extensions)
