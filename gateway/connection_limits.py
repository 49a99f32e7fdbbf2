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

uvicorn's `limit_concurrency` caps the connections (503 past it); `server_options`
(gateway/worker.py) sets all of these from the settings. What this relies on of uvicorn's
protocol (its parser's callbacks, its keep-alive timer) tests/test_connections.py checks.
"""

from __future__ import annotations

import asyncio
import http
import select

from starlette.types import Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

__all__ = ["HeadBoundedProtocol"]

HEADERS_TOO_LARGE = http.HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE
HEAD_TIMEOUT = http.HTTPStatus.REQUEST_TIMEOUT
_REFUSED = "Request head refused: %d %s."  # as uvicorn logs its own refusals, at warning


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


class HeadBoundedProtocol(HttpToolsProtocol):
    """httptools's protocol, each request's head bounded in time and size."""

    _head_timer: asyncio.TimerHandle | None = None  # while the connection waits for a head
    _head_begun = False  # a request's first byte has come, its headers not all yet
    _head_bytes = 0  # of the head, in the reads after the one it began in
    _reads = 0  # of the connection, so far
    _reads_before_wait = 0  # when the head timer was armed

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._await_head()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_waiting()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        self._reads += 1
        continued = self._head_begun  # a head begun in an earlier read
        super().data_received(data)
        if continued and self._head_begun:  # every byte of this read is the head's
            self._head_bytes += len(data)
            limit = self.config.h11_max_incomplete_event_size
            if limit is not None and self._head_bytes > limit:
                self._refuse(HEADERS_TOO_LARGE)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_begun, self._head_bytes = True, 0
        if self._head_timer is not None:  # waited for: the head's own time, from its first byte
            self._head_timer.cancel()
            self._head_timer = None
            self._await_head()

    def on_headers_complete(self) -> None:
        self._stop_waiting()
        size = len(self.url) + sum(len(name) + len(value) for name, value in self.headers)
        limit = self.config.h11_max_incomplete_event_size
        if limit is not None and size > limit:
            self.logger.warning(_REFUSED, HEADERS_TOO_LARGE, HEADERS_TOO_LARGE.phrase)
            self.app = _headers_too_large  # the connection's last request: the answer closes it
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        idle = not self.pipeline  # else the next request, read already, starts now
        super().on_response_complete()
        if idle and not self.transport.is_closing():
            self._await_head()

    def timeout_keep_alive_handler(self) -> None:
        """Nothing: uvicorn's keep-alive timer, armed along with the head timer after an
        answer, would close the connection without looking for a request come meanwhile."""

    def _await_head(self) -> None:
        if self._head_timer is None:
            self._reads_before_wait = self._reads
            self._head_timer = self.loop.call_later(self.timeout_keep_alive, self._timed_out)

    def _stop_waiting(self) -> None:
        self._head_begun = False
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _timed_out(self) -> None:
        self._head_timer = None
        if self.transport.is_closing():
            return
        if self._reads == self._reads_before_wait and self._unread_bytes_waiting():
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
