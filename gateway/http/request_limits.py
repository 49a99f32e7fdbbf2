"""What one HTTP request may take: its body's size and arrival, and its operations' time.

The HTTP view reads the body (`read_body`) before anything is parsed, refusing one over the
limit and one still arriving at the request's deadline, and ends operations at that deadline
with `in_time`: the query limits (limits.py) bound what a document asks, these what a request
costs in bytes and seconds.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

from starlette.requests import ClientDisconnect
from starlette.types import Message, Receive, Scope
from strawberry.types import ExecutionResult

from gateway.errors import OperationTimedOut, RequestBodyTimeout, RequestTooLarge, located
from gateway.http.connection_limits import BODY_RECEIVED


def _too_large(max_bytes: int) -> RequestTooLarge:
    return RequestTooLarge(f"The request body is over {max_bytes} bytes")


async def read_body(scope: Scope, receive: Receive, max_bytes: int, deadline: float) -> bytes:
    """The whole body, read before anything else: a Content-Length over the limit is refused
    without reading, a body sent in chunks (without one) once more than `max_bytes` of it have
    come, and a body still arriving at the deadline is a 408.

    A request without a body (no Content-Length, or 0, and no Transfer-Encoding) waits for
    nothing, nor does one whose whole body the server has received already (gateway serve's
    protocol says so, gateway/http/connection_limits.py): neither needs a timer."""
    length, chunked = b"", False
    for name, value in scope["headers"]:
        if name == b"content-length" and not length:
            length = value
        elif name == b"transfer-encoding":
            chunked = True
    if length.isdigit() and int(length) > max_bytes:
        raise _too_large(max_bytes)
    if length in (b"", b"0") and not chunked:
        return b""
    if scope.get(BODY_RECEIVED, False):
        return await _read(receive, max_bytes)
    try:
        async with asyncio.timeout_at(deadline):
            return await _read(receive, max_bytes)
    except TimeoutError:
        raise RequestBodyTimeout("The request body did not arrive within the time limit") from None


async def _read(receive: Receive, max_bytes: int) -> bytes:
    """The body's parts, counted as they come; `ClientDisconnect` if the client hangs up."""
    parts: list[bytes] = []
    received = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            raise ClientDisconnect()
        part: bytes = message.get("body", b"")
        received += len(part)
        if received > max_bytes:
            raise _too_large(max_bytes)
        if not message.get("more_body", False):
            return b"".join((*parts, part)) if parts else part
        parts.append(part)


def replayed(body: bytes, receive: Receive) -> Receive:
    """`receive` for a reader of the request after `read_body`: the body it read, whole, then
    whatever comes next (the client hanging up)."""
    unread = True

    async def replay() -> Message:
        nonlocal unread
        if unread:
            unread = False
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


async def in_time(
    operation: Awaitable[ExecutionResult], deadline: float, timeout: float
) -> ExecutionResult:
    """The operation's result, or, once the loop's clock passes `deadline`, a REQUEST_TIMEOUT
    error and null `data`: the operation did run, so this is no request error."""
    try:
        async with asyncio.timeout_at(deadline) as scope:
            return await operation
    except TimeoutError:
        if not scope.expired():
            raise
    timed_out = OperationTimedOut(f"The request took longer than {timeout:g} s")
    return ExecutionResult(data=None, errors=[located(timed_out)])
