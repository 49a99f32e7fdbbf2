"""What one connection may hold: uvicorn's httptools protocol, with bounds on a request's head.

uvicorn closes a connection idle after an answer once `timeout_keep_alive` seconds pass without a
byte, and with its h11 parser refuses a head over `h11_max_incomplete_event_size` bytes. With
httptools, its fast parser (the one it picks), nothing bounds a connection before its headers are
complete: a socket that never sends a byte stays open, headers sent a byte at a time hold it as
long as they come, and a 50 MB header is read whole. `HeadBoundedProtocol` bounds them with those
two settings:

- a connection gets `timeout_keep_alive` seconds from its opening, or from its last answer, to
  begin a request, else it is closed (bytes of anything else, such as the rest of a body nobody
  read, do not keep it open); a request's line and headers get as long again from its first
  byte, else it is answered 408 and the connection closed;
- a request sent in time is never lost to these bounds: the event loop acts on a timer that is
  due before it reads what came meanwhile (it may run late, busy with other requests), and a
  connection closed with bytes unread is reset. So when the time is up and the client has sent
  bytes the loop has not read yet, and none since the wait began, the wait goes on: they are
  read first, and may be the request;
- a head over `h11_max_incomplete_event_size` bytes is answered 431 and the connection closed:
  once complete, by its line and fields; while it arrives, by the reads after the one it began
  in, so that what is taken in stays within the limit and two reads (of at most 256 KiB).

Two things cost less per request than uvicorn's own protocol: a response's head goes out with
the first part of its body, in one write where uvicorn makes two, and a request whose body has
come whole is marked so in its scope (`BODY_RECEIVED`), so that the app reads it without
setting a timer.

uvicorn's `limit_concurrency` caps the connections (503 past it); `server_options`
(gateway/worker.py) sets all of these from the settings. What this relies on of uvicorn's
protocol (its parser's callbacks, its keep-alive timer, its response cycle's writes)
tests/test_connections.py checks.
"""

from __future__ import annotations

import asyncio
import http
import select
from typing import cast

from starlette.types import Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import (
    STATUS_LINE,
    HttpToolsProtocol,
)

__all__ = ["BODY_RECEIVED", "HeadBoundedProtocol"]

# In a request's scope once its whole body has been received: a read of it will not wait, and
# needs no timer (gateway/http/request_limits.py).
BODY_RECEIVED = "gateway.body_received"

HEADERS_TOO_LARGE = http.HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE
HEAD_TIMEOUT = http.HTTPStatus.REQUEST_TIMEOUT
_REFUSED = "Request head refused: %d %s."  # as uvicorn logs its own refusals, at warning
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"  # what uvicorn's cycle writes for `Expect`


def _refusal(status: http.HTTPStatus) -> tuple[list[tuple[bytes, bytes]], bytes]:
    """The headers and body of a refusal: its reason in plain text, and the connection closed."""
    body = status.phrase.encode()
    headers = [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
    ]
    return headers, body


