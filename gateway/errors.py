"""The gateway's exceptions, the codes clients see, and how errors reach a client.

Every exception the gateway raises on purpose derives from `GatewayError`:

* GatewayError
  x ConfigError ............ a setting or an option it cannot run with: one line, exit status 2
    + SettingError
    + ManifestError ........ a trusted documents manifest it cannot serve
  x MirrorError ............ why `gateway mirror` stopped: one line, exit status 1
  x SharedCacheUnavailable . the shared Redis cannot be used now; handled, never seen by a client
  x OperationNameRequired .. several operations and no operationName: HTTP 400, as an unknown name
  x ReportedError .......... reported to the client as it is, with its `extensions.code`
    + BadUserInput
    + UpstreamError
      - TransientError ..... worth another attempt (the REST client retries it)
    + UpstreamBudgetExceeded  one request's upstream requests used up (`--max-upstream-requests`)
    + DatabaseError
    + PersistedQueryNotFound
    + EmptySelectionSet
    + OperationTimedOut
    + QueryRefused ......... a document refused by a query limit before it ran
                             (gateway/documents/limits.py)
      - QueryTooDeep
      - QueryTooCostly
      - TooManyAliases
      - TooManyTokens
      - TooManySelections
      - QueryTooComplex
      - IntrospectionDisabled
      - IntrospectionRepeated
    + RequestRefused ....... a whole HTTP request refused before any operation, with its status
      - BadRequest ......... Strawberry's view's refusals (not JSON, no query, an unknown name, ...)
      - RequestTooLarge
      - RequestBodyTimeout
      - BatchTooLarge
      - PersistedQueryRefused
        . PersistedDocumentRefused
      - PersistedQueryTooLarge
      - PersistedDocumentNotFound
      - PersistedDocumentIdRequired
      - RateLimitExceeded

Every error a client sees has `extensions.code`, decided by the type of the error it stands for
(`classify`): graphql-core carries ours as a GraphQL error's `original_error`. Anything else is
logged with its traceback and reaches the client only as "Internal server error".
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from typing import Any

from graphql import GraphQLError, GraphQLSyntaxError, Node
from strawberry.extensions import SchemaExtension
from strawberry.http import GraphQLHTTPResponse
from strawberry.schema.exceptions import CannotGetOperationTypeError
from strawberry.types import ExecutionResult

logger = logging.getLogger("gateway")

BAD_REQUEST = "BAD_REQUEST"  # a request the GraphQL-over-HTTP layer cannot read
BAD_USER_INPUT = "BAD_USER_INPUT"
UPSTREAM_ERROR = "UPSTREAM_ERROR"
DATABASE_ERROR = "DATABASE_ERROR"
INTERNAL_SERVER_ERROR = "INTERNAL_SERVER_ERROR"
GRAPHQL_PARSE_FAILED = "GRAPHQL_PARSE_FAILED"
GRAPHQL_VALIDATION_FAILED = "GRAPHQL_VALIDATION_FAILED"
# The query limits (gateway/documents/limits.py): the operation never ran, except for
# REQUEST_TIMEOUT.
QUERY_TOO_DEEP = "QUERY_TOO_DEEP"
QUERY_TOO_COSTLY = "QUERY_TOO_COSTLY"
TOO_MANY_ALIASES = "TOO_MANY_ALIASES"
TOO_MANY_TOKENS = "TOO_MANY_TOKENS"
# Fields of one selection set, once its fragments are spread (`--max-selections`), and the work
# of checking that a document's fields merge, which grows with their square.
TOO_MANY_SELECTIONS = "TOO_MANY_SELECTIONS"
QUERY_TOO_COMPLEX = "QUERY_TOO_COMPLEX"
INTROSPECTION_DISABLED = "INTROSPECTION_DISABLED"
# `__schema` or `__type` more than once in one operation.
INTROSPECTION_REPEATED = "INTROSPECTION_REPEATED"
REQUEST_TOO_LARGE = "REQUEST_TOO_LARGE"
BATCH_TOO_LARGE = "BATCH_TOO_LARGE"
REQUEST_TIMEOUT = "REQUEST_TIMEOUT"
# The upstream requests one request may cause (`--max-upstream-requests`): the fields that
# needed more fail with this.
UPSTREAM_BUDGET_EXCEEDED = "UPSTREAM_BUDGET_EXCEEDED"
# A request still running when the server's shutdown bound came (`--shutdown-timeout`).
SHUTTING_DOWN = "SHUTTING_DOWN"
# A request whose client hung up before its answer (logged with status 499): no client sees it.
CLIENT_CLOSED = "CLIENT_CLOSED"
# Automatic persisted queries (gateway/caching/persisted.py): a hash the gateway does not know
# (yet).
PERSISTED_QUERY_NOT_FOUND = "PERSISTED_QUERY_NOT_FOUND"
# ... and a document sent to be remembered that is too long to keep, even printed compactly.
PERSISTED_QUERY_TOO_LARGE = "PERSISTED_QUERY_TOO_LARGE"
# Trusted documents (gateway/documents/trusted_documents.py): an id the manifest does not hold, and
# text sent where only the manifest's documents run. Both refuse the whole request with HTTP 400.
PERSISTED_DOCUMENT_NOT_FOUND = "PERSISTED_DOCUMENT_NOT_FOUND"
PERSISTED_DOCUMENT_ID_REQUIRED = "PERSISTED_DOCUMENT_ID_REQUIRED"
# Rate limits (gateway/http/rate_limit.py): the client has spent its budget; HTTP 429.
RATE_LIMITED = "RATE_LIMITED"


class GatewayError(Exception):
    """The root of every exception the gateway raises on purpose."""


class ConfigError(GatewayError):
    """A setting has a value the gateway cannot run with; the message is one line."""


class SettingError(ConfigError):
    """A value the gateway cannot run with; `settings` names the settings it concerns."""

    def __init__(self, message: str, *settings: str) -> None:
        super().__init__(message)
        self.settings = settings


class ManifestError(ConfigError):
    """A trusted documents manifest the gateway cannot serve
    (gateway/documents/trusted_documents.py)."""


class MirrorError(GatewayError):
    """Why `gateway mirror` stopped, in one line; the database was left as it was."""


class SharedCacheUnavailable(GatewayError):
    """The shared cache cannot be used now: not started, marked down, or the command failed."""


class OperationNameRequired(CannotGetOperationTypeError, GatewayError):
    """A document of several operations, and no operation name to choose one: Strawberry would
    run the first, the GraphQL spec asks for a request error. It is Strawberry's refusal of an
    unknown operation name, in graphql-core's words: the HTTP view answers it with HTTP 400 and
    BAD_REQUEST, `gateway query` with one line."""

    def __init__(self) -> None:
        super().__init__(None)

    def as_http_error_reason(self) -> str:
        return "Must provide operation name if query contains multiple operations."


class ReportedError(GatewayError):
    """An error whose message is safe to show a client as it is, with its code.

    `detail` is for the server's log only: URLs, addresses, the underlying exception.
    """

    code = INTERNAL_SERVER_ERROR

    def __init_subclass__(cls, code: str = "", **kwargs: Any) -> None:
        """`class QueryTooDeep(QueryRefused, code=QUERY_TOO_DEEP)`: a subclass names its code."""
        super().__init_subclass__(**kwargs)
        cls.code = code or cls.code

    def __init__(self, message: str, detail: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail
        # graphql-core copies an original error's `extensions` into the GraphQL error.
        self.extensions: dict[str, Any] = {"code": self.code}


class BadUserInput(ReportedError, code=BAD_USER_INPUT): ...


class UpstreamError(ReportedError, code=UPSTREAM_ERROR):
    """The REST upstream failed: an error status, a timeout, or a body we cannot read."""


class TransientError(UpstreamError):
    """A failure worth another attempt: a connection that failed, 429, 502, 503 or 504."""

    def __init__(self, message: str, detail: str, retry_after: float | None = None) -> None:
        super().__init__(message, detail)
        self.retry_after = retry_after


class UpstreamBudgetExceeded(ReportedError, code=UPSTREAM_BUDGET_EXCEEDED):
    """The request has caused as many upstream requests as one may: the rest are not made.

    Not an `UpstreamError`: the upstream did not fail, so nothing that stands in for a failed
    upstream (a stale copy, a GET per record instead of the snapshot) is tried.
    """


class DatabaseError(ReportedError, code=DATABASE_ERROR): ...


class PersistedQueryNotFound(ReportedError, code=PERSISTED_QUERY_NOT_FOUND):
    """An APQ hash without its document, unknown here: the client is to send the document."""


class EmptySelectionSet(ReportedError, code=GRAPHQL_PARSE_FAILED):
    """A selection set without selections: graphql-core parses it, the GraphQL spec does not."""


class OperationTimedOut(ReportedError, code=REQUEST_TIMEOUT):
    """An operation still running at the request's deadline: it did run, its `data` is null."""


