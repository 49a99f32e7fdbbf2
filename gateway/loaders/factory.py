"""Which backend serves a process, opened at start-up and closed at shutdown.

An upstream URL selects the REST backend; otherwise a database URL, or with neither the
embedded SQLite catalogue (created from the demo dataset on first use).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from gateway.config import Settings
from gateway.loaders.backend import Backend
from gateway.loaders.cache import ResourceCache
from gateway.loaders.rest import RestBackend, Upstream, keep_catalogue_warm

BackendFactory = Callable[[], Backend]


@asynccontextmanager
async def open_backend(
    settings: Settings, *, keep_warm: bool = False
) -> AsyncIterator[BackendFactory]:
    """Hold the process-wide resources of the backend; yield a per-request factory.

    With `keep_warm` (a server's lifetime), the REST backend's catalogue snapshot is fetched
    at once, in the background, and refreshed before it expires.
    """
    if settings.upstream is not None:
        upstream = Upstream(
            settings.upstream,
            timeout=settings.upstream_timeout,
            max_in_flight=settings.upstream_max_in_flight,
            retries=settings.upstream_retries,
        )
        cache = ResourceCache(ttl=settings.cache_ttl, stale=settings.cache_stale)
        loop = asyncio.get_running_loop()

        def rest_backend() -> Backend:
            # A request's upstream calls, retries included, end within its own time.
            return RestBackend(upstream, cache, deadline=loop.time() + settings.request_timeout)

        warming = asyncio.create_task(keep_catalogue_warm(upstream, cache)) if keep_warm else None
        try:
            yield rest_backend
        finally:
            if warming is not None:
                warming.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await warming
            await cache.aclose()
            await upstream.aclose()
        return

    from gateway.loaders.database import create_engine
    from gateway.loaders.embedded import open_embedded
    from gateway.loaders.sql import SqlBackend, check_database, inspect_database

    url = settings.database or await open_embedded()
    engine = create_engine(url, statement_timeout=settings.statement_timeout)
    try:
        await check_database(engine)
        features = await inspect_database(engine)
        yield lambda: SqlBackend(engine, features)
    finally:
        await engine.dispose()


async def check_backend(settings: Settings) -> None:
    """Open the backend once, so that a database that cannot serve stops start-up."""
    async with open_backend(settings):
        pass
