"""Which backend serves a process, opened at start-up and closed at shutdown.

An upstream URL selects the REST backend; otherwise a database URL, or with neither the
embedded SQLite catalogue (created from the demo dataset on first use).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass

from gateway.caching.shared_cache import SharedCache
from gateway.config import Settings
from gateway.loaders.backend import Backend
from gateway.loaders.rest.backend import RestBackend
from gateway.loaders.rest.breaker import Breaker
from gateway.loaders.rest.cache import ResourceCache
from gateway.loaders.rest.client import Upstream
from gateway.loaders.rest.fetcher import Fetcher
from gateway.loaders.rest.shared import SharedBodies
from gateway.loaders.rest.warm import catalogue_is_warm, catalogue_kept_warm
from gateway.observability import metrics

BackendFactory = Callable[[], Backend]

# `/readyz`: seconds a check may take (the database's `SELECT 1`).
READY_TIMEOUT = 2.0


@dataclass(frozen=True, slots=True)
class Check:
    """One readiness check: whether it passed and what to report; an optional check that
    fails is reported without making the process unready."""

    ok: bool
    detail: str
    required: bool = True


Probe = Callable[[], Awaitable[Check]]


class OpenBackend:
    """An open backend: call it for a request's `Backend`; `ready()` checks it can serve.

    `checks` are named coroutines, each giving a `Check`: the backend's own (`upstream` or
    `database`), the catalogue snapshot's warmth, the shared cache's (`redis`).
    """

    def __init__(self, make: BackendFactory, checks: Mapping[str, Probe]) -> None:
        self._make = make
        self.checks = dict(checks)

    def __call__(self) -> Backend:
        return self._make()

    async def ready(self) -> tuple[bool, dict[str, str], str]:
        """Whether every required check passed, each check's report by name, and why not."""
        done = await asyncio.gather(*(check() for check in self.checks.values()))
        results = dict(zip(self.checks, done, strict=True))
        failed = [f"{name} {c.detail}" for name, c in results.items() if c.required and not c.ok]
        return not failed, {name: c.detail for name, c in results.items()}, "; ".join(failed)


def _required(reason: str | None) -> Check:
    return Check(reason is None, "ok" if reason is None else f"unavailable: {reason}")


@asynccontextmanager
async def open_backend(
    settings: Settings,
    *,
    keep_warm: bool = False,
    shared: SharedCache | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> AsyncIterator[OpenBackend]:
    """Hold the process-wide resources of the backend; yield a per-request factory.

    With `keep_warm` (a server's lifetime), the REST backend's catalogue snapshot is fetched
    before the first request is served (for at most one upstream timeout) and refreshed in
    the background before it expires. With `shared` (`--cache`), the REST backend's upstream
    bodies are shared with every other process using it. `clock` times its cache and circuit
    breaker (tests move their own).
    """
    if settings.upstream is not None:
        async with _open_rest(settings.upstream, settings, keep_warm, shared, clock) as rest:
            yield rest
        return

    from gateway.demo.embedded import open_embedded
    from gateway.loaders.sql.backend import SqlBackend
    from gateway.loaders.sql.engine import create_engine
    from gateway.loaders.sql.features import check_database, database_ready, inspect_database
    from gateway.loaders.sql.kept import Kept

    url = settings.database or await open_embedded()
    engine = create_engine(url, statement_timeout=settings.statement_timeout)
    try:
        await check_database(engine)
        features = await inspect_database(engine)

        async def database_check() -> Check:
            return _required(await database_ready(engine, READY_TIMEOUT))

        checks: dict[str, Probe] = {"database": database_check}
        if shared is not None:
            checks["redis"] = _redis_check(shared)
        # Answers kept across requests while the database is unchanged.
        kept = Kept(settings.kept_answers_bytes) if settings.kept_answers_bytes else None
        if kept is not None:
            metrics.watch_cache("kept", kept)
        yield OpenBackend(lambda: SqlBackend(engine, features, kept), checks)
    finally:
        await engine.dispose()


@asynccontextmanager
async def _open_rest(
    url: str,
    settings: Settings,
    keep_warm: bool,
    shared: SharedCache | None,
    clock: Callable[[], float],
) -> AsyncIterator[OpenBackend]:
    """The REST backend's process-wide parts: the upstream's client, the resource cache, and
    with `shared` the bodies every process shares."""
    upstream = Upstream(
        url,
        timeout=settings.upstream_timeout,
        max_in_flight=settings.upstream_max_in_flight,
        retries=settings.upstream_retries,
        breaker=Breaker(clock=clock),
    )
    cache = ResourceCache(ttl=settings.cache_ttl, stale=settings.cache_stale, clock=clock)
    metrics.watch_cache("resources", cache)
    bodies = None
    if shared is not None:
        bodies = SharedBodies(
            shared,
            upstream.base_url,
            ttl=settings.cache_ttl,
            stale=settings.cache_stale,
            max_body=upstream.max_body,
            # Another process's fetch, retries included, ends within this.
            wait_limit=settings.upstream_timeout * (settings.upstream_retries + 1),
        )
    loop = asyncio.get_running_loop()

    def rest_backend() -> Backend:
        # A request's upstream calls, retries included, end within its own time, and are
        # at most its budget.
        deadline = loop.time() + settings.request_timeout
        fetcher = Fetcher(
            upstream,
            cache,
            bodies,
            deadline=deadline,
            max_requests=settings.max_upstream_requests,
        )
        return RestBackend(fetcher)

    async def upstream_check() -> Check:
        return _required(await upstream.ready())

    async def catalogue_check() -> Check:
        # Informational: a cold snapshot is fetched by the first request that needs it.
        return Check(True, "warm" if catalogue_is_warm(cache) else "cold")

    checks: dict[str, Probe] = {"upstream": upstream_check, "catalogue": catalogue_check}
    if shared is not None:
        checks["redis"] = _redis_check(shared)
    async with contextlib.AsyncExitStack() as stack:
        stack.push_async_callback(upstream.aclose)
        stack.push_async_callback(cache.aclose)
        if keep_warm:
            first_wait = settings.upstream_timeout
            await stack.enter_async_context(
                catalogue_kept_warm(upstream, cache, bodies, first_wait=first_wait)
            )
        yield OpenBackend(rest_backend, checks)


def _redis_check(shared: SharedCache) -> Probe:
    """The shared cache is optional: without it each process serves from its own memory."""

    async def check() -> Check:
        reason = await shared.check()
        if reason is None:
            return Check(True, "ok", required=False)
        return Check(False, "unavailable: serving from memory", required=False)

    return check


async def check_backend(settings: Settings) -> None:
    """Open the backend once, so that a database that cannot serve stops start-up."""
    async with open_backend(settings):
        pass