class QueryRefused(ReportedError):
    """A document over one of the query limits: it never ran."""


class QueryTooDeep(QueryRefused, code=QUERY_TOO_DEEP): ...


class QueryTooCostly(QueryRefused, code=QUERY_TOO_COSTLY): ...


class TooManyAliases(QueryRefused, code=TOO_MANY_ALIASES): ...


class TooManyTokens(QueryRefused, code=TOO_MANY_TOKENS): ...


class TooManySelections(QueryRefused, code=TOO_MANY_SELECTIONS): ...


class QueryTooComplex(QueryRefused, code=QUERY_TOO_COMPLEX): ...


class IntrospectionDisabled(QueryRefused, code=INTROSPECTION_DISABLED): ...


class IntrospectionRepeated(QueryRefused, code=INTROSPECTION_REPEATED): ...


class RequestRefused(ReportedError):
    """A request refused before any operation ran: an HTTP status and one GraphQL error."""

    status = 400

    def __init_subclass__(cls, status: int = 0, **kwargs: Any) -> None:
        """`class RequestTooLarge(RequestRefused, status=413)`: a subclass names its status."""
        super().__init_subclass__(**kwargs)
        cls.status = status or cls.status

    @property
    def body(self) -> GraphQLHTTPResponse:
        return {"errors": [{"message": self.message, "extensions": self.extensions}]}


