"""What one HTTP request may take: its body's size and arrival, and its operations' time.

The HTTP view refuses a body over the limit (`limit_body`, `read_body`) before anything is
parsed, a body still arriving at the request's deadline, and ends operations at that deadline
with `in_time`: the query limits (limits.py) bound what a document asks, these what a request
costs in bytes and seconds.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

from starlette.requests import Request
from starlette.types import Message, Receive
from strawberry.types import ExecutionResult

from gateway.errors import OperationTimedOut, RequestBodyTimeout, RequestTooLarge, located


def _too_large(max_bytes: int) -> RequestTooLarge:
    return RequestTooLarge(f"The request body is over {max_bytes} bytes")


def limit_body(receive: Receive, max_bytes: int) -> Receive:
    """`receive`, refusing a body once more than `max_bytes` of it have arrived: a body sent in
    chunks, without a Content-Length, is counted as it is read."""
    received = 0

    async def limited() -> Message:
        nonlocal received
        message = await receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > max_bytes:
                raise _too_large(max_bytes)
        return message

    return limited


async def read_body(request: Request, max_bytes: int, deadline: float) -> None:
    """Read the whole body, through `limit_body`, before anything else: a Content-Length over
    the limit is refused without reading, and a body still arriving at the deadline is a 408.
    A request without a body (no Content-Length, or 0, and no Transfer-Encoding) waits for
    nothing: it needs no timer."""
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > max_bytes:
        raise _too_large(max_bytes)
    if length in ("", "0") and "transfer-encoding" not in request.headers:
        return
    try:
        async with asyncio.timeout_at(deadline):
            await request.body()  # Starlette keeps it for Strawberry
    except TimeoutError:
        raise RequestBodyTimeout("The request body did not arrive within the time limit") from None


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
