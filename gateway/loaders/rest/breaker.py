"""The circuit breaker in front of the upstream."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from gateway.errors import UpstreamError

logger = logging.getLogger("gateway")

# Five failed attempts in a row open the circuit; a probe goes through every two seconds,
# a single GET, so that recovery is noticed quickly at no cost to a struggling upstream.
BREAKER_THRESHOLD = 5
BREAKER_COOL_DOWN = 2.0


@dataclass(eq=False)
class Breaker:
    """A circuit breaker: after `threshold` failed attempts in a row, calls fail at once.

    Open, it refuses every attempt for `cool_down` seconds, then lets a single probe through
    (half-open): a probe that gets an answer closes it, a failed probe opens it again. A
    failure is a connection that failed, a timeout, a 5xx or a 429; any other answer, even a
    404 or an unreadable body, shows the upstream alive. A probe still without a verdict a
    cool-down past its own time limit no longer holds the others back: an attempt that never
    ends cannot keep the circuit open for good.
    """

    threshold: int = BREAKER_THRESHOLD
    cool_down: float = BREAKER_COOL_DOWN
    clock: Callable[[], float] = time.monotonic
    failures: int = field(default=0, init=False)
    opened_at: float | None = field(default=None, init=False)
    answered_at: float | None = field(default=None, init=False)  # the last attempt answered
    _probe_until: float | None = field(default=None, init=False)  # while a probe is let be

    def closed(self) -> bool:
        """Whether the circuit is closed: attempts go through together, none of them a probe
        that would have the others refused beside it."""
        return self.opened_at is None

    def refuses(self) -> bool:
        """Whether an attempt now would be refused."""
        return self._refuses(self.clock())

    def check(self, after: float = 0.0) -> None:
        """Raise if an attempt `after` seconds from now would be refused: a call that would
        be neither waits for a slot nor sleeps to be refused."""
        if self._refuses(self.clock() + after):
            raise _unavailable()

    def admit(self, timeout: float) -> bool:
        """Let an attempt of at most `timeout` seconds through, or raise; True when it is the
        half-open probe."""
        if self.opened_at is None:
            return False
        now = self.clock()
        if self._refuses(now):
            raise _unavailable()
        if self._probe_until is not None:
            logger.warning("a probe of the upstream API never ended: another one goes")
        self._probe_until = now + timeout + self.cool_down
        return True

    def record(self, ok: bool) -> None:
        if ok:
            self.answered_at = self.clock()
            if self.opened_at is not None:
                logger.warning("the upstream API answers again: circuit breaker closed")
            self.failures, self.opened_at, self._probe_until = 0, None, None
            return
        self.failures += 1
        if self._probe_until is not None or self.failures >= self.threshold:
            if self.opened_at is None:
                logger.warning("the upstream API is failing: circuit breaker open")
            self.opened_at, self._probe_until = self.clock(), None

    def answered_within(self, seconds: float) -> bool:
        """Whether the last attempt got an answer, at most `seconds` ago."""
        at = self.answered_at
        return self.failures == 0 and at is not None and self.clock() - at <= seconds

    def abandon(self, probe: bool) -> None:
        """An attempt ended without a verdict (cancelled): let the next one probe."""
        if probe:
            self._probe_until = None

    def _refuses(self, at: float) -> bool:
        """Whether an attempt at time `at` is refused: open, and cooling down or probing."""
        if self.opened_at is None:
            return False
        probing = self._probe_until is not None and at < self._probe_until
        return probing or at - self.opened_at < self.cool_down


def _unavailable() -> UpstreamError:
    return UpstreamError("The upstream API is unavailable", "circuit breaker open")