class BadRequest(RequestRefused, code=BAD_REQUEST):
    """A request Strawberry's view refused, with its status (400 for most): a body that is not
    JSON, a parameter of the wrong type, no query, an unknown operation name, a mutation by GET,
    a method or a media type it does not take."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class RequestTooLarge(RequestRefused, code=REQUEST_TOO_LARGE, status=413): ...


class RequestBodyTimeout(RequestRefused, code=REQUEST_TIMEOUT, status=408): ...


class BatchTooLarge(RequestRefused, code=BATCH_TOO_LARGE): ...


class PersistedQueryRefused(RequestRefused, code=BAD_USER_INPUT):
    """An APQ extension the gateway cannot use: no limit, the request itself is wrong."""


class PersistedDocumentRefused(PersistedQueryRefused):
    """A `documentId` sent with a `query` too: the request itself is wrong."""


class PersistedQueryTooLarge(RequestRefused, code=PERSISTED_QUERY_TOO_LARGE):
    """A document sent with its APQ hash that is too long to keep: it is not run either."""


class PersistedDocumentNotFound(RequestRefused, code=PERSISTED_DOCUMENT_NOT_FOUND):
    """A `documentId` the trusted documents manifest does not hold (or, where only its documents
    run, an APQ hash)."""


class PersistedDocumentIdRequired(RequestRefused, code=PERSISTED_DOCUMENT_ID_REQUIRED):
    """Text sent where only the trusted documents manifest's documents run."""


