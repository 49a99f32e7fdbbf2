"""Error codes, the exceptions that carry them, and how errors reach a client.

Every error a client sees has `extensions.code`. Errors we raise on purpose carry their
own code and a message written for the client; anything else is logged with its traceback
and reaches the client only as "Internal server error".
"""

from __future__ import annotations

import logging
from typing import Any

from graphql import GraphQLError, GraphQLSyntaxError
from strawberry.http import GraphQLHTTPResponse
from strawberry.types import ExecutionResult

logger = logging.getLogger("gateway")

BAD_USER_INPUT = "BAD_USER_INPUT"
UPSTREAM_ERROR = "UPSTREAM_ERROR"
DATABASE_ERROR = "DATABASE_ERROR"
INTERNAL_SERVER_ERROR = "INTERNAL_SERVER_ERROR"
GRAPHQL_PARSE_FAILED = "GRAPHQL_PARSE_FAILED"
GRAPHQL_VALIDATION_FAILED = "GRAPHQL_VALIDATION_FAILED"
# The query limits (gateway/limits.py): the operation never ran, except for REQUEST_TIMEOUT.
QUERY_TOO_DEEP = "QUERY_TOO_DEEP"
QUERY_TOO_COSTLY = "QUERY_TOO_COSTLY"
TOO_MANY_ALIASES = "TOO_MANY_ALIASES"
TOO_MANY_TOKENS = "TOO_MANY_TOKENS"
INTROSPECTION_DISABLED = "INTROSPECTION_DISABLED"
REQUEST_TOO_LARGE = "REQUEST_TOO_LARGE"
BATCH_TOO_LARGE = "BATCH_TOO_LARGE"
REQUEST_TIMEOUT = "REQUEST_TIMEOUT"
# The upstream requests one request may cause (`--max-upstream-requests`): the fields that
# needed more fail with this.
UPSTREAM_BUDGET_EXCEEDED = "UPSTREAM_BUDGET_EXCEEDED"
# A request still running when the server's shutdown bound came (`--shutdown-timeout`).
SHUTTING_DOWN = "SHUTTING_DOWN"
# Automatic persisted queries (gateway/persisted.py): a hash the gateway does not know (yet).
PERSISTED_QUERY_NOT_FOUND = "PERSISTED_QUERY_NOT_FOUND"


# What graphql-core says when a variable's value does not fit its type (a request's input,
# not its document): "got invalid value", "of required type … was not provided", ….
_COERCION_PHRASES = ("invalid value", "was not provided", "must not be null")


class GatewayError(Exception):
    """An error whose message is safe to show a client as it is.

    `detail` is for the server's log only: URLs, addresses, the underlying exception.
    """

    code = INTERNAL_SERVER_ERROR

    def __init__(self, message: str, detail: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail
        # graphql-core copies an original error's `extensions` into the GraphQL error.
        self.extensions: dict[str, Any] = {"code": self.code}


class BadUserInput(GatewayError):
    code = BAD_USER_INPUT


class UpstreamError(GatewayError):
    """The REST upstream failed: an error status, a timeout, or a body we cannot read."""

    code = UPSTREAM_ERROR


class UpstreamBudgetExceeded(GatewayError):
    """The request has caused as many upstream requests as one may: the rest are not made."""

    code = UPSTREAM_BUDGET_EXCEEDED


class DatabaseError(GatewayError):
    code = DATABASE_ERROR


class PersistedQueryNotFound(GatewayError):
    """An APQ hash without its document, unknown here: the client is to send the document."""

    code = PERSISTED_QUERY_NOT_FOUND


class ConfigError(Exception):
    """A setting has a value the gateway cannot run with; the message is one line."""


def classify(error: GraphQLError) -> str:
    """The `extensions.code` for an error that does not carry one of ours."""
    original = error.original_error
    if isinstance(original, GatewayError):
        return original.code
    if isinstance(error, GraphQLSyntaxError):
        return GRAPHQL_PARSE_FAILED
    if error.path is not None:
        return INTERNAL_SERVER_ERROR
    if error.message.startswith("Variable '$") and any(
        phrase in error.message for phrase in _COERCION_PHRASES
    ):
        return BAD_USER_INPUT
    if original is not None:
        return INTERNAL_SERVER_ERROR
    return GRAPHQL_VALIDATION_FAILED


def is_unexpected(error: GraphQLError) -> bool:
    """An error raised by a bug or an unforeseen failure, not by the request itself."""
    original = error.original_error
    return original is not None and not isinstance(original, GatewayError | GraphQLError)


def format_error(error: GraphQLError) -> dict[str, Any]:
    """The error as the client sees it: no traceback, no internal detail, always a code."""
    formatted: dict[str, Any] = dict(error.formatted)
    if is_unexpected(error):
        formatted["message"] = "Internal server error"
    extensions = dict(formatted.get("extensions") or {})
    extensions.setdefault("code", classify(error))
    formatted["extensions"] = extensions
    return formatted


def log_unexpected(errors: list[GraphQLError]) -> None:
    """Log what a client only sees as "Internal server error", with its traceback."""
    for error in errors:
        if is_unexpected(error):
            logger.error("unexpected error at %s", error.path, exc_info=error.original_error)
        elif isinstance(error.original_error, UpstreamError | DatabaseError):
            original = error.original_error
            logger.warning("%s at %s: %s", original.code, error.path, original.detail or original)


def is_request_error(result: ExecutionResult) -> bool:
    """The operation never ran: the document or its variables were refused.

    An operation cut short by the request's time limit did run: its `data` is null.
    """
    return result.data is None and any(
        error.path is None and (error.extensions or {}).get("code") != REQUEST_TIMEOUT
        for error in result.errors or ()
    )


def response_body(result: ExecutionResult, *, stale: bool = False) -> GraphQLHTTPResponse:
    """The GraphQL response for a result: data, errors formatted for clients, extensions.

    A request error has no `data` entry at all, as the GraphQL-over-HTTP spec asks. When
    some of the data is a stale copy (`stale`), `extensions.stale` tells the client.
    """
    body: GraphQLHTTPResponse = {} if is_request_error(result) else {"data": result.data}
    if result.errors:
        body["errors"] = [format_error(error) for error in result.errors]
    extensions = {**(result.extensions or {}), **({"stale": True} if stale else {})}
    if extensions:
        body["extensions"] = extensions
    return body


class MirrorError(GatewayError):
    """Why `gateway mirror` stopped, in one line; the database was left as it was."""


class TransientError(UpstreamError):
    """A failure worth another attempt: a connection that failed, 429, 502, 503 or 504."""

    def __init__(self, message: str, detail: str, retry_after: float | None = None) -> None:
        super().__init__(message, detail)
        self.retry_after = retry_after
