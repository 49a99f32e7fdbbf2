"""Which backend serves a process, opened at start-up and closed at shutdown."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from gateway.config import Settings
from gateway.loaders.backend import Backend
from gateway.loaders.rest import RestBackend, Upstream

BackendFactory = Callable[[], Backend]


@asynccontextmanager
async def open_backend(settings: Settings) -> AsyncIterator[BackendFactory]:
    """Hold the process-wide resources of the backend; yield a per-request factory."""
    upstream = Upstream(settings.upstream, timeout=settings.upstream_timeout)
    try:
        yield lambda: RestBackend(upstream)
    finally:
        await upstream.aclose()