class RateLimitExceeded(RequestRefused, code=RATE_LIMITED, status=429):
    """A request over its client's budget (gateway/http/rate_limit.py)."""


def located(error: ReportedError, nodes: Node | Sequence[Node] | None = None) -> GraphQLError:
    """`error` as graphql-core carries it: at `nodes` in the document, if any."""
    return GraphQLError(error.message, nodes, original_error=error)


def unexpected(error: Exception) -> GraphQLError:
    """An exception that escaped the whole operation, as Strawberry's pipeline reports one: no
    path, INTERNAL_SERVER_ERROR to the client, logged with its traceback (`log_unexpected`)."""
    return GraphQLError(str(error), original_error=error)


def unexpected_result(error: Exception) -> ExecutionResult:
    """The answer to an operation that `error` escaped: `unexpected`, and logged."""
    errors = [unexpected(error)]
    log_unexpected(errors)
    return ExecutionResult(None, errors)


def reported_as(kind: type[ReportedError], error: GraphQLError) -> GraphQLError:
    """An error graphql-core (or Strawberry) reported, at the same place, as one of `kind`."""
    return GraphQLError(
        error.message,
        error.nodes,
        error.source,
        error.positions,
        error.path,
        original_error=kind(error.message),
    )


class VariableErrors(SchemaExtension):
    """Variables that do not fit their types are the client's mistake: BAD_USER_INPUT.

    graphql-core checks them as execution starts, before any field runs, and answers with their
    errors instead of data: the only errors execution ends with that have no path.
    """

    def on_execute(self) -> Iterator[None]:
        yield
        result = self.execution_context.result
        if result is None or result.data is not None or not result.errors:
            return
        if all(error.path is None for error in result.errors):
            result.errors = [reported_as(BadUserInput, error) for error in result.errors]


def classify(error: GraphQLError) -> str:
    """The `extensions.code` for an error, from the type of the error it stands for."""
    original = error.original_error
    if isinstance(original, ReportedError):
        return original.code
    if isinstance(error, GraphQLSyntaxError):
        return GRAPHQL_PARSE_FAILED
    if error.path is not None or original is not None:
        return INTERNAL_SERVER_ERROR
    return GRAPHQL_VALIDATION_FAILED


def is_unexpected(error: GraphQLError) -> bool:
    """An error raised by a bug or an unforeseen failure, not by the request itself."""
    original = error.original_error
    return original is not None and not isinstance(original, ReportedError | GraphQLError)


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
    """Log what a client only sees as "Internal server error", with its traceback; then drop
    every error's traceback."""
    for error in errors:
        if is_unexpected(error):
            logger.error("unexpected error at %s", error.path, exc_info=error.original_error)
        elif isinstance(error.original_error, UpstreamError | DatabaseError):
            original = error.original_error
            logger.warning("%s at %s: %s", original.code, error.path, original.detail or original)
    for error in errors:
        _drop_tracebacks(error)


def _drop_tracebacks(error: BaseException) -> None:
    """Let go of the error's traceback, and of those of the errors it stands for, once logged.
    A traceback holds the frames it went through, and a frame that kept the error (in the
    request's results, a future, a list of answers) makes a cycle: the request's objects
    would wait for the garbage collector, which an upstream outage makes the common case."""
    seen: set[int] = set()
    pending: list[BaseException | None] = [error]
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        current.__traceback__ = None
        original = current.original_error if isinstance(current, GraphQLError) else None
        pending += [original, current.__cause__, current.__context__]


def is_request_error(result: ExecutionResult) -> bool:
    """The operation never ran: the document or its variables were refused.

    An operation cut short by the request's time limit did run: its `data` is null.
    """
    return result.data is None and any(
        error.path is None and not isinstance(error.original_error, OperationTimedOut)
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