async def _headers_too_large(scope: Scope, receive: Receive, send: Send) -> None:
    """The app a request with too large a head gets, in place of the gateway's."""
    headers, body = _refusal(HEADERS_TOO_LARGE)
    await send({"type": "http.response.start", "status": HEADERS_TOO_LARGE, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


class _OneWrite:
    """The connection's transport as one request's cycle writes to it: the head of the
    response is held back until the body's first part, and both go out in one write (one
    system call, one packet) where uvicorn writes them apart. The head goes out alone if the
    cycle closes the connection first. Before the head, the cycle writes nothing but
    `100 Continue`, which goes out at once. (The cycle calls nothing of its transport but these
    three methods; this holds nothing of the cycle, or the two would make a reference cycle.)"""

    __slots__ = ("_head", "_transport", "_wrote_head")

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        self._head: bytes | None = None
        self._wrote_head = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._head is not None:
            data, self._head = self._head + data, None
        elif not self._wrote_head and data != _CONTINUE:
            self._head, self._wrote_head = bytes(data), True
            return
        self._transport.write(data)

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def close(self) -> None:
        if self._head is not None:
            self._transport.write(self._head)
            self._head = None
        self._transport.close()


class HeadBoundedProtocol(HttpToolsProtocol):
    """httptools's protocol, each request's head bounded in time and size.

    A connection has one timer, not one per request: a wait for a head only moves its end
    (`_deadline`), and the timer, when it fires for an earlier end, is armed again for the
    current one. A busy keep-alive connection arms it once per idle timeout, and acts only
    when it fires at the very end of a wait, as a timer armed when the wait began would.
    """

    _timer: asyncio.TimerHandle | None = None
    _armed_for = 0.0  # the loop's time the timer is due at
    _deadline: float | None = None  # the end of the wait for a head; None: no wait now
    _head_begun = False  # a request's first byte has come, its headers not all yet
    _head_bytes = 0  # of the head, in the reads after the one it began in
    _head_read = 0  # the read the head began in
    _reading = 0  # bytes of the read at hand
    _reads = 0  # of the connection, so far
    _reads_before_wait = 0  # when the wait began

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._await_head()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_waiting()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        self._reads += 1
        self._reading = len(data)
        continued = self._head_begun  # a head begun in an earlier read
        super().data_received(data)
        if continued and self._head_begun:  # every byte of this read is the head's
            self._head_bytes += len(data)
            limit = self.config.h11_max_incomplete_event_size
            if limit is not None and self._head_bytes > limit:
                self._refuse(HEADERS_TOO_LARGE)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_begun, self._head_bytes, self._head_read = True, 0, self._reads
        if self._deadline is not None:  # waited for: the head's own time, from its first byte
            self._await_head()

    def on_headers_complete(self) -> None:
        self._stop_waiting()
        limit = self.config.h11_max_incomplete_event_size
        # A head that came whole in one read no longer than the limit is within it.
        if limit is not None and (self._head_read != self._reads or self._reading > limit):
            size = len(self.url) + sum(len(name) + len(value) for name, value in self.headers)
            if size > limit:
                self.logger.warning(_REFUSED, HEADERS_TOO_LARGE, HEADERS_TOO_LARGE.phrase)
                self.app = _headers_too_large  # the connection's last request: the answer closes it
        before = self.cycle
        super().on_headers_complete()
        # A response to HEAD has no body to join its head to.
        if self.cycle is not before and self.scope["method"] != "HEAD":
            self.cycle.transport = cast(asyncio.Transport, _OneWrite(self.transport))

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self.scope[BODY_RECEIVED] = True  # type: ignore[literal-required]

    def on_response_complete(self) -> None:
        """uvicorn's, but for its keep-alive timer: the wait for the next head stands for it."""
        self.server_state.total_requests += 1
        if self.transport.is_closing():
            return
        self.flow.resume_reading()
        if self.pipeline:  # the next request, read already, starts now
            cycle, app = self.pipeline.pop()
            self._start_asgi_task(cycle, app)
        else:
            self._await_head()

    def _await_head(self) -> None:
        """Wait `timeout_keep_alive` seconds from now for a head, or for the rest of one."""
        self._deadline = self.loop.time() + self.timeout_keep_alive
        self._reads_before_wait = self._reads
        if self._timer is None:
            self._arm(self._deadline)

    def _stop_waiting(self) -> None:
        self._head_begun = False
        self._deadline = None

    def _arm(self, when: float) -> None:
        self._armed_for = when
        self._timer = self.loop.call_at(when, self._timed_out)

    def _timed_out(self) -> None:
        self._timer = None
        if self._deadline is None or self.transport.is_closing():
            return  # a request is being answered: its answer begins the next wait
        if self._armed_for < self._deadline:  # the wait began again since: due at its end
            self._arm(self._deadline)
        elif self._reads == self._reads_before_wait and self._unread_bytes_waiting():
            self._await_head()  # sent in time, the loop late to read it: read it first
        elif self._head_begun:
            self._refuse(HEAD_TIMEOUT)
        else:
            self._close_now()

    def _close_now(self) -> None:
        """Close the connection, its end sent now: a client sees it before it sends again,
        where `close` alone sends it at the loop's next turn, maybe long after (uvloop)."""
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.transport.close()

    def _unread_bytes_waiting(self) -> bool:
        """Whether the client has sent bytes (or hung up) that the event loop has not read."""
        poller = select.poll()
        poller.register(self.transport.get_extra_info("socket").fileno(), select.POLLIN)
        return bool(poller.poll(0))

    def _refuse(self, status: http.HTTPStatus) -> None:
        """Answer `status` to a request whose head is not complete, and close the connection.

        Nothing is written while an answer to an earlier request is (a pipelined head over
        the limit): the connection is closed all the same.
        """
        self._stop_waiting()
        if self.transport.is_closing():
            return
        self.logger.warning(_REFUSED, status, status.phrase)
        if self.cycle is None or self.cycle.response_complete:
            headers, body = _refusal(status)
            head = b"".join(
                name + b": " + value + b"\r\n"
                for name, value in [*self.server_state.default_headers, *headers]
            )
            self.transport.write(STATUS_LINE[status] + head + b"\r\n" + body)
        self.transport.close()
