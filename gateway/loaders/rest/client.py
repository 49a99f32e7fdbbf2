"""The upstream's HTTP client: retries, backoff, bounds on bodies and on requests in flight."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import httpx

from gateway.errors import TransientError, UpstreamError
from gateway.loaders.rest.breaker import Breaker
from gateway.observability import observe

# Retried: what says "try again" (429, 502, 503, 504; a 500 is a bug that would fail again)
# and connections that failed before an answer. Not a read timeout: that attempt already
# cost the upstream its full time. Backoff: full jitter, uniform in [0, BASE * 2**n] capped.
RETRY_STATUSES = frozenset({429, 502, 503, 504})
RETRY_ERRORS = (httpx.ConnectError, httpx.ReadError, httpx.WriteError, httpx.RemoteProtocolError)
BACKOFF_BASE = 0.1
BACKOFF_CAP = 2.0

# The whole real package list is about 5 MB; ten times that is not an answer we can use.
MAX_BODY_BYTES = 50 * 2**20

# `/readyz`: an answer this recent (seconds) shows the upstream alive; else the API root is
# asked, for this long at most.
READY_RECENT = 2.0
READY_TIMEOUT = 2.0

# What an upstream response streams once read and closed: nothing.
_CLOSED = httpx.ByteStream(b"")


def retry_after(value: str | None) -> float | None:
    """Seconds a `Retry-After` header asks to wait (delta-seconds or an HTTP date), if readable."""
    if value is None:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # "-0000": UTC, as HTTP dates always are
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


class Upstream:
    """The process-wide HTTP client for one APIv4 base URL.

    Every GET passes the circuit breaker, waits for one of `max_in_flight` slots, passes the
    breaker again (it may have opened meanwhile), and is retried on transient failures
    (`retries` more attempts at most, after a jittered exponential backoff or the upstream's
    `Retry-After`, unless that asks for longer than one attempt's `timeout`, or the breaker
    would refuse the attempt anyway). While the breaker is open a GET fails at once: in an
    outage nothing waits, in the slots' line or a backoff, only to be refused. A body over
    `max_body` bytes is refused without being read to its end. A GET is not bound to one
    request's deadline: many requests may share it, and each gives up at its own (see
    `Fetcher`).
    """

    def __init__(
        self,
        base_url: str,
        *,
        timeout: float = 10.0,
        max_in_flight: int = 32,
        retries: int = 2,
        max_body: int = MAX_BODY_BYTES,
        breaker: Breaker | None = None,
    ):
        self.base_url = base_url if base_url.endswith("/") else base_url + "/"
        self.timeout = timeout
        self.retries = retries
        self.max_body = max_body
        self.breaker = breaker or Breaker()
        self._slots = asyncio.Semaphore(max_in_flight)
        self.client = httpx.AsyncClient(
            base_url=self.base_url,
            timeout=httpx.Timeout(timeout, connect=min(timeout, 5.0)),
            limits=httpx.Limits(
                max_connections=max_in_flight, max_keepalive_connections=max_in_flight
            ),
            headers={"Accept": "application/json", "User-Agent": "djangopackages-gateway"},
            follow_redirects=False,
        )

    async def get(self, path: str, params: Mapping[str, str | int] | None = None) -> bytes | None:
        """The body of a 200 answer, None for a 404; anything else is an `UpstreamError`."""
        attempt = 0
        while True:
            try:
                return await self._attempt(path, params)
            except TransientError as exc:
                delay = exc.retry_after
                if delay is None:
                    delay = random.uniform(0, min(BACKOFF_CAP, BACKOFF_BASE * 2**attempt))
                if attempt >= self.retries or delay > self.timeout:
                    raise
            attempt += 1
            self.breaker.check(after=delay)
            await asyncio.sleep(delay)

    async def _attempt(self, path: str, params: Mapping[str, str | int] | None) -> bytes | None:
        failure: UpstreamError | None = None
        self.breaker.check()
        await self._slots.acquire()
        try:
            probe = self.breaker.admit(self.timeout)
            try:
                with observe.UpstreamCall(path) as call:
                    async with asyncio.timeout(self.timeout):
                        status, headers, body = await self._exchange(path, params)
                    call.status = status
            except (httpx.HTTPError, TimeoutError) as exc:
                self.breaker.record(ok=False)
                failure = _failure(path, exc)
            except UpstreamError:
                self.breaker.record(ok=True)  # it answered, with a body too large to read
                raise
            except BaseException:
                self.breaker.abandon(probe)
                raise
        finally:
            self._slots.release()
        if failure is not None:
            # Raised out of the `except` block, so not chained to what it stands for (its
            # detail names it): a timeout's traceback holds the timeout, which holds this task,
            # and a failed task holds its error: a cycle of them.
            raise failure
        self.breaker.record(ok=status < 500 and status != 429)
        if status == 200:
            return body
        if status == 404:
            return None
        message = f"The upstream API answered HTTP {status}"
        if status in RETRY_STATUSES:
            wait = retry_after(headers.get("retry-after"))
            raise TransientError(message, f"GET {path}: HTTP {status}", wait)
        raise UpstreamError(message, f"GET {path}: HTTP {status}")

    async def _exchange(
        self, path: str, params: Mapping[str, str | int] | None
    ) -> tuple[int, httpx.Headers, bytes]:
        """Send the GET and read the body, giving up as soon as it is too large."""
        # The request's id (and trace) go along: the upstream's logs can be matched to ours.
        headers = observe.outgoing_headers()
        request = self.client.build_request("GET", path, params=params, headers=headers)
        response = await self.client.send(request, stream=True)
        try:
            declared = response.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > self.max_body:
                raise self._too_large(path)
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > self.max_body:
                    raise self._too_large(path)
            return response.status_code, response.headers, bytes(body)
        finally:
            await response.aclose()
            # httpx binds the response's stream to the response: a reference cycle per GET,
            # left to the garbage collector unless the closed stream is let go of.
            response.stream = _CLOSED

    def _too_large(self, path: str) -> UpstreamError:
        return UpstreamError(
            "The upstream API returned a body too large to read",
            f"GET {path}: over {self.max_body} bytes",
        )

    async def ready(self) -> str | None:
        """None when the upstream answers, else why not (for `/readyz`).

        An answer to the last attempt, within `READY_RECENT` seconds, is enough; otherwise the
        API root is asked once, without retries, within `READY_TIMEOUT` (a failure counts for
        the circuit breaker, and while it is open this fails at once).
        """
        if self.breaker.answered_within(READY_RECENT):
            return None
        try:
            async with asyncio.timeout(READY_TIMEOUT):
                await self._attempt("", None)
        except TimeoutError:
            return "The upstream API did not answer in time"
        except UpstreamError as exc:
            return exc.message
        return None

    async def aclose(self) -> None:
        await self.client.aclose()


def _failure(path: str, exc: Exception) -> UpstreamError:
    """The error for an attempt that got no answer; transient when another may get one."""
    detail = f"GET {path}: {exc!r}"
    if isinstance(exc, httpx.ConnectTimeout):
        return TransientError("The upstream API timed out", detail)
    if isinstance(exc, TimeoutError | httpx.TimeoutException):
        return UpstreamError("The upstream API timed out", detail)
    if isinstance(exc, RETRY_ERRORS):
        return TransientError("The upstream API could not be reached", detail)
    return UpstreamError("The upstream API could not be reached", detail)
