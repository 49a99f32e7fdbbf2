"""Which backend serves a process, opened at start-up and closed at shutdown.

An upstream URL selects the REST backend; otherwise a database URL, or with neither the
embedded SQLite catalogue (created from the demo dataset on first use).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from gateway.config import Settings
from gateway.loaders.backend import Backend
from gateway.loaders.cache import ResourceCache
from gateway.loaders.rest import RestBackend, Upstream

BackendFactory = Callable[[], Backend]


@asynccontextmanager
async def open_backend(settings: Settings) -> AsyncIterator[BackendFactory]:
    """Hold the process-wide resources of the backend; yield a per-request factory."""
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

        try:
            yield rest_backend
        finally:
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
