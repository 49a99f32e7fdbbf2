"""Requests that end before their answer: the client hung up, or the server's shutdown cut them.

`Interruptible` runs the app for each request and, once the app has read the request's body,
watches the connection from a task of its own (started once the request has run for
`WATCH_AFTER`, 10 ms, so that the many requests answered sooner cost no task; a hang-up is
noticed within them). When the client hangs up, the request is cancelled:
the request's backend is closed on the way out (app.py), so that nothing it started reaches the
upstream any more unless another request waits for it too. A client that hangs up before its
whole body came makes the app's read of it fail (Starlette's `ClientDisconnect`): the same end.
Either way the log line says 499, nginx's status for a request its client closed, and the
metrics count it as `CLIENT_CLOSED`, never as an error of the gateway's. When uvicorn cancels a
request still running at the end of `--shutdown-timeout`, the client gets a 503 with the code
`SHUTTING_DOWN` and the log one line, instead of uvicorn's bare 500 and a traceback.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from starlette.types import Message, Receive, Scope, Send

from gateway.errors import CLIENT_CLOSED, SHUTTING_DOWN
from gateway.middleware import HttpMiddleware
from gateway.observability import metrics

CLIENT_CLOSED_REQUEST = 499
# Seconds a request runs before its connection is watched: a hang-up is noticed within them.
WATCH_AFTER = 0.01

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
    further reads wait for what it finds. (What either waits for is made only once one has to
    wait: most requests are answered without.)
    """

    def __init__(self, receive: Receive, *, bodiless: bool) -> None:
        self._receive = receive
        self._unread_empty_body = bodiless
        self._body_read = bodiless
        self.gone = False  # whether the client has hung up
        self._body_read_event: asyncio.Event | None = None
        self._gone_event: asyncio.Event | None = None

    async def receive(self) -> Message:
        if self._unread_empty_body:
            self._unread_empty_body = False
            return {"type": "http.request", "body": b"", "more_body": False}
        if not self._body_read:
            message = await self._receive()
            if message["type"] != "http.request" or not message.get("more_body", False):
                self._body_read = True
                if self._body_read_event is not None:
                    self._body_read_event.set()
            if message["type"] == "http.disconnect":  # hung up before the whole body came
                self._hung_up()
            return message
        if not self.gone:
            if self._gone_event is None:
                self._gone_event = asyncio.Event()
            await self._gone_event.wait()
        return {"type": "http.disconnect"}

    async def hung_up(self) -> None:
        """Return once the client has hung up (or the server has ended the exchange)."""
        if not self._body_read:
            if self._body_read_event is None:
                self._body_read_event = asyncio.Event()
            await self._body_read_event.wait()
        while (await self._receive())["type"] != "http.disconnect":
            pass  # the empty body of a request without one
        self._hung_up()

    def _hung_up(self) -> None:
        self.gone = True
        if self._gone_event is not None:
            self._gone_event.set()


def _bodiless(scope: Scope) -> bool:
    for name, value in scope["headers"]:
        if name == b"transfer-encoding" or (name == b"content-length" and value != b"0"):
            return False
    return True


class _Watch:
    """The watch over one request's connection, once the request has run for `WATCH_AFTER`
    seconds (a request answered by then, as most are, never needs it): once the client hangs
    up, unless the answer has gone out whole, the request's task is cancelled.

    Its timer is set at the event loop's next turn: a request answered at once (a cached
    answer) costs no timer either."""

    def __init__(self, connection: _Connection, request: asyncio.Task[Any]) -> None:
        self.connection = connection
        self.request = request
        self.complete = False  # the answer has gone out whole: a hang-up now is its end
        self.cut = False  # the request's task was cancelled here, its client gone
        self._watcher: asyncio.Task[None] | None = None
        self._loop = request.get_loop()  # (`get_running_loop` costs a system call on 3.11)
        self._starting: asyncio.Handle = self._loop.call_soon(self._wait)

    def _wait(self) -> None:
        self._starting = self._loop.call_later(WATCH_AFTER, self._start)

    def _start(self) -> None:
        self._watcher = asyncio.ensure_future(self._watch())

    async def _watch(self) -> None:
        await self.connection.hung_up()
        if not self.complete:
            self.cut = True
            self.request.cancel()

    def stop(self) -> None:
        self._starting.cancel()
        if self._watcher is not None:
            # Let go of it: its cancellation's traceback holds `_watch`'s frame, which holds
            # this watch, a cycle only the garbage collector would end.
            self._watcher.cancel()
            self._watcher = None


class Interruptible(HttpMiddleware):
    """ASGI middleware: a request's work stops when its client hangs up; a request cut at
    shutdown is answered 503 `SHUTTING_DOWN`."""

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = asyncio.current_task()
        assert request is not None
        connection = _Connection(receive, bodiless=_bodiless(scope))
        watch = _Watch(connection, request)
        started = False

        async def sending(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            watch.complete = message["type"] == "http.response.body" and not message.get(
                "more_body", False
            )
            await send(message)

        try:
            await self.app(scope, connection.receive, sending)
        except asyncio.CancelledError:
            watch.stop()
            if not watch.cut or request.uncancel() > 0:  # uvicorn's shutdown bound came
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
        except Exception:
            if watch.complete or not connection.gone:  # a failure of the app's own
                raise
        else:
            if watch.cut:
                request.uncancel()  # the app let the cancellation pass: the request ends anyway
            if watch.complete or not connection.gone:  # the answer went out
                return
        finally:
            watch.stop()
        # The client hung up: its work was cancelled (or, mid-body, its read of it failed).
        metrics.interrupted(CLIENT_CLOSED)
        if not started:  # to nobody: the log line says what became of the request
            await sending({"type": "http.response.start", "status": CLIENT_CLOSED_REQUEST})
            await sending({"type": "http.response.body", "body": b""})
