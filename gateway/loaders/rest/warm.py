"""Keeping the catalogue snapshot fresh in the background."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

from gateway.errors import UpstreamError
from gateway.loaders.rest.cache import ResourceCache
from gateway.loaders.rest.client import Upstream
from gateway.loaders.rest.fetcher import CATALOGUE, Fetcher
from gateway.loaders.rest.shared import SharedBodies
from gateway.observability import stalls
from gateway.observability.memory import give_back

logger = logging.getLogger("gateway")

# The snapshot is refreshed before it expires, but not more often than this (seconds).
MIN_REFRESH_INTERVAL = 10.0


async def keep_catalogue_warm(
    upstream: Upstream,
    cache: ResourceCache,
    bodies: SharedBodies | None = None,
    *,
    min_interval: float = MIN_REFRESH_INTERVAL,
    tried: asyncio.Event | None = None,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> None:
    """Fetch the snapshot now and again before each expiry, until cancelled.

    Requests then find the catalogue fresh from the start, and never wait for its refresh;
    a failed refresh is logged and tried again after `min_interval`, while the cache serves
    its copy. `tried` is set once the first attempt is over, whatever its outcome. `sleep`
    waits between attempts (a test hands in its own, with the cache's `clock`).
    """
    while True:
        interval = min_interval
        try:
            await Fetcher(upstream, cache, bodies).refresh_snapshot()
        except UpstreamError as exc:
            logger.warning("could not refresh the catalogue snapshot: %s (%s)", exc, exc.detail)
        except Exception:  # a bug must not end the refreshing for the process's lifetime
            logger.exception("could not refresh the catalogue snapshot")
        else:
            # The new snapshot lives as long as the old one did: out of the collector's sight.
            stalls.freeze_what_lives()
            # A snapshot made from another process's bodies (`--cache`) is fresh for less.
            interval = max(0.9 * cache.fresh_for(CATALOGUE), min_interval)
        # What the C allocator holds free, given back: after a renewal the snapshot replaced (a
        # peak: two were held); while the upstream fails, what the requests answered from stale
        # copies meanwhile took and freed (in bench.load's outage, 25 MiB within 30 s).
        await give_back()
        if tried is not None:
            tried.set()
        await sleep(interval)


@contextlib.asynccontextmanager
async def catalogue_kept_warm(
    upstream: Upstream,
    cache: ResourceCache,
    bodies: SharedBodies | None = None,
    *,
    first_wait: float,
) -> AsyncIterator[None]:
    """Keep the snapshot warm for as long as the block runs.

    The block starts once the first snapshot is in (or failed, or took `first_wait` seconds):
    the first requests then find it rather than wait for it.
    """
    tried = asyncio.Event()
    warming = asyncio.create_task(keep_catalogue_warm(upstream, cache, bodies, tried=tried))
    try:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(tried.wait(), first_wait)
        yield
    finally:
        warming.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await warming


def catalogue_is_warm(cache: ResourceCache) -> bool:
    """Whether the cache holds the snapshot fresh: a request would find it at once."""
    return cache.fresh_for(CATALOGUE) > 0
