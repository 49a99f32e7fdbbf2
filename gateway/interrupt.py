"""Requests that end before their answer: the client hung up, or the server's shutdown cut them.

`Interruptible` runs the app for each request in a task of its own and, once the app has read
the request's body, watches the connection. When the client hangs up, the task is cancelled:
the request's backend is closed on the way out (app.py), so that nothing it started reaches the
upstream any more unless another request waits for it too; its log line says 499, nginx's
status for a request its client closed. When uvicorn cancels a request still running at the end
of `--shutdown-timeout`, the client gets a 503 with the code `SHUTTING_DOWN` and the log one
line, instead of uvicorn's bare 500 and a traceback.
"""

from __future__ import annotations

import asyncio
import contextlib

import orjson
from starlette.types import Message, Receive, Scope, Send

from gateway import metrics
from gateway.errors import SHUTTING_DOWN
from gateway.middleware import HttpMiddleware

CLIENT_CLOSED_REQUEST = 499

_CUT_AT_SHUTDOWN = orjson.dumps(
    {
        "errors": [
            {
                "message": "The server shut down before the request finished",
                "extensions": {"code": SHUTTING_DOWN},
            }
        ]
    }
)


class _Connection:
    """The incoming side of one request: its body as the app reads it, then a hang-up.

    The app alone reads the body (its limits count it as it comes); after its last part, or at
    once for a request without a body, `hung_up` alone reads the connection, and the app's
    further reads wait for what it finds.
    """

    def __init__(self, receive: Receive, *, bodiless: bool) -> None:
        self._receive = receive
        self._unread_empty_body = bodiless
        self._body_read = asyncio.Event()
        self._gone = asyncio.Event()
        if bodiless:
            self._body_read.set()

    async def receive(self) -> Message:
        if self._unread_empty_body:
            self._unread_empty_body = False
            return {"type": "http.request", "body": b"", "more_body": False}
        if not self._body_read.is_set():
            message = await self._receive()
            if message["type"] != "http.request" or not message.get("more_body", False):
                self._body_read.set()
            return message
        await self._gone.wait()
        return {"type": "http.disconnect"}

    async def hung_up(self) -> None:
        """Return once the client has hung up (or the server has ended the exchange)."""
        await self._body_read.wait()
        while (await self._receive())["type"] != "http.disconnect":
            pass  # the empty body of a request without one
        self._gone.set()


def _bodiless(scope: Scope) -> bool:
    headers = dict(scope["headers"])
    return b"transfer-encoding" not in headers and headers.get(b"content-length", b"0") == b"0"


class Interruptible(HttpMiddleware):
    """ASGI middleware: a request's work stops when its client hangs up; a request cut at
    shutdown is answered 503 `SHUTTING_DOWN`."""

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        connection = _Connection(receive, bodiless=_bodiless(scope))
        started = completed = False

        async def sending(message: Message) -> None:
            nonlocal started, completed
            started = started or message["type"] == "http.response.start"
            completed = message["type"] == "http.response.body" and not message.get(
                "more_body", False
            )
            await send(message)

        work = asyncio.ensure_future(self.app(scope, connection.receive, sending))
        watch = asyncio.ensure_future(connection.hung_up())
        try:
            await asyncio.wait((work, watch), return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:  # uvicorn's shutdown bound came
            await _stop(work, watch)
            metrics.interrupted(SHUTTING_DOWN)
            if not started:
                await send(
                    {
                        "type": "http.response.start",
                        "status": 503,
                        "headers": [
                            (b"content-type", b"application/json"),
                            (b"connection", b"close"),
                        ],
                    }
                )
                await send({"type": "http.response.body", "body": _CUT_AT_SHUTDOWN})
            return
        if work.done() or completed:  # the answer went out: the "hang-up" is its end
            watch.cancel()
            await work
            return
        await _stop(work, watch)
        if not started:  # to nobody: the log line says what became of the request
            await sending({"type": "http.response.start", "status": CLIENT_CLOSED_REQUEST})
            await sending({"type": "http.response.body", "body": b""})


async def _stop(*tasks: asyncio.Future[None]) -> None:
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
